"""Attention: the causal, padding-blind linear attention (LinRec form) and masked softmax attention."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from compress.arch import ArchSpec
from compress.backbones.sasrec import SASRec
from compress.nn.attention import (
    MAX_CHUNK,
    NORM_EPS,
    bidirectional_linear_attention,
    causal_linear_attention,
    chunk_size,
    linear_feature,
    softmax_attention,
)


def naive_linear_attention(q, k, v, valid=None):
    """O(N²) reference: out_t = Σ_{j ≤ t, j real} (q̂_t · k̂_j) v_j / √d_head."""
    def feature(x):
        x = F.elu(x)
        return x / (x.norm(dim=-1, keepdim=True) + NORM_EPS)

    qh, kh = feature(q), feature(k)
    n = q.shape[-2]
    scores = qh @ kh.transpose(-1, -2)  # (B, H, N, N)
    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    if valid is not None:
        allowed = allowed & valid[:, None, None, :]
    return (scores * allowed) @ v / math.sqrt(q.shape[-1])


def naive_softmax_attention(q, k, v, valid=None):
    n = q.shape[-2]
    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    if valid is not None:
        allowed = (allowed & valid[:, None, None, :]) | torch.eye(n, dtype=torch.bool)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def qkv(b, h, n, dh, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, dh, generator=gen, dtype=dtype) for _ in range(3)]


def random_valid(b, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    valid = torch.rand(b, n, generator=gen) > 0.3
    valid[0] = True
    valid[-1] = False  # one row that is all padding
    return valid


@pytest.mark.parametrize("n, c", [(1, 1), (20, 20), (64, 64), (65, 33), (128, 64), (150, 50), (200, 50)])
def test_chunk_size(n, c):
    assert chunk_size(n) == c
    assert chunk_size(n) <= MAX_CHUNK
    assert math.ceil(n / c) * c - n < math.ceil(n / c)  # pads by less than one item per chunk


@pytest.mark.parametrize("n", [1, 7, 40, 64, 65, 150])
@pytest.mark.parametrize("with_valid", [False, True])
def test_chunked_linear_attention_equals_the_naive_quadratic_form(n, with_valid):
    q, k, v = qkv(3, 2, n, 8, seed=n, dtype=torch.float64)
    valid = random_valid(3, n, seed=n) if with_valid else None
    got = causal_linear_attention(q, k, v, valid)
    want = naive_linear_attention(q, k, v, valid)
    assert got.shape == (3, 2, n, 8)
    assert torch.allclose(got, want, atol=1e-12, rtol=0), (got - want).abs().max()
    q32, k32, v32 = (t.float() for t in (q, k, v))
    assert torch.allclose(causal_linear_attention(q32, k32, v32, valid), want.float(), atol=1e-5, rtol=0)


def test_linear_attention_is_causal_across_chunks():
    """Not even rounding may carry the future back: a large future must leave the past bit-for-bit alone."""
    n = 150  # three chunks of 50
    q, k, v = qkv(2, 2, n, 8, seed=1)
    base = causal_linear_attention(q, k, v)
    gen = torch.Generator().manual_seed(11)
    for t in (0, 10, 49, 50, 63, 64, 99, 120):
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        for x in (q2, k2, v2):
            x[:, :, t + 1:] = 1e3 * torch.randn(x[:, :, t + 1:].shape, generator=gen)
        out = causal_linear_attention(q2, k2, v2)
        assert torch.allclose(out[:, :, :t + 1], base[:, :, :t + 1], atol=1e-6, rtol=0), t
        if t + 1 < n:
            assert not torch.allclose(out[:, :, t + 1], base[:, :, t + 1], atol=1e-3)


def test_linear_attention_ignores_padding_wherever_it_is_and_whatever_it_holds():
    n = 90
    q, k, v = qkv(2, 2, n, 8, seed=2)
    valid = torch.rand(2, n, generator=torch.Generator().manual_seed(2)) > 0.3  # row 0: holes anywhere
    valid[1] = torch.arange(n) < 40  # row 1: right-padded
    base = causal_linear_attention(q, k, v, valid)
    real = valid[:, None, :, None]
    gen = torch.Generator().manual_seed(12)
    garbage = [torch.where(real, x, 1e3 * torch.randn(x.shape, generator=gen)) for x in (q, k, v)]
    out = causal_linear_attention(*garbage, valid)
    keep = real.expand_as(base)
    assert torch.allclose(out[keep], base[keep], atol=1e-6, rtol=0)
    # the real positions compute what the sequence without its padding computes
    for row in range(2):
        idx = valid[row].nonzero()[:, 0]
        alone = causal_linear_attention(*(x[row:row + 1, :, idx] for x in (q, k, v)))
        assert torch.allclose(base[row, :, idx], alone[0], atol=1e-5, rtol=0)


def test_eps_keeps_all_zero_rows_finite_forward_and_backward():
    q, k, v = qkv(1, 2, 70, 8, seed=3)
    q[:, :, 5:20] = 0.0
    k[:, :, 10:30] = 0.0
    q[:, 1] = 0.0  # a whole head of zero queries
    k[:, 1] = 0.0
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    out = causal_linear_attention(q, k, v)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, :, 5:20], torch.zeros_like(out[:, :, 5:20]))  # zero query -> zero output
    out.square().sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))
    zeros = torch.zeros(3, 8)
    assert torch.equal(linear_feature(zeros), zeros)


def test_linear_feature_is_elu_scaled_to_unit_norm():
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    f = linear_feature(x)
    assert torch.allclose(f.norm(dim=-1), torch.ones(50), atol=1e-5)
    assert torch.allclose(f, F.elu(x) / F.elu(x).norm(dim=-1, keepdim=True), atol=1e-5)


def test_softmax_attention_matches_a_masked_reference_and_padding_rows_stay_finite():
    q, k, v = qkv(3, 2, 30, 8, seed=4)
    valid = random_valid(3, 30, seed=4)
    valid[1, 0] = False  # a padded first position: it must still see itself
    got = softmax_attention(q, k, v, valid, causal=True, dropout=0.0)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, naive_softmax_attention(q, k, v, valid), atol=1e-5)
    assert torch.allclose(softmax_attention(q, k, v, None, causal=True, dropout=0.0),
                          naive_softmax_attention(q, k, v), atol=1e-5)


def test_bidirectional_linear_attention_matches_the_dense_form_over_real_keys():
    q, k, v = qkv(3, 2, 30, 8, seed=6)
    valid = random_valid(3, 30, seed=6)
    got = bidirectional_linear_attention(q, k, v, valid)
    qf, kf = linear_feature(q), linear_feature(k)
    scores = (qf @ kf.transpose(-1, -2)).masked_fill(~valid[:, None, None, :], 0.0)  # (B, H, N, N)
    assert torch.allclose(got, scores @ v / 8 ** 0.5, atol=1e-5)
    future_changed = v.clone()
    future_changed[:, :, -1] += 1.0
    last_real = valid[:, -1]  # changing a real last key moves earlier outputs: it is bidirectional
    moved = (bidirectional_linear_attention(q, k, future_changed, valid) - got)[:, :, 0].abs().amax((1, 2))
    assert (moved[last_real] > 0).all() and (moved[~last_real] == 0).all()


def sasrec(max_len: int, attention: str = "linear", seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    arch = ArchSpec(hidden=16, inner=32, heads=2, layers=2, attention=attention, gate_layers=2)
    return SASRec(arch, n_items=40, max_len=max_len, dropout=0.2).eval()


@pytest.mark.parametrize("attention", ["linear", "softmax"])
def test_model_is_causal_over_a_150_long_sequence(attention):
    model = sasrec(150, attention)
    gen = torch.Generator().manual_seed(5)
    items = torch.randint(1, 41, (2, 150), generator=gen)
    with torch.no_grad():
        base = model(items)
        for t in (20, 63, 64, 110):
            changed = items.clone()
            changed[:, t + 1:] = torch.randint(1, 41, (2, 149 - t), generator=gen)
            out = model(changed)
            assert torch.allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-5, rtol=0), t
            assert not torch.allclose(out[:, t + 1:], base[:, t + 1:], atol=1e-3)


def test_model_outputs_at_real_positions_do_not_depend_on_the_padded_length():
    model = sasrec(70)
    gen = torch.Generator().manual_seed(6)
    lengths = [40, 33, 7, 1, 0]
    short = torch.zeros(len(lengths), 40, dtype=torch.long)
    for row, n in enumerate(lengths):
        short[row, :n] = torch.randint(1, 41, (n,), generator=gen)
    long = F.pad(short, (0, 30))
    tail = long.clone()
    tail[:, 40:] = torch.randint(1, 41, (len(lengths), 30), generator=gen)  # whatever the padding holds
    with torch.no_grad():
        a, b, c = model(short), model(long), model(tail)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    for row, n in enumerate(lengths):
        assert torch.allclose(a[row, :n], b[row, :n], atol=1e-5, rtol=0), row
        assert torch.allclose(a[row, :n], c[row, :n], atol=1e-5, rtol=0), row
    with torch.no_grad():
        assert torch.allclose(model.predict(short)[:, 1:], model.predict(long)[:, 1:], atol=1e-5)
