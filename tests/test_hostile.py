"""Hostile inputs that once went wrong silently, each pinned by a test: a diverged model reported as
perfect, a kill between the two renames of a publish, a resume that would not continue the
retraining, artifacts that could not be exported or evaluated, owner-only files."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from clihelp import REPO, error_line, invoke, listing

import compress
from compress.engine.checkpoint import Checkpointer
from compress.files import atomic_dir, recover
from compress.layout import MARKER
from compress.measure.metrics import MISS, target_ranks

TINY = ["--epochs", "1", "--hidden", "16", "--inner", "32", "--layers", "1", "--heads", "1", "--seq-len", "10",
        "--batch-size", "64", "--device", "cpu"]


def test_a_nan_score_is_never_a_hit():
    scores = torch.tensor([[float("nan"), 0.1, 0.2], [0.5, float("nan"), 0.1], [0.3, 0.2, 0.1]])
    ranks = target_ranks(scores, scores[:, 0])
    assert ranks.tolist() == [MISS, 1, 0]  # a NaN target is never a hit; a NaN candidate counts against the target


def test_a_model_of_nan_weights_scores_zero(artifacts):
    model = compress.load(artifacts["model"])
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    data = compress.load_dataset(json.loads((artifacts["model"] / "config.json").read_text())["data"]["data"])
    for protocol in ("full", "pop100"):
        metrics = compress.evaluate(model, data, "test", protocol)
        assert metrics["ndcg@10"] == 0.0 and metrics["recall@10"] == 0.0, protocol
    every = compress.evaluate(model, data, "test", "full", k=data.n_items)  # k reaches every candidate
    assert every[f"recall@{data.n_items}"] == 0.0  # a NaN target once ranked last, a hit at such a k


def test_a_run_that_diverges_in_its_only_step_says_so(tiny_data_file):
    """lr 1e30 for one step: the loss of that step was finite, the scores after it are not. The run once
    ended with valid NDCG@10 1.0 (and `compress train --lr 1e30` exited 0 with Infinity in
    metrics.json; the command line now refuses such a rate up front)."""
    data = compress.load_dataset(str(tiny_data_file))
    torch.manual_seed(0)
    model = compress.get_backbone("sasrec")(compress.ArchSpec(16, 32, 1, 1), data.n_items, 10)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(compress.DivergedError, match="not finite.*epoch 1") as info:
        cfg = compress.TrainConfig(epochs=1, batch_size=4096)
        cfg.lr = 1e30  # past the bound TrainConfig checks when built, as an edited config would be
        compress.fit(model, data, cfg, "cpu")
    assert "learning rate" in str(info.value)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in initial.items())  # the last finite weights
    assert "--lr must be in (0, 10], got 1e+30" in error_line(invoke("train", "--data", tiny_data_file, *TINY,
                                                                     "--lr", "1e30"))


def test_a_kill_between_the_two_renames_of_a_publish_is_recovered(tmp_path):
    """Without an atomic exchange a replace is two renames; a kill between them leaves the new copy
    under its temporary name and no checkpoint: the next resume must find it."""
    ckpt = Checkpointer(str(tmp_path / "run.partial"))
    ckpt.meta = {"kind": "train", "settings": {}}
    ckpt.write({"epoch": 2, "x": torch.ones(3)})
    path = tmp_path / "run.partial" / "checkpoint"
    moved = tmp_path / "run.partial" / ".checkpoint.tmp-123456789abc"
    os.rename(path, moved)  # the state just before the second rename
    assert not path.exists() and (moved / MARKER).exists()
    assert ckpt.exists()  # recovered
    assert ckpt.load()["epoch"] == 2 and path.exists() and not moved.exists()


def test_recover_falls_back_to_the_copy_being_replaced(tmp_path):
    out = tmp_path / "d"
    with atomic_dir(str(out)) as tmp:
        Path(tmp, "a").write_text("old")
    old = tmp_path / ".d.old-000000000000"
    os.rename(out, old)  # killed after the first rename, before the new copy was complete
    recover(str(out))
    assert (out / "a").read_text() == "old"


def test_search_resume_continues_the_retraining_left(tmp_path, tiny_data_file):
    """Killed between the search and the retraining's first checkpoint: --resume retrains (it once
    advised --overwrite, which would have thrown the search away)."""
    out = tmp_path / "run"
    searched = invoke("search", "--recipe", REPO / "recipes" / "tiny.yaml", "--data", tiny_data_file, "--set",
                      "search_epochs=1", "--device", "cpu", "--stage", "search", "--out", out)
    assert searched.exit_code == 0, searched.stderr
    resumed = invoke("search", "--resume", out, "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert (out / "retrained" / "model.safetensors").exists()
    assert "nothing to resume" in error_line(invoke("search", "--resume", out))


def test_export_and_evaluate_a_model_dir_saved_from_python(artifacts, tmp_path, tiny_data_file):
    """A MODEL_DIR written by the API records no dataset: `export` of it works (it once failed with
    KeyError: 'options') and `evaluate` asks for --data (it once failed with a TypeError)."""
    model = compress.load(artifacts["model"])
    api = tmp_path / "api"
    compress.search  # noqa: B018 - the API's own export path
    from compress.store.export import save_model_dir

    save_model_dir(model, str(api))
    again = invoke("export", api, "--out", tmp_path / "again", "--json")
    assert again.exit_code == 0, again.stderr
    assert set(listing(tmp_path / "again")) == {"config.json", "model.safetensors", "items.json", "card.json",
                                                "README.md"}
    assert "records no dataset" in error_line(invoke("evaluate", api))
    result = invoke("evaluate", api, "--data", "default", "--json")  # the model was trained on the default data
    assert result.exit_code == 0, result.stderr


def test_written_files_are_readable_as_the_umask_allows(artifacts):
    for name in ("model.safetensors", "config.json", "items.json"):
        mode = stat.S_IMODE(os.stat(artifacts["model"] / name).st_mode)
        assert mode & 0o044 == 0o044, (name, oct(mode))  # group and others may read (umask 022)


def test_a_pipe_as_data_names_the_problem(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    line = error_line(invoke("train", "--data", fifo, *TINY, "--out", tmp_path / "run"))
    assert "is not a regular file" in line and "empty" not in line


def test_every_api_entry_point_takes_what_device_takes(artifacts, tiny_data_file):
    """The API's ``device`` arguments take what ``--device`` takes: "auto" (suite.py's default once
    crashed in ``load`` with torch's device-string error), and an unknown device is a one-line
    ConfigError naming the choices, before any work."""
    data = compress.load_dataset(str(tiny_data_file))
    torch.manual_seed(0)
    model = compress.get_backbone("sasrec")(compress.ArchSpec(16, 32, 1, 1), data.n_items, 10)
    cfg = compress.TrainConfig(epochs=1, batch_size=4096)
    calls = {
        "fit": lambda device: compress.fit(model, data, cfg, device),
        "evaluate": lambda device: compress.evaluate(model, data, "valid", "full", device=device),
        "load": lambda device: compress.load(str(artifacts["model"]), device),
        "load_supernet": lambda device: compress.load_supernet(str(artifacts["search"] / "supernet"), device),
        "Recommender.load": lambda device: compress.Recommender.load(str(artifacts["model"]), device),
    }
    for name, call in calls.items():
        for bad in ("gpu", "cuda:x", "cuda:99"):
            with pytest.raises(compress.ConfigError, match="device") as info:
                call(bad)
            assert "\n" not in str(info.value), name
        call("auto")  # the CPU on a machine without CUDA, the GPU where there is one
