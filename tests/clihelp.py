"""Helpers shared by the CLI tests: invoking the app, the one-line error contract, and one tiny
search + retrain + export built once per session."""
from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterator

import pytest
from typer.testing import CliRunner

from cli import app

REPO = Path(__file__).resolve().parents[1]
# One search epoch and one retrain epoch. The 30% FLOPs budget leaves a single feasible candidate
# (hidden 8 of 16, inner 16 of 32, 1 of 2 layers), so the decision is narrower *and* shallower than the
# supernet whatever α and β learn, and the sliced shapes below are known.
SEARCH = ["--recipe", REPO / "recipes" / "tiny.yaml", "--set", "search_epochs=1", "--max-flops", "40%",
          "--device", "cpu"]
DECIDED = {"hidden": 8, "inner": 16, "heads": 1, "layers": 1}
# The dense baseline: the supernet's full size (16/32, 2 layers) with SASRec's softmax attention.
BASELINE = ["--hidden", "16", "--inner", "32", "--layers", "2", "--heads", "2", "--seq-len", "20", "--epochs", "1",
            "--batch-size", "128", "--device", "cpu"]


def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module, so tests call its functions (not on sys.path)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def listing(path) -> list:
    """The entries of a directory compress wrote, its marker file left out."""
    return [n for n in os.listdir(path) if n != ".compress"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The CLI's failure contract: exit code 2, no traceback, one `error: ...` line that ends stderr."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], result.stderr
    return lines[-1]


@contextlib.contextmanager
def root_logging_kept() -> Iterator[None]:
    """The CLI points the root logger at the runner's stderr; don't leave it pointing at a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def tiny_artifacts(factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """``search``: `compress search --stage search` then `compress retrain` (RUN_DIR with retrained/);
    ``model``: its `compress export` MODEL_DIR; ``baseline``: a bigger dense `compress train` RUN_DIR.
    Built once per test run, by the first pytest-xdist worker that asks (under the run's shared base
    temp dir; the others wait on a lock), then reused by every later call. Never modify them."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # gw0, gw1, ... share their parent
    base = root / "tiny-artifacts"
    paths = {"search": base / "search", "model": base / "model", "baseline": base / "baseline"}
    with open(root / "tiny-artifacts.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (base / "done").exists():
            return paths
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir()
        with root_logging_kept():
            for args in (["search", *SEARCH, "--stage", "search", "--out", paths["search"]],
                         ["retrain", paths["search"], "--epochs", "1"],
                         ["export", paths["search"], "--out", paths["model"]],
                         ["train", *BASELINE, "--out", paths["baseline"]]):
                result = invoke(*args)
                assert result.exit_code == 0, (args, result.stderr, result.stdout, result.exception)
        (base / "done").touch()
    return paths


def read(path: Path) -> dict:
    return json.loads(path.read_text())
