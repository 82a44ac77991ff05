"""The results file: one JSON object per finished cell, one per line, appended as cells finish.

An append is one ``write`` of one line followed by ``fsync``, so a crash leaves at worst a
truncated last line; reading ignores it and the next append first cuts it off. A last line that is
whole but lacks its newline (a file edited or merged by hand) is a record, not a torn append: it is
read, and the next append adds the newline instead of cutting it off. Appends hold an
exclusive ``flock`` on the file (where the platform has one), so several suite processes running
disjoint slices (other datasets, seeds or GPUs) can share one results file: no append can mistake
another's line in progress for a torn one.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from typing import IO, Any, Dict, Iterator, List, NamedTuple, NoReturn

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
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a directory; give the results file in it (e.g. {path}/results.jsonl)")
    if not os.path.exists(path):
        return []
    try:
        with open(path, "rb") as fh:
            lines = fh.read().split(b"\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the results file {path}: {exc.strerror or exc}") from None
    if not _is_json(lines[-1]):  # the last piece is empty or a line a crash tore; else a whole record
        lines.pop()
    out = []
    for number, line in enumerate(lines, 1):
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


def _is_json(piece: bytes) -> bool:
    """Whether a piece after the last newline is whole JSON (a record written without its newline) rather
    than the start of one an append left when it crashed; whitespace alone is neither."""
    try:
        json.loads(piece)
    except ValueError:
        return False
    return True


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
    """Append ``record`` as one line, first cutting off an unfinished line a crash may have left (a whole
    last record that lacks its newline gets it instead)."""
    line = (json.dumps(record, default=json_default, sort_keys=False) + "\n").encode()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _locked(path, "ab+") as fh:
        fh.seek(0)
        data = fh.read()
        if data and not data.endswith(b"\n"):
            start = data.rfind(b"\n") + 1
            if _is_json(data[start:]):
                line = b"\n" + line
            else:
                fh.truncate(start)
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


class Finished(NamedTuple):
    """The records a report, a comparison or a pooling counts, how many older ones they replaced, and the
    latest records left out because they were built on a cell that is not counted (``read_records``)."""

    records: List[Dict[str, Any]]
    superseded: int  # earlier records of a (dataset, variant, seed) recorded again later
    stale: List[Dict[str, Any]]  # built on a superseded or missing cell: matched to a decision no longer counted


NAMES = ("dataset", "variant", "label", "method")  # what every record must name, as strings


def _check_record(record: Dict[str, Any], source: str) -> None:
    """A ``CheckpointError`` naming the record (dataset, variant, seed, key) where it lacks what the report,
    ``compare`` and ``pool`` read: its names, an integer seed, finite metrics and analytic FLOPs."""
    def fail(problem: str) -> NoReturn:
        name = "/".join(str(record.get(k, "?")) for k in ("dataset", "variant"))
        raise CheckpointError(f"{source}: the record of {name} seed {record.get('seed', '?')!r} (key {record['key']}) "
                              f"{problem}; correct or remove that line, or run the cell again")

    for field in NAMES:
        if not isinstance(record.get(field), str):
            fail(f"has no {field} name")
    if not isinstance(record.get("seed"), int) or isinstance(record["seed"], bool):
        fail("has no integer seed")
    metrics, cost = record.get("metrics"), record.get("cost")
    for split in ("valid", "test"):
        for protocol in PROTOCOLS:
            held = metrics.get(f"{split}/{protocol}") if isinstance(metrics, dict) else None
            for metric in METRICS:
                value = held.get(metric) if isinstance(held, dict) else None
                if not _finite(value):
                    fail(f"has {split}/{protocol} {metric} {value!r}, not a finite number")
    if not _finite(cost.get("flops_analytic") if isinstance(cost, dict) else None):
        fail("has no finite cost.flops_analytic")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_records(results: str) -> Finished:
    """The records of ``results`` for a report or a comparison, each checked (``_check_record``): the last
    record of a (dataset, variant, seed) counts, so a cell run again, after its options were edited or its
    results merged by hand, is counted once everywhere. A record whose ``needs`` name a cell that is not
    counted (superseded by a rerun, or missing) is left out too, and so is one built on it in turn: a
    baseline matched to a DNS-Rec decision that was searched again, after the plan was edited and only the
    search rerun, would otherwise stand beside the new decision as if matched to it. A file with none is a
    ``ConfigError``."""
    records = read_results(results)
    if not records:
        raise ConfigError(f"{results} holds no finished cells yet; run the suite first")
    latest: Dict[Any, Dict[str, Any]] = {}
    for r in records:
        _check_record(r, results)
        cell = r["dataset"], r["variant"], r["seed"]
        latest.pop(cell, None)  # the last record stands where it was written, as if the older were not there
        latest[cell] = r
    counted, stale = list(latest.values()), []
    while True:  # until no counted record is built on one left out (a pull to a baseline matched to a rerun search)
        keys, kept, left = {r["key"] for r in counted}, [], []
        for r in counted:
            (kept if set((r.get("needs") or {}).values()) <= keys else left).append(r)
        if not left:
            return Finished(counted, len(records) - len(latest), stale)
        counted, stale = kept, stale + left
