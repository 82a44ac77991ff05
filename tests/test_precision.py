"""Mixed precision of the weight steps: bf16 autocast trains on CPU (fp32 parameters kept), fp16 is
refused off CUDA, and bf16 runs resume exactly."""
from __future__ import annotations

import pytest
import torch
from clihelp import error_line, invoke
from synthetic import walking_dataset
from test_resume import TINY, Crash, CrashAt

import compress
from compress.engine.checkpoint import Checkpointer
from compress.errors import ConfigError


@pytest.fixture(scope="module")
def data():
    return walking_dataset()


def model(data):
    torch.manual_seed(0)
    return compress.get_backbone("sasrec")(compress.ArchSpec(hidden=16, inner=32, heads=2, layers=2), data.n_items, 20)


def test_bf16_training_learns_and_keeps_fp32_parameters(data):
    m = model(data)
    before = compress.evaluate(m, data)["ndcg@10"]
    compress.fit(m, data, compress.TrainConfig(epochs=4, batch_size=32, precision="bf16"), torch.device("cpu"))
    assert compress.evaluate(m, data)["ndcg@10"] > before + 0.1
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_bf16_search_runs_and_alpha_beta_stay_fp32(data):
    sn = compress.wrap(model(data), space=compress.SearchSpace((0.0, 0.5), (0.0, 0.5)))
    result = compress.search(sn, data, compress.SearchConfig(epochs=1, batch_size=64, precision="bf16"), "cpu")
    assert sn.alpha.logits.dtype == torch.float32 and result.decision is not None


@pytest.mark.parametrize("protocol", ["full", "pop100"])
def test_a_callers_autocast_region_does_not_reach_evaluation(data, protocol, monkeypatch):
    """evaluate inside the caller's bf16 autocast: the full ranking crashed on a dtype mismatch, pop100 moved
    NDCG in its 4th digit (on a trained model). Evaluation is float32 whatever region it is called in."""
    m = model(data).eval()
    want = compress.evaluate(m, data, "test", protocol)
    seen = []
    query = m.query_hidden
    monkeypatch.setattr(m, "query_hidden", lambda items: seen.append(torch.is_autocast_enabled("cpu")) or query(items))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = compress.evaluate(m, data, "test", protocol)
    assert seen and not any(seen)
    assert {k: v for k, v in got.items() if k != "eval_seconds"} == {k: v for k, v in want.items()
                                                                       if k != "eval_seconds"}


def test_a_callers_autocast_region_does_not_reach_fit_or_search(data):
    """fit and search at precision fp32 inside the caller's bf16 autocast train as they do outside it,
    weight for weight and α for α: the region reached the α/β steps and the validation."""
    cfg = compress.TrainConfig(epochs=1, batch_size=64)
    a, b = model(data), model(data)
    compress.fit(a, data, cfg, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        compress.fit(b, data, cfg, "cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    space = compress.SearchSpace((0.0, 0.5), (0.0, 0.5))
    scfg = compress.SearchConfig(epochs=1, batch_size=64)
    sa, sb = compress.wrap(model(data), space=space), compress.wrap(model(data), space=space)
    compress.search(sa, data, scfg, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        compress.search(sb, data, scfg, "cpu")
    assert torch.equal(sa.alpha.logits, sb.alpha.logits)


def test_bf16_resume_equals_uninterrupted(data, tmp_path):
    cfg = compress.TrainConfig(epochs=2, batch_size=64, precision="bf16")
    whole = model(data)
    compress.fit(whole, data, cfg, torch.device("cpu"))
    ckpt = Checkpointer(str(tmp_path / "p"), every=3)
    with pytest.raises(Crash):
        compress.fit(model(data), data, cfg, torch.device("cpu"), CrashAt(7), ckpt)
    resumed = model(data)
    compress.fit(resumed, data, cfg, torch.device("cpu"), None, ckpt)
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), whole.state_dict().values()))


def test_bad_precisions_are_refused(data, tmp_path):
    with pytest.raises(ConfigError, match="unknown precision"):
        compress.TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        compress.fit(model(data), data, compress.TrainConfig(epochs=1, precision="fp16"), torch.device("cpu"))
    assert "needs a CUDA device" in error_line(invoke("train", "--recipe", TINY, "--precision", "fp16",
                                                      "--device", "cpu", "--out", tmp_path / "r"))
