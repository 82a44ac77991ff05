"""Publishing an output: `overwrite` never deletes what the user put into a directory compress wrote, and a
SIGINT or SIGTERM at any moment of a publish leaves either the whole output (the process says so) or none
of it with the checkpoint to resume from (the process says that), never both, never a traceback."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import error_line, invoke, listing

import compress
from compress.engine.checkpoint import Checkpointer, partial_dir
from compress.errors import Interrupted
from compress.files import atomic_dir, check_out_dir
from compress.layout import ALPHA_BETA_PNG, CANDIDATES_PNG, MARKER, RETRAINED

TRAIN = ["--epochs", "1", "--hidden", "16", "--inner", "32", "--layers", "1", "--heads", "1", "--seq-len", "10",
         "--batch-size", "64", "--device", "cpu"]


def written(out: Path, text: str = "new") -> None:
    with atomic_dir(str(out), overwrite=True) as tmp:
        Path(tmp, "a.txt").write_text(text)
        os.mkdir(os.path.join(tmp, "sub"))


def test_overwrite_refuses_a_directory_holding_what_the_user_added(tmp_path):
    out = tmp_path / "out"
    written(out, "old")
    assert json.loads((out / MARKER).read_text()) == {"written_by": "compress", "entries": ["a.txt", "sub"]}
    (out / "NOTES.txt").write_text("mine")
    (out / "mydata").mkdir()
    with pytest.raises(compress.ConfigError, match=r"NOTES\.txt, mydata\).*move it out"):
        written(out)
    assert (out / "NOTES.txt").read_text() == "mine" and (out / "mydata").is_dir()
    assert (out / "a.txt").read_text() == "old"


def test_overwrite_replaces_a_directory_left_as_compress_wrote_it(tmp_path):
    out = tmp_path / "out"
    written(out, "old")
    written(out, "new")
    assert (out / "a.txt").read_text() == "new"
    assert not [n for n in os.listdir(tmp_path) if n != "out"]  # no temporary copy left beside it


def test_a_marker_from_before_markers_listed_entries_is_replaced_as_before(tmp_path):
    out = tmp_path / "out"
    written(out, "old")
    (out / MARKER).write_text('{"written_by": "compress"}\n')
    (out / "extra").write_text("x")
    written(out, "new")
    assert sorted(listing(out)) == ["a.txt", "sub"]


def test_a_file_added_while_the_output_is_written_is_not_deleted(tmp_path):
    out = tmp_path / "out"
    written(out, "old")
    with pytest.raises(compress.ConfigError, match="NOTES.txt"):
        with atomic_dir(str(out), overwrite=True) as tmp:
            Path(tmp, "a.txt").write_text("new")
            (out / "NOTES.txt").write_text("mine")  # after the check at the start, before the publish
    assert (out / "NOTES.txt").read_text() == "mine" and (out / "a.txt").read_text() == "old"


def test_export_overwrite_keeps_the_users_files(artifacts, tmp_path):
    out = tmp_path / "mo"
    assert invoke("export", artifacts["search"], "--out", out).exit_code == 0
    (out / "NOTES.txt").write_text("notes")
    line = error_line(invoke("export", artifacts["search"], "--out", out, "--overwrite"))
    assert "NOTES.txt" in line and "--overwrite would delete it" in line
    assert (out / "NOTES.txt").read_text() == "notes"
    (out / "NOTES.txt").unlink()
    assert invoke("export", artifacts["search"], "--out", out, "--overwrite").exit_code == 0


def test_a_search_run_dir_with_its_retraining_and_plots_is_compress_own(artifacts, tmp_path):
    """retrained/ is published into a search RUN_DIR after it, and `inspect --plot` writes its PNGs there:
    both are compress's own, what a user adds there (or into retrained/) is not."""
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    shutil.copytree(artifacts["search"], run)
    assert invoke("inspect", run, "--plot").exit_code == 0
    assert (run / ALPHA_BETA_PNG).exists() and (run / CANDIDATES_PNG).exists() and (run / RETRAINED).is_dir()
    (run / f"{RETRAINED}.partial").mkdir()  # a retraining in progress, or interrupted
    check_out_dir(str(run), overwrite=True)
    (run / RETRAINED / "NOTES.txt").write_text("mine")
    with pytest.raises(compress.ConfigError, match="retrained/NOTES.txt"):
        check_out_dir(str(run), overwrite=True)
    (run / RETRAINED / "NOTES.txt").unlink()
    with atomic_dir(str(run), overwrite=True) as tmp:
        Path(tmp, "a.txt").write_text("new")
    assert listing(run) == ["a.txt"]


# --- signals -----------------------------------------------------------------------------------------------

# Runs the command line with ``compress.files.publish`` sending SIG to the process itself before (or after,
# or both) publishing the output NAME, or with the final evaluation of a run sending it ("eval").
DRIVER = """
import os, signal, sys
sig, when, name = getattr(signal, sys.argv[1]), sys.argv[2], sys.argv[3]
import compress.files as files
real = files.publish
def publish(tmp, out):
    hit = os.path.basename(out) == name
    if hit and when in ("before", "twice"):
        os.kill(os.getpid(), sig)
    real(tmp, out)
    if hit and when in ("after", "twice"):
        os.kill(os.getpid(), sig)
files.publish = publish
if when == "eval":
    import compress.app.jobs as jobs
    evaluate = jobs.split_metrics
    def split_metrics(*args, **kwargs):
        os.kill(os.getpid(), sig)
        return evaluate(*args, **kwargs)
    jobs.split_metrics = split_metrics
sys.argv = ["compress", *sys.argv[4:]]
from cli import main
main()
"""


def signalled(env: dict, sig: str, when: str, name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER, sig, when, name, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def leftovers(parent: Path, name: str) -> list:
    return [n for n in os.listdir(parent) if n.startswith(f".{name}") or n == f"{name}.partial"]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("when", ["before", "after", "twice"])
def test_a_stop_during_an_export_leaves_it_whole_and_says_so(artifacts, tmp_path, subprocess_env, sig, when):
    out = tmp_path / "mo"
    done = signalled(subprocess_env, sig, when, "mo", "export", artifacts["model"], "--out", out)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and f"{out} was written whole" in done.stderr.strip().splitlines()[-1]
    assert sorted(listing(out)) == ["README.md", "card.json", "config.json", "items.json", "model.safetensors"]
    assert not leftovers(tmp_path, "mo")


@pytest.mark.parametrize("sig,when", [("SIGINT", "before"), ("SIGINT", "twice"), ("SIGTERM", "after"),
                                      ("SIGTERM", "eval")])
def test_a_stop_at_the_end_of_a_run_leaves_the_run_whole_and_says_so(tiny_data_file, tmp_path, subprocess_env,
                                                                     sig, when):
    """A stop in the final evaluation or publish of a run: the run completes, its checkpoint goes with
    the publish, and the message says the output is complete (it once said that nothing was written,
    or left the output beside a checkpoint, or was killed by SIGTERM leaving RUN.partial/ and its lock)."""
    out = tmp_path / "run"
    done = signalled(subprocess_env, sig, when, "run", "train", "--data", tiny_data_file, *TRAIN, "--out", out)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert f"the run had completed: {out} was written whole" in done.stderr.strip().splitlines()[-1]
    assert (out / "model.safetensors").exists() and not leftovers(tmp_path, "run")


# The API: a checkpoint is written, then under ``with ckpt`` the output is published within
# ``ckpt.publishing()`` with SIG sent before the publish (twice: also after it). Prints the outcome.
API = """
import os, signal, sys
import torch
import compress.files as files
from compress.engine.checkpoint import Checkpointer, partial_dir
from compress.errors import Interrupted
from compress.errors import Interrupted
sig, twice, out = getattr(signal, sys.argv[1]), sys.argv[2] == "twice", sys.argv[3]
ckpt = Checkpointer(partial_dir(out))
ckpt.meta = {"kind": "train", "settings": {}}
ckpt.write({"epoch": 1, "x": torch.ones(2)})
real = files.publish
def publish(tmp, dest):
    os.kill(os.getpid(), sig)
    real(tmp, dest)
    if twice:
        os.kill(os.getpid(), sig)
files.publish = publish
try:
    with ckpt:
        ckpt.write({"epoch": 2, "x": torch.ones(2)})  # a stop during a checkpoint's publish: recorded
        print("stop requested:", ckpt.stop_requested)
        with ckpt.publishing(), files.atomic_dir(out) as tmp:
            open(os.path.join(tmp, "a.txt"), "w").write("done")
    print("not stopped")
except Interrupted as exc:
    print(exc)
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("twice", ["once", "twice"])
def test_publishing_removes_the_checkpoint_before_a_stop_is_acted_on(tmp_path, subprocess_env, sig, twice):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", API, sig, twice, str(out)], env=subprocess_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.splitlines() == ["stop requested: True",
                                        f"interrupted; the run had completed: {out} was written whole before the stop"]
    assert (out / "a.txt").read_text() == "done" and not os.path.exists(partial_dir(str(out)))
    assert not leftovers(tmp_path, "run")


def test_a_stop_after_the_last_step_is_not_lost(tmp_path):
    """A stop the loop could not act on ends the ``with`` block in ``Interrupted`` naming what is left."""
    ckpt = Checkpointer(str(tmp_path / "run.partial"))
    ckpt.meta = {"kind": "train", "settings": {}}
    ckpt.write({"epoch": 1})
    with pytest.raises(Interrupted, match="checkpoint kept in .*run.partial; continue with `resume`"):
        with ckpt:
            ckpt.stop_requested = True  # what the handler does
    with pytest.raises(Interrupted, match="nothing of this run was written"):
        with Checkpointer(str(tmp_path / "other.partial")) as fresh:
            fresh.stop_requested = True


# Ends the way the command line ends, with a SIGINT arriving in the interpreter's teardown.
TEARDOWN = """
import atexit, os, signal, sys, time
sys.argv = ["compress", *sys.argv[1:]]
from cli import main
def late():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
atexit.register(late)
main()
"""


def test_a_stop_after_the_command_ended_changes_nothing(artifacts, tmp_path, subprocess_env):
    """It once printed `Exception ignored in atexit callback` and a KeyboardInterrupt traceback."""
    out = tmp_path / "mo"
    done = subprocess.run([sys.executable, "-c", TEARDOWN, "export", artifacts["model"], "--out", out],
                          env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (out / "model.safetensors").exists()
