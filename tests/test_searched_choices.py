"""The attention kind and the gates' depth as searched choices: exact slices of every candidate, FLOPs
equal to FlopCounterMode on the matrix products, the mixtures, the penalty that can drop them, and
budgets against the model the user brought."""
from __future__ import annotations

import functools
from itertools import product

import pytest
import torch
from synthetic import walking_dataset

import compress
from compress.arch import ArchSpec
from compress.backbones.bert4rec import BERT4Rec
from compress.backbones.sasrec import SASRec
from compress.errors import ConfigError
from compress.measure.flops import analytic_flops, measured_flops
from compress.nas.controllers import one_hot
from compress.nas.search import budget_flops, decide
from compress.nas.space import SearchSpace
from compress.nas.wrap import load_supernet, save_supernet, wrap
from compress.nn.attention import MultiHeadAttention

FULL = ArchSpec(hidden=32, inner=64, heads=4, layers=2)
SPACE = SearchSpace((0.0, 0.5), (0.0, 0.5))


@functools.lru_cache(maxsize=None)
def searched(backbone: str = "sasrec", placement: str = "code", max_len: int = 24):
    """A supernet searching widths, depth, attention kind and L_d ∈ {0, 1, 2}, weights moved off their init."""
    torch.manual_seed(0)
    model = (SASRec if backbone == "sasrec" else BERT4Rec)(FULL, 40, max_len)
    sn = wrap(model, space=SPACE, gate_placement=placement)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in sn.backbone.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return sn.eval()


def histories(max_len: int = 24) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(1, 41, (5, max_len), generator=gen)
    for row, length in enumerate([max_len, 13, 6, 2, 1]):
        items[row, length:] = 0
    return items


def every_choice(sn):
    return product(range(len(sn.widths)), range(sn.full.layers), range(len(sn.kinds)), range(len(sn.gate_depths)))


@pytest.mark.parametrize("backbone, placement, max_len", [("sasrec", "code", 24), ("sasrec", "paper", 24),
                                                          ("bert4rec", "code", 24), ("sasrec", "code", 100)])
def test_every_one_hot_choice_equals_its_sliced_dense_model_exactly(backbone, placement, max_len):
    """max |diff| 0 for each (width, depth, attention kind, gate depth), by index and as one-hot weights;
    N = 100 takes linear attention's chunked form."""
    sn = searched(backbone, placement, max_len)
    items = histories(max_len)
    assert (sn.kinds, sn.gate_depths) == (("softmax", "linear"), (0, 1, 2))
    with torch.no_grad():
        for k, l, a, g in every_choice(sn):
            dense = sn.slice(k, l, a, g).eval()
            assert (dense.arch.attention, dense.arch.gate_layers) == (sn.kinds[a], sn.gate_depths[g])
            want = dense.predict(items)[:, 1:]
            assert torch.equal(sn.predict(items, k, l, a, g)[:, 1:], want), (k, l, a, g)
            weights = (one_hot(k, 2), one_hot(l, 2), one_hot(a, 2), one_hot(g, 3))
            assert torch.equal(sn.predict(items, *weights)[:, 1:], want), (k, l, a, g)


def test_a_shallower_gate_is_the_prefix_of_the_deepest():
    sn = searched()
    one = sn.slice(0, 1, 0, 1)
    names = {n for n in one.state_dict() if ".gates." in n}
    assert names and all("hidden_layers" not in n for n in names)  # L_d = 1: the scoring layers alone
    source = sn.backbone.state_dict()
    for name in names:
        assert torch.equal(one.state_dict()[name], source[name])


@pytest.mark.parametrize("max_len", [24, 100])
def test_flops_of_every_candidate_are_the_counted_matrix_products_exactly(max_len):
    sn = searched(max_len=max_len)
    for k, l, a, g in every_choice(sn):
        arch = sn.arch_for(k, l, a, g)
        predicted = analytic_flops(arch, max_len, sn.n_items)
        assert sn.flops_of(k, l, a, g) == predicted["total"]
        assert predicted["matmul"] == measured_flops(sn.slice(k, l, a, g), max_len), arch.label()
    gates = sn.flops[:, :, :, 1:] - sn.flops[:, :, :, :-1]
    assert (gates > 0).all()  # deeper gates cost more, and no gates cost least


def test_the_attention_mixture_mixes_the_kinds_through_one_set_of_projections():
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 2, "softmax", 0.0).eval()
    x, valid = torch.randn(3, 10, 16), torch.ones(3, 10, dtype=torch.bool)
    r = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        mixed = attention(x, valid, ((r[0], "softmax"), (r[1], "linear")))
        parts = [attention(x, valid, ((None, kind),)) for kind in ("softmax", "linear")]
    assert torch.allclose(mixed, r[0] * parts[0] + r[1] * parts[1], atol=1e-6)  # Σ r = 1: the bias counts once
    assert torch.equal(parts[0], attention(x, valid))


def test_gradients_reach_every_controller_through_the_search_loss():
    sn = searched()
    sn.train()
    items = histories()
    weights = [c.sample(0.7, "gumbel", torch.Generator().manual_seed(i)) for i, c in enumerate(sn.controllers)]
    h = sn(items, *weights)
    loss = sn.score(h[:, -1]).logsumexp(-1).mean() + sn.expected_flops(*weights)
    loss.backward()
    for c in sn.controllers:
        assert c.logits.grad is not None and c.logits.grad.abs().sum() > 0
        c.logits.grad = None
    sn.backbone.zero_grad(set_to_none=True)
    sn.eval()


def test_a_searched_choice_must_be_named_and_a_fixed_one_need_not():
    sn = searched()
    with pytest.raises(ConfigError, match="searches the attention kind"):
        sn.slice(0, 0)
    paper = wrap(SASRec(FULL, 40, 24), space=SPACE, attention="linear", gate_layers=2)
    assert paper.slice(0, 0).arch.label() == "32/64 × 1 layer, linear attention, gates L_d=2"


def test_expected_flops_is_relative_to_the_input_model_or_the_full_supernet():
    sn = searched()
    plain = (0, sn.full.layers - 1, 0, 0)  # widest, deepest, softmax, no gates: the model wrapped
    assert sn.arch_for(*plain) == sn.input_arch
    hot = [one_hot(i, c.logits.numel()) for i, c in zip(plain, sn.controllers)]
    assert float(sn.expected_flops(*hot, reference="input")) == pytest.approx(1.0, rel=1e-12)
    assert sn.reference_flops("supernet") == float(sn.flops.max()) > sn.input_flops
    assert float(sn.expected_flops(*hot, reference="supernet")) == pytest.approx(sn.input_flops / float(sn.flops.max()))


def test_a_budget_in_percent_is_of_the_reference_and_the_decision_fits_it():
    sn = searched()
    assert budget_flops("50%", sn, "input") == pytest.approx(0.5 * sn.input_flops)
    assert budget_flops("50%", sn, "supernet") == pytest.approx(0.5 * float(sn.flops.max()))
    with torch.no_grad():
        for c in sn.controllers:
            c.logits.zero_()
        sn.gate_choice.logits.copy_(torch.tensor([0.0, 0.0, 5.0]))  # prefers the deepest, dearest gates
    budget = budget_flops("50%", sn, "input")
    decision = decide(sn, budget)
    assert decision["flops"] <= budget and decision["note"] and "L_d=2" in decision["note"]
    assert decision["label"] == sn.arch_for(decision["width"], decision["depth"], decision["attention"],
                                            decision["gates"]).label()
    smallest = int(sn.flops.min())
    cheapest = min(sn.candidates(), key=lambda c: c["flops"])
    with pytest.raises(ConfigError, match="below the smallest candidate.*input model") as info:
        budget_flops(smallest - 2, sn, "input")  # a hair below: the two figures are told apart, the candidate named
    assert f"({smallest - 2:,} FLOPs)" in str(info.value) and f"at {smallest:,} FLOPs" in str(info.value)
    assert f"candidate, {cheapest['label']} at" in str(info.value)


def test_a_penalty_large_enough_drops_the_gates_and_keeps_the_cheapest_kind(tmp_path):
    """λ large: every controller runs to its cheapest choice, gates included, the search's card says
    which choices were searched, and τ per epoch is recorded."""
    data = walking_dataset(n_users=300, n_items=200, max_len=40)
    torch.manual_seed(0)
    model = SASRec(ArchSpec(16, 32, 2, 2), data.n_items, 20)
    sn = wrap(model, space=SearchSpace((0.0, 0.5), (0.0, 0.5)))
    cfg = compress.SearchConfig(epochs=2, batch_size=64, tradeoff=50.0, seed=3)
    result = compress.search(sn, data, cfg, "cpu")
    d = result.decision
    assert (d["width"], d["depth"], sn.gate_depths[d["gates"]]) == (1, 0, 0)
    cheapest_kind = int(sn.flops[1, 0, :, 0].argmin())
    assert d["attention"] == cheapest_kind
    card = result.card()
    assert card["searched"] == {"width": True, "depth": True, "attention": True, "gate_layers": True}
    assert card["tau"] == [row["tau"] for row in result.history] == pytest.approx([1.0, 0.01])
    assert card["budget"]["reference"] == "input" and card["input_flops"] == sn.input_flops
    assert card["decision"]["label"] == result.arch.label() == result.slice().arch.label()
    save_supernet(sn, str(tmp_path / "s"))
    back = load_supernet(str(tmp_path / "s"))
    assert (back.kinds, back.gate_depths, back.input_arch) == (sn.kinds, sn.gate_depths, sn.input_arch)
    for mine, theirs in zip(sn.controllers, back.controllers):
        assert torch.equal(mine.logits, theirs.logits)
