"""The results file: one JSON object per finished cell, one per line, appended as cells finish.

An append is one ``write`` of one line followed by ``fsync``, so a crash leaves at worst a
truncated last line; reading ignores it and the next append first cuts it off. Appends hold an
exclusive ``flock`` on the file (where the platform has one), so several suite processes running
disjoint slices (other datasets, seeds or GPUs) can share one results file: no append can mistake
another's line in progress for a torn one.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import IO, Any, Dict, Iterator, List

try:
    import fcntl
except ImportError:  # Windows: one process per results file
    fcntl = None

from compress.errors import CheckpointError, ConfigError
from compress.files import json_default, staged

METRICS = {"ndcg@10": "NDCG@10", "recall@10": "Recall@10", "mrr@10": "MRR@10"}  # what a record's metrics hold
PROTOCOLS = ("full", "pop100")  # full ranking, or against 100 popular negatives


def read_results(path: str) -> List[Dict[str, Any]]:
    """Every complete record of ``path`` (none if it does not exist yet)."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    out = []
    for number, line in enumerate(lines[:-1], 1):  # the last piece is empty or an unfinished line
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise CheckpointError(f"{path}:{number} is not a JSON record; the results file is corrupt") from None
        if not isinstance(record, dict) or not isinstance(record.get("key"), str):
            raise CheckpointError(f"{path}:{number} has no cell key; is this a suite results file?")
        out.append(record)
    return out


@contextlib.contextmanager
def _locked(path: str, mode: str) -> Iterator[IO[bytes]]:
    """``path`` opened and exclusively locked; if a rewrite replaced the file while we waited for the
    lock, the new file is opened and locked instead, so no append lands in a replaced file."""
    while True:
        fh = open(path, mode)
        if fcntl is None:
            break
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
        if os.path.exists(path) and os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino:
            break
        fh.close()
    try:
        yield fh
    finally:
        fh.close()


def update_results(path: str, changed: Dict[str, Dict[str, Any]]) -> None:
    """Replace the records whose keys are in ``changed`` (atomically, holding the appenders' lock).
    The file is read again under the lock, so a cell another process appended since ``changed`` was
    read is kept, not overwritten by a stale copy."""
    with _locked(path, "rb"):
        records = [changed.get(r["key"], r) for r in read_results(path)]
        with staged(path) as tmp, open(tmp, "wb") as out:
            out.writelines((json.dumps(r, default=json_default, sort_keys=False) + "\n").encode() for r in records)


def append_result(path: str, record: Dict[str, Any]) -> None:
    """Append ``record`` as one line, first cutting off an unfinished line a crash may have left."""
    line = (json.dumps(record, default=json_default, sort_keys=False) + "\n").encode()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _locked(path, "ab+") as fh:
        fh.seek(0)
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_records(results: str) -> List[Dict[str, Any]]:
    """The records of ``results`` for a report or a comparison: the last of a cell run twice (results
    merged by hand); a file with none is a ``ConfigError``."""
    records = read_results(results)
    if not records:
        raise ConfigError(f"{results} holds no finished cells yet; run the suite first")
    latest = {r["key"]: r for r in records}
    return list(latest.values())
