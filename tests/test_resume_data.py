"""What a resume starts from. A resumed run reads the data it started on: its path is recorded
absolute (a resume from another working directory once read whatever file had the same relative name
there) and a digest of what it learns from is checked, so data rewritten since the interruption is
refused instead of trained on. A stage killed before its first checkpoint starts over."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from clihelp import invoke
from conftest import synthetic_rows, write_tiny
from crash import Crash, CrashAt

import compress
from compress.app.jobs import dnsrec_run, search_run, train_run
from compress.app.recipes import resolve_options

TINY = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"


def interrupted(command: str, tmp_path: Path, monkeypatch) -> tuple:
    """(options given with a relative data path, RUN_DIR) of a run crashed at its third step."""
    write_tiny(tmp_path / "d.tsv")
    monkeypatch.chdir(tmp_path)
    opts = resolve_options(command, str(TINY), {"data": "d.tsv", "epochs": 2, "search_epochs": 2,
                                                "batch_size": 32, "search_batch_size": 32, "checkpoint_every": 1})
    run = tmp_path / "run"
    with pytest.raises(Crash):
        (train_run if command == "train" else search_run)(opts, str(run), reporter=CrashAt(3))
    meta = json.loads((tmp_path / "run.partial" / "run.json").read_text())
    assert meta["settings"]["data"] == str(tmp_path / "d.tsv") and len(meta["data_digest"]) == 16
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return opts, run


@pytest.mark.parametrize("command", ["train", "search"])
def test_a_resume_refuses_data_rewritten_since_and_reads_the_same_file_from_elsewhere(tmp_path, monkeypatch,
                                                                                      command):
    opts, run = interrupted(command, tmp_path, monkeypatch)
    job = train_run if command == "train" else search_run
    original = (tmp_path / "d.tsv").read_text()
    rows = "".join(f"u{u}\ti{i}\t{t}\n" for u, i, t in synthetic_rows(seed=1))
    (tmp_path / "d.tsv").write_text("user_id\titem_id\ttimestamp\n" + rows)
    (tmp_path / "elsewhere" / "d.tsv").write_text(original)  # the same name in the new working directory
    with pytest.raises(compress.CheckpointError, match="changed since it was interrupted.*restore the data"):
        job(opts, str(run), resume=True)
    (tmp_path / "d.tsv").write_text(original)
    job(opts, str(run), resume=True)
    assert run.exists() and not (tmp_path / "run.partial").exists()


def test_a_checkpoint_without_a_digest_still_resumes(tmp_path, monkeypatch):
    """Runs interrupted before digests were recorded resume as before."""
    opts, run = interrupted("train", tmp_path, monkeypatch)
    meta_file = tmp_path / "run.partial" / "run.json"
    meta = json.loads(meta_file.read_text())
    del meta["data_digest"]
    meta_file.write_text(json.dumps(meta))
    train_run(opts, str(run), resume=True)
    assert run.exists()


def test_a_retraining_killed_before_its_first_checkpoint_starts_over_on_resume(tmp_path, artifacts):
    """A SIGKILL early in the retraining leaves retrained.partial/ holding only the dead process's lock:
    `search --resume` retrains (it said "nothing to resume" once, then worked when run again)."""

    run = tmp_path / "search"
    shutil.copytree(artifacts["search"], run)
    shutil.rmtree(run / "retrained")
    partial = tmp_path / "search" / "retrained.partial"
    partial.mkdir()
    (partial / "lock").write_text(json.dumps({"pid": 2 ** 22 + 1, "host": socket.gethostname(), "since": "-"}))
    result = dnsrec_run(resolve_options("search", None, {}), str(run), resume=True, retrain={"epochs": 1})
    assert result["retrain"]["best_epoch"] == 1 and (run / "retrained").is_dir() and not partial.exists()


def test_a_run_killed_between_its_publish_and_its_cleanup_is_complete(tmp_path, monkeypatch):
    """A SIGKILL after the output was published but before its checkpoint was removed left both, and
    `--resume` said the output "already exists": a checkpoint older than the output is a finished run's
    leftover and goes; one newer (a run started over the output with --overwrite) is resumed."""
    opts, run = interrupted("train", tmp_path, monkeypatch)
    partial = tmp_path / "run.partial"
    kept = tmp_path / "kept"
    shutil.copytree(partial, kept)
    train_run(opts, str(run), resume=True)  # completes: run/ published, run.partial/ removed
    shutil.copytree(kept, partial)
    state = partial / "checkpoint" / "state.json"
    os.utime(state, (os.path.getmtime(run / ".compress") - 60,) * 2)  # the checkpoint predates the publish
    with pytest.raises(compress.CheckpointError, match=f"nothing to resume: {run} is complete"):
        train_run(opts, str(run), resume=True)
    assert not partial.exists() and run.exists()
    shutil.copytree(kept, partial)
    os.utime(state, (os.path.getmtime(run / ".compress") + 60,) * 2)  # a newer run, started over run/
    with pytest.raises(compress.ConfigError, match="already exists"):  # resumed only with --overwrite, as today
        train_run(opts, str(run), resume=True)
    assert partial.exists()


def test_a_resumed_search_runs_the_stage_it_was_started_with(tmp_path, monkeypatch):
    """`compress search --stage search`, interrupted, then `compress search --resume RUN`: the resume
    ran the default stage, all, and retrained the decision nobody had asked to retrain."""
    _, run = interrupted("search", tmp_path, monkeypatch)
    assert json.loads((tmp_path / "run.partial" / "run.json").read_text())["stage"] == "search"
    done = invoke("search", "--resume", str(run))
    assert done.exit_code == 0, done.output
    assert (run / "search_card.json").exists() and not (run / "retrained").exists()


def test_a_stop_between_the_search_and_its_retraining_says_what_is_left(tmp_path, monkeypatch):
    """A Ctrl-C as the search published said "the run had completed", though the retraining had not run."""
    from compress.app import jobs
    from compress.errors import Interrupted

    run = tmp_path / "run"

    def searched_then_stopped(opts, out, *args):
        run.mkdir()
        (run / "search_card.json").write_text("{}")
        raise Interrupted(f"interrupted; the run had completed: {out} was written whole before the stop")

    monkeypatch.setattr(jobs, "search_run", searched_then_stopped)
    with pytest.raises(Interrupted, match="interrupted after the search: .* holds it whole; `resume` retrains"):
        dnsrec_run(resolve_options("search", None, {}), str(run))
