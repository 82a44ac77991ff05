"""Bilevel controllers: the temperature schedule, Gumbel vs tempered softmax, gradients to α and β."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compress.arch import ArchSpec
from compress.backbones.objectives import at, last_index
from compress.backbones.sasrec import SASRec
from compress.engine.losses import next_item_loss
from compress.errors import ConfigError
from compress.nas.config import SearchConfig, TemperatureSchedule
from compress.nas.controllers import Controller, one_hot
from compress.nas.space import SearchSpace
from compress.nas.wrap import wrap


@pytest.mark.parametrize("step, tau", [(0, 1.0), (1, 1.0 - 5e-5), (1000, 0.95), (10_000, 0.5), (19_000, 0.05),
                                       (19_800, 0.01), (20_000, 0.01), (10**6, 0.01)])
def test_temperature_schedule(step, tau):
    assert TemperatureSchedule()(step) == pytest.approx(tau, abs=1e-12)


def test_search_config_builds_the_paper_schedule():
    schedule = SearchConfig().schedule()
    assert (schedule.start, schedule.rate, schedule.minimum) == (1.0, 5e-5, 0.01)
    custom = SearchConfig(tau_start=2.0, tau_rate=0.1, tau_min=0.5, tau_schedule="step").schedule()
    assert [custom(t) for t in (0, 5, 100)] == pytest.approx([2.0, 1.5, 0.5])


def test_the_epoch_schedule_anneals_a_short_search_from_start_to_minimum():
    """τ per epoch falls geometrically from tau_start at the first epoch to tau_min at the last, however
    few steps an epoch has (the per-step schedule barely moves on a small dataset: 0.9996 → 0.995)."""
    schedule = SearchConfig(epochs=5, tau_start=1.0, tau_min=0.01).schedule()
    taus = [schedule(step=0, epoch=e) for e in range(1, 6)]
    assert taus == pytest.approx([1.0, 10 ** -0.5, 0.1, 10 ** -1.5, 0.01])
    assert schedule(step=10 ** 6, epoch=3) == pytest.approx(0.1)  # the step does not matter
    assert SearchConfig(epochs=1).schedule()(0, 1) == 1.0
    with pytest.raises(ConfigError, match="tau_schedule"):
        SearchConfig(tau_schedule="hourly")


def controller(logits) -> Controller:
    c = Controller(len(logits))
    with torch.no_grad():
        c.logits.copy_(torch.tensor(logits))
    return c


def test_fresh_controller_is_uniform():
    c = Controller(3)
    assert torch.equal(c.probs(), torch.full((3,), 1 / 3))
    assert c.sample(1.0, "softmax").tolist() == pytest.approx([1 / 3] * 3)


def test_tempered_softmax_has_no_noise_and_sharpens_as_tau_falls():
    c = controller([0.3, -0.2, 0.1])
    gen = torch.Generator().manual_seed(0)
    first = c.sample(0.7, "softmax", gen)
    for _ in range(5):
        assert torch.equal(c.sample(0.7, "softmax", gen), first)
    assert torch.allclose(first, F.softmax(c.logits.detach() / 0.7, 0))
    tops = [float(c.sample(tau, "softmax").detach().max()) for tau in (1.0, 0.5, 0.1, 0.01)]
    assert tops == sorted(tops) and tops[0] < 0.5 and tops[-1] > 0.999
    assert all(c.sample(tau, "softmax").argmax() == 0 for tau in (1.0, 0.1, 0.01))


def test_gumbel_samples_vary_and_sum_to_one():
    c = controller([0.3, -0.2, 0.1])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([c.sample(1.0, "gumbel", gen) for _ in range(20)])
    assert torch.allclose(draws.sum(1), torch.ones(20))
    assert (draws > 0).all()
    assert len({tuple(d.tolist()) for d in draws}) == 20
    assert len(set(draws.argmax(1).tolist())) > 1  # noise moves the winner, not just the weights


def test_gumbel_is_reproducible_under_a_seeded_generator():
    c = controller([0.3, -0.2, 0.1])
    a = [c.sample(0.5, "gumbel", torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(a[0], a[1])


def test_gumbel_argmax_frequencies_match_softmax_of_logits():
    logits = [1.0, 0.0, -1.0, 0.5]
    c = controller(logits)
    gen = torch.Generator().manual_seed(2024)
    n = 20_000
    with torch.no_grad():
        winners = torch.tensor([int(c.sample(0.3, "gumbel", gen).argmax()) for _ in range(n)])
    freq = torch.bincount(winners, minlength=4).double() / n
    expected = F.softmax(torch.tensor(logits, dtype=torch.float64), 0)
    # standard error <= 0.0036 at n = 20000; a wrong noise (e.g. +log(-log u)) is off by > 0.1
    assert torch.allclose(freq, expected, atol=0.015), (freq, expected)


def test_unknown_selection_raises_config_error():
    with pytest.raises(ConfigError, match="gumbel or softmax"):
        Controller(2).sample(1.0, "argmax")


def test_choice_and_one_hot():
    assert controller([0.1, 0.9, -3.0]).choice() == 1
    assert one_hot(2, 4).tolist() == [0.0, 0.0, 1.0, 0.0]


N_ITEMS, MAX_LEN = 30, 12


@pytest.fixture
def supernet():
    torch.manual_seed(0)
    backbone = SASRec(ArchSpec(hidden=16, inner=32, heads=2, layers=3), N_ITEMS, MAX_LEN, dropout=0.0)
    return wrap(backbone, space=SearchSpace((0.0, 0.5), (0.0, 0.5)), attention="linear", gate_layers=2)


def batch():
    gen = torch.Generator().manual_seed(3)
    items = torch.randint(1, N_ITEMS + 1, (6, MAX_LEN), generator=gen)
    targets = torch.randint(1, N_ITEMS + 1, (6, MAX_LEN), generator=gen)
    for row, n in enumerate([12, 9, 5, 3, 12, 1]):
        items[row, n:] = 0
        targets[row, n:] = 0
    return items, targets


@pytest.mark.parametrize("selection", ["gumbel", "softmax"])
def test_gradients_reach_alpha_and_beta_through_one_search_loss(supernet, selection):
    items, targets = batch()
    gen = torch.Generator().manual_seed(0)
    tradeoff, l_t = 0.1, supernet.beta.choice() + 1

    def arch_grads(ce_weight: float, penalty_weight: float):
        supernet.zero_grad(set_to_none=True)
        p = supernet.alpha.sample(0.8, selection, gen)
        q = supernet.beta.sample(0.8, selection, gen)
        ce = next_item_loss(supernet(items, p, q), targets, supernet.score)
        penalty = (l_t / supernet.full.layers) * supernet.expected_flops(p, q)
        (ce_weight * ce + penalty_weight * tradeoff * penalty).backward()
        return supernet.alpha.logits.grad, supernet.beta.logits.grad

    for weights in [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]:  # the full loss, CE alone, the penalty alone
        ga, gb = arch_grads(*weights)
        assert ga is not None and gb is not None, weights
        assert torch.isfinite(ga).all() and torch.isfinite(gb).all()
        assert ga.abs().max() > 0 and gb.abs().max() > 0, (weights, ga, gb)
    # the penalty alone pushes toward the cheaper choices: narrower width and an earlier exit
    ga, gb = arch_grads(0.0, 1.0)
    assert ga[0] > 0 > ga[1]  # gradient descent lowers α of the wide candidate
    assert gb[-1] > 0 > gb[0]


def test_at_last_index_reads_each_rows_last_real_item():
    h = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1)
    items = torch.tensor([[5, 6, 0, 0], [0, 0, 0, 0]])
    assert at(h, last_index(items))[:, 0].tolist() == [1.0, 4.0]
