"""The width search space: pruning ratios -> candidate (hidden, inner) widths, and its errors."""
from __future__ import annotations

import pytest

from compress.arch import ArchSpec, Width
from compress.errors import ConfigError
from compress.nas.space import SearchSpace

ML1M = ArchSpec(hidden=128, inner=256, heads=4, layers=4)  # paper Table 2: head width 32


def test_paper_ratios_give_the_paper_widths():
    widths = SearchSpace((0.0, 0.25, 0.5), (0.0, 0.25, 0.5)).widths(ML1M)
    assert widths == [Width(128, 256), Width(96, 192), Width(64, 128)]
    assert all(isinstance(w, Width) for w in widths)


def test_coupled_pairs_ratios_decoupled_takes_every_combination():
    coupled = SearchSpace((0.0, 0.25, 0.5), (0.0, 0.25, 0.5), coupled=True).widths(ML1M)
    decoupled = SearchSpace((0.0, 0.25, 0.5), (0.0, 0.25, 0.5), coupled=False).widths(ML1M)
    assert len(coupled) == 3
    assert len(decoupled) == 9
    assert set(coupled) < set(decoupled)
    assert set(decoupled) == {Width(h, i) for h in (128, 96, 64) for i in (256, 192, 128)}
    # decoupled lists may differ in length
    assert len(SearchSpace((0.0, 0.5), (0.0, 0.25, 0.5), coupled=False).widths(ML1M)) == 6


def test_widths_are_sorted_widest_first():
    widths = SearchSpace((0.5, 0.0, 0.25), (0.25, 0.5, 0.0), coupled=False).widths(ML1M)
    assert widths == sorted(widths, key=lambda w: (-w.hidden, -w.inner))
    assert widths[0] == Width(128, 256)  # the full model is candidate 0 (expected_flops normalises by it)


def test_widths_round_to_multiples_of_8():
    arch = ArchSpec(hidden=128, inner=256, heads=16, layers=1)  # head width 8
    ratios = (0.0, 0.1, 0.3, 0.45, 0.6)
    widths = SearchSpace(ratios, ratios).widths(arch)
    assert all(w.hidden % 8 == 0 and w.inner % 8 == 0 for w in widths)
    # 256 * 0.7 = 179.2 -> 176 (nearest multiple of 8), 128 * 0.9 = 115.2 -> 112
    assert Width(112, 232) in widths  # 256 * 0.9 = 230.4 -> 232
    assert Width(88, 176) in widths  # 128 * 0.7 = 89.6 -> 88
    one_dim_heads = ArchSpec(hidden=128, inner=256, heads=128, layers=1)
    exact = SearchSpace(ratios, ratios, round_to=1).widths(one_dim_heads)
    assert Width(115, 230) in exact and Width(90, 179) in exact  # no rounding asked for, none done


def test_duplicate_widths_are_removed():
    # 0.01 of 128 rounds back to 128: the same candidate twice would split α's mass for nothing
    widths = SearchSpace((0.0, 0.01, 0.5), (0.0, 0.01, 0.5)).widths(ML1M)
    assert widths == [Width(128, 256), Width(64, 128)]


@pytest.mark.parametrize("heads, head_pruning", [(1, "dims"), (16, "whole")])
def test_ratio_0_keeps_the_full_width_whatever_round_to(heads, head_pruning):
    """Rounded to a multiple of 3, 16 would be 15 and 32 would be 33 (then 32): the model searched from left the
    space. Other ratios are rounded as before."""
    arch = ArchSpec(hidden=16, inner=32, heads=heads, layers=1)
    space = SearchSpace((0.0, 0.5), (0.0, 0.5), round_to=3, head_pruning=head_pruning)
    per_head = heads if head_pruning == "dims" else None
    assert space.widths(arch) == [Width(16, 32, per_head), Width(9, 15, per_head)]


def test_ratio_0_of_whole_heads_is_never_refused_for_rounding():
    """15 of 16 is no whole number of 8-wide heads: the full model itself was refused."""
    arch = ArchSpec(hidden=16, inner=32, heads=2, layers=1)
    assert SearchSpace((0.0,), (0.0,), round_to=3).widths(arch) == [Width(16, 32)]


def test_tiny_ratios_keep_at_least_one_rounding_step():
    arch = ArchSpec(hidden=64, inner=64, heads=8, layers=1)  # head width 8
    assert SearchSpace((0.95,), (0.99,)).widths(arch) == [Width(8, 8)]


@pytest.mark.parametrize("kwargs, words", [
    (dict(hidden_ratios=(), inner_ratios=()), "empty"),
    (dict(hidden_ratios=(0.0,), inner_ratios=()), "empty"),
    (dict(hidden_ratios=(0.0, 1.0), inner_ratios=(0.0, 0.5)), "outside [0, 0.99]"),
    (dict(hidden_ratios=(0.0, -0.25), inner_ratios=(0.0, 0.5)), "outside [0, 0.99]"),
    (dict(hidden_ratios=(0.0, 0.5), inner_ratios=(0.0, 1.5)), "outside [0, 0.99]"),
    (dict(hidden_ratios=(0.0, 0.995), inner_ratios=(0.0, 0.5)), "pruning ratio 0.995 is outside [0, 0.99]"),
    (dict(hidden_ratios=(0.0, 0.5), inner_ratios=(0.0,)), "coupled"),
    (dict(round_to=0), "round_to"),
    (dict(round_to=1025), "round_to must be in [1, 1024], got 1025"),  # the command line's bound
])
def test_bad_spaces_raise_config_error(kwargs, words):
    with pytest.raises(ConfigError) as info:
        SearchSpace(**kwargs)
    assert words in str(info.value)


def test_widths_not_divisible_into_heads_raise_config_error():
    arch = ArchSpec(hidden=128, inner=256, heads=2, layers=1)  # head width 64: 96 is not whole heads
    with pytest.raises(ConfigError, match="heads of width 64"):
        SearchSpace((0.0, 0.25), (0.0, 0.25)).widths(arch)
    assert SearchSpace((0.0, 0.5), (0.0, 0.25)).widths(arch) == [Width(128, 256), Width(64, 192)]


def test_dict_round_trip():
    space = SearchSpace((0.0, 0.5, 0.75), (0.0, 0.25, 0.5), coupled=False, round_to=4)
    assert SearchSpace.from_dict(space.to_dict()) == space
