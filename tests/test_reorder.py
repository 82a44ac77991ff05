"""Channel-importance reordering: scores unchanged, groups sorted, idempotent, narrow slices keep more."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import compress
from compress.arch import ArchSpec
from compress.errors import ConfigError
from compress.nas.reorder import channel_importance, reorder
from compress.nn.block import TransformerLayer

N_ITEMS, MAX_LEN, B = 50, 12, 6
CRITERIA = ("magnitude", "taylor")


def arch(attention="softmax", gate_layers=0, gate_placement="code") -> ArchSpec:
    return ArchSpec(hidden=32, inner=64, heads=4, layers=2, attention=attention, gate_layers=gate_layers,
                    gate_placement=gate_placement)


def perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Eval mode, and noise on every parameter: the fresh init has unit norms and zero biases, which
    would hide a bias or norm left unpermuted."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def sasrec(**kw) -> nn.Module:
    return perturbed(compress.get_backbone("sasrec")(arch(**kw), n_items=N_ITEMS, max_len=MAX_LEN))


def batch(seed: int = 1):
    """Right-padded histories (B, N) with 0 padding and next-item targets on the real positions."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, MAX_LEN + 1, (B,), generator=g)
    real = torch.arange(MAX_LEN)[None, :] < lengths[:, None]
    items = torch.randint(1, N_ITEMS + 1, (B, MAX_LEN), generator=g) * real
    targets = torch.randint(1, N_ITEMS + 1, (B, MAX_LEN), generator=g) * real
    return items, targets


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest score difference over the real items (column 0, padding, is -inf)."""
    return (a[..., 1:] - b[..., 1:]).abs().max().item()


def assert_sorted(importance: dict) -> None:
    for group in [importance["hidden"], *importance["heads"], *importance["inner"]]:
        assert (group[:-1] >= group[1:] * (1 - 1e-9)).all()


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("placement", ("code", "paper"))
@pytest.mark.parametrize("gate_layers", (0, 1, 2))
@pytest.mark.parametrize("attention", ("softmax", "linear"))
def test_scores_unchanged_and_groups_sorted(attention, gate_layers, placement, criterion):
    model = sasrec(attention=attention, gate_layers=gate_layers, gate_placement=placement)
    items, targets = batch()
    real = items > 0
    with torch.no_grad():
        scores, hidden = model.predict(items), model(items)
    perms = reorder(model, criterion, batch=(items, targets))
    with torch.no_grad():
        assert max_diff(model.predict(items), scores) <= 1e-5
        # hidden states come out in the new channel order: new channel j is old channel perms["hidden"][j]
        assert (model(items)[real] - hidden[..., perms["hidden"]][real]).abs().max() <= 1e-5
    assert sorted(perms["hidden"].tolist()) == list(range(32))
    assert [len(h) for h in perms["heads"]] == [4, 4] and [len(d) for d in perms["inner"]] == [64, 64]
    assert_sorted(channel_importance(model, criterion, batch=(items, targets)))


@pytest.mark.parametrize("criterion", CRITERIA)
def test_second_reorder_is_the_identity(criterion):
    model = sasrec(gate_layers=2)
    data = batch()
    first = reorder(model, criterion, batch=data)
    assert not torch.equal(first["hidden"], torch.arange(32))  # the first pass did move channels
    second = reorder(model, criterion, batch=data)
    assert torch.equal(second["hidden"], torch.arange(32))
    assert all(torch.equal(h, torch.arange(4)) for h in second["heads"])
    assert all(torch.equal(d, torch.arange(64)) for d in second["inner"])


def test_narrow_slice_keeps_more_magnitude():
    model = sasrec(gate_layers=1)
    before = channel_importance(model)
    reorder(model)
    after = channel_importance(model)
    assert after["hidden"][:16].sum() >= before["hidden"][:16].sum()
    for i in range(2):
        assert after["heads"][i][:2].sum() >= before["heads"][i][:2].sum()
        assert after["inner"][i][:32].sum() >= before["inner"][i][:32].sum()
    assert torch.allclose(after["hidden"].sum(), before["hidden"].sum())  # a permutation loses nothing


def test_magnitude_counts_every_coupled_slice():
    model = compress.get_backbone("sasrec")(arch(), n_items=N_ITEMS, max_len=MAX_LEN)
    layer = model.layers[1]
    want = (layer.ffn_in.weight[5] ** 2).sum() + layer.ffn_in.bias[5] ** 2 + (layer.ffn_out.weight[:, 5] ** 2).sum()
    assert torch.isclose(channel_importance(model)["inner"][1][5], want.double())
    head = slice(8, 16)  # head 1 of width 8
    att = model.layers[0].attention
    want = sum((p.weight[head] ** 2).sum() + (p.bias[head] ** 2).sum() for p in (att.query, att.key, att.value))
    want = want + (att.out.weight[:, head] ** 2).sum()
    assert torch.isclose(channel_importance(model)["heads"][0][1], want.double())


def test_taylor_needs_a_batch():
    with pytest.raises(ConfigError, match="batch"):
        reorder(sasrec(), "taylor")


def test_unknown_criterion_names_the_choices():
    with pytest.raises(ConfigError, match="magnitude.*taylor"):
        reorder(sasrec(), "l1")


class FinalNorm(nn.Module):
    """A final norm and no embedding norm, and a mask-token row in the item table: the residual-stream
    norms are found by name, not by where SASRec keeps them."""

    def __init__(self, arch: ArchSpec) -> None:
        super().__init__()
        self.arch, self.n_items, self.max_len = arch, N_ITEMS, MAX_LEN  # what a Taylor batch is checked against
        self.item_embedding = nn.Embedding(N_ITEMS + 2, arch.hidden)
        self.position_embedding = nn.Embedding(MAX_LEN, arch.hidden)
        self.layers = nn.ModuleList(TransformerLayer(arch, 0.0, 1e-12) for _ in range(arch.layers))
        self.final_norm = nn.LayerNorm(arch.hidden)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        e = self.item_embedding(items) + self.position_embedding.weight[:items.shape[1]]  # (B, N, d)
        x = e
        for layer in self.layers:
            x = layer(x, items > 0, e)
        return self.final_norm(x)

    def score(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item_embedding.weight.T

    def predict(self, items: torch.Tensor) -> torch.Tensor:
        last = (items > 0).sum(1) - 1  # (B,) the last real item of each history
        return self.score(self(items)[torch.arange(len(items)), last])


@pytest.mark.parametrize("criterion", CRITERIA)
def test_final_norm_without_embedding_norm(criterion):
    model = perturbed(FinalNorm(arch(gate_layers=1, gate_placement="paper")))
    items, targets = batch()
    with torch.no_grad():
        scores = model.predict(items)
    perms = reorder(model, criterion, batch=(items, targets))
    assert not torch.equal(perms["hidden"], torch.arange(32))
    with torch.no_grad():
        assert max_diff(model.predict(items), scores) <= 1e-5
    assert_sorted(channel_importance(model, criterion, batch=(items, targets)))


def test_unknown_parameter_name_is_refused():
    model = sasrec()
    model.extra = nn.Linear(32, 32)
    with pytest.raises(ConfigError, match=r"extra\.(weight|bias)"):
        reorder(model)
