"""Checkpoint and resume: a run stopped at any step (a crash, SIGKILL, Ctrl-C) and resumed ends
exactly as the uninterrupted run with the same seed; and the errors around resuming."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from clihelp import error_line, invoke
from crash import Crash, CrashAt, StopAt
from synthetic import walking_dataset

import compress
from compress.backbones.objectives import training_data
from compress.engine.checkpoint import Checkpointer, flatten, rng_state, set_rng_state, unflatten
from compress.errors import Interrupted

TINY = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"


@pytest.fixture(scope="module")
def data():
    """300 synthetic users walking 200 items: every step of the resume path, at a tenth of the
    embedded sample's cost (its 3,381-item softmax)."""
    return walking_dataset(n_users=300, n_items=200, max_len=40, seed=1)


def fresh_model(data, backbone: str = "sasrec"):
    torch.manual_seed(0)
    arch = compress.ArchSpec(hidden=16, inner=32, heads=2, layers=2)
    return compress.get_backbone(backbone)(arch, data.n_items, 20)


def history_metrics(history):
    return [(r["epoch"], round(r["loss"], 10), r["valid_ndcg@10"]) for r in history]


def test_flatten_round_trips_optimizer_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors = {}
    back = unflatten(json.loads(json.dumps(flatten(opt.state_dict(), "o", tensors))), tensors)
    fresh = torch.optim.Adam(model.parameters())
    fresh.load_state_dict(back)  # int keys and nested lists survive JSON
    assert all(torch.equal(fresh.state_dict()["state"][0][k], opt.state_dict()["state"][0][k])
               for k in ("exp_avg", "exp_avg_sq"))


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("every", [2, 0])  # mid-epoch checkpoints every 2 steps / only at epoch ends
def test_fit_crashed_and_resumed_equals_uninterrupted(data, tmp_path, backbone, every):
    cfg = compress.TrainConfig(epochs=2, batch_size=128, seed=1)
    whole = fresh_model(data, backbone)
    per_epoch = math.ceil(len(training_data(whole, data.train_sequences())[0]) / cfg.batch_size)
    assert per_epoch >= 4  # room for a crash mid-way through the second epoch
    crash_step = 5 if every else per_epoch + 3  # the second epoch is lost and replayed from its start
    expected = compress.fit(whole, data, cfg, torch.device("cpu"))
    ckpt = Checkpointer(str(tmp_path / "run.partial"), every)
    with pytest.raises(Crash):
        compress.fit(fresh_model(data, backbone), data, cfg, torch.device("cpu"), CrashAt(crash_step), ckpt)
    assert ckpt.exists()
    resumed_model = fresh_model(data, backbone)
    resumed = compress.fit(resumed_model, data, cfg, torch.device("cpu"), None, ckpt)
    assert history_metrics(resumed.history) == history_metrics(expected.history)
    assert all(torch.equal(a, b) for a, b in zip(resumed_model.state_dict().values(), whole.state_dict().values()))


@pytest.mark.parametrize("decide", ["best", "last"])
def test_search_crashed_and_resumed_equals_uninterrupted(data, tmp_path, decide):
    # 8 steps an epoch: the crash is in the second
    cfg = compress.SearchConfig(epochs=2, batch_size=64, seed=1, decide=decide)
    space = compress.SearchSpace((0.0, 0.5), (0.0, 0.5))
    expected = compress.search(compress.wrap(fresh_model(data), space=space), data, cfg, "cpu")
    ckpt = Checkpointer(str(tmp_path / "search.partial"), every=3)
    with pytest.raises(Crash):
        compress.search(compress.wrap(fresh_model(data), space=space), data, cfg, "cpu", CrashAt(10), ckpt)
    sn = compress.wrap(fresh_model(data), space=space)
    resumed = compress.search(sn, data, cfg, "cpu", None, ckpt)
    assert resumed.decision == expected.decision and resumed.best_epoch == expected.best_epoch
    assert resumed.decision_epoch == expected.decision_epoch
    # every recorded figure but times: the epoch's penalty once divided the epoch's sum by the steps after
    # the resume alone (0.69 against 0.32)
    assert [untimed(r) for r in resumed.history] == [untimed(r) for r in expected.history]
    assert "penalty" in resumed.history[-1]
    assert all(torch.equal(a, b) for a, b in zip(sn.state_dict().values(), expected.supernet.state_dict().values()))


@pytest.mark.parametrize("schedule", ["epoch", "step"])
def test_a_search_stopped_at_an_epochs_last_step_records_that_epoch_at_its_tau(data, tmp_path, schedule):
    """A stop at the last step of an epoch left no step after the resume to set τ: that epoch was recorded,
    validated and decided at τ = 1 (against 0.1 uninterrupted), and the supernet saved with it."""
    cfg = compress.SearchConfig(epochs=3, batch_size=64, seed=1, tau_schedule=schedule, tau_min=0.1, tau_rate=0.05)
    space = compress.SearchSpace((0.0, 0.5), (0.0, 0.5))
    expected = compress.search(compress.wrap(fresh_model(data), space=space), data, cfg, "cpu")
    per_epoch = len(compress.nas.search.SearchTask(compress.wrap(fresh_model(data), space=space), data, cfg,
                                                   torch.device("cpu")).batches)
    ckpt = Checkpointer(str(tmp_path / "search.partial"))
    with pytest.raises(Interrupted):
        compress.search(compress.wrap(fresh_model(data), space=space), data, cfg, "cpu",
                        StopAt(ckpt, 2 * per_epoch - 1), ckpt)  # seen at the next step: the last
    sn = compress.wrap(fresh_model(data), space=space)
    resumed = compress.search(sn, data, cfg, "cpu", None, Checkpointer(ckpt.directory))  # a new process's
    assert [r["tau"] for r in resumed.history] == [r["tau"] for r in expected.history]
    assert [untimed(r) for r in resumed.history] == [untimed(r) for r in expected.history]
    assert sn.tau == expected.supernet.tau


def untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if "seconds" not in k and k != "seqs_per_s"}


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def cli(*args) -> list:
    return [sys.executable, "-m", "compress", *map(str, args)]


def card(run: Path) -> dict:
    c = json.loads((run / "search_card.json").read_text())
    return {"decision": c["decision"]["arch"], "valid": [r["valid_ndcg@10"] for r in c["history"]],
            "alpha": [r["alpha"] for r in c["history"]]}


def test_search_killed_with_sigkill_resumes_to_the_same_decision(tmp_path, subprocess_env):
    common = ("search", "--recipe", TINY, "--search-epochs", 2, "--stage", "search", "--json")
    run = tmp_path / "killed"
    proc = subprocess.Popen(cli(*common, "--checkpoint-every", 3, "--out", run), env=subprocess_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(tmp_path / "killed.partial" / "checkpoint" / "state.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not run.exists()  # killed before the run could finish
    resumed = subprocess.run(cli("search", "--resume", run, "--stage", "search", "--json"), env=subprocess_env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = subprocess.run(cli(*common, "--out", tmp_path / "straight"), env=subprocess_env,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert card(run) == card(tmp_path / "straight")
    assert not (tmp_path / "killed.partial").exists()  # removed once the run is complete


def test_ctrl_c_writes_a_checkpoint_and_exits_130(tmp_path, subprocess_env):
    run = tmp_path / "run"
    proc = subprocess.Popen(cli("train", "--recipe", TINY, "--epochs", 30, "--patience", 30, "--checkpoint-every", 2,
                                "--out", run), env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for(tmp_path / "run.partial" / "checkpoint" / "state.json", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert (tmp_path / "run.partial" / "checkpoint" / "state.json").exists() and not run.exists()


def test_resume_errors_are_one_line(tmp_path):
    assert "nothing to resume" in error_line(invoke("train", "--resume", tmp_path / "none"))
    partial = tmp_path / "run.partial"
    ckpt = Checkpointer(str(partial))
    ckpt.meta = {"kind": "train", "settings": {}}
    ckpt.save({"epoch": 1, "batch": 0})
    assert "--resume" in error_line(invoke("train", "--recipe", TINY, "--out", tmp_path / "run"))
    assert "drop --epochs" in error_line(invoke("train", "--resume", tmp_path / "run", "--epochs", 3))
    assert error_line(invoke("search", "--resume", tmp_path / "run", "--retrain-epochs", 3, "--lr", 0.1)).endswith(
        "drop --lr, --retrain-epochs")  # the flags as typed (it named the options' keys: epochs, lr)
    assert "not a 'search' run" in error_line(invoke("search", "--resume", tmp_path / "run"))


def test_retrain_resumes_through_the_api(tmp_path, artifacts):
    import shutil

    from compress.app.jobs import retrain_run

    run = tmp_path / "search"
    shutil.copytree(artifacts["search"], run)
    shutil.rmtree(run / "retrained")
    expected = retrain_run(str(run), {"epochs": 2})
    shutil.rmtree(run / "retrained")
    with pytest.raises(Crash):
        retrain_run(str(run), {"epochs": 2, "checkpoint_every": 2}, reporter=CrashAt(5))
    with pytest.raises(compress.ConfigError, match="continue it with `resume`"):
        retrain_run(str(run), {"epochs": 2})
    with pytest.raises(compress.ConfigError, match="with its saved options; drop --epochs, --lr"):
        retrain_run(str(run), {"lr": 0.5, "epochs": 3}, resume=True)  # once dropped without a word
    resumed = retrain_run(str(run), {"epochs": 2, "checkpoint_every": 2}, resume=True)  # its own options pass
    assert resumed["metrics"] == {k: {**v, "eval_seconds": resumed["metrics"][k]["eval_seconds"]}
                                  for k, v in expected["metrics"].items()}
    assert os.path.exists(run / "retrained") and not os.path.exists(str(run / "retrained") + ".partial")


def test_a_checkpoint_from_an_earlier_version_still_resumes(tmp_path):
    """Checkpoints written before options were added (they take their defaults) or before one RNG
    state was kept per rank (a single state) resume."""
    from compress.app.jobs import train_run
    from compress.app.recipes import resolve_options

    opts = resolve_options("train", str(TINY), {"epochs": 2, "checkpoint_every": 2})
    out = tmp_path / "run"
    with pytest.raises(Crash):
        train_run(opts, str(out), reporter=CrashAt(3))
    partial = tmp_path / "run.partial"
    meta = json.loads((partial / "run.json").read_text())
    del meta["settings"]["penalty"], meta["settings"]["precision"]
    (partial / "run.json").write_text(json.dumps(meta))
    state = json.loads((partial / "checkpoint" / "state.json").read_text())
    rng = next(v for k, v in state["state"]["__dict__"] if k == "rng")
    state["state"]["__dict__"] = [[k, rng[0] if k == "rng" else v] for k, v in state["state"]["__dict__"]]
    (partial / "checkpoint" / "state.json").write_text(json.dumps(state))
    result = train_run(opts, str(out), resume=True)
    assert result["best_epoch"] >= 1 and out.exists() and not partial.exists()
    recorded = json.loads((out / "config.json").read_text())["options"]  # train's own, as a fresh run records
    assert "penalty" not in recorded and "tradeoff" not in recorded and recorded["precision"] == "fp32"


def imitate_gpus(monkeypatch, count: int) -> tuple:
    """A machine with ``count`` visible GPUs and CUDA initialised, imitated on the CPU: each GPU's generator (the
    one torch.cuda's get_rng_state and set_rng_state read and write) a CPU generator; returns them."""
    import torch.cuda.random as cuda_random

    generators = tuple(torch.Generator().manual_seed(i) for i in range(count))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # set_rng_state acts at once, as mid-run
    monkeypatch.setattr(torch.cuda, "default_generators", generators, raising=False)
    monkeypatch.setattr(cuda_random, "_lazy_init", lambda: None)
    for module in (torch.cuda, cuda_random):
        monkeypatch.setattr(module, "current_device", lambda: 0)
    return generators


def test_a_cuda_run_resumes_where_fewer_gpus_are_visible(tmp_path, monkeypatch):
    """A checkpoint holds the RNG state of the run's GPU alone: it once held every visible GPU's, and where
    fewer were visible at the resume restoring them raised a raw IndexError. Such older checkpoints give the
    run's GPU its entry, or, holding none for it, are refused in one line naming the GPUs and the fix."""
    before = imitate_gpus(monkeypatch, 2)
    torch.rand(3, generator=before[0])  # the run (on GPU 0) drew from its generator
    ckpt = Checkpointer(str(tmp_path / "run.partial"))
    ckpt.write({"rng": [rng_state(torch.device("cuda"))]})  # as save writes it: one entry per rank
    drawn, old_format = before[0].get_state(), {"torch": torch.get_rng_state(), "cuda": [g.get_state() for g in before]}
    assert torch.equal(ckpt.load()["rng"]["cuda"], drawn)
    for saved in (ckpt.load()["rng"], old_format):
        after = imitate_gpus(monkeypatch, 1)  # resumed with one GPU visible
        set_rng_state(saved, torch.device("cuda", 0))
        assert torch.equal(after[0].get_state(), drawn)
    set_rng_state(old_format, torch.device("cpu"))  # a CPU run draws from no GPU's generator
    assert "cuda" not in rng_state(torch.device("cpu"))
    imitate_gpus(monkeypatch, 2)
    with pytest.raises(compress.CheckpointError, match="uses GPU 1.* of 1 GPU.*CUDA_VISIBLE_DEVICES") as info:
        set_rng_state({**old_format, "cuda": old_format["cuda"][:1]}, torch.device("cuda", 1))  # written seeing one
    assert "\n" not in str(info.value)


def test_a_checkpoint_that_cannot_be_written_says_whether_one_is_kept(tmp_path, monkeypatch):
    """A full disk at the first checkpoint once advised `resume`, which then found nothing to resume."""
    import errno

    from compress.engine import checkpoint

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    ckpt = Checkpointer(str(tmp_path / "run.partial"))
    ckpt.meta = {"kind": "train", "settings": {}}
    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(compress.CheckpointError, match="No space left.*no checkpoint of this run was written, so it "
                                                       "cannot be resumed.*start it again") as info:
        ckpt.write({"epoch": 1, "x": torch.ones(2)})
    assert "kept" not in str(info.value) and not ckpt.exists()
    monkeypatch.undo()
    ckpt.write({"epoch": 1, "x": torch.ones(2)})
    for name in ("save_file", "atomic_dir"):
        monkeypatch.setattr(checkpoint, name, full)
        with pytest.raises(compress.CheckpointError, match="the last one written is kept.*then `resume`"):
            ckpt.write({"epoch": 2, "x": torch.ones(2)})
        monkeypatch.undo()
    assert ckpt.load()["epoch"] == 1


def test_a_run_whose_first_checkpoint_cannot_be_written_says_to_start_again(tmp_path, monkeypatch):
    import errno

    from compress.engine import checkpoint

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "save_file", full)
    line = error_line(invoke("train", "--recipe", TINY, "--epochs", 1, "--out", tmp_path / "run"))
    assert "start it again" in line and "--resume" not in line
    assert not (tmp_path / "run.partial").exists()
    assert "nothing to resume" in error_line(invoke("train", "--resume", tmp_path / "run"))


def test_a_stop_on_another_rank_leaves_rank_0s_checkpoint_alone(tmp_path, monkeypatch):
    """Under torchrun, Ctrl-C reaches every rank; rank 1 unwound while rank 0 was still writing the first
    checkpoint, found none yet, and removed the run's partial directory (lock included): `resume` then
    found nothing. Only rank 0, which writes checkpoints, removes a partial directory without one, and
    the other ranks stop only after rank 0's checkpoint is whole."""
    from compress.app import rundirs
    from compress.engine import checkpoint
    from compress.runtime import distributed

    out = str(tmp_path / "run")
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    with pytest.raises(KeyboardInterrupt):
        with rundirs.run_state("train", {}, out, overwrite=False, resume=False):
            Path(out + ".partial", "written-by-rank-0").write_text("")
            raise KeyboardInterrupt
    assert (tmp_path / "run.partial" / "written-by-rank-0").exists()
    monkeypatch.undo()

    events = []
    monkeypatch.setattr(checkpoint.distributed, "barrier", lambda: events.append("barrier"))
    ckpt = Checkpointer(str(tmp_path / "other.partial"))
    ckpt.meta = {"kind": "train", "settings": {}}
    ckpt.stop_requested = True
    with pytest.raises(Interrupted):
        ckpt.save({"epoch": 1, "x": torch.ones(2)})
    assert events == ["barrier"] and ckpt.exists()
