"""What a launcher tells a process, and how a distributed worker ends; without torch, so that the
command line can ask before it imports it.

A worker of a distributed run ends with ``os._exit`` once its work is done and flushed. torch's gloo
backend keeps its worker threads after ``destroy_process_group``; one that frees a finished
collective's tensors while the interpreter finalizes takes the GIL there, and the process aborts
(SIGABRT, "terminate called without an active exception") after the run has completed and written
its outputs. torchrun then reports a failed worker (torch 2.13; counts in benchmarks/README.md,
"Data-parallel scaling").
"""
from __future__ import annotations

import logging
import os
import sys
from typing import NamedTuple, NoReturn, Optional

from compress.errors import ConfigError

ALONE = ("unset WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT to run as one process, or launch with "
         "torchrun, which sets them all")


class Launch(NamedTuple):
    """A launcher's description of this process: its place among ``world`` processes and where they meet."""
    world: int
    rank: int
    local_rank: int
    master_addr: str
    master_port: int


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher setting its environment) started this process as one of
    several. Never raises: the console script asks before any error is turned into a message, so a
    malformed WORLD_SIZE counts as not launched here and ``environment`` reports it."""
    value = os.environ.get("WORLD_SIZE", "").strip()
    return _whole(value) and int(value) > 1


def environment() -> Optional[Launch]:
    """The launcher's variables, checked: None for one process (WORLD_SIZE unset, empty or 1). Checked up
    front because torch reports a missing or malformed one as a traceback from deep in its rendezvous
    (``ValueError: environment variable RANK expected``), and ``int()`` here did the same."""
    world_text = os.environ.get("WORLD_SIZE", "").strip()
    if not world_text:
        return None
    world = _number("WORLD_SIZE", 1)
    rank = _number("RANK", 0) if world > 1 or os.environ.get("RANK", "").strip() else 0
    if rank >= world:
        raise ConfigError(f"RANK={rank} but WORLD_SIZE={world}: a rank must be below the number of processes; {ALONE}")
    if world == 1:
        return None
    local = _number("LOCAL_RANK", 0) if os.environ.get("LOCAL_RANK", "").strip() else 0
    if local >= world:
        raise ConfigError(f"LOCAL_RANK={local} but WORLD_SIZE={world}: a local rank must be below the number of "
                          f"processes; {ALONE}")
    addr = os.environ.get("MASTER_ADDR", "").strip()
    if not addr:
        raise ConfigError(f"WORLD_SIZE={world} but MASTER_ADDR is not set; {ALONE}")
    port = _number("MASTER_PORT", 0)
    if port > 65535:
        raise ConfigError(f"MASTER_PORT={port} is not a TCP port (0 to 65535); {ALONE}")
    return Launch(world, rank, local, addr, port)


def _number(name: str, least: int) -> int:
    """Environment variable ``name`` as a whole number of at least ``least``, or a ConfigError saying so."""
    text = os.environ.get(name, "").strip()
    if not text:
        raise ConfigError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE', '').strip()} but {name} is not set; {ALONE}")
    if not _whole(text) or int(text) < least:
        raise ConfigError(f"{name}={text!r} is not a whole number of at least {least}; {ALONE}")
    return int(text)


def _whole(text: str) -> bool:
    """Digits only (``int()`` would also take signs, underscores and non-ASCII digits)."""
    return text.isascii() and text.isdigit()


def exit_without_teardown(code: int) -> NoReturn:
    """Flush the logs and the standard streams, then end the process with ``code`` at once, skipping
    the interpreter's finalization (see the module docstring)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing left to keep
            pass
    os._exit(code)
