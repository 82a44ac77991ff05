"""Files on disk, written so that a reader never sees half of one: whole-directory and whole-file
replacement by rename, and JSON that reads back as a typed error when it is missing or corrupt."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Dict, Iterator

from compress.errors import CheckpointError, ConfigError


def check_out_dir(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not overwrite:
        raise ConfigError(f"output directory {out} already exists; pass `overwrite` or choose another `out`")


@contextlib.contextmanager
def atomic_dir(out: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary directory beside ``out``; on success it replaces ``out`` in one rename, on
    failure it is removed, so an interrupted write never leaves a half-written ``out``."""
    check_out_dir(out, overwrite)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.{uuid.uuid4().hex[:12]}")
    os.mkdir(tmp)  # not mkdtemp: its 0o700 would make the final ``out`` private; mkdir honours the umask
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old.", dir=parent)
        os.replace(out, os.path.join(old, "x"))
    os.replace(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to a temporary name beside ``path``, then rename: never a half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is this a compress run or model directory?") from None
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, bad UTF-8, an int of > 4300 digits
        raise CheckpointError(f"{path} is not valid JSON ({first_line(exc)}); the artifact is corrupt") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(obj, dict):  # every artifact file is an object; callers index it by key
        raise CheckpointError(f"{path} is not a JSON object; the artifact is corrupt")
    return obj


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
