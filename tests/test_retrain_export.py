"""Retrain (paper §2.7) and export: weight transfer, RUN_DIR/retrained, MODEL_DIR contents, strict loading.

One search + retrain + export of the tiny recipe is built once per session by ``tiny_artifacts`` (also
used by test_serving.py and test_latency_bench.py) and never modified; tests that write copy it first.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import torch
from clihelp import DECIDED, error_line, invoke, listing, read
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import compress
from compress.measure.flops import params_count

RUN_FILES = {"config.json", "model.safetensors", "items.json", "metrics.json", "metrics.csv", "train.log"}
MODEL_FILES = {"config.json", "model.safetensors", "items.json", "card.json", "README.md"}
SEARCH_FILES = ("config.json", "arch.json", "search_card.json", "metrics.csv", "supernet")


@pytest.fixture
def search_only(artifacts, tmp_path) -> Path:
    """A copy of the search RUN_DIR as `--stage search` leaves it: no retrained/."""
    out = tmp_path / "search"
    out.mkdir()
    for name in SEARCH_FILES:
        src = artifacts["search"] / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, out / name)
    return out


def histories(n: int = 16) -> torch.Tensor:
    """Right-padded (n, N) histories of the tiny run's dataset, a few of them short."""
    from compress.data import load_dataset
    from compress.data.batching import pad_right

    seqs, _ = load_dataset().eval_pairs("test")
    return pad_right([s[-(3 + i):] if i % 3 == 0 else s for i, s in enumerate(seqs[:n])], 20)


# ---------------------------------------------------------------- retrain


def test_retrain_of_a_search_only_run(artifacts):
    run = artifacts["search"]
    assert set(listing(run)) == {*SEARCH_FILES, "retrained"}
    assert set(listing(run / "retrained")) == RUN_FILES
    cfg = read(run / "retrained" / "config.json")
    decision = read(run / "search_card.json")["decision"]
    assert cfg["kind"] == "retrain" and cfg["from_scratch"] is False
    assert cfg["model"]["arch"] == decision["arch"] == read(run / "arch.json")
    assert {k: cfg["model"]["arch"][k] for k in DECIDED} == DECIDED
    metrics = read(run / "retrained" / "metrics.json")
    assert metrics["best_epoch"] == 1 and len(metrics["history"]) == 1
    assert set(metrics["metrics"]) == {"valid/full", "valid/pop100", "test/full", "test/pop100"}
    log = (run / "retrained" / "train.log").read_text().splitlines()
    assert len(log) == 1 and log[0].startswith("epoch=1 loss=")


class Captured(Exception):
    """Raised by the stand-in for ``fit`` once it has seen the weights retraining would start from."""


def initial_weights(run_dir: Path, monkeypatch, from_scratch: bool, **overrides) -> Dict[str, torch.Tensor]:
    import compress.app.jobs

    seen = {}

    def capture(model, *args, **kwargs):
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        raise Captured

    monkeypatch.setattr(compress.app.jobs, "fit", capture)
    with pytest.raises(Captured):
        compress.app.jobs.retrain_run(str(run_dir), {"epochs": 1, "from_scratch": from_scratch, **overrides})
    assert not (run_dir / "retrained").exists()  # interrupted: nothing written
    return seen


def test_retrain_starts_from_the_supernet_slices(search_only, monkeypatch):
    start = initial_weights(search_only, monkeypatch, from_scratch=False)
    supernet = compress.load_supernet(str(search_only / "supernet"))
    decision = read(search_only / "search_card.json")["decision"]
    sliced = supernet.slice(decision["width"], decision["depth"]).state_dict()
    full = supernet.backbone.state_dict()
    assert set(start) == set(sliced)
    assert start["item_embedding.weight"].shape == (supernet.n_items + 1, 8)
    assert full["item_embedding.weight"].shape == (supernet.n_items + 1, 16)
    assert not any(name.startswith("layers.1.") for name in start) and "layers.1.ffn_in.weight" in full
    for name, t in start.items():
        assert torch.equal(t, sliced[name]), name
        assert torch.equal(t, full[name][tuple(slice(0, s) for s in t.shape)]), name  # the leading block
    assert supernet.backbone.arch.hidden == 16


def test_retrain_from_scratch_starts_from_fresh_weights(search_only, monkeypatch):
    transferred = initial_weights(search_only, monkeypatch, from_scratch=False)
    fresh = initial_weights(search_only, monkeypatch, from_scratch=True)
    assert {k: v.shape for k, v in fresh.items()} == {k: v.shape for k, v in transferred.items()}
    for name in ("item_embedding.weight", "position_embedding.weight", "layers.0.attention.query.weight",
                 "layers.0.ffn_in.weight"):
        assert not torch.equal(fresh[name], transferred[name]), name
    assert torch.equal(fresh["emb_norm.weight"], torch.ones(8))  # LayerNorm at its initial value
    assert not torch.equal(transferred["emb_norm.weight"], torch.ones(8))  # trained during the search


def test_retrain_without_gates_transfers_every_other_weight(search_only, monkeypatch):
    """`retrain --gate-layers 0`: the paper's retrain-only gate ablation (Table 6)."""
    transferred = initial_weights(search_only, monkeypatch, from_scratch=False)
    bare = initial_weights(search_only, monkeypatch, from_scratch=False, gate_layers=0)
    assert any(".gates." in name for name in transferred)
    assert set(bare) == {name for name in transferred if ".gates." not in name}
    for name, t in bare.items():
        assert torch.equal(t, transferred[name]), name


def test_cli_retrain_with_other_gates(search_only):
    out = invoke("retrain", str(search_only), "--gate-layers", "0", "--epochs", "1", "--json")
    assert out.exit_code == 0, out.output
    cfg = read(search_only / "retrained" / "config.json")
    assert cfg["model"]["arch"]["gate_layers"] == 0 and cfg["options"]["gate_layers"] == 0
    decision = read(search_only / "search_card.json")["decision"]["arch"]
    assert {**cfg["model"]["arch"], "gate_layers": decision["gate_layers"]} == decision
    bad = invoke("retrain", str(search_only), "--gate-layers", "-1", "--overwrite")
    assert bad.exit_code != 0 and error_line(bad) == "error: --gate-layers must be in [0, 16], got -1"
    assert sorted(os.listdir(search_only)) == sorted(SEARCH_FILES + ("retrained",))  # nothing half-written


def test_stage_retrain_overwrites_from_scratch(artifacts, search_only):
    shutil.copytree(artifacts["search"] / "retrained", search_only / "retrained")
    before = (search_only / "retrained" / "model.safetensors").read_bytes()
    result = invoke("search", "--stage", "retrain", "--out", search_only, "--from-scratch", "--retrain-epochs", "1",
                    "--overwrite", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["from_scratch"] is True
    assert set(listing(search_only / "retrained")) == RUN_FILES
    assert read(search_only / "retrained" / "config.json")["from_scratch"] is True
    assert (search_only / "retrained" / "model.safetensors").read_bytes() != before
    assert sorted(os.listdir(search_only)) == sorted([*SEARCH_FILES, "retrained"])  # no temp dirs left


def test_retrain_refuses_an_existing_retrained_dir(artifacts):
    retrained = artifacts["search"] / "retrained"
    before = {f: (retrained / f).stat().st_mtime_ns for f in RUN_FILES}
    line = error_line(invoke("retrain", artifacts["search"], "--epochs", "1"))
    assert "retrained already exists" in line and "--overwrite" in line
    assert "--out" not in line  # `compress retrain` has no --out to choose
    assert {f: (retrained / f).stat().st_mtime_ns for f in RUN_FILES} == before


def test_retrain_of_a_train_run_is_refused(artifacts):
    line = error_line(invoke("retrain", artifacts["baseline"]))
    assert "no finished search" in line and "compress search" in line
    assert not (artifacts["baseline"] / "retrained").exists()


# ---------------------------------------------------------------- export


def test_model_dir_files(artifacts):
    model = artifacts["model"]
    assert set(listing(model)) == MODEL_FILES
    cfg = read(model / "config.json")
    assert cfg["kind"] == "model" and cfg["model"]["arch"] == read(artifacts["search"] / "arch.json")
    items = read(model / "items.json")
    n = cfg["model"]["n_items"]
    assert len(items["item_ids"]) == n and len(set(items["item_ids"])) == n
    assert all(isinstance(t, str) for t in items["item_ids"])
    assert len(items["popularity"]) == n + 1 and items["popularity"][0] == 0 and min(items["popularity"][1:]) > 0


def test_exported_tensors_are_physically_sliced(artifacts):
    cfg = read(artifacts["model"] / "config.json")["model"]
    n_items = cfg["n_items"]
    expected = {k: tuple(v.shape) for k, v in compress.get_backbone("sasrec").from_config(cfg).state_dict().items()}
    supernet = load_file(str(artifacts["search"] / "supernet" / "model.safetensors"))
    full = {k[len("backbone."):]: t for k, t in supernet.items() if k.startswith("backbone.")}
    with safe_open(str(artifacts["model"] / "model.safetensors"), "pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    assert {k: tuple(t.shape) for k, t in tensors.items()} == expected
    assert tensors["item_embedding.weight"].shape == (n_items + 1, 8)
    assert tensors["position_embedding.weight"].shape == (20, 8)
    assert tensors["layers.0.ffn_in.weight"].shape == (16, 8)
    assert {k.split(".")[1] for k in tensors if k.startswith("layers.")} == {"0"}
    assert any(k.startswith("layers.1.") for k in full)
    smaller = 0
    for name, t in tensors.items():
        assert t.dtype == torch.float32 and torch.isfinite(t).all(), name
        assert all(s <= f for s, f in zip(t.shape, full[name].shape)), name
        smaller += t.shape != full[name].shape
        for dim in range(t.ndim):  # no zero-masked trailing rows/columns carried along
            assert t.select(dim, -1).abs().sum() > 0, (name, dim)
    assert smaller == len(tensors)  # every tensor depends on d or D: all of them shrank
    assert os.path.getsize(artifacts["model"] / "model.safetensors") < \
        0.6 * os.path.getsize(artifacts["search"] / "supernet" / "model.safetensors")


def test_exported_scores_equal_the_retrained_model(artifacts):
    retrained, exported = compress.load(str(artifacts["search"])), compress.load(str(artifacts["model"]))
    items = histories()
    with torch.no_grad():
        a, b = retrained.predict(items), exported.predict(items)
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))
    assert (a[:, 1:] - b[:, 1:]).abs().max() <= 1e-5


def test_card(artifacts):
    card = read(artifacts["model"] / "card.json")
    search_card = read(artifacts["search"] / "search_card.json")
    model = compress.load(str(artifacts["model"]))
    flops = card["flops"]
    assert 0.95 <= flops["measured"] / flops["analytic"]["matmul"] <= 1.05
    assert flops["measured"] == compress.measured_flops(model, 20)
    assert flops["analytic"] == compress.analytic_flops(model.arch, 20, model.n_items)
    assert card["params"] == params_count(model) == search_card["decision"]["params"]
    assert card["params"] < params_count(compress.load(str(artifacts["baseline"])))
    assert card["metrics"] == read(artifacts["search"] / "retrained" / "metrics.json")["metrics"]
    assert card["arch"] == search_card["decision"]["arch"]
    assert card["search"]["decision"] == search_card["decision"]
    assert card["latency_ms"]["cpu_batch_1"] > 0


def test_export_of_an_unretrained_search_run(search_only, tmp_path):
    line = error_line(invoke("export", search_only, "--out", tmp_path / "m"))
    assert f"compress retrain {search_only}" in line
    assert not (tmp_path / "m").exists()


def test_export_refuses_an_existing_out(artifacts):
    line = error_line(invoke("export", artifacts["search"], "--out", artifacts["model"]))
    assert "already exists" in line and "--overwrite" in line


@pytest.fixture
def model_copy(artifacts, tmp_path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(artifacts["model"], out)
    return out


def test_load_rejects_a_changed_hidden_size(model_copy):
    cfg = read(model_copy / "config.json")
    cfg["model"]["arch"]["hidden"] = 16
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(compress.CheckpointError, match="head_dim 8 disagrees with hidden/heads = 16"):
        compress.load(str(model_copy))
    cfg["model"]["arch"]["head_dim"] = 16  # now consistent, but the tensors are 8 wide
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(compress.CheckpointError, match=r"tensor \S+ has shape \((\d+, )?8,?\), config.json implies "
                                                      r"\((\d+, )?16,?\)"):
        compress.load(str(model_copy))


def test_load_rejects_a_missing_tensor(model_copy):
    state = load_file(str(model_copy / "model.safetensors"))
    del state["layers.0.ffn_out.bias"]
    save_file(state, str(model_copy / "model.safetensors"))
    with pytest.raises(compress.CheckpointError, match=r"missing \['layers.0.ffn_out.bias'\]"):
        compress.load(str(model_copy))


def test_load_rejects_an_items_json_of_another_size(model_copy):
    items = read(model_copy / "items.json")
    items["item_ids"] = items["item_ids"][:-1]
    (model_copy / "items.json").write_text(json.dumps(items))
    with pytest.raises(compress.CheckpointError, match="items.json maps"):
        compress.load(str(model_copy))


def test_interrupted_export_writes_nothing(artifacts, tmp_path, monkeypatch):
    import compress.store.export

    real = compress.store.export.write_json

    def interrupted(path, obj):
        real(path, obj)  # items.json is written into the temporary directory, then the user hits Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(compress.store.export, "write_json", interrupted)
    out = tmp_path / "models" / "m"
    result = invoke("export", artifacts["search"], "--out", out)
    assert result.exit_code == 130, (result.stdout, result.stderr)
    assert "nothing was written" in result.stderr
    assert not out.exists() and os.listdir(tmp_path / "models") == []


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export(artifacts, tmp_path):
    out = tmp_path / "ts"
    result = invoke("export", artifacts["search"], "--out", out, "--format", "torchscript", "--json")
    assert result.exit_code == 0, result.stderr
    assert set(listing(out)) == MODEL_FILES | {"model.pt"}
    assert json.loads(result.stdout)["card"]["torchscript_max_abs_diff"] <= 1e-5
    scripted = torch.jit.load(str(out / "model.pt"))
    model = compress.load(str(out))
    items = histories(3)
    with torch.no_grad():
        a, b = model.predict(items), scripted(items)
    assert a.shape == b.shape == (3, model.n_items + 1)
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))
    assert (a[:, 1:] - b[:, 1:]).abs().max() <= 1e-5


@pytest.mark.parametrize("absent, words", [({"onnx", "onnxruntime"}, "needs onnx and onnxruntime"),
                                           ({"onnxruntime"}, "needs onnxruntime, to write the file and to check it")])
def test_onnx_export_without_onnx_or_its_runtime(artifacts, tmp_path, monkeypatch, absent, words):
    """Without onnxruntime the file was written unchecked (the card's diff null), though the README says
    it is checked against PyTorch before the directory appears."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in absent else (object() if name == "onnx" else real(name, *a)))
    out = tmp_path / "models" / "onnx"
    line = error_line(invoke("export", artifacts["search"], "--out", out, "--format", "onnx"))
    assert words in line and "pip install onnx onnxruntime" in line
    assert not out.exists() and os.listdir(tmp_path / "models") == []


def test_an_export_is_checked_against_pytorch_relative_to_its_scores():
    """An absolute 1e-5 refused correct exports whose scores reach a few hundred (float32 rounding alone
    is 1.5e-5 at 170); the check is relative to the largest score, and a real disagreement still fails."""
    from compress.store.export import _check, _max_diff

    scores = torch.linspace(-330.0, 330.0, 101)
    assert 0 < _check(_max_diff(scores, scores + 2e-5), "onnx") <= 1e-5 * 330  # one float32 step at 330
    with pytest.raises(compress.CheckpointError, match="disagrees with the PyTorch model"):
        _check(_max_diff(scores, scores + 0.1), "onnx")
    with pytest.raises(compress.CheckpointError, match="disagrees"):
        _check(_max_diff(torch.tensor([1.0, float("-inf")]), torch.tensor([1.0, 0.0])), "torchscript")


def test_onnx_export(artifacts, tmp_path):
    pytest.importorskip("onnx")
    out = tmp_path / "onnx"
    result = invoke("export", artifacts["search"], "--out", out, "--format", "onnx", "--json")
    assert result.exit_code == 0, result.stderr
    assert set(listing(out)) == MODEL_FILES | {"model.onnx"}
    ort = pytest.importorskip("onnxruntime")
    assert json.loads(result.stdout)["card"]["onnx_max_abs_diff"] <= 1e-5
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    model = compress.load(str(out))
    for items in (histories(3), histories(1)):  # the exported graph takes any batch size
        got = torch.from_numpy(session.run(None, {"items": items.numpy()})[0])
        with torch.no_grad():
            want = model.predict(items)
        assert torch.equal(torch.isfinite(got), torch.isfinite(want))
        assert (got[:, 1:] - want[:, 1:]).abs().max() <= 1e-5


# ---------------------------------------------------------------- load in a fresh process, without pickle


def test_load_in_a_fresh_process_without_pickle(artifacts, subprocess_env):
    files = os.listdir(artifacts["model"])
    assert not [f for f in files if f.endswith((".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt"))]
    history = read(artifacts["model"] / "items.json")["item_ids"][:4]
    code = ("import pickle, torch\n"
            "def refuse(*a, **k): raise AssertionError('unpickling was attempted')\n"
            "torch.load = pickle.load = pickle.loads = refuse\n"
            "import compress, json\n"
            f"m = compress.Recommender.load({str(artifacts['model'])!r})\n"
            f"print(json.dumps(m.recommend([{history!r}], k=5)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    recs = json.loads(proc.stdout)
    assert len(recs) == 1 and len(recs[0]) == 5
    in_process = compress.Recommender.load(str(artifacts["model"])).recommend([history], k=5)
    assert [item for item, _ in recs[0]] == [item for item, _ in in_process[0]]
    assert [s for _, s in recs[0]] == pytest.approx([s for _, s in in_process[0]], abs=1e-5)


def test_retraining_deeper_gates_than_the_decision_says_it_breaks_the_budget(search_only, caplog):
    """`retrain --gate-layers N` past the decision's depth can cost more than the search's max_flops, which
    the decision kept to: said, not silent, and the exported card records the budget beside the decision."""
    import json

    from compress.app.jobs import export_run, retrain_run

    card_file = search_only / "search_card.json"
    card = json.loads(card_file.read_text())
    flops = card["decision"]["flops"]
    card["budget"] = {"max_flops": flops, "reference": "input", "reference_flops": card["input_flops"], "flops": flops}
    card_file.write_text(json.dumps(card))
    deeper = card["decision"]["arch"]["gate_layers"] + 1
    with caplog.at_level("WARNING"):
        retrain_run(str(search_only), {"gate_layers": deeper, "epochs": 1})
    assert f"over the search's max_flops budget of {flops:,.0f} FLOPs" in caplog.text
    caplog.clear()
    retrain_run(str(search_only), {"gate_layers": card["decision"]["arch"]["gate_layers"], "epochs": 1},
                overwrite=True)
    assert "budget" not in caplog.text
    exported = export_run(str(search_only), str(search_only.parent / "model"))["card"]
    assert exported["search"]["budget"]["flops"] == flops
