"""One writer per run: a lock file naming the process that writes a run directory.

Two runs on one output would share its checkpoint (the resumed run mixing one's options with the
other's weights) and the one finishing second would replace the first's result. The lock is
created exclusively; a lock left by a process that no longer runs (on this host) is reported and
taken over, one held by a live process is an error naming it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Optional

from compress.errors import ConfigError


class RunLock:
    """``with RunLock(path):`` holds ``path`` (a file) for this process; on exit it is removed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.note: Optional[str] = None  # what taking the lock had to say (a stale lock taken over)
        self.held = False

    def __enter__(self) -> "RunLock":
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise ConfigError(f"cannot take the lock {self.path}; another run is starting on the same output")

    def _take_over_if_stale(self) -> None:
        try:
            with open(self.path) as fh:
                owner = json.load(fh)
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            owner, pid, host = {}, -1, socket.gethostname()  # unreadable: a writer killed mid-write
        if host == socket.gethostname() and not _alive(pid):
            self.note = f"removed the stale lock of process {pid}, which no longer runs"
            os.remove(self.path)
            return
        raise ConfigError(f"{os.path.dirname(self.path)} is being written by process {pid} on {host} (since "
                          f"{owner.get('since', '?')}); wait for it to finish or stop it, or choose another `out`")

    def __exit__(self, *exc) -> None:
        if self.held:
            try:
                os.remove(self.path)
            except OSError:
                pass
            self.held = False


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
