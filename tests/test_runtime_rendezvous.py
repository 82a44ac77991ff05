"""Launcher variables left in a shell without torchrun (or peers that never come): the processes' meeting
is bounded by COMPRESS_RENDEZVOUS_SECONDS and ends in a one-line error naming the variables, and Ctrl-C
stops the wait (it used to wait 30 minutes, deaf to SIGINT and SIGTERM)."""
from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from compress.errors import ConfigError
from compress.runtime.distributed import RENDEZVOUS_SECONDS, rendezvous_seconds

ROOT = Path(__file__).resolve().parents[1]
DIST_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "COMPRESS_RENDEZVOUS_SECONDS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftover_env(rank: int, **extra: str) -> dict:
    """This shell's environment with a two-process run's variables left over, and no peer anywhere."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    return {**env, "WORLD_SIZE": "2", "RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "OMP_NUM_THREADS": "1", **extra}


def train_args(tmp_path: Path, data: Path) -> list:
    return [sys.executable, "-m", "compress", "train", "--data", str(data), "--epochs", "1", "--device", "cpu",
            "--out", str(tmp_path / "run")]


@pytest.mark.parametrize("rank", [0, 1])
def test_peers_that_never_come_end_in_a_one_line_error(tmp_path, tiny_data_file, rank):
    started = time.monotonic()
    proc = subprocess.run(train_args(tmp_path, tiny_data_file), capture_output=True, text=True, cwd=ROOT,
                          env=leftover_env(rank, COMPRESS_RENDEZVOUS_SECONDS="2"), timeout=150)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the processes of a distributed run (WORLD_SIZE=2, RANK={rank}) did not meet"), last
    assert "within 2 s" in last and "unset WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT" in last
    assert "torchrun" in last and not (tmp_path / "run").exists()
    assert time.monotonic() - started < 120


def lines_of(stream) -> "queue.Queue[str]":
    """The lines of ``stream`` as they come, read by a helper thread (so waiting for one can time out)."""
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def wait_for(lines: "queue.Queue[str]", text: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if text in lines.get(timeout=0.5):
                return True
        except queue.Empty:
            pass
    return False


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_stops_the_wait_for_peers(tmp_path, tiny_data_file):
    """The wait says what it waits for, and Ctrl-C ends it at once with the usual exit code 130."""
    child = subprocess.Popen(train_args(tmp_path, tiny_data_file), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT, env=leftover_env(0),
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not the runner's
    try:
        lines = lines_of(child.stderr)
        assert wait_for(lines, f"waiting up to {RENDEZVOUS_SECONDS:g} s for the other 1 processes", 120)
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) == 130
        assert wait_for(lines, "interrupted; nothing was written", 5)
    finally:
        child.kill()
        child.wait()


def test_the_rendezvous_wait_is_configurable(monkeypatch):
    monkeypatch.delenv("COMPRESS_RENDEZVOUS_SECONDS", raising=False)
    assert rendezvous_seconds() == RENDEZVOUS_SECONDS <= 600
    monkeypatch.setenv("COMPRESS_RENDEZVOUS_SECONDS", "42.5")
    assert rendezvous_seconds() == 42.5
    for bad in ("0", "-3", "soon", "inf", "nan"):
        monkeypatch.setenv("COMPRESS_RENDEZVOUS_SECONDS", bad)
        with pytest.raises(ConfigError, match="COMPRESS_RENDEZVOUS_SECONDS=.* is not a positive number of seconds"):
            rendezvous_seconds()
