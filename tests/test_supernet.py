"""The supernet: exact slicing for every candidate, depth mixing, checkpoints and the warm-start wrap."""
from __future__ import annotations

import functools
import json
import os

import pytest
import torch

from compress.arch import ArchSpec, Width
from compress.backbones.objectives import at, last_index
from compress.backbones.sasrec import SASRec
from compress.errors import CheckpointError, ConfigError
from compress.files import atomic_dir
from compress.layout import CONFIG, WEIGHTS
from compress.nas.controllers import one_hot
from compress.nas.space import SearchSpace
from compress.nas.wrap import load_supernet, save_supernet, wrap
from compress.store.artifacts import save_model

N_ITEMS, MAX_LEN = 40, 24
FULL = ArchSpec(hidden=32, inner=64, heads=4, layers=3)  # head width 8
SPACE = SearchSpace((0.0, 0.25, 0.5), (0.0, 0.25, 0.5))
WIDTHS = [Width(32, 64), Width(24, 48), Width(16, 32)]


def perturb(model: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    """Move every weight, bias and LayerNorm affine away from its init, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


@functools.lru_cache(maxsize=None)
def supernet(attention: str, gate_layers: int, placement: str):
    torch.manual_seed(0)
    backbone = SASRec(FULL, N_ITEMS, MAX_LEN, dropout=0.2)
    sn = wrap(backbone, space=SPACE, attention=attention, gate_layers=gate_layers, gate_placement=placement)
    perturb(sn.backbone, seed=1)
    return sn.eval()


def histories(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (6, MAX_LEN), generator=gen)
    for row, length in enumerate([MAX_LEN, 20, 11, 5, 2, 1]):
        items[row, length:] = 0  # right-padded
    return items


def test_widths_of_the_test_space():
    assert supernet("linear", 2, "code").widths == WIDTHS


@pytest.mark.parametrize("placement", ["code", "paper"])
@pytest.mark.parametrize("gate_layers", [0, 2])
@pytest.mark.parametrize("attention", ["softmax", "linear"])
@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_one_hot_supernet_equals_the_sliced_dense_model(k, depth, attention, gate_layers, placement):
    sn = supernet(attention, gate_layers, placement)
    items = histories()
    hidden = WIDTHS[k].hidden
    with torch.no_grad():
        y = sn(items, one_hot(k, 3), one_hot(depth, 3))  # (B, N, 32)
        dense = sn.slice(k, depth).eval()
        h = dense(items)  # (B, N, d_k)
        assert dense.arch == sn.full.narrowed(hidden, WIDTHS[k].inner, depth + 1) == sn.arch_for(k, depth)
        assert (dense.arch.hidden, dense.arch.inner, dense.arch.layers) == (hidden, WIDTHS[k].inner, depth + 1)
        assert (dense.arch.attention, dense.arch.gate_layers) == (attention, gate_layers)
        assert y.shape == (6, MAX_LEN, 32) and h.shape == (6, MAX_LEN, hidden)
        assert torch.equal(y[..., :hidden], h)  # max |diff| 0, as the README says
        assert torch.equal(y[..., hidden:], torch.zeros_like(y[..., hidden:]))  # exactly zero, not small
        a = sn.score(at(y, last_index(items)))
        b = dense.predict(items)
        assert a.shape == b.shape == (6, N_ITEMS + 1)
        assert torch.equal(a[:, 1:], b[:, 1:])
        assert torch.equal(a.argsort(1, descending=True)[:, :5], b.argsort(1, descending=True)[:, :5])


def test_hard_selection_predicts_what_the_decision_slices_to():
    sn = supernet("linear", 2, "code")
    with torch.no_grad():
        sn.alpha.logits.copy_(torch.tensor([0.0, 0.0, 3.0]))
        sn.beta.logits.copy_(torch.tensor([0.0, 2.0, 0.0]))
        sn.eval_selection = "hard"
        try:
            a = sn.predict(histories())
        finally:
            sn.eval_selection = "soft"
            sn.alpha.logits.zero_(), sn.beta.logits.zero_()
        b = sn.slice(2, 1).eval().predict(histories())
    assert torch.equal(a[:, 1:], b[:, 1:])


def test_exit_weights_mix_the_depth_outputs():
    """Y = Σ_l q_l 𝒯^(l) (Eq. 10): with one-hot p, a soft q mixes the depth-l sliced outputs."""
    sn = supernet("linear", 2, "code")
    items = histories()
    q = torch.tensor([0.2, 0.0, 0.8])
    with torch.no_grad():
        y = sn(items, one_hot(1, 3), q)
        want = sum(q[l] * torch.nn.functional.pad(sn.slice(1, l).eval()(items), (0, 8)) for l in (0, 2))
    assert (y - want).abs().max() <= 1e-6  # a weighted sum of exact slices, summed in another order


def test_soft_widths_mix_and_every_candidate_matters():
    sn = supernet("softmax", 2, "code")
    items = histories()
    q = one_hot(2, 3)
    with torch.no_grad():
        mixed = sn(items, torch.full((3,), 1 / 3), q)
        singles = [sn(items, one_hot(k, 3), q) for k in range(3)]
    assert torch.isfinite(mixed).all()
    assert all(not torch.allclose(mixed, s, atol=1e-3) for s in singles)
    assert mixed[..., 16:].abs().max() > 0  # the wider candidates reach the trailing dims


def test_slice_copies_leading_blocks_and_owns_its_weights():
    sn = supernet("linear", 2, "paper")
    dense = sn.slice(1, 1)
    source = sn.backbone.state_dict()
    for name, t in dense.state_dict().items():
        assert torch.equal(t, source[name][tuple(slice(0, s) for s in t.shape)]), name
    with torch.no_grad():
        dense.item_embedding.weight.zero_()
    assert sn.backbone.item_embedding.weight.abs().sum() > 0  # a copy, not a view


def test_candidates_list_flops_and_params_of_every_slice():
    sn = supernet("linear", 2, "code")
    cands = sn.candidates()
    assert len(cands) == 9
    for c in cands:
        dense = sn.slice(c["width"], c["layers"] - 1)
        assert c["params"] == sum(p.numel() for p in dense.parameters())
        assert (c["hidden"], c["inner"]) == WIDTHS[c["width"]][:2]
        assert c["flops"] == sn.flops_of(c["width"], c["layers"] - 1)


# --- checkpoints ----------------------------------------------------------------------------------


def test_save_and_load_supernet_round_trip(tmp_path):
    torch.manual_seed(0)
    sn = wrap(SASRec(FULL, N_ITEMS, MAX_LEN), space=SPACE, attention="linear", gate_layers=2, gate_placement="paper")
    perturb(sn, seed=2)  # includes α and β
    sn.tau = 0.37  # mid-search temperature: predict() must score the same after a reload
    save_supernet(sn, str(tmp_path / "sn"))
    assert set(os.listdir(tmp_path / "sn")) == {CONFIG, WEIGHTS}
    cfg = json.loads((tmp_path / "sn" / CONFIG).read_text())
    assert cfg["kind"] == "supernet" and cfg["supernet"]["adapter"] == "builtin"
    loaded = load_supernet(str(tmp_path / "sn"))
    assert type(loaded) is type(sn) and loaded.widths == sn.widths and loaded.space == sn.space
    assert loaded.full == sn.full and torch.equal(loaded.flops, sn.flops)
    assert torch.equal(loaded.alpha.logits, sn.alpha.logits) and torch.equal(loaded.beta.logits, sn.beta.logits)
    sn.eval(), loaded.eval()
    items = histories()
    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.1, 0.6, 0.3])
    with torch.no_grad():
        assert torch.equal(sn(items, p, q), loaded(items, p, q))
        assert torch.equal(sn.predict(items), loaded.predict(items))
        assert torch.equal(sn.slice(2, 0).eval().predict(items), loaded.slice(2, 0).eval().predict(items))


def test_load_supernet_refuses_a_dense_model_dir(tmp_path):
    torch.manual_seed(0)
    model = SASRec(FULL, N_ITEMS, MAX_LEN)
    out = tmp_path / "dense"
    with atomic_dir(str(out)) as tmp:
        save_model(model, tmp, {"kind": "train"})
    with pytest.raises(CheckpointError, match="'train' checkpoint, not a supernet"):
        load_supernet(str(out))


def test_load_supernet_refuses_missing_or_mismatched_weights(tmp_path):
    sn = supernet("linear", 2, "code")
    save_supernet(sn, str(tmp_path / "a"))
    os.remove(tmp_path / "a" / WEIGHTS)
    with pytest.raises(CheckpointError, match="missing"):
        load_supernet(str(tmp_path / "a"))
    save_supernet(sn, str(tmp_path / "b"))
    cfg = json.loads((tmp_path / "b" / CONFIG).read_text())
    cfg["model"]["arch"]["gate_layers"] = 0  # config and weights disagree
    (tmp_path / "b" / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError):
        load_supernet(str(tmp_path / "b"))
    with pytest.raises(CheckpointError):
        load_supernet(str(tmp_path / "nowhere"))


# --- wrap ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    """A softmax SASRec after a few Adam steps (every weight moved off its init)."""
    torch.manual_seed(3)
    model = SASRec(FULL, N_ITEMS, MAX_LEN, dropout=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    items = histories(seed=4)
    for _ in range(3):
        loss = model.predict(items)[:, 1:].logsumexp(-1).mean() - model.predict(items)[:, 1:5].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_wrap_warm_start_equals_the_original_model(trained):
    sn = wrap(trained, space=SPACE, attention="softmax", gate_layers=0).eval()
    own = sn.backbone.state_dict()
    assert set(own) == set(trained.state_dict())
    for name, t in trained.state_dict().items():
        assert torch.equal(own[name], t), name
    items = histories(seed=5)
    with torch.no_grad():
        y = sn(items, one_hot(0, 3), one_hot(FULL.layers - 1, FULL.layers))
        assert torch.equal(y, trained(items))
        assert torch.equal(sn.score(at(y, last_index(items))), trained.predict(items))
        assert torch.equal(sn.slice(0, FULL.layers - 1).eval().predict(items), trained.predict(items))


def test_wrap_injects_searched_attention_and_gates_and_carries_every_weight(trained):
    sn = wrap(trained, space=SPACE)  # defaults: attention kind and L_d ∈ {0, 1, 2} searched, code placement
    assert (sn.kinds, sn.gate_depths) == (("softmax", "linear"), (0, 1, 2))
    assert (sn.full.gate_layers, sn.full.gate_placement) == (2, "code")  # shared gates as deep as the deepest
    assert sn.input_arch == trained.arch
    fixed = wrap(trained, space=SPACE, attention="linear", gate_layers=2)  # the paper's design
    assert (fixed.kinds, fixed.gate_depths, fixed.full.attention) == (("linear",), (2,), "linear")
    own = sn.backbone.state_dict()
    for name, t in trained.state_dict().items():
        assert torch.equal(own[name], t), name
    assert {n for n in own if n not in trained.state_dict()} == {n for n in own if ".gates." in n} != set()
    with torch.no_grad():
        sn.backbone.item_embedding.weight.zero_()
    assert trained.item_embedding.weight.abs().sum() > 0  # the user's model is left alone


def test_wrap_refuses_a_model_no_adapter_knows():
    with pytest.raises(ConfigError, match="no adapter fits Linear"):
        wrap(torch.nn.Linear(3, 3))
    with pytest.raises(ConfigError, match="unknown adapter"):
        wrap(SASRec(FULL, N_ITEMS, MAX_LEN), adapter="no-such-adapter")


@pytest.mark.parametrize("key, value", [("n_items", 10 ** 12), ("max_len", 10 ** 9)])
def test_a_tampered_supernet_config_is_refused_before_allocating(tmp_path, key, value):
    sn = wrap(SASRec(FULL, N_ITEMS, MAX_LEN))
    save_supernet(sn, str(tmp_path / "s"))
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    cfg["model"][key] = value
    (tmp_path / "s" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_supernet(str(tmp_path / "s"))
