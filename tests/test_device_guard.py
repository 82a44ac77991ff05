"""The GPU path, guarded on a CPU-only machine: training, the search (its steps, epoch bookkeeping,
decision and penalty), slicing and evaluation run with the model on ``fakegpu``, a stand-in
accelerator whose tensors, like CUDA's, refuse to mix with CPU tensors (tests/fakegpu.py)."""
from __future__ import annotations

import fakegpu
import pytest
import torch
from synthetic import walking_dataset

import compress
from compress.engine import loop

pytestmark = pytest.mark.skipif(not fakegpu.available(), reason="this torch has no Python PrivateUse1 backend")


@pytest.fixture(scope="module")
def device():
    return fakegpu.install()


@pytest.fixture(scope="module")
def data():
    """Small enough that every step through the stand-in (a Python dispatch per op) stays quick."""
    return walking_dataset(n_users=256, n_items=300)


def small_model(data, attention: str = "softmax"):
    torch.manual_seed(0)
    return compress.get_backbone("sasrec")(compress.ArchSpec(16, 32, 2, 2, attention), data.n_items, 20)


def test_fake_accelerator_refuses_a_device_mix(device):
    """The stand-in raises as CUDA does, so a pass below means the code kept its tensors together."""
    with pytest.raises(RuntimeError, match="same device"):
        torch.ones(3, device=device) + torch.ones(3)
    assert (torch.ones(3, device=device) + torch.tensor(1.0)).device == device  # 0-dim CPU scalars may mix


def test_search_runs_on_the_accelerator(device, data):
    """The crash the first CUDA run met: the epoch record's expected FLOPs mixed host p, q with the
    device's FLOPs table."""
    space = compress.SearchSpace((0.0, 0.5), (0.0, 0.5))
    result = compress.search(compress.wrap(small_model(data), space=space), data,
                             compress.SearchConfig(epochs=1, batch_size=256, max_flops="60%"), device)
    row = result.history[0]
    assert 0.0 < row["exp_flops"] <= 1.0 and row["decision_flops"] <= 0.6 * result.card()["full_flops"]
    dense = result.slice()
    assert next(dense.parameters()).device == device
    for protocol in ("full", "pop100", "uni100"):
        metrics = compress.evaluate(dense, data, "test", protocol)
        assert 0.0 <= metrics["ndcg@10"] <= 1.0


def test_a_recomputing_search_runs_on_the_accelerator(device, data):
    """Recomputed widths keep the accelerator's RNG and autocast state: the same search as keeping them."""
    space = compress.SearchSpace((0.0, 0.5), (0.0, 0.5))
    runs = [compress.search(compress.wrap(small_model(data), space=space), data,
                            compress.SearchConfig(epochs=1, batch_size=256, recompute=recompute), device)
            for recompute in (False, True)]
    assert runs[0].history[0]["alpha"] == runs[1].history[0]["alpha"] and runs[0].decision == runs[1].decision


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
def test_training_runs_on_the_accelerator(device, data, backbone):
    torch.manual_seed(0)
    model = compress.get_backbone(backbone)(compress.ArchSpec(16, 32, 2, 1), data.n_items, 20)
    result = compress.fit(model, data, compress.TrainConfig(epochs=1, batch_size=256), device)
    assert result.best_epoch == 1 and next(model.parameters()).device == device


@pytest.mark.parametrize("job", ["fit", "search"])
def test_host_reads_per_epoch_do_not_grow_with_the_steps(device, data, monkeypatch, job):
    """Steps keep their statistics on the device: with the time-based sync points off, one epoch reads
    from the device as often with 8 steps as with 2 (the reads left: the epoch's end, validation)."""
    monkeypatch.setattr(loop, "SYNC_SECONDS", float("inf"))
    reads = {}
    for batch_size in (128, 32):  # 2 and 8 steps
        fakegpu.reset()
        if job == "fit":
            compress.fit(small_model(data), data, compress.TrainConfig(epochs=1, batch_size=batch_size), device)
        else:
            space = compress.SearchSpace((0.0, 0.5), (0.0, 0.5))
            compress.search(compress.wrap(small_model(data), space=space), data,
                            compress.SearchConfig(epochs=1, batch_size=batch_size), device)
        reads[batch_size] = len(fakegpu.READS)
    assert reads[32] == reads[128], reads


def test_predict_checks_histories_on_an_accelerator_without_reading_them(device, data):
    """On a GPU ``predict`` checks the histories' kind and shape but never reads their values back: that
    would stall every call and break CUDA graph capture (the CPU checks the values too)."""
    model = small_model(data).to(device).eval()
    items = torch.tensor([[3, 2, 0], [1, 0, 0]]).to(device)
    fakegpu.reset()
    with torch.no_grad():
        model.predict(items)
    assert fakegpu.READS == []
    with pytest.raises(compress.ConfigError, match="got torch.float32"):
        model.predict(items.float())
    with pytest.raises(compress.ConfigError, match="1 <= N <= max_len = 20"):
        model.predict(torch.ones(1, 21, dtype=torch.long).to(device))
