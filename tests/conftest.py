"""Shared fixtures: an isolated cache, the real datasets in ../shared/data, and tiny synthetic data."""
from __future__ import annotations

import collections
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from clihelp import root_logging_kept, tiny_artifacts

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Point the processed-data cache at a throwaway directory before any test imports compress, so
    the suite never reads or writes ~/.cache (and never reuses an entry from an earlier run)."""
    if REPO.as_posix() not in sys.path:
        sys.path.insert(0, REPO.as_posix())  # `from cli import app` without an installed package
    config._compress_cache = tempfile.TemporaryDirectory(prefix="compress-test-cache-")
    os.environ["COMPRESS_CACHE_DIR"] = config._compress_cache.name
    # Test models are tiny: one thread is faster than two for them, and never oversubscribes a shared
    # machine (OpenMP threads spinning against another busy process slow small ops down tenfold).
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    # Ctrl-C as in a terminal: a suite started in the background by a non-interactive shell inherits SIGINT
    # ignored, and so would every command a test runs, so the tests of what a stop does would see none.
    # A handler (not SIG_IGN) is reset to the default at exec: each child takes Ctrl-C as Python's default.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import fakegpu

    if fakegpu.available():  # before any backward pass: autograd learns the devices at its first one
        fakegpu.install()


def probe_counts() -> collections.Counter:
    """The probe harness's counts of this process (tests/test_probes.py), empty when it did not run here."""
    probes = sys.modules.get("test_probes")
    return probes.SUMMARY if probes is not None else collections.Counter()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands its probe counts to the controller, which prints the summary."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["probes"] = json.dumps(probe_counts())


WORKER_PROBES: collections.Counter = collections.Counter()  # summed over pytest-xdist workers


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    WORKER_PROBES.update(json.loads(getattr(node, "workeroutput", {}).get("probes", "{}")))


def pytest_terminal_summary(terminalreporter) -> None:
    """The probe harness's count (tests/test_probes.py), when it ran."""
    s = probe_counts() + WORKER_PROBES
    if s["probes"]:
        terminalreporter.write_line(
            f"probe harness: {s['probes']} bad inputs, {s['exit 2']} ended in one line and exit code 2, "
            f"{s['exit 0']} ran as valid input, {s['tracebacks']} tracebacks, {s['hangs']} hangs "
            f"({s['seconds']:.0f} s in process)")


def pytest_unconfigure(config: pytest.Config) -> None:
    cache = getattr(config, "_compress_cache", None)
    if cache is not None:
        cache.cleanup()


@pytest.fixture
def shared_data() -> Path:
    """The read-only real datasets; tests that need them skip where they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not available at {SHARED_DATA}")
    return SHARED_DATA


def synthetic_rows(n_users: int = 40, n_items: int = 30, min_len: int = 6, max_len: int = 14,
                   seed: int = 0) -> list:
    """(user, item, timestamp) rows with some sequential signal: each user walks item ids upward."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        length = int(rng.integers(min_len, max_len + 1))
        start = int(rng.integers(1, n_items + 1))
        t0 = 1_000_000 + int(rng.integers(0, 10_000))
        for j in range(length):
            item = (start + j + int(rng.integers(0, 2)) - 1) % n_items + 1
            rows.append((u, item, t0 + 60 * j))
    rng.shuffle(rows)  # file order is not time order: the loader must sort
    return rows


def write_tiny(path: Path) -> Path:
    """A small headered TSV of (user_id, item_id, timestamp) rows: 40 users, <= 30 items."""
    lines = ["user_id\titem_id\ttimestamp"] + [f"u{u}\ti{i}\t{t}" for u, i, t in synthetic_rows()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tiny_interactions(tmp_path: Path) -> Path:
    """The tiny TSV, alone in this test's own directory."""
    return write_tiny(tmp_path / "tiny.tsv")


@pytest.fixture(scope="session")
def tiny_data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny TSV, shared by every test of the session (never modify it)."""
    return write_tiny(tmp_path_factory.mktemp("tiny-data") / "tiny.tsv")


@pytest.fixture
def subprocess_env() -> dict:
    """Environment for `python -m compress` / `python -c` children: the same cache, the repo importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO.as_posix(), env.get("PYTHONPATH")) if p)
    env.setdefault("COLUMNS", "200")
    return env


@pytest.fixture(autouse=True)
def restore_logging():
    """The CLI points the root logger at the runner's stderr; don't leave it pointing at a closed stream."""
    with root_logging_kept():
        yield


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """The tiny search RUN_DIR (with retrained/), its exported MODEL_DIR and a dense baseline RUN_DIR."""
    return tiny_artifacts(tmp_path_factory)
