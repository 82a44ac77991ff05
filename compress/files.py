"""Files on disk, written so that a reader never sees half of one, and so that compress only ever
replaces what it wrote.

- A directory is written into a hidden temporary sibling, its files flushed to disk (fsync) and
  made readable as the umask allows, a marker file added, then published by one rename; replacing
  an existing directory is one atomic exchange where the file system offers it (Linux
  ``renameat2``), else two renames that ``recover`` can finish after a kill between them.
- ``overwrite`` replaces only a directory that carries the marker (or an artifact compress wrote
  before markers existed), never a file, never the working directory or one of its parents, never
  an input of the same command, never a directory holding an entry compress did not write (the marker
  lists what it published; ``layout.WRITTEN_LATER`` what it adds later).
- SIGINT and SIGTERM wait while a publish (and the cleanup that belongs with it) runs, then are acted on
  (``signals_deferred``): a stop never leaves a publish half done, nor a message that says otherwise.
- JSON is written strictly (no NaN or Infinity) and read back as a typed error when missing or corrupt.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import threading
import uuid
from typing import Any, Dict, Iterable, Iterator, List, Optional

from compress.errors import CheckpointError, ConfigError, Interrupted
from compress.layout import CONFIG, MARKER, PARTIAL, WRITTEN_LATER

_TMP, _OLD = ".tmp-", ".old-"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_published: List[str] = []  # the outputs this process published, oldest first
_deferred: Optional[List[int]] = None  # the signals a ``signals_deferred`` block recorded; None outside one


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or below it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def written_by_compress(path: str) -> bool:
    """A directory compress published: it holds the marker, or a ``config.json`` compress wrote before
    markers existed (it records a ``format_version``)."""
    if os.path.isfile(os.path.join(path, MARKER)):
        return True
    try:
        with open(os.path.join(path, CONFIG)) as fh:
            return "format_version" in json.load(fh)
    except (OSError, ValueError):
        return False


def check_out_dir(out: str, overwrite: bool, inputs: Iterable[Optional[str]] = ()) -> None:
    """Refuse an output compress may not write: one that exists (unless ``overwrite``), a file or a
    directory compress did not write, the working directory or one of its parents, or the path of
    an input of the same command (or a directory holding one, or one inside an input directory)."""
    real = _real(out)
    if _inside(_real(os.getcwd()), real):
        raise ConfigError(f"output {out} is the working directory or one of its parents; choose a new `out`")
    for given in inputs:
        if given and (_inside(_real(given), real) or _inside(real, _real(given))):
            raise ConfigError(f"output {out} is, holds or lies inside the input {given}; choose another `out`")
    if not os.path.lexists(out):
        return
    if not overwrite:
        raise ConfigError(f"output directory {out} already exists; pass `overwrite` or choose another `out`")
    if not os.path.isdir(out) or os.path.islink(out):
        raise ConfigError(f"output {out} exists and is not a directory; `overwrite` replaces only directories "
                          "compress wrote; choose another `out`")
    if not written_by_compress(out):
        raise ConfigError(f"output directory {out} was not written by compress (no {MARKER}); `overwrite` only "
                          "replaces compress's own directories; choose another `out`")
    foreign = _foreign(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(f"output directory {out} holds what compress did not write there ({shown}); `overwrite` "
                          "would delete it: move it out, or choose another `out`")


def _foreign(out: str) -> List[str]:
    """The entries of ``out`` that compress neither published there (its marker lists them) nor writes there
    later, with those of the marked directories it holds (``retrained/``); none for a directory marked
    before markers listed their entries, which ``overwrite`` replaces as it always did."""
    try:
        with open(os.path.join(out, MARKER)) as fh:
            entries = json.load(fh).get("entries")
        present = os.listdir(out)
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(entries, list):
        return []
    own = {MARKER, *entries, *(n for key, names in WRITTEN_LATER.items() if key in entries for n in names)}
    temporaries = tuple(f".{n}{kind}" for n in own for kind in (_TMP, _OLD))  # what a kill left of a publish
    foreign = sorted(e for e in present if e not in own and not e.startswith(temporaries))
    for name in sorted(own & set(present)):
        if os.path.isdir(os.path.join(out, name)) and not os.path.islink(os.path.join(out, name)):
            foreign += [f"{name}/{e}" for e in _foreign(os.path.join(out, name))]
    return foreign


@contextlib.contextmanager
def atomic_dir(out: str, overwrite: bool = False, inputs: Iterable[Optional[str]] = ()) -> Iterator[str]:
    """Yield a temporary directory beside ``out``; on success it is flushed, marked and published as
    ``out`` (replacing the old one, see the module note), on failure it is removed, so an
    interrupted write never leaves a half-written ``out``."""
    check_out_dir(out, overwrite, inputs)
    parent, name = os.path.split(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{name}{_TMP}{uuid.uuid4().hex[:12]}")
        os.mkdir(tmp)  # not mkdtemp: its 0o700 would make the final ``out`` private; mkdir honours the umask
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from None
    try:
        yield tmp
        entries = sorted(os.listdir(tmp))
        write_text(os.path.join(tmp, MARKER), json.dumps({"written_by": "compress", "entries": entries}) + "\n")
        settle(tmp)
        with signals_deferred():
            check_out_dir(out, overwrite, inputs)  # again: the user may have added a file since
            publish(tmp, os.path.join(parent, name))
            if not parent.endswith(PARTIAL):  # a checkpoint is a run's state, not an output
                _published.append(out)
            _remove_stale(parent, name)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale(parent: str, name: str) -> None:
    """What writes of ``parent/name`` killed while publishing left: old copies, complete temporary ones."""
    for stale in os.listdir(parent):
        path = os.path.join(parent, stale)
        if stale.startswith(f".{name}{_OLD}") or (stale.startswith(f".{name}{_TMP}")
                                                  and os.path.isfile(os.path.join(path, MARKER))):
            shutil.rmtree(path, ignore_errors=True)


def published() -> List[str]:
    """The outputs this process published, oldest first: what a message about a stop can say is complete."""
    return list(_published)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are recorded instead of acted on, so that what it changes on
    disk (a publish and the cleanup that belongs with it) is done whole; at its end the first one is
    acted on. A handler of the program's (a run's Checkpointer, which stops at the next step) gets it;
    Python's defaults (KeyboardInterrupt, termination) become ``Interrupted`` naming what the block
    published, or KeyboardInterrupt when it published nothing. Nested blocks wait for the outermost;
    outside the main thread, where handlers cannot be set, the block runs as it is."""
    global _deferred
    if _deferred is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    handlers = {sig: h for sig, h in handlers.items() if h is not None}  # None: set outside Python, left alone
    _deferred, before = [], len(_published)
    try:
        for sig in handlers:
            signal.signal(sig, _record)
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        pending, _deferred = _deferred, None  # after the handlers: a signal in between is recorded, not lost
        if pending:
            _act_on(pending[0], handlers[pending[0]], _published[before:])


def _record(signum: int, frame: Any) -> None:
    if _deferred is not None:
        _deferred.append(signum)


def _act_on(signum: int, handler: Any, done: List[str]) -> None:
    """Act on a deferred signal as ``handler`` would have, now that the state is consistent."""
    if handler is signal.SIG_IGN:
        return
    if handler not in (signal.SIG_DFL, signal.default_int_handler):
        signal.raise_signal(signum)  # the program's own handler
    elif done:
        raise Interrupted(f"interrupted; {' and '.join(done)} {'was' if len(done) == 1 else 'were'} written whole "
                          "before the stop")
    else:
        raise KeyboardInterrupt


def settle(directory: str) -> None:
    """Make every file under ``directory`` durable (fsync) and readable as the umask allows
    (safetensors writes its files owner-only)."""
    mask = os.umask(0)
    os.umask(mask)
    for root, _, files in os.walk(directory):
        for f in files:
            path = os.path.join(root, f)
            os.chmod(path, 0o666 & ~mask)
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(root)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def publish(tmp: str, out: str) -> None:
    """``tmp`` becomes ``out``: one rename when ``out`` is new, one exchange when it exists (the old
    content is then removed from ``tmp``'s name), or, without exchange, two renames."""
    if not os.path.exists(out):
        os.rename(tmp, out)
    elif _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        parent, name = os.path.split(out)
        old = os.path.join(parent, f".{name}{_OLD}{uuid.uuid4().hex[:12]}")
        os.rename(out, old)
        os.rename(tmp, out)  # a kill just before this line: ``recover`` publishes ``tmp``
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(os.path.dirname(out))


def recover(out: str) -> None:
    """Finish a publish a kill interrupted between its two renames: when ``out`` is missing, the newest
    complete (marked) temporary write of it becomes ``out``, else the copy it was replacing does."""
    if os.path.exists(out):
        return
    parent, name = os.path.split(os.path.abspath(out))
    if not os.path.isdir(parent):
        return
    siblings = [os.path.join(parent, s) for s in os.listdir(parent) if s.startswith(f".{name}.")]
    done = [s for s in siblings if s.startswith(os.path.join(parent, f".{name}{_TMP}"))
            and os.path.isfile(os.path.join(s, MARKER))]
    old = [s for s in siblings if s.startswith(os.path.join(parent, f".{name}{_OLD}"))]
    for candidates in (done, old):
        if candidates:
            os.rename(max(candidates, key=os.path.getmtime), out)
            return


@contextlib.contextmanager
def staged(path: str) -> Iterator[str]:
    """A temporary name beside ``path`` to write to: flushed to disk and renamed over ``path`` when the block
    ends, removed if it fails. Never a half-written file, and two writers never share a temporary file (the
    name keeps ``path``'s extension, so writers that infer a format from it still do)."""
    stem, ext = os.path.splitext(path)
    tmp = f"{stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{ext}"
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`staged`."""
    with staged(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path: str, obj: Any) -> None:
    """Strict JSON: a NaN or an infinity is a bug to report, not a value other tools cannot read."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, default=json_default, allow_nan=False)
    except ValueError as exc:
        raise CheckpointError(f"refusing to write {path}: {exc} (a non-finite number)") from None
    write_text(path, text + "\n")


def json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as fh:
            obj = json.load(fh, parse_constant=_no_constant)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is this a compress run or model directory?") from None
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, bad UTF-8, an int of > 4300 digits
        raise CheckpointError(f"{path} is not valid JSON ({first_line(exc)}); the artifact is corrupt") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(obj, dict):  # every artifact file is an object; callers index it by key
        raise CheckpointError(f"{path} is not a JSON object; the artifact is corrupt")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
