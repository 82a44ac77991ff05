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
from typing import NoReturn


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher setting its environment) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


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
