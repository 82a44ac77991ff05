"""Widths and zero-masks: slicing the leading dims is the paper's zero-mask, and heads stay whole.

The reference below computes one candidate with the FULL-size weights and explicit multiplicative 0/1
masks on the trailing dims (embedding, q/k/v/out outputs, FFN inner, residual stream, gates), with
LayerNorm statistics over the kept dims only, and must equal the sliced computation.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from compress.arch import ArchSpec, Width
from compress.backbones.objectives import at, last_index
from compress.backbones.sasrec import SASRec
from compress.errors import ConfigError
from compress.nas.controllers import one_hot
from compress.nas.space import SearchSpace
from compress.nas.wrap import wrap
from compress.nn.attention import NORM_EPS
from compress.nn.gates import GAMMA
from compress.nn.width import layer_norm, linear, zero_pad

N_ITEMS, MAX_LEN = 40, 24
FULL = dict(hidden=32, inner=64, heads=4, layers=3)  # head width 8
SPACE = SearchSpace((0.0, 0.25, 0.5), (0.0, 0.25, 0.5))  # widths (32, 64), (24, 48), (16, 32)


def perturbed_supernet(attention: str, gate_layers: int, placement: str, seed: int = 0):
    """A supernet whose every weight, bias and LayerNorm affine is random: slicing mistakes show."""
    torch.manual_seed(seed)
    backbone = SASRec(ArchSpec(**FULL), N_ITEMS, MAX_LEN, dropout=0.2)
    sn = wrap(backbone, space=SPACE, attention=attention, gate_layers=gate_layers, gate_placement=placement)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sn.backbone.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return sn.eval()


def histories(n_rows: int = 5, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (n_rows, MAX_LEN), generator=gen)
    for row, length in enumerate([MAX_LEN, 17, 9, 2, 1][:n_rows]):
        items[row, length:] = 0  # right-padded
    return items


# --- the helpers -----------------------------------------------------------------------------------


def test_linear_uses_the_leading_block_of_weight_and_bias():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 6)
    x = torch.randn(3, 5)
    want = x @ layer.weight[:4, :5].T + layer.bias[:4]
    assert torch.allclose(linear(layer, x, 4), want, atol=1e-6)
    assert torch.allclose(linear(layer, x), x @ layer.weight[:, :5].T + layer.bias, atol=1e-6)
    full = torch.randn(3, 8)
    assert torch.allclose(linear(layer, full), layer(full), atol=1e-6)


def test_layer_norm_statistics_cover_the_kept_dims_only():
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(8, eps=1e-12)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5), ln.bias.uniform_(-1, 1)
    x = torch.randn(4, 8)
    kept = x[:, :5]
    mean, var = kept.mean(-1, keepdim=True), kept.var(-1, unbiased=False, keepdim=True)
    want = (kept - mean) / torch.sqrt(var + 1e-12) * ln.weight[:5] + ln.bias[:5]
    assert torch.allclose(layer_norm(ln, kept), want, atol=1e-5)
    assert torch.allclose(layer_norm(ln, x), ln(x), atol=1e-6)


def test_zero_pad_puts_zeros_on_the_trailing_dims():
    x = torch.randn(2, 3, 5)
    out = zero_pad(x, 8)
    assert out.shape == (2, 3, 8)
    assert torch.equal(out[..., :5], x) and torch.equal(out[..., 5:], torch.zeros(2, 3, 3))
    assert zero_pad(x, 5) is x


# --- the zero-mask reference -----------------------------------------------------------------------


def masked_layer_norm(x: torch.Tensor, ln: torch.nn.LayerNorm, m: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the dims where m = 1, output zero elsewhere."""
    k = m.sum()
    mean = (x * m).sum(-1, keepdim=True) / k
    var = (((x - mean) * m) ** 2).sum(-1, keepdim=True) / k
    return ((x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias) * m


def masked_attention(x, attn, m, valid, kind, head_dim):
    b, n, d = x.shape
    q, k, v = ((x @ p.weight.T + p.bias) * m for p in (attn.query, attn.key, attn.value))  # full-width outputs
    q, k, v = (t.view(b, n, d // head_dim, head_dim).transpose(1, 2) for t in (q, k, v))  # every head, masked too
    allowed = torch.ones(n, n, dtype=torch.bool).tril() & valid[:, None, None, :]
    if kind == "softmax":
        allowed = allowed | torch.eye(n, dtype=torch.bool)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)
        y = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    else:
        def feature(t):
            t = F.elu(t)
            return t / (t.norm(dim=-1, keepdim=True) + NORM_EPS)
        y = ((feature(q) @ feature(k).transpose(-1, -2)) * allowed) @ v / math.sqrt(head_dim)
    y = y.transpose(1, 2).reshape(b, n, d)
    return (y @ attn.out.weight.T + attn.out.bias) * m


def masked_gate(gate, e, m, m_out):
    x = e
    for layer in gate.hidden_layers:
        x = torch.relu(x @ layer.weight.T + layer.bias) * m
    return GAMMA * torch.sigmoid(x @ gate.score.weight.T + gate.score.bias) * m_out


def zero_mask_reference(model: SASRec, items: torch.Tensor, width: Width, layers: int) -> torch.Tensor:
    """Candidate (width, layers) of the full-size ``model`` by multiplicative masks: (B, N, d_full)."""
    d, big = model.arch.hidden, model.arch.inner
    m = (torch.arange(d) < width.hidden).float()  # hidden zero-mask
    m_in = (torch.arange(big) < width.inner).float()  # inner zero-mask
    valid = items > 0
    pos = torch.arange(items.shape[1])
    e = masked_layer_norm((model.item_embedding.weight[items] + model.position_embedding.weight[pos]) * m,
                          model.emb_norm, m)
    x = e
    for layer in model.layers[:layers]:
        h = masked_layer_norm(x + masked_attention(x, layer.attention, m, valid, model.arch.attention,
                                                   model.arch.head_dim), layer.attn_norm, m)
        g = layer.gates
        d1 = d2 = None
        if g is not None:
            sizes = (m_in, m) if g.placement == "code" else (m, m_in)
            d1, d2 = masked_gate(g.first, e, m, sizes[0]), masked_gate(g.second, e, m, sizes[1])
        paper = g is not None and g.placement == "paper"
        f = ((d1 * h if paper else h) @ layer.ffn_in.weight.T + layer.ffn_in.bias) * m_in
        if g is not None and not paper:
            f = d1 * f
        f = F.gelu(f)
        y = ((d2 * f if paper else f) @ layer.ffn_out.weight.T + layer.ffn_out.bias) * m
        if g is not None and not paper:
            y = d2 * y
        x = masked_layer_norm(h + y, layer.ffn_norm, m)
    return x


@pytest.mark.parametrize("attention", ["softmax", "linear"])
@pytest.mark.parametrize("gate_layers, placement", [(0, "code"), (2, "code"), (3, "paper")])
def test_slicing_is_the_papers_zero_mask(attention, gate_layers, placement):
    sn = perturbed_supernet(attention, gate_layers, placement)
    items = histories()
    with torch.no_grad():
        for k, width in enumerate(sn.widths):
            for l in range(sn.full.layers):
                ref = zero_mask_reference(sn.backbone, items, width, l + 1)  # (B, N, 32)
                assert torch.equal(ref[..., width.hidden:], torch.zeros_like(ref[..., width.hidden:]))
                dense = sn.slice(k, l).eval()
                got = dense(items)  # (B, N, d_k)
                assert got.shape[-1] == width.hidden
                assert (ref[..., :width.hidden] - got).abs().max() <= 1e-5, (k, l)
                sup = sn(items, one_hot(k, len(sn.widths)), one_hot(l, sn.full.layers))
                assert (ref - sup).abs().max() <= 1e-5, (k, l)
                ref_scores = at(ref, last_index(items)) @ sn.backbone.item_embedding.weight.T
                assert (ref_scores[:, 1:] - dense.predict(items)[:, 1:]).abs().max() <= 1e-4, (k, l)


def test_the_reference_is_not_the_full_model_in_disguise():
    """Masks matter: the narrow candidate differs from the full model's leading dims (the test can fail)."""
    sn = perturbed_supernet("linear", 2, "code")
    items = histories()
    with torch.no_grad():
        full = zero_mask_reference(sn.backbone, items, sn.widths[0], 3)
        narrow = zero_mask_reference(sn.backbone, items, sn.widths[-1], 3)
        plain = sn.backbone(items)
    assert torch.allclose(full, plain, atol=1e-5)
    assert not torch.allclose(narrow[..., :16], full[..., :16], atol=1e-2)


# --- heads -----------------------------------------------------------------------------------------


def test_a_narrower_hidden_size_means_fewer_heads_of_the_same_width():
    arch = ArchSpec(hidden=128, inner=256, heads=4, layers=4, attention="linear", gate_layers=2)
    narrow = arch.narrowed(64, 128, 2)
    assert (narrow.hidden, narrow.inner, narrow.heads, narrow.head_dim, narrow.layers) == (64, 128, 2, 32, 2)
    assert (narrow.attention, narrow.gate_layers, narrow.gate_placement) == ("linear", 2, "code")
    assert arch.narrowed(96, 192, 4).heads == 3
    with pytest.raises(ConfigError, match="head width 32"):
        arch.narrowed(48, 128, 2)


def test_sliced_models_carry_whole_heads():
    sn = perturbed_supernet("softmax", 0, "code")
    for k, width in enumerate(sn.widths):
        dense = sn.slice(k, 0)
        attn = dense.layers[0].attention
        assert dense.arch.heads == width.hidden // 8 and dense.arch.head_dim == 8
        assert attn.head_dim == 8 and attn.query.out_features == width.hidden


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_no_nan_anywhere_even_with_all_padding_rows(attention):
    sn = perturbed_supernet(attention, 2, "code")
    items = histories()
    items[3] = 0  # a row that is all padding
    items[4, :] = 0
    items[4, -1] = 7  # and one whose only item sits at the end
    sn.train()
    p = sn.alpha.sample(1.0, "gumbel", torch.Generator().manual_seed(0))
    q = sn.beta.sample(1.0, "gumbel", torch.Generator().manual_seed(1))
    h = sn(items, p, q)
    assert torch.isfinite(h).all()
    scores = sn.score(at(h, last_index(items)))
    loss = scores[:, 1:].logsumexp(-1).mean() + sn.expected_flops(p, q)
    loss.backward()
    for name, param in sn.named_parameters():
        assert param.grad is None or torch.isfinite(param.grad).all(), name
    sn.eval()
    items[4] = items[4].flip(0)  # predict refuses a left-padded row: its item goes first
    with torch.no_grad():
        assert torch.isfinite(sn.predict(items)[:, 1:]).all()
        for k in range(len(sn.widths)):
            for l in range(sn.full.layers):
                assert torch.isfinite(sn.slice(k, l).eval().predict(items)[:, 1:]).all()


# --- ArchSpec --------------------------------------------------------------------------------------


def test_archspec_json_round_trip():
    arch = ArchSpec(hidden=96, inner=192, heads=3, layers=2, attention="linear", gate_layers=2,
                    gate_placement="paper")
    d = json.loads(json.dumps(arch.to_dict()))
    assert d["head_dim"] == 32
    assert ArchSpec.from_dict(d) == arch
    assert ArchSpec.from_dict({k: v for k, v in d.items() if k != "head_dim"}) == arch


@pytest.mark.parametrize("kwargs, words", [
    (dict(hidden=30, heads=4), "not divisible into 4 heads"),
    (dict(hidden=0), "hidden must be >= 1, got 0"),
    (dict(layers=0), r"layers must be in \[1, 1024\], got 0"),
    (dict(attention="flash"), "unknown attention"),
    (dict(gate_placement="input"), "unknown gate placement"),
    (dict(gate_layers=-1), "gate_layers"),
])
def test_bad_archspec_raises_config_error(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        ArchSpec(**kwargs)


def test_bad_archspec_dicts_raise_config_error():
    good = ArchSpec(hidden=32, heads=4).to_dict()
    with pytest.raises(ConfigError, match="unknown ArchSpec keys: dim"):
        ArchSpec.from_dict({**good, "dim": 3})
    with pytest.raises(ConfigError, match="head_dim"):
        ArchSpec.from_dict({**good, "head_dim": 16})
    with pytest.raises(ConfigError, match="not divisible"):
        ArchSpec.from_dict({**good, "hidden": 30})
