"""The probe harness: hundreds of bad inputs, each run as a user would run it, each required to end
in one clear line and exit code 2 (or, for odd but valid input, in success): no traceback, no hang,
no partial state left after a failure, no file touched outside the output it names.

Most probes run the command line in process (typer's CliRunner, under a time cap); a handful run
as real processes, for signals, memory caps, concurrent runs and full or read-only disks. The
count of probes and outcomes is printed at the end of the test session.
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import pytest
from clihelp import REPO, error_line
from probes import Probe, all_probes
from typer.testing import CliRunner

from cli import app

SUMMARY: collections.Counter = collections.Counter()
PROBES = all_probes()
CAP_SECONDS = 60  # a probe that takes longer has hung


@pytest.fixture(scope="module")
def sources(artifacts, tiny_data_file) -> Dict[str, Path]:
    return {"model": artifacts["model"], "run": artifacts["search"], "baseline": artifacts["baseline"],
            "data": tiny_data_file}


def paths_for(probe: Probe, sources: Dict[str, Path], tmp_path: Path) -> Dict[str, str]:
    """The probe's own copies of what it names, and its files."""
    paths = {"tmp": str(tmp_path), "data": str(sources["data"]), "runs": str(tmp_path / "runs")}
    text = " ".join(probe.argv)
    for key in ("model", "run", "baseline"):
        if "{" + key + "}" in text or (key == "run" and "{runs}" in text):
            target = tmp_path / "runs" / key
            shutil.copytree(sources[key], target)
            paths[key] = str(target)
    for rel, content in probe.files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(content)
    if probe.prepare:
        probe.prepare(paths)
    return paths


def snapshot(root: Path, skip: set) -> Dict[str, tuple]:
    """path -> (size, mtime) of every file under ``root`` but the ``skip`` paths (the output)."""
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for f in files:
            p = os.path.join(dirpath, f)
            if p not in skip:
                st = os.stat(p)
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


class Hung(Exception):
    pass


def _alarm(signum, frame):
    raise Hung


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe(probe: Probe, sources, tmp_path):
    paths = paths_for(probe, sources, tmp_path)
    argv = [a.format(**paths) for a in probe.argv]
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    outputs = {os.path.abspath(out), os.path.abspath(out) + ".partial"} if out else set()
    before = snapshot(tmp_path, outputs)
    data_before = snapshot(Path(paths["data"]).parent, set())
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CAP_SECONDS)
    started = time.perf_counter()
    try:
        result = CliRunner().invoke(app, argv)
    except Hung:
        SUMMARY["hangs"] += 1
        pytest.fail(f"{probe.name}: no end after {CAP_SECONDS} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    SUMMARY["probes"] += 1
    SUMMARY["seconds"] += time.perf_counter() - started
    text = result.stdout + result.stderr
    if "Traceback" in text or (result.exception is not None and not isinstance(result.exception, SystemExit)):
        SUMMARY["tracebacks"] += 1
        pytest.fail(f"{probe.name}: {result.exception!r}\n{text[-2000:]}")
    if probe.expect == "error":
        line = error_line(result)  # exit 2, one `error:` line ending stderr
        assert probe.words in line, (probe.name, line)
        assert "\x1b" not in line and "\x07" not in line  # no terminal control characters from data
        SUMMARY["exit 2"] += 1
        leftovers = [p for p in (out, f"{out}.partial") if p and os.path.exists(p) and os.path.abspath(p) not in
                     {os.path.abspath(v) for v in paths.values()} and p not in (".", "/")]
        assert not [p for p in leftovers if not os.path.isfile(p)] or probe.files, (probe.name, leftovers)
    else:
        assert result.exit_code == 0, (probe.name, result.stderr[-2000:])
        assert "\x1b]" not in result.stdout and "\x07" not in result.stdout
        SUMMARY["exit 0"] += 1
    hidden = [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]
    assert not hidden, (probe.name, hidden)  # no half-written directory left behind
    assert snapshot(tmp_path, outputs) == before, probe.name  # nothing touched but the output
    assert snapshot(Path(paths["data"]).parent, set()) == data_before, probe.name


def test_the_harness_is_large_enough():
    assert len(PROBES) >= 300, len(PROBES)
    assert len({p.name for p in PROBES}) == len(PROBES)  # every probe has its own name


# ---------------------------------------------------------------- real processes


def cli(*args) -> list:
    return [sys.executable, "-m", "compress", *map(str, args)]


def run(args, env, timeout=120, **kw) -> subprocess.CompletedProcess:
    SUMMARY["probes"] += 1
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    SUMMARY[f"exit {done.returncode}"] += 1
    return done


def _memory_cap(gigabytes: float):
    import resource

    def cap():
        limit = int(gigabytes * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return cap


def test_long_ids_cost_their_bytes_under_a_memory_cap(tmp_path, subprocess_env):
    """One 200,000-character id among a few hundred rows once cost 2.7 GB (fixed-width unicode arrays)."""
    rows = [f"u{u}\ti{(u + j) % 9}\t{j}" for u in range(40) for j in range(5)] + ["u1\t" + "x" * 200_000 + "\t9"]
    data = tmp_path / "d.tsv"
    data.write_text("user_id\titem_id\ttimestamp\n" + "\n".join(rows) + "\n")
    done = run(cli("train", "--data", data, "--epochs", "1", "--hidden", "8", "--inner", "16", "--heads", "1",
                   "--layers", "1", "--seq-len", "5", "--device", "cpu", "--out", tmp_path / "out", "--json"),
               subprocess_env, preexec_fn=_memory_cap(2.5))
    assert done.returncode == 0, done.stderr[-2000:]


def test_dev_zero_ends_at_once(subprocess_env, tmp_path):
    started = time.perf_counter()
    done = run(cli("train", "--data", "/dev/zero", "--out", tmp_path / "o"), subprocess_env, timeout=60,
               preexec_fn=_memory_cap(2.5))
    assert done.returncode == 2 and "regular file" in done.stderr and time.perf_counter() - started < 60


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path, subprocess_env, tiny_data_file):
    out = tmp_path / "run"
    # the first run must outlast the second's start (seconds of imports): thousands of epochs, killed below
    args = cli("train", "--data", tiny_data_file, "--epochs", "5000", "--patience", "5000", "--hidden", "16",
               "--inner", "32", "--heads", "1", "--layers", "1", "--seq-len", "10", "--batch-size", "8",
               "--device", "cpu", "--out", out)
    first = subprocess.Popen(args, env=subprocess_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        lock = Path(str(out) + ".partial") / "lock"
        deadline = time.time() + 120
        while not lock.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert lock.exists(), "the first run never took its lock"
        second = run(args, subprocess_env)
        assert second.returncode == 2 and "being written by process" in second.stderr
        assert json.loads(lock.read_text())["pid"] == first.pid  # the first run's state is untouched
    finally:
        first.kill()
        first.wait()
    short = [a if a != "5000" else "1" for a in args]  # one epoch, patience 1
    again = run(short + ["--overwrite"], subprocess_env)  # the killed run's lock is stale: taken over
    assert again.returncode == 0, again.stderr[-2000:]
    assert "stale lock" in again.stderr


def test_sigterm_checkpoints_and_exits_130_then_resumes(tmp_path, subprocess_env, tiny_data_file):
    out = tmp_path / "run"
    args = cli("train", "--data", tiny_data_file, "--epochs", "40", "--patience", "40", "--hidden", "16",
               "--inner", "32", "--heads", "1", "--layers", "1", "--seq-len", "10", "--batch-size", "8",
               "--device", "cpu", "--out", out)
    proc = subprocess.Popen(args, env=subprocess_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    state = Path(str(out) + ".partial") / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    SUMMARY["probes"] += 1
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    resumed = run(cli("train", "--resume", out, "--json"), subprocess_env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not Path(str(out) + ".partial").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 320 KB tmpfs (root and mount rights needed; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_ends_in_one_line_and_leaves_no_half_files(small_disk, subprocess_env, tiny_data_file):
    out = small_disk / "run"
    done = run(cli("train", "--data", tiny_data_file, "--epochs", "2", "--hidden", "64", "--inner", "256",
                   "--heads", "1", "--layers", "2", "--seq-len", "10", "--device", "cpu", "--out", out),
               subprocess_env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error:")
    assert not [p for p in os.listdir(small_disk) if ".tmp" in p]


def test_a_read_only_output_is_refused_before_any_work(small_disk, subprocess_env, tiny_data_file):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    started = time.perf_counter()
    done = run(cli("train", "--data", tiny_data_file, "--out", small_disk / "run"), subprocess_env)
    assert done.returncode == 2 and "Read-only" in done.stderr and time.perf_counter() - started < 60
