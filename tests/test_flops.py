"""FLOPs (= 2 × multiply-adds): the analytic model against FlopCounterMode, growth in N, the supernet table."""
from __future__ import annotations

import functools

import pytest
import torch

from compress.arch import ArchSpec
from compress.backbones.sasrec import SASRec
from compress.measure.flops import analytic_flops, attention_matmul_flops, elementwise_flops, measured_flops
from compress.nas.controllers import one_hot
from compress.nas.space import SearchSpace
from compress.nas.wrap import wrap


@functools.lru_cache(maxsize=None)
def supernet(attention: str, gate_layers: int, hidden: int = 32, inner: int = 64, heads: int = 4, layers: int = 2,
             n_items: int = 60, max_len: int = 50):
    torch.manual_seed(0)
    backbone = SASRec(ArchSpec(hidden, inner, heads, layers), n_items, max_len)
    return wrap(backbone, space=SearchSpace((0.0, 0.25, 0.5), (0.0, 0.25, 0.5)), attention=attention,
                gate_layers=gate_layers)


@pytest.mark.parametrize("gate_layers", [0, 2])
@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_analytic_matmul_flops_equal_flop_counter_for_every_candidate(attention, gate_layers):
    sn = supernet(attention, gate_layers)
    assert len(sn.widths) == 3
    for k in range(3):
        for l in range(sn.full.layers):
            arch = sn.arch_for(k, l)
            dense = sn.slice(k, l)
            predicted = analytic_flops(arch, sn.max_len, sn.n_items)
            measured = measured_flops(dense, sn.max_len)
            assert measured > 0
            assert predicted["matmul"] == measured, (k, l, predicted, measured)  # exactly, as the README says
            assert predicted["total"] == predicted["matmul"] + predicted["elementwise"] > predicted["matmul"]


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_the_elementwise_estimate_adds_what_the_readme_says_at_the_papers_size(attention):
    """ML-1M shape (d=128, D=256, 4 heads, N=200, 3706 items): matrix products exactly as counted, and
    the elementwise estimate adds 1–3.5% (README, "What is computed")."""
    sn = supernet(attention, 2, hidden=128, inner=256, heads=4, layers=2, n_items=3706, max_len=200)
    for k in range(3):
        for l in range(2):
            predicted = analytic_flops(sn.arch_for(k, l), 200, 3706)
            assert predicted["matmul"] == measured_flops(sn.slice(k, l), 200)
            assert 0.01 <= predicted["elementwise"] / predicted["matmul"] <= 0.035, (k, l)


def test_gates_add_their_elementwise_work():
    """The gates' ReLUs, sigmoids, γ and gating products are elementwise work the search weighs: a gated
    candidate's estimate exceeds the ungated one's by exactly that count."""
    d, D, n = 32, 64, 20
    plain = elementwise_flops(ArchSpec(d, D, 4, 1, "softmax", 0), n)
    for depth in (1, 2, 3):
        gated = elementwise_flops(ArchSpec(d, D, 4, 1, "softmax", depth), n)
        assert gated - plain == 2 * (depth - 1) * n * d + 6 * n * (D + d)


def test_a_bidirectional_linear_attention_forms_no_causal_mask_scores():
    """Bidirectional (cloze) linear attention computes q̂ (k̂ᵀ v) with no per-chunk scores to mask; the
    estimate counted them as for a causal model (0.9% of a BERT4Rec total at N = 70)."""
    from compress.nn.attention import chunk_size

    arch, n = ArchSpec(16, 32, 2, 2, "linear", 0), 70
    extra = elementwise_flops(arch, n, causal=True) - elementwise_flops(arch, n, causal=False)
    assert extra == arch.layers * arch.heads * n * chunk_size(n)
    assert analytic_flops(arch, n, 99, causal=False)["elementwise"] == elementwise_flops(arch, n, causal=False)


def test_breakdown_by_hand():
    arch = ArchSpec(hidden=32, inner=64, heads=4, layers=3, attention="softmax", gate_layers=2)
    n, items = 50, 99
    f = analytic_flops(arch, n, items)
    assert f["qkvo"] == 3 * 4 * 2 * n * 32 * 32
    assert f["attention"] == 3 * 2 * (2 * 4 * n * n * 8)  # QKᵀ and AV, per head
    assert f["ffn"] == 3 * 2 * (2 * n * 32 * 64)
    assert f["gates"] == 3 * (2 * 2 * n * 32 * 32 + 2 * n * 32 * (64 + 32))
    assert f["head"] == 2 * 32 * (items + 1)
    assert f["matmul"] == sum(f[key] for key in ("qkvo", "attention", "ffn", "gates", "head"))
    assert analytic_flops(ArchSpec(hidden=32, inner=64, heads=4, layers=3), n, items)["gates"] == 0


def test_linear_attention_flops_by_hand():
    arch = ArchSpec(hidden=32, inner=64, heads=4, layers=1, attention="linear")
    # N = 150: three chunks of 50; per head: QKᵀ and AV inside chunks (2·2·N·C·dh), KᵀV and Q·state (2·2·N·dh²)
    assert attention_matmul_flops(arch, 150) == 4 * (4 * 150 * 50 * 8 + 4 * 150 * 8 * 8)
    # N ≤ 64 is one chunk: the quadratic form alone, the same products as softmax attention
    assert attention_matmul_flops(arch, 50) == 4 * (4 * 50 * 50 * 8)
    soft = ArchSpec(hidden=32, inner=64, heads=4, layers=1, attention="softmax")
    assert all(attention_matmul_flops(arch, n) == attention_matmul_flops(soft, n) for n in (1, 20, 50, 64))


def test_attention_flops_grow_quadratically_for_softmax_and_linearly_for_linear():
    soft = ArchSpec(hidden=32, inner=64, heads=2, layers=2, attention="softmax")
    lin = ArchSpec(hidden=32, inner=64, heads=2, layers=2, attention="linear")
    for n in (64, 100, 128, 256):
        assert attention_matmul_flops(soft, 2 * n) == 4 * attention_matmul_flops(soft, n)
    for n in (100, 128, 256):  # several chunks each (at N ≤ 64 linear attention is softmax's quadratic form)
        assert attention_matmul_flops(lin, 2 * n) == pytest.approx(2 * attention_matmul_flops(lin, n), rel=0.05)
    assert attention_matmul_flops(lin, 256) == 2 * attention_matmul_flops(lin, 128)  # whole 64-chunks: exact


def test_measured_flops_grow_quadratically_for_softmax_and_linearly_for_linear():
    measured = {}
    for attention in ("softmax", "linear"):
        torch.manual_seed(0)
        model = SASRec(ArchSpec(32, 64, 2, 2, attention=attention), n_items=20, max_len=512)
        measured[attention] = [measured_flops(model, n) for n in (128, 256, 512)]
    s, lin = measured["softmax"], measured["linear"]
    # linear: every term is O(N) (head cost is tiny): doubling N doubles the FLOPs
    assert lin[1] / lin[0] == pytest.approx(2.0, rel=0.02) and lin[2] / lin[1] == pytest.approx(2.0, rel=0.02)
    # softmax: the N² attention takes over, so each doubling costs more than the last, heading for 4x
    assert 2.5 < s[1] / s[0] < s[2] / s[1] < 4.0
    assert s[2] > 2 * lin[2]


def test_supernet_flops_table_is_the_analytic_total_of_each_candidate():
    sn = supernet("linear", 2)
    assert sn.flops.shape == (3, 2, 1, 1)  # (widths, depths, attention kinds, gate depths): two fixed here
    for k in range(3):
        for l in range(2):
            assert sn.flops_of(k, l) == analytic_flops(sn.arch_for(k, l), sn.max_len, sn.n_items)["total"]
    assert (sn.flops[1:] < sn.flops[:-1]).all()  # narrower is cheaper
    assert (sn.flops[:, 1:] > sn.flops[:, :-1]).all()  # deeper is dearer


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_expected_flops_with_one_hot_selection_is_the_table_entry_over_the_full_model(attention):
    sn = supernet(attention, 2)
    full = sn.flops_of(0, sn.full.layers - 1)
    for k in range(3):
        for l in range(2):
            value = sn.expected_flops(one_hot(k, 3), one_hot(l, 2))
            assert float(value) == pytest.approx(sn.flops_of(k, l) / full, rel=1e-6)
    assert float(sn.expected_flops(one_hot(0, 3), one_hot(1, 2))) == pytest.approx(1.0)


def test_expected_flops_is_the_bilinear_mix_and_differentiable():
    sn = supernet("linear", 2)
    p = torch.tensor([0.2, 0.5, 0.3], requires_grad=True)
    q = torch.tensor([0.6, 0.4], requires_grad=True)
    value = sn.expected_flops(p, q)
    table = sn.flops.float()[:, :, 0, 0] / sn.flops_of(0, 1)
    assert float(value.detach()) == pytest.approx(float(p.detach() @ table @ q.detach()), rel=1e-6)
    value.backward()
    assert torch.allclose(p.grad, table @ q.detach(), rtol=1e-5)
    assert torch.allclose(q.grad, p.detach() @ table, rtol=1e-5)


def test_measured_flops_leaves_the_training_mode_alone():
    torch.manual_seed(0)
    model = SASRec(ArchSpec(16, 32, 2, 1), n_items=10, max_len=8)
    model.train()
    measured_flops(model, 8)
    assert model.training
    model.eval()
    measured_flops(model, 8)
    assert not model.training
