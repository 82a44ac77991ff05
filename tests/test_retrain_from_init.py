"""`from_init`: retraining a warm-started search's decision from the trained model it started from
(reordered as the search reordered it, then sliced: prune, then fine-tune) instead of the supernet."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Dict

import pytest
import torch
from clihelp import error_line, invoke, listing, read

import compress
import compress.app.jobs
from compress.nas.reorder import reorder
from compress.store.artifacts import load

WARM = ["--search-epochs", "1", "--hidden-ratios", "0,0.5", "--inner-ratios", "0,0.5", "--max-flops", "40%",
        "--attention", "softmax", "--gate-layers", "0", "--reorder", "magnitude", "--device", "cpu"]
SEARCH_FILES = ("config.json", "arch.json", "search_card.json", "metrics.csv", "supernet")


@pytest.fixture(scope="module")
def warm_search(artifacts, tmp_path_factory) -> Dict[str, Path]:
    """A search warm-started from a private copy of the tiny dense baseline (search stage only)."""
    root = tmp_path_factory.mktemp("warm")
    init = root / "init"
    shutil.copytree(artifacts["baseline"], init)
    result = invoke("search", "--init", init, *WARM, "--stage", "search", "--out", root / "search")
    assert result.exit_code == 0, result.stderr
    return {"init": init, "search": root / "search"}


@pytest.fixture
def run(warm_search, tmp_path) -> Dict[str, Path]:
    """A copy of the warm search and of its init, the search's options pointing at the copy."""
    init = tmp_path / "init"
    shutil.copytree(warm_search["init"], init)
    out = tmp_path / "search"
    out.mkdir()
    for name in SEARCH_FILES:
        src = warm_search["search"] / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, out / name)
    cfg = read(out / "config.json")
    cfg["options"]["init"] = str(init)
    (out / "config.json").write_text(json.dumps(cfg))
    return {"init": init, "search": out}


class Captured(Exception):
    """Raised by the stand-in for ``fit`` once it has seen the model retraining would start from."""


def start_model(run_dir: Path, monkeypatch, **overrides) -> torch.nn.Module:
    seen = []

    def capture(model, *args, **kwargs):
        seen.append(copy.deepcopy(model))
        raise Captured

    monkeypatch.setattr(compress.app.jobs, "fit", capture)
    with pytest.raises(Captured):
        compress.app.jobs.retrain_run(str(run_dir), {"epochs": 1, **overrides})
    assert not (run_dir / "retrained").exists()
    return seen[0]


def test_from_init_starts_from_the_reordered_init_sliced_to_the_decision(run, monkeypatch):
    model = start_model(run["search"], monkeypatch, from_init=True)
    decision = read(run["search"] / "search_card.json")["decision"]
    assert model.arch.to_dict() == decision["arch"]
    assert (model.arch.hidden, model.arch.inner, model.arch.layers) == (8, 16, 1)
    init = load(str(run["init"]))
    reorder(init, "magnitude")  # what the search did before it started, worked out here on its own
    ordered = init.state_dict()
    for name, t in model.state_dict().items():
        assert torch.equal(t, ordered[name][tuple(slice(0, s) for s in t.shape)]), name  # the leading block
    supernet_start = start_model(run["search"], monkeypatch).state_dict()
    assert not torch.equal(supernet_start["layers.0.ffn_in.weight"], model.state_dict()["layers.0.ffn_in.weight"])


def test_from_init_at_the_full_width_scores_as_the_init_does(artifacts, tmp_path, monkeypatch):
    """Nothing sliced away: the reordered init in the decided (full) shape ranks items as the user's model."""
    out = tmp_path / "full"
    args = [a for a in WARM if a not in ("--max-flops", "40%")]
    result = invoke("search", "--init", artifacts["baseline"], *args, "--hidden-ratios", "0", "--inner-ratios",
                    "0", "--depth-choices", "-1", "--stage", "search", "--out", out)
    assert result.exit_code == 0, result.stderr
    model = start_model(out, monkeypatch, from_init=True).eval()
    init = load(str(artifacts["baseline"])).eval()
    assert model.arch.to_dict() == init.arch.to_dict()
    items = compress.load_dataset().eval_pairs("test")[0][:16]
    from compress.data.batching import pad_right

    batch = pad_right([s[-20:] for s in items], 20)
    with torch.no_grad():
        assert torch.allclose(model.predict(batch), init.predict(batch), atol=1e-5)


def test_retrain_from_init_through_the_cli(run):
    result = invoke("retrain", run["search"], "--from-init", "--epochs", "1")
    assert result.exit_code == 0, result.stderr
    assert "retrained from the warm start's weights" in result.stdout
    cfg = read(run["search"] / "retrained" / "config.json")
    assert cfg["start"] == "init" and cfg["from_scratch"] is False and cfg["options"]["from_init"] is True
    assert set(listing(run["search"] / "retrained")) >= {"config.json", "model.safetensors", "metrics.json"}


def test_an_init_changed_since_the_search_is_refused(run):
    weights = run["init"] / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    state["item_embedding.weight"][1, 0] += 1.0
    save_file(state, str(weights))
    line = error_line(invoke("retrain", run["search"], "--from-init"))
    assert "no longer holds the model" in line and "drop from_init" in line
    assert not (run["search"] / "retrained").exists() and not (run["search"] / "retrained.partial").exists()
    assert invoke("retrain", run["search"], "--epochs", "1").exit_code == 0  # the supernet's weights still serve


def test_an_init_gone_since_the_search_is_refused(run):
    shutil.rmtree(run["init"])
    line = error_line(invoke("retrain", run["search"], "--from-init"))
    assert "which is gone" in line and "drop from_init" in line
    assert not (run["search"] / "retrained").exists()


def test_a_search_card_without_a_digest_is_trusted_with_a_warning(run, monkeypatch, caplog):
    card = read(run["search"] / "search_card.json")
    del card["init_digest"]
    (run["search"] / "search_card.json").write_text(json.dumps(card))
    with caplog.at_level("WARNING", logger="compress.app.jobs"):
        start_model(run["search"], monkeypatch, from_init=True)
    assert "predates init digests" in caplog.text


def test_from_init_and_from_scratch_together_are_refused(run):
    line = error_line(invoke("retrain", run["search"], "--from-init", "--from-scratch"))
    assert "from_scratch and from_init are both set" in line
    assert not (run["search"] / "retrained").exists()


def test_from_init_of_a_cold_search_is_refused(artifacts, tmp_path):
    search = tmp_path / "search"
    shutil.copytree(artifacts["search"], search, ignore=shutil.ignore_patterns("retrained"))
    line = error_line(invoke("retrain", search, "--from-init"))
    assert "started from fresh weights (no init)" in line
    assert not (search / "retrained").exists()


def test_search_and_retrain_from_init_without_an_init_fails_before_searching(tmp_path):
    line = error_line(invoke("search", "--recipe", "recipes/tiny.yaml", "--from-init", "--device", "cpu",
                             "--out", tmp_path / "run"))
    assert "no init" in line and not (tmp_path / "run").exists()


def test_search_and_retrain_from_init_in_one_command(artifacts, tmp_path):
    out = tmp_path / "run"
    result = invoke("search", "--init", artifacts["baseline"], *WARM, "--retrain-epochs", "1", "--from-init",
                    "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["retrain"]["start"] == "init"
    assert read(out / "search_card.json")["init_digest"] == compress.app.warm.weights_digest(
        load(str(artifacts["baseline"])))


def test_the_api_slices_the_decision_out_of_the_model_searched_from():
    """``SearchResult.slice(supernet)``: the decision cut from the trained model wrapped again as it was."""
    from synthetic import walking_dataset

    from compress.arch import ArchSpec
    from compress.backbones.sasrec import SASRec
    from compress.nas.config import SearchConfig
    from compress.nas.search import search
    from compress.nas.space import SearchSpace
    from compress.nas.wrap import wrap

    data = walking_dataset()
    torch.manual_seed(0)
    model = SASRec(ArchSpec(hidden=24, inner=48, heads=2, layers=2), data.n_items, 20)
    space = SearchSpace((0.0, 1 / 3, 2 / 3), (0.0, 1 / 3, 2 / 3), head_pruning="dims")
    result = search(wrap(model, space=space, attention="softmax", gate_layers=0, reorder="magnitude"), data,
                    SearchConfig(epochs=1, batch_size=32, seed=0, max_flops="40%"), device="cpu")
    small = result.slice(wrap(model, space=space, attention="softmax", gate_layers=0, reorder="magnitude"))
    ordered = copy.deepcopy(model)
    reorder(ordered, "magnitude", head_pruning="dims")
    assert small.arch == result.slice().arch and small.arch.hidden < 24
    assert small.arch.heads == 2  # every head kept, each narrowed
    blocks, kept = ordered.state_dict(), small.arch.hidden
    q = blocks["layers.0.attention.query.weight"].reshape(2, 12, 24)[:, :kept // 2, :kept].reshape(kept, kept)
    assert torch.equal(small.state_dict()["layers.0.attention.query.weight"], q)  # each head's leading rows
    assert torch.equal(small.state_dict()["item_embedding.weight"],
                       blocks["item_embedding.weight"][:, :small.arch.hidden])
    other = SearchSpace((0.0, 2 / 3), (0.0, 2 / 3), head_pruning="dims")
    with pytest.raises(compress.ConfigError, match="not wrapped as the searched one was"):
        result.slice(wrap(model, space=other, attention="softmax", gate_layers=0, reorder="magnitude"))


def test_a_shape_asked_for_beside_init_is_refused(artifacts, tmp_path):
    """--init fixes the model searched: a --backbone, --hidden or --seq-len asked for beside it was replaced
    by the init's without a word (a bert4rec search ran as sasrec); the defaults and the init's own values
    pass."""
    base = load(str(artifacts["baseline"]))
    line = error_line(invoke("search", "--init", artifacts["baseline"], *WARM, "--backbone", "bert4rec", "--hidden",
                             base.arch.hidden * 2, "--seq-len", base.max_len + 5, "--stage", "search",
                             "--out", tmp_path / "s"))
    shape = f"(backbone sasrec, hidden {base.arch.hidden}"
    assert f"--init {artifacts['baseline']} fixes the model searched {shape}" in line
    assert f"drop --backbone bert4rec, --hidden {base.arch.hidden * 2}, --seq-len {base.max_len + 5}" in line
    result = invoke("search", "--init", artifacts["baseline"], *WARM, "--hidden", base.arch.hidden, "--stage",
                    "search", "--out", tmp_path / "same")
    assert result.exit_code == 0, result.stderr
