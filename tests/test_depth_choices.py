"""The exit depths as a searched choice (`depth_choices`): a subset of 1..L, one depth kept (widths only, as a
channel pruner searches), exact slices and FLOPs of every candidate, the depth mixture, the penalty's
depth, the search card and the CLI's errors."""
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
from compress.app.orientation import choice_labels
from compress.arch import ArchSpec
from compress.backbones.sasrec import SASRec
from compress.errors import ConfigError
from compress.measure.flops import analytic_flops, measured_flops
from compress.nas.controllers import one_hot
from compress.nas.search import searched
from compress.nas.space import SearchSpace
from compress.nas.wrap import load_supernet, save_supernet, wrap
from compress.store.card import exit_depths

FULL = ArchSpec(hidden=32, inner=64, heads=4, layers=3)
MAX_LEN = 24


@functools.lru_cache(maxsize=None)
def supernet(depths=(1, 3)):
    """Widths {32, 16} x the exit ``depths`` of a 3-layer SASRec, softmax, no gates, weights off their init."""
    torch.manual_seed(0)
    sn = wrap(SASRec(FULL, 40, MAX_LEN, dropout=0.2), space=SearchSpace((0.0, 0.5), (0.0, 0.5), depths=depths),
              attention="softmax", gate_layers=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in sn.backbone.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return sn.eval()


def histories() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(1, 41, (5, MAX_LEN), generator=gen)
    for row, length in enumerate([MAX_LEN, 13, 6, 2, 1]):
        items[row, length:] = 0
    return items


@pytest.mark.parametrize("depths", [(1, 3), (2,), (3,)])
def test_every_one_hot_choice_equals_its_sliced_dense_model_exactly(depths):
    sn = supernet(depths)
    assert sn.depths == depths and sn.beta.logits.numel() == len(depths)
    items = histories()
    with torch.no_grad():
        for k, l in product(range(len(sn.widths)), range(len(depths))):
            dense = sn.slice(k, l).eval()
            assert dense.arch.layers == depths[l] == sn.arch_for(k, l).layers
            want = dense.predict(items)[:, 1:]
            assert torch.equal(sn.predict(items, k, l)[:, 1:], want), (k, l)
            assert torch.equal(sn.predict(items, one_hot(k, 2), one_hot(l, len(depths)))[:, 1:], want), (k, l)


def test_flops_and_candidates_are_those_of_the_listed_depths_exactly():
    sn = supernet((1, 3))
    cands = sn.candidates()
    assert sorted({c["layers"] for c in cands}) == [1, 3] and len(cands) == 4
    for c in cands:
        l = sn.depths.index(c["layers"])
        arch = sn.arch_for(c["width"], l)
        assert c["flops"] == sn.flops_of(c["width"], l) == analytic_flops(arch, MAX_LEN, sn.n_items)["total"]
        assert analytic_flops(arch, MAX_LEN, sn.n_items)["matmul"] == measured_flops(sn.slice(c["width"], l), MAX_LEN)


def test_the_depth_mixture_weighs_each_listed_exit():
    """Soft q over depths (1, 3) at one width is q_0 · (exit after 1 layer) + q_1 · (exit after 3)."""
    sn = supernet((1, 3))
    items, q = histories(), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        mixed = sn(items, 0, q)
        parts = [sn(items, 0, l) for l in range(2)]
    assert torch.allclose(mixed, q[0] * parts[0] + q[1] * parts[1], atol=1e-6)
    assert not torch.allclose(parts[0], parts[1])


def test_the_default_space_searches_every_depth_as_before():
    sn = wrap(SASRec(FULL, 40, MAX_LEN), space=SearchSpace((0.0, 0.5), (0.0, 0.5)), attention="softmax",
              gate_layers=0)
    assert sn.depths == (1, 2, 3) and sn.exit_depths.tolist() == [1, 2, 3]
    assert SearchSpace.from_dict({"hidden_ratios": [0.0], "inner_ratios": [0.0]}).depths is None


def test_exit_depths_of_a_card_and_of_one_written_before_depth_choices():
    rows = [{"q": [0.4, 0.6]}]
    assert exit_depths({"depths": [1, 3], "history": rows}) == [1, 3]
    assert exit_depths({"history": rows}) == [1, 2] and exit_depths({"history": []}) == []


@pytest.mark.parametrize("depths, words", [((), "give one or more layer counts"), ((0,), "layer counts >= 1"),
                                           ((True,), "layer counts"), ((1.5,), "layer counts")])
def test_bad_depth_choices_are_typed_errors(depths, words):
    with pytest.raises(ConfigError, match=words):
        SearchSpace(depths=depths)


def test_negative_depths_count_from_the_models_depth():
    three = ArchSpec(hidden=32, inner=64, heads=4, layers=3)
    assert SearchSpace(depths=(-1,)).exits(three) == (3,) and SearchSpace(depths=(-1,)).exits(FULL) == (3,)
    assert SearchSpace(depths=(-1,)).exits(ArchSpec(layers=2)) == (2,)
    assert SearchSpace(depths=(-1, 3, -3, 1)).depths == (1, 3, -3, -1)
    assert SearchSpace(depths=(-1, 3, -3, 1)).exits(three) == (1, 3)
    with pytest.raises(ConfigError,
                       match=r"depths \[-4\] exceed the model's 3 layer\(s\); choose depths in 1..3 or -3..-1"):
        SearchSpace(depths=(-4,)).exits(three)
    sn = wrap(SASRec(FULL, 40, MAX_LEN), space=SearchSpace((0.0, 0.5), (0.0, 0.5), depths=(-1,)), attention="softmax",
              gate_layers=0)
    assert sn.depths == (3,) and sn.arch_for(1, 0).layers == 3


def test_a_depth_beyond_the_model_is_a_typed_error_naming_its_layers():
    with pytest.raises(ConfigError, match=r"depths \[2, 4\] exceed the model's 3 layer\(s\); choose depths in 1..3"):
        wrap(SASRec(FULL, 40, MAX_LEN), space=SearchSpace(depths=(4, 2, 2)))


def test_depths_are_kept_in_order_and_survive_a_save(tmp_path):
    space = SearchSpace((0.0, 0.5), (0.0, 0.5), depths=(3, 1, 3))
    assert space.depths == (1, 3) and SearchSpace.from_dict(space.to_dict()) == space
    sn = supernet((1, 3))
    save_supernet(sn, str(tmp_path / "s"))
    back = load_supernet(str(tmp_path / "s")).eval()
    assert back.depths == (1, 3) and back.space == sn.space
    with torch.no_grad():
        assert torch.equal(back.predict(histories()), sn.predict(histories()))
    assert choice_labels(back)["q"]["labels"] == ["1 layer", "3 layers"]


def test_a_search_at_one_kept_depth_decides_widths_only(tmp_path):
    """depths (2,) on a 2-layer model: β has one choice, the decision keeps both layers, the card and the
    epoch rows say so, and the paper penalty's depth factor is the kept depth."""
    data = walking_dataset(n_users=200, n_items=120, max_len=30)
    torch.manual_seed(0)
    sn = wrap(SASRec(ArchSpec(16, 32, 2, 2), data.n_items, 20), space=SearchSpace((0.0, 0.5), (0.0, 0.5), depths=(2,)),
              attention="softmax", gate_layers=0)
    result = compress.search(sn, data, compress.SearchConfig(epochs=2, batch_size=64, tradeoff=50.0, seed=3), "cpu")
    assert result.arch.layers == 2 and result.arch.hidden == 8  # λ large: the narrowest width, depth kept
    card = result.card()
    assert card["depths"] == [2] and card["searched"]["depth"] is False and card["searched"]["width"] is True
    assert all(row["decision"][1] == 2 and len(row["q"]) == 1 for row in card["history"])
    assert {c["layers"] for c in card["candidates"]} == {2}
    assert searched(sn)["depth"] is False and int(sn.exit_depths[sn.beta.logits.argmax()]) == 2


def test_cli_depth_choices_keep_the_depth_and_a_bad_one_exits_2(tmp_path, tiny_data_file):
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml")
    out = tmp_path / "kept"
    result = invoke("search", "--recipe", recipe, "--data", tiny_data_file, "--device", "cpu", "--depth-choices", "2",
                    "--out", out)
    assert result.exit_code == 0, result.stderr + result.stdout
    arch = ArchSpec.from_dict(json.loads((out / "arch.json").read_text()))
    assert arch.layers == 2
    shown = invoke("inspect", out)
    assert shown.exit_code == 0 and "q (depth 2)" in shown.stdout
    card_path = out / "search_card.json"
    card = json.loads(card_path.read_text())
    del card["depths"]  # as written before depths were a choice: β over every depth of the model
    for row in card["history"]:
        row["q"] = [0.3, 0.7]
    card_path.write_text(json.dumps(card))
    assert "q (depth 1, 2)" in invoke("inspect", out).stdout
    for value, words in (("3", "exceed the model's 2 layer(s)"), ("0", "layer counts >= 1, or -1 for the model's"),
                         ("-3", "choose depths in 1..2 or -2..-1"), ("2.5", "comma-separated list"),
                         ("", "comma-separated list"), ("99999999999999999999", "choose depths in 1..2")):
        bad = tmp_path / f"bad{abs(hash(value))}"
        assert words in error_line(invoke("search", "--recipe", recipe, "--data", tiny_data_file, "--device", "cpu",
                                          "--depth-choices", value, "--out", bad))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # no run dir, no hidden temp dir left
