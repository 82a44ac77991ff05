"""One writer per run: a lock file naming the process that writes a run directory.

Two runs on one output would share its checkpoint (the resumed run mixing one's options with the
other's weights) and the one finishing second would replace the first's result. Exactly one process
may hold the lock at any time, even when several start at once:

* the lock file never appears half-written: its content is written to a temporary file first, which
  is then hard-linked into place (an atomic "create if absent"), so nobody reads a fresh lock as an
  unreadable, hence stale, one;
* where ``fcntl`` exists, the holder keeps an exclusive ``flock`` on the file, taken before the file
  appears. The kernel drops it when the holder dies (a SIGKILL, a zombie not yet reaped), so a lock
  without its flock is stale, one with it is live, and no process id has to be guessed about. A stale
  lock is replaced in one step (``os.replace`` of a temporary file that is already locked) by the one
  process that got its flock; the others find the new lock held and are refused;
* without ``fcntl`` (or a filesystem refusing locks), the process id it names decides: a lock of a
  process that no longer runs on this host is renamed aside and removed only if it is still the file
  that was judged stale, so a lock another process created meanwhile is put back rather than deleted.

A lock held by a live process, or naming another host (whose processes cannot be checked from here),
is an error naming it and the file to remove if that process is known to be gone.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Optional, Tuple

from compress.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: the process id in the file decides (see the module docstring)
    fcntl = None  # type: ignore[assignment]

TRIES = 20  # attempts when the lock changes under us (released or replaced between two looks)
YOUNG_SECONDS = 5.0  # without hard links, an unreadable lock younger than this may still be being written


class RunLock:
    """``with RunLock(path):`` holds ``path`` (a file) for this process; on exit it is removed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.note: Optional[str] = None  # what taking the lock had to say (a stale lock taken over)
        self.held = False
        self._fd: Optional[int] = None  # the open lock file: its flock is the lock, where flock exists
        self._mine = b""  # this holder's content (with a unique token): how release knows its own file
        self._flocks = fcntl is not None

    def __enter__(self) -> "RunLock":
        self._mine = _content()
        for _ in range(TRIES):
            fd = self._attempt()
            if fd is not None:
                self._fd, self.held = fd, True
                return self
        raise ConfigError(f"cannot take the lock {self.path}: other runs keep starting on the same output; "
                          f"start one run at a time on it")

    def _attempt(self) -> Optional[int]:
        """One try: the open lock file now ours, or None when the lock changed under us (try again).
        Raises ConfigError when a live run holds it."""
        tmp = f"{self.path}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
        fd = self._prepared(tmp)
        try:
            got = self._create(tmp, fd)
            if got is None and self._flocks:
                got = self._take_over_flocked(tmp, fd)
            elif got is None:
                self._take_over_by_pid()
            if got == fd:
                fd = None  # kept open: it holds the lock
            return got
        finally:
            _remove(tmp)
            if fd is not None:
                os.close(fd)

    def _prepared(self, tmp: str) -> int:
        """A temporary file beside the lock holding this process's complete content, flocked before
        anyone can see it as the lock (a filesystem refusing flock switches to the process-id rules)."""
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            os.write(fd, self._mine)
            if self._flocks and _flock(fd) is None:
                self._flocks = False
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create(self, tmp: str, fd: int) -> Optional[int]:
        """Put our lock in place if there is none: the open file now holding it, or None (one exists).
        A hard link makes the complete (and flocked) file appear at once. A filesystem without hard links
        gets an exclusive create, flocked, then written: an empty lock is briefly visible there."""
        try:
            os.link(tmp, self.path)
            return fd
        except FileExistsError:
            return None
        except OSError:  # no hard links on this filesystem
            pass
        try:
            new = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return None
        if self._flocks and not (_flock(new) and _same_file(new, self.path)):
            os.close(new)  # another process took it over as stale before we locked it: it holds it now
            return None
        os.write(new, self._mine)
        return new

    def _take_over_flocked(self, tmp: str, fd: int) -> Optional[int]:
        """The lock exists: a live holder keeps its flock (refused); without one it is stale, and our
        complete, already flocked temporary file replaces it in one step. None: it changed, try again."""
        try:
            old = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None  # released meanwhile
        try:
            if not _flock(old):
                self._refuse(_owner(_read(old)))
            if not _same_file(old, self.path):
                return None  # its holder removed it (released) between our open and our flock
            pid, host, since = owner = _owner(_read(old))
            if host not in ("?", socket.gethostname()):
                self._refuse(owner)  # flocks may not reach across hosts: its process cannot be checked
            os.replace(tmp, self.path)
        finally:
            os.close(old)
        self.note = _stale_note(pid)
        return fd

    def _take_over_by_pid(self) -> None:
        """Without flock: remove the lock if the process it names no longer runs on this host, by renaming
        it aside and removing it only if it is still the content judged stale; a lock created meanwhile
        is put back. The caller then tries to create the lock again."""
        data = _read_path(self.path)
        if data is None:
            return  # released meanwhile
        pid, host, since = owner = _owner(data)
        if host == "?" and _age(self.path) < YOUNG_SECONDS:
            raise ConfigError(f"cannot take the lock {self.path}; another run is starting on the same output")
        if host not in ("?", socket.gethostname()) or _alive(pid):
            self._refuse(owner)
        aside = f"{self.path}.{uuid.uuid4().hex[:12]}.stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if _read_path(aside) == data:
            self.note = _stale_note(pid)
        else:  # not the file judged stale: another process's new lock, which stays
            _put_back(aside, self.path)
        _remove(aside)

    def _refuse(self, owner: Tuple[int, str, str]) -> None:
        """The lock is held (or cannot be judged): say by whom, and how to go on if that is wrong."""
        pid, host, since = owner
        who = f"process {pid} on {host} (since {since})" if pid > 0 else "another process"
        raise ConfigError(f"{os.path.dirname(self.path)} is being written by {who}; wait for it to finish or stop "
                          f"it, or choose another `out`; if you are sure that process no longer runs, remove "
                          f"{self.path}")

    def __exit__(self, *exc) -> None:
        if not self.held:
            return
        try:
            if _read_path(self.path) == self._mine:  # not a file someone else has put there since
                _remove(self.path)
        except OSError:  # unreadable or not removable now: nothing more to do on the way out
            pass
        finally:
            if self._fd is not None:
                os.close(self._fd)  # after the removal: the flock guards it until the file is gone
            self._fd, self.held = None, False


def _content() -> bytes:
    """What a lock says: who holds it (for messages and for the process-id rules), and a unique token."""
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "token": uuid.uuid4().hex}).encode()


def _owner(data: Optional[bytes]) -> Tuple[int, str, str]:
    """(pid, host, since) of a lock's content; (-1, "?", "?") for an unreadable one (a writer killed
    mid-write, where the lock could not be created whole)."""
    try:
        owner = json.loads(data or b"")
        return int(owner["pid"]), str(owner["host"]), str(owner.get("since", "?"))
    except (ValueError, KeyError, TypeError):
        return -1, "?", "?"


def _stale_note(pid: int) -> str:
    who = f"process {pid}" if pid > 0 else "a process"
    return f"removed the stale lock of {who}, which no longer runs"


def _flock(fd: int) -> Optional[bool]:
    """Lock ``fd`` without waiting: True (ours now), False (a live process holds it), or None where the
    filesystem refuses file locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _same_file(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a released lock is removed, then unlocked)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read(fd: int) -> bytes:
    return os.pread(fd, 1 << 16, 0) if hasattr(os, "pread") else os.read(fd, 1 << 16)


def _read_path(path: str) -> Optional[bytes]:
    """A file's bytes, or None when it is gone."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _age(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return float("inf")


def _put_back(aside: str, path: str) -> None:
    """Restore a lock moved aside by mistake, unless yet another lock took its place meanwhile."""
    try:
        os.link(aside, path)
    except OSError:
        pass


def _remove(path: str) -> None:
    """Remove ``path``; a file already gone is not an error (another process may have removed it)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host. A zombie (killed, not yet reaped by its parent) answers
    ``kill(pid, 0)`` but will never write again: it counts as dead."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    except OSError:  # e.g. a pid beyond what this platform accepts
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Linux: /proc/<pid>/stat's state (after the command name, which may itself hold spaces or ')') is
    Z (zombie) or X (dead). Elsewhere, or when it cannot be read, False."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    state = stat.rsplit(b")", 1)[-1].split()[:1]
    return state in ([b"Z"], [b"X"])
