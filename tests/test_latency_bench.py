"""Measured inference cost: `compress flops`, `compress bench`, latency and peak memory, `inspect --plot`."""
from __future__ import annotations

import json
import os

import pytest
import torch
from clihelp import error_line, invoke, read
from torch import nn

import compress
from compress.measure.latency import latencies_ms, latency_ms, peak_memory_bytes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_flops_json(artifacts):
    result = invoke("flops", artifacts["model"], "--json")
    assert result.exit_code == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["matmul_agreement"] == 1.0 == obj["measured"] / obj["analytic"]["matmul"]  # exactly, as README says
    assert obj["arch"]["hidden"] == 8 and obj["params"] == read(artifacts["model"] / "card.json")["params"]
    assert obj["analytic"]["total"] == obj["analytic"]["matmul"] + obj["analytic"]["elementwise"]


def test_flops_of_a_softmax_baseline_run_dir(artifacts):
    result = invoke("flops", artifacts["baseline"], "--json")
    assert result.exit_code == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["arch"]["attention"] == "softmax" and obj["matmul_agreement"] == 1.0
    table = invoke("flops", artifacts["baseline"]).stdout
    assert not any("parameters" in line and "│" in line for line in table.splitlines())  # not a row of FLOPs
    assert f"parameters {obj['params']:,}" in table


def test_bench_against_a_dense_baseline(artifacts):
    result = invoke("bench", artifacts["model"], "--baseline", artifacts["baseline"], "--batch", "1,4",
                    "--repeats", "3", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["device"] == "cpu" and obj["threads"] >= 1
    model, base = obj["models"]["model"], obj["models"]["baseline"]
    for row in (model, base):
        assert set(row) == set(obj["rows"]) == {"max_len", "n_items", "params", "flops_analytic", "flops_measured",
                                                "latency_ms@1", "latency_ms@4", "peak_memory_MB@1",
                                                "peak_memory_MB@4"}
        assert (row["max_len"], row["n_items"]) == (model["max_len"], model["n_items"])
        assert row["latency_ms@1"] > 0 and row["latency_ms@4"] > 0
        assert 0 < row["peak_memory_MB@1"] < row["peak_memory_MB@4"]
    assert model["params"] < base["params"]
    assert model["flops_analytic"] < base["flops_analytic"] and model["flops_measured"] < base["flops_measured"]
    assert model["peak_memory_MB@1"] < base["peak_memory_MB@1"]


def test_bench_table(artifacts):
    result = invoke("bench", artifacts["model"], "--baseline", artifacts["baseline"], "--batch", "2",
                    "--repeats", "2", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "ratio (baseline / model)" in result.stdout and "latency_ms@2" in result.stdout


def test_bench_bad_batch(artifacts):
    line = error_line(invoke("bench", artifacts["model"], "--batch", "1,big"))
    assert "--batch expects a comma-separated list like 1,256" in line


def test_latencies_ms_one_median_per_model(artifacts):
    models = [compress.load(str(artifacts["model"])), compress.load(str(artifacts["baseline"]))]
    medians = latencies_ms(models, batch=2, repeats=3, warmup=1)
    assert len(medians) == 2 and all(m > 0 for m in medians)
    assert latency_ms(models[0], 1, repeats=2, warmup=1) > 0


def test_peak_memory_grows_with_batch_size(artifacts):
    model = compress.load(str(artifacts["model"]))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    small, large = peak_memory_bytes(model, 1), peak_memory_bytes(model, 16)
    assert small["params"] == large["params"] == params
    assert 0 < small["activations"] < large["activations"]
    assert small["total"] == small["params"] + small["activations"]
    # one history: the (1, n_items + 1) scores and (1, N, d)-sized states, far below the weights
    assert small["activations"] < params / 2


class ViewOfWeights(nn.Module):
    """``predict`` reads a slice (a view) of a large weight: only its small output is new memory."""

    n_items, max_len = 10, 8

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(4096, 64))  # 1 MiB

    def predict(self, items: torch.Tensor) -> torch.Tensor:
        return items.float() @ self.table[:self.max_len, :4]  # (B, 4)


def test_peak_memory_does_not_count_views_of_weights():
    mem = peak_memory_bytes(ViewOfWeights(), 2)
    assert mem["params"] == 4096 * 64 * 4
    assert 2 * 4 * 4 <= mem["activations"] < 1024  # the output (and the float copy of the input), no weights


def test_bench_says_when_the_models_score_other_lengths_or_catalogues(artifacts, tmp_path):
    """A baseline built for N = 130 against a model of N = 10 gave 14x fewer FLOPs without a word: most
    of it the length. Each model's N and item count are shown, and a difference is said. Memory is in
    MiB (2^20 bytes), which the table says."""
    import compress

    model = compress.load(str(artifacts["model"]))
    longer = compress.get_backbone("sasrec")(model.arch, model.n_items, model.max_len * 2)
    longer.vocabulary = model.vocabulary
    compress.export(longer, str(tmp_path / "longer"))
    result = invoke("bench", artifacts["model"], "--baseline", tmp_path / "longer", "--batch", "1", "--repeats", "1",
                    "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert f"N = {model.max_len} over {model.n_items} items, the baseline N = {2 * model.max_len}" in said
    table = " ".join(result.stdout.split())
    assert "max_len" in table and "peak_memory_MiB@1" in table and "peak_memory_MB" not in table


def test_inspect_plot_writes_two_pngs(artifacts, tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "search"
    run.mkdir()
    for name in ("config.json", "arch.json", "search_card.json"):
        (run / name).write_bytes((artifacts["search"] / name).read_bytes())
    result = invoke("inspect", run, "--plot")
    assert result.exit_code == 0, result.stderr
    card = json.loads((run / "search_card.json").read_text())
    share = 100 * card["decision"]["flops"] / card["input_flops"]  # what budgets refer to, beside the supernet's
    assert f"({share:.1f}% of the input model, " in " ".join(result.stdout.split())
    pngs = sorted(p for p in os.listdir(run) if p.endswith(".png"))
    assert pngs == ["search_alpha_beta.png", "search_candidates.png"]
    for png in pngs:
        data = (run / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
        assert f"wrote {run / png}" in result.stdout.replace("\n", "")


def test_inspect_plot_without_matplotlib(artifacts, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    line = error_line(invoke("inspect", artifacts["search"], "--plot"))
    assert "pip install matplotlib" in line
    assert not [p for p in os.listdir(artifacts["search"]) if p.endswith(".png")]


def test_inspect_plot_of_a_train_run(artifacts):
    line = error_line(invoke("inspect", artifacts["baseline"], "--plot"))
    assert "no search_card.json to plot" in line
    assert not [p for p in os.listdir(artifacts["baseline"]) if p.endswith(".png")]


@pytest.mark.parametrize("which", ["search", "model", "baseline"])
def test_inspect_summary(artifacts, which):
    result = invoke("inspect", artifacts[which])
    assert result.exit_code == 0, result.stderr
    assert "model.safetensors" in result.stdout
