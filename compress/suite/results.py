"""The results file: one JSON object per finished cell, one per line, appended as cells finish.

An append is one ``write`` of one line followed by ``fsync``, so a crash leaves at worst a
truncated last line; reading ignores it and the next append first cuts it off. Appends hold an
exclusive ``flock`` on the file (where the platform has one), so several suite processes running
disjoint slices (other datasets, seeds or GPUs) can share one results file: no append can mistake
another's line in progress for a torn one.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

try:
    import fcntl
except ImportError:  # Windows: one process per results file
    fcntl = None

from compress.artifacts import _json_default
from compress.errors import CheckpointError


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


def append_result(path: str, record: Dict[str, Any]) -> None:
    """Append ``record`` as one line, first cutting off an unfinished line a crash may have left."""
    line = (json.dumps(record, default=_json_default, sort_keys=False) + "\n").encode()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "ab+") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
        fh.seek(0)
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
