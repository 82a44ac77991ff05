"""Data-aware gates: γ·sigmoid(MLP(E)), sizes per placement, L_d layers, and where δ1/δ2 act in the FFN."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compress.arch import ArchSpec, Width
from compress.backbones.sasrec import SASRec
from compress.nn.block import TransformerLayer
from compress.nn.gates import GAMMA, Gate, GatePair

D, DI = 16, 32  # hidden d, inner D


def test_gamma_is_two():
    assert GAMMA == 2.0


def test_gate_is_gamma_sigmoid_of_a_relu_mlp():
    torch.manual_seed(0)
    gate = Gate(D, DI, depth=2)
    x = torch.randn(3, 5, D)
    hidden = gate.hidden_layers[0]
    want = GAMMA * torch.sigmoid(gate.score(torch.relu(hidden(x))))
    assert torch.allclose(gate(x, DI), want, atol=1e-6)


def test_gate_scores_lie_in_zero_to_gamma():
    torch.manual_seed(1)
    gate = Gate(D, DI, depth=3)
    x = torch.randn(4, 20, D)
    delta = gate(x, DI)
    assert delta.shape == (4, 20, DI)
    assert (delta > 0).all() and (delta < GAMMA).all()
    assert delta.max() > 1.0 and delta.min() < 1.0  # both halves of the range are used
    extreme = gate(1e4 * x, DI)  # saturates, but never leaves [0, γ]
    assert (extreme >= 0).all() and (extreme <= GAMMA).all()
    assert extreme.max() > 1.99 or extreme.min() < 0.01


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_gate_depth_is_the_papers_number_of_gate_layers(depth):
    gate = Gate(D, DI, depth)
    assert len(gate.hidden_layers) == depth - 1
    linears = [m for m in gate.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == depth
    assert all((m.in_features, m.out_features) == (D, D) for m in gate.hidden_layers)
    assert (gate.score.in_features, gate.score.out_features) == (D, DI)
    params = sum(p.numel() for p in gate.parameters())
    assert params == (depth - 1) * (D * D + D) + D * DI + DI


@pytest.mark.parametrize("placement, sizes", [("code", (DI, D)), ("paper", (D, DI))])
def test_gate_pair_sizes_per_placement(placement, sizes):
    pair = GatePair(D, DI, depth=2, placement=placement)
    assert (pair.first.score.out_features, pair.second.score.out_features) == sizes
    e = torch.randn(2, 6, D)
    d1, d2 = pair(e, Width(D, DI))
    assert (d1.shape[-1], d2.shape[-1]) == sizes
    # a narrower candidate reads its kept embedding dims and scores its kept dims only
    d1, d2 = pair(e[..., :8], Width(8, 16))
    assert (d1.shape[-1], d2.shape[-1]) == ((16, 8) if placement == "code" else (8, 16))


def test_no_gate_parameters_when_gate_layers_is_zero():
    arch = ArchSpec(hidden=D, inner=DI, heads=2, layers=2, gate_layers=0)
    layer = TransformerLayer(arch, dropout=0.0, eps=1e-12)
    assert layer.gates is None
    model = SASRec(arch, n_items=20, max_len=10)
    assert not [n for n, _ in model.named_parameters() if "gate" in n]
    gated = SASRec(ArchSpec(hidden=D, inner=DI, heads=2, layers=2, gate_layers=2), n_items=20, max_len=10)
    gate_params = [n for n, _ in gated.named_parameters() if "gate" in n]
    assert len(gate_params) == 2 * 2 * 2 * 2  # layers x (δ1, δ2) x (hidden + score) x (weight + bias)


def ffn_reference(layer: TransformerLayer, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """The FFN half of a layer written out: where each placement multiplies δ1 and δ2 (eval: no dropout)."""
    g = layer.gates
    d1, d2 = (GAMMA * torch.sigmoid(gate.score(torch.relu(gate.hidden_layers[0](e)))) for gate in (g.first, g.second))
    if g.placement == "code":  # official code: δ1 on the dense-1 output before GELU, δ2 on the dense-2 output
        y = d2 * layer.ffn_out(F.gelu(d1 * layer.ffn_in(h)))
    else:  # paper Eq. 8: δ1 on the dense-1 input, δ2 on the dense-2 input (after GELU)
        y = layer.ffn_out(d2 * F.gelu(layer.ffn_in(d1 * h)))
    return layer.ffn_norm(h + y)


@pytest.mark.parametrize("placement", ["code", "paper"])
def test_gates_act_where_their_placement_says(placement):
    torch.manual_seed(2)
    arch = ArchSpec(hidden=D, inner=DI, heads=2, layers=1, gate_layers=2, gate_placement=placement)
    layer = TransformerLayer(arch, dropout=0.0, eps=1e-12).eval()
    for p in layer.parameters():  # away from the init so every term matters
        p.data.normal_(0.0, 0.3)
    x, e = torch.randn(2, 7, D), torch.randn(2, 7, D)
    with torch.no_grad():
        h = layer.attn_norm(x + layer.attention(x, None))
        got = layer(x, None, e)
        assert torch.allclose(got, ffn_reference(layer, h, e), atol=1e-5)
        # data-aware: the gates read E, so a different E gives a different output
        assert not torch.allclose(layer(x, None, torch.randn(2, 7, D)), got, atol=1e-3)


def test_the_two_placements_compute_different_functions():
    layers = {}
    for placement in ("code", "paper"):
        arch = ArchSpec(hidden=D, inner=DI, heads=2, layers=1, gate_layers=2, gate_placement=placement)
        torch.manual_seed(3)
        layers[placement] = TransformerLayer(arch, 0.0, 1e-12).eval()
    x, e = torch.randn(1, 5, D), torch.randn(1, 5, D)
    with torch.no_grad():
        assert not torch.allclose(layers["code"](x, None, e), layers["paper"](x, None, e), atol=1e-4)


@pytest.mark.parametrize("placement", ["code", "paper"])
def test_regated_model_keeps_every_other_tensor_and_unit_gates_are_the_identity(placement):
    """Removing gates (the paper's retrain-only ablation) changes nothing but the gates: with every gate
    at δ ≡ 1 (zero scoring weights: γ·sigmoid(0) = 1) the gated and the regated model score alike."""
    torch.manual_seed(0)
    gated = SASRec(ArchSpec(hidden=D, inner=DI, heads=2, layers=2, gate_layers=2, gate_placement=placement),
                   n_items=40, max_len=10).eval()
    assert gated.regated(2) is gated
    bare = gated.regated(0)
    assert bare.arch.gate_layers == 0 and not any(".gates." in n for n in bare.state_dict())
    source = gated.state_dict()
    for name, t in bare.state_dict().items():
        assert torch.equal(t, source[name]), name
    with torch.no_grad():
        for layer in gated.layers:
            for gate in (layer.gates.first, layer.gates.second):
                gate.score.weight.zero_()
                gate.score.bias.zero_()
    items = torch.randint(1, 41, (4, 10))
    items[0, 6:] = 0
    assert torch.allclose(gated(items), bare.eval()(items), atol=1e-6)
    deeper = gated.regated(3)  # another depth: fresh gates, the rest carried over
    assert len(deeper.layers[0].gates.first.hidden_layers) == 2
    assert torch.equal(deeper.state_dict()["layers.1.ffn_in.weight"], source["layers.1.ffn_in.weight"])
