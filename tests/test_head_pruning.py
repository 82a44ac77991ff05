"""Narrowed heads as the width space's attention (`head_pruning: dims`): every head kept, each cut to its
leading dimensions, as Torch-Pruning prunes by default. Exact slices and FLOPs of every candidate, the
per-head rows and columns a slice keeps, the within-head reordering, the saved space, the search and
the CLI's errors."""
from __future__ import annotations

import functools
import json
from itertools import product
from pathlib import Path

import pytest
import torch
from clihelp import error_line, invoke
from synthetic import walking_dataset

import compress
from compress.arch import ArchSpec, Width
from compress.backbones.sasrec import SASRec
from compress.errors import ConfigError
from compress.measure.flops import analytic_flops, measured_flops
from compress.nas.controllers import one_hot
from compress.nas.reorder import channel_importance, reorder
from compress.nas.space import SearchSpace
from compress.nas.wrap import load_supernet, save_supernet, wrap

FULL = ArchSpec(hidden=32, inner=64, heads=4, layers=2)  # heads of 8
MAX_LEN, N_ITEMS = 24, 40
RATIOS = (0.0, 0.25, 0.5, 0.75)  # 32, 24, 16, 8 kept: heads of 8, 6, 4, 2
DIMS = SearchSpace(RATIOS, (0.0, 0.25, 0.5, 0.5), head_pruning="dims")


def perturbed(model):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model.eval()


@functools.lru_cache(maxsize=None)
def supernet(attention="softmax", gate_layers=0):
    torch.manual_seed(0)
    return perturbed(wrap(SASRec(FULL, N_ITEMS, MAX_LEN, dropout=0.2), space=DIMS, attention=attention,
                          gate_layers=gate_layers))


def histories() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(1, N_ITEMS + 1, (5, MAX_LEN), generator=gen)
    for row, length in enumerate([MAX_LEN, 13, 6, 2, 1]):
        items[row, length:] = 0
    return items


def test_dims_widths_keep_every_head_and_whole_widths_keep_whole_heads():
    assert DIMS.widths(FULL) == [Width(32, 64, 4), Width(24, 48, 4), Width(16, 32, 4), Width(8, 32, 4)]
    whole = SearchSpace((0.0, 0.5), (0.0, 0.5))
    assert whole.head_pruning == "whole" and whole.widths(FULL) == [Width(32, 64), Width(16, 32)]
    with pytest.raises(ConfigError, match="not divisible into heads of width 16; choose ratios that keep whole"):
        SearchSpace(RATIOS, RATIOS).widths(ArchSpec(hidden=32, inner=64, heads=2))  # 24 of 32 splits 2 heads of 12
    assert SearchSpace(RATIOS, RATIOS, head_pruning="dims").widths(ArchSpec(hidden=32, inner=64, heads=2))[1] == \
        Width(24, 48, 2)
    with pytest.raises(ConfigError, match="among 6 heads; choose ratios that split evenly"):
        SearchSpace((0.0, 0.25), (0.0, 0.25), head_pruning="dims").widths(ArchSpec(hidden=48, heads=6))


def test_dims_candidates_are_every_head_narrowed():
    sn = supernet()
    archs = [sn.arch_for(k, 1) for k in range(len(sn.widths))]
    assert [(a.hidden, a.heads, a.head_dim) for a in archs] == [(32, 4, 8), (24, 4, 6), (16, 4, 4), (8, 4, 2)]
    assert [c["heads"] for c in sn.candidates()] == [4] * 8


@pytest.mark.parametrize("attention, gate_layers", [("softmax", 0), ("linear", 0), ("softmax", 2), ("linear", 2)])
def test_every_one_hot_choice_equals_its_sliced_dense_model_exactly(attention, gate_layers):
    sn, items = supernet(attention, gate_layers), histories()
    with torch.no_grad():
        for k, l in product(range(len(sn.widths)), range(2)):
            dense = sn.slice(k, l).eval()
            want = dense.predict(items)[:, 1:]
            assert torch.equal(sn.predict(items, k, l)[:, 1:], want), (k, l)
            assert torch.equal(sn.predict(items, one_hot(k, 4), one_hot(l, 2))[:, 1:], want), (k, l)


def test_a_slice_keeps_the_leading_dims_of_every_head():
    """Head j of the 4 heads of 6 is rows 8j..8j+5 of query/key/value, columns 8j..8j+5 of the output."""
    sn = supernet()
    dense, full = sn.slice(1, 1), sn.backbone.layers[0].attention
    rows = torch.tensor([8 * j + i for j in range(4) for i in range(6)])
    got = dense.layers[0].attention
    for name in ("query", "key", "value"):
        assert torch.equal(getattr(got, name).weight, getattr(full, name).weight[rows][:, :24])
        assert torch.equal(getattr(got, name).bias, getattr(full, name).bias[rows])
    assert torch.equal(got.out.weight, full.out.weight[:24][:, rows])
    assert torch.equal(got.out.bias, full.out.bias[:24])
    assert torch.equal(dense.layers[0].ffn_in.weight, sn.backbone.layers[0].ffn_in.weight[:48, :24])


def test_flops_of_every_candidate_are_its_dense_models_exactly():
    sn = supernet("linear", 2)
    for c in sn.candidates():
        l = sn.depths.index(c["layers"])
        arch, dense = sn.arch_for(c["width"], l), sn.slice(c["width"], l)
        assert c["flops"] == analytic_flops(arch, MAX_LEN, N_ITEMS)["total"]
        assert analytic_flops(arch, MAX_LEN, N_ITEMS)["matmul"] == measured_flops(dense, MAX_LEN)
        assert c["params"] == sum(p.numel() for p in dense.parameters())


def model():
    torch.manual_seed(0)
    return perturbed(SASRec(FULL, N_ITEMS, MAX_LEN))


def test_reordering_dims_sorts_each_head_in_place_and_keeps_the_scores():
    m, items = model(), histories()
    with torch.no_grad():
        before = m.predict(items)
    perms = reorder(m, head_pruning="dims")
    with torch.no_grad():
        assert (m.predict(items)[:, 1:] - before[:, 1:]).abs().max() <= 1e-5
    assert all(torch.equal(h, torch.arange(4)) for h in perms["heads"])  # every head kept: none moves
    assert any(not torch.equal(d, torch.arange(8).expand(4, 8)) for d in perms["head_dims"])
    for dims in channel_importance(m)["head_dims"]:  # (H, head_dim): each head's dims most important first
        assert (dims[:, :-1] >= dims[:, 1:] * (1 - 1e-9)).all()
    again = reorder(m, head_pruning="dims")
    assert all(torch.equal(d, torch.arange(8).expand(4, 8)) for d in again["head_dims"])


def test_reordering_whole_heads_leaves_each_heads_dims_in_place():
    m = model()
    perms = reorder(m)
    assert all(torch.equal(d, torch.arange(8).expand(4, 8)) for d in perms["head_dims"])
    assert any(not torch.equal(h, torch.arange(4)) for h in perms["heads"])
    with pytest.raises(ConfigError, match="unknown head pruning 'heads'; choose one of whole, dims"):
        reorder(m, head_pruning="heads")


def test_wrap_reorders_dims_for_a_dims_space():
    """The supernet's narrowest candidate keeps more of each head's magnitude than without reordering."""
    plain = wrap(model(), space=DIMS, attention="softmax", gate_layers=0)
    ordered = wrap(model(), space=DIMS, attention="softmax", gate_layers=0, reorder="magnitude")

    def kept(sn):  # squared query weights of the 4 heads of 2
        return float((sn.slice(3, 1).layers[0].attention.query.weight.detach() ** 2).sum())

    assert kept(ordered) > kept(plain)


@pytest.mark.parametrize("value", ["heads", "", None, 2, ("dims",)])
def test_an_unknown_head_pruning_is_a_typed_error(value):
    with pytest.raises(ConfigError, match="unknown head pruning .*; choose whole .* or dims"):
        SearchSpace(head_pruning=value)


def test_the_space_survives_a_save_and_an_old_space_drops_whole_heads(tmp_path):
    assert SearchSpace.from_dict(DIMS.to_dict()) == DIMS
    assert SearchSpace.from_dict({"hidden_ratios": [0.0], "inner_ratios": [0.0]}).head_pruning == "whole"
    sn = supernet()
    save_supernet(sn, str(tmp_path / "s"))
    back = load_supernet(str(tmp_path / "s")).eval()
    assert back.space == sn.space and back.widths == sn.widths
    with torch.no_grad():
        assert torch.equal(back.predict(histories()), sn.predict(histories()))


def test_a_search_over_narrowed_heads_decides_every_head_narrowed():
    data = walking_dataset(n_users=200, n_items=120, max_len=30)
    torch.manual_seed(0)
    sn = wrap(SASRec(ArchSpec(16, 32, 2, 2), data.n_items, 20),
              space=SearchSpace((0.0, 0.5), (0.0, 0.5), head_pruning="dims"), attention="softmax", gate_layers=0)
    result = compress.search(sn, data, compress.SearchConfig(epochs=2, batch_size=64, tradeoff=50.0, seed=3), "cpu")
    assert (result.arch.hidden, result.arch.heads) == (8, 2)  # λ large: the narrowest, 2 heads of 4
    card = result.card()
    assert card["head_pruning"] == "dims" and card["widths"][1] == {"hidden": 8, "inner": 16, "heads": 2}
    dense = result.slice()
    assert dense.arch == result.arch and dense.layers[0].attention.head_dim == 4


def test_cli_head_pruning_dims_and_a_bad_value_exits_2(tmp_path, tiny_data_file):
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml")
    out = tmp_path / "dims"
    result = invoke("search", "--recipe", recipe, "--data", tiny_data_file, "--device", "cpu", "--head-pruning",
                    "dims", "--hidden-ratios", "0.5", "--inner-ratios", "0.5", "--out", out)
    assert result.exit_code == 0, result.stderr + result.stdout
    arch = ArchSpec.from_dict(json.loads((out / "arch.json").read_text()))
    assert (arch.hidden, arch.heads, arch.head_dim) == (8, 2, 4)  # whole heads would keep one head of 8
    assert json.loads((out / "search_card.json").read_text())["head_pruning"] == "dims"
    assert "L_d=2 (2 heads of 4)" in invoke("inspect", out).stdout
    for value in ("heads", "", "dim", "whole,dims"):
        bad = tmp_path / f"bad{abs(hash(value))}"
        line = error_line(invoke("search", "--recipe", recipe, "--data", tiny_data_file, "--device", "cpu",
                                 "--head-pruning", value, "--out", bad))
        assert "--head-pruning" in line and "whole" in line and "dims" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dims"]
