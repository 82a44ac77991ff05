"""What produced an artifact: package, torch and Python versions, the number of processes, the source
commit when run from a git checkout, and the command line when run from the CLI."""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import shlex
import subprocess
from typing import Any, Dict, Iterator, Optional, Sequence

import torch

from compress.runtime import distributed

_command: Optional[str] = None  # the command line running now; None when called from Python


@contextlib.contextmanager
def invoked_as(argv: Sequence[str]) -> Iterator[None]:
    """Within, artifacts record ``argv`` (the CLI's command line, shell-quoted) as the command that
    produced them, so a model card says how to make it again; outside, they say "Python API"."""
    global _command
    previous, _command = _command, shlex.join(argv)
    try:
        yield
    finally:
        _command = previous


def command() -> Optional[str]:
    """The command line of the running CLI command (``compress export runs/x --out models/x``), or None."""
    return _command


@functools.lru_cache(maxsize=1)
def source_commit() -> Optional[str]:
    """The git commit the package was imported from, with "+dirty" when tracked files differ from it;
    None for an installed copy (a checkout only counts when the package sits at its top level)."""
    import compress

    root = os.path.dirname(os.path.dirname(os.path.abspath(compress.__file__)))

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10)
        if out.returncode:
            raise OSError(out.stderr)
        return out.stdout.strip()

    try:
        if os.path.realpath(git("rev-parse", "--show-toplevel")) != os.path.realpath(root):
            return None
        return git("rev-parse", "--short=12", "HEAD") + ("+dirty" if git("status", "--porcelain", "-uno") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> Dict[str, Any]:
    """What produced an artifact: package, torch and Python versions, the source commit when run from a
    git checkout, and the number of processes."""
    import compress

    out = {"compress": compress.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "processes": distributed.world_size()}
    commit = source_commit()
    if commit is not None:
        out["commit"] = commit
    return out
