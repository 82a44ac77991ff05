"""The bilevel search on a small real run: λ moves the decision, hard FLOPs budgets, NaN handling, the card."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch
from synthetic import walking_dataset

import compress.engine.losses as losses_module
import compress.nas.search as search_module
from compress.arch import ArchSpec
from compress.backbones.objectives import at, last_index
from compress.backbones.sasrec import SASRec
from compress.data.batching import pad_right, training_windows
from compress.engine.progress import Reporter, epoch_line
from compress.errors import ConfigError, SearchError
from compress.nas.config import MAX_TRADEOFF, SearchConfig
from compress.nas.controllers import one_hot
from compress.nas.search import budget_flops, budget_gap, resource_loss, search
from compress.nas.space import SearchSpace
from compress.nas.wrap import wrap

SEQ_LEN, BATCH = 20, 32
LAMBDAS = (0.0, 0.1, 0.3, MAX_TRADEOFF)


@pytest.fixture(scope="module")
def dataset():
    """200 users walking upward through 40 items (8-25 interactions each): real sequential signal."""
    return walking_dataset()


def make_supernet(dataset, seed: int = 0):
    """d=24, D=48 in 8-wide heads, widths (24, 48), (16, 32), (8, 16); 2 layers; the paper's fixed design
    (linear attention, L_d = 2 gates): these tests are about the width and depth controllers
    (tests/test_searched_choices.py searches the attention kind and the gates)."""
    torch.manual_seed(seed)
    backbone = SASRec(ArchSpec(hidden=24, inner=48, heads=3, layers=2), dataset.n_items, SEQ_LEN)
    return wrap(backbone, space=SearchSpace((0.0, 1 / 3, 2 / 3), (0.0, 1 / 3, 2 / 3)), attention="linear",
                gate_layers=2)


def config(**kw) -> SearchConfig:
    return SearchConfig(**{"epochs": 2, "batch_size": BATCH, "arch_every": 1, "seed": 0, **kw})


def run(dataset, **kw):
    return search(make_supernet(dataset), dataset, config(**kw), device="cpu")


@pytest.fixture(scope="module")
def by_lambda(dataset):
    return {lam: run(dataset, tradeoff=lam) for lam in LAMBDAS}


def test_the_test_space(dataset):
    sn = make_supernet(dataset)
    assert [w[:2] for w in sn.widths] == [(24, 48), (16, 32), (8, 16)]
    assert sn.full.attention == "linear" and sn.full.gate_layers == 2


def test_a_huge_tradeoff_picks_the_smallest_width_and_one_layer(by_lambda):
    """At the largest λ allowed the controllers still move (a λ of 1e25 once overflowed Adam's float32 squared
    gradients and froze α and β at 0, deciding on the widest candidate)."""
    result = by_lambda[MAX_TRADEOFF]
    assert all(any(x != 0 for x in row["alpha"]) and any(x != 0 for x in row["beta"]) for row in result.history)
    sn = result.supernet
    assert (result.decision["width"], result.decision["depth"]) == (len(sn.widths) - 1, 0)
    assert result.arch == sn.full.narrowed(8, 16, 1)
    assert result.decision["flops"] == float(sn.flops.min())


def test_export_refuses_a_model_other_than_the_decision(by_lambda, dataset, tmp_path):
    """An unrelated model's card recorded its own arch and FLOPs under the search's decision; the decision with
    other gates (retrained "regated", paper Table 6) is exported under its own arch, the decision kept."""
    result = by_lambda[MAX_TRADEOFF]
    other = make_supernet(dataset).slice(0, 1)  # the full 24/48 x 2
    words = (r"the model exported is not the search's decision 8/16 × 1 layer, linear attention, gates L_d=2: its "
             r"hidden 24 \(decided: 8\), inner 48 \(decided: 16\), heads 3 \(decided: 1\), layers 2 \(decided: 1\); "
             r"export result.slice\(\) or that model retrained \(any gate depth\)")
    with pytest.raises(ConfigError, match=words):
        result.export(str(tmp_path / "m"), dataset, model=other)
    assert not (tmp_path / "m").exists()
    result.export(str(tmp_path / "m"), dataset, model=result.slice().regated(0))
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["arch"] == {**result.arch.to_dict(), "gate_layers": 0}
    assert card["search"]["decision"] == json.loads(json.dumps(result.decision))


def test_decision_flops_never_grow_as_the_tradeoff_grows(by_lambda):
    flops = [by_lambda[lam].decision["flops"] for lam in LAMBDAS]
    assert all(a >= b for a, b in zip(flops, flops[1:])), dict(zip(LAMBDAS, flops))
    assert flops[0] > flops[-1]  # λ does something: without a penalty the search keeps a wider model


def test_result_holds_the_best_epoch_and_slices_exactly(by_lambda, dataset):
    result = by_lambda[0.1]
    row = result.history[result.best_epoch - 1]
    assert row["valid_ndcg@10"] == max(r["valid_ndcg@10"] for r in result.history)
    assert row["decision"] == [result.decision["width"], result.decision["depth"] + 1]
    dense = result.slice().eval()
    assert dense.arch == result.arch
    sn = result.supernet.eval()
    histories, _ = dataset.eval_pairs("valid")
    items = pad_right(histories[:50], SEQ_LEN)
    k, l = result.decision["width"], result.decision["depth"]
    with torch.no_grad():
        h = sn(items, one_hot(k, len(sn.widths)), one_hot(l, sn.full.layers))
        gap = (sn.score(at(h, last_index(items)))[:, 1:] - dense.predict(items)[:, 1:]).abs().max()
    assert gap <= 1e-5


def test_each_penalty_form_records_the_figure_it_optimises(by_lambda, dataset):
    """The epoch's figure is the paper's L_RC, the budget gap, or ProxylessNAS's factor on the CE, named as
    such; proxyless once showed L_RC, which it does not optimise."""
    assert by_lambda[0.1].history[0]["penalty_term"] == "L_RC"
    proxyless = run(dataset, penalty="proxyless", epochs=1)
    row = proxyless.history[0]
    assert row["penalty_term"] == "factor" and 0 < row["penalty"] <= 1.0  # (log F / log F_full)^0.6, F <= F_full
    assert " factor " in epoch_line(row, 1, False) and " L_RC " not in epoch_line(row, 1, False)
    assert run(dataset, penalty="budget", max_flops="50%", epochs=1).history[0]["penalty_term"] == "gap"


def test_search_card_has_alpha_beta_tau_and_penalty_per_epoch(by_lambda, dataset):
    result = by_lambda[0.1]
    card = result.card()
    sn = result.supernet
    steps = math.ceil(len(training_windows(dataset.train_sequences(), SEQ_LEN)[0]) / BATCH)
    schedule = result.config.schedule()
    assert len(card["history"]) == 2
    for epoch, row in enumerate(card["history"], 1):
        assert row["epoch"] == epoch
        assert len(row["alpha"]) == len(sn.widths) and len(row["beta"]) == sn.full.layers
        assert any(a != 0 for a in row["alpha"]) and any(b != 0 for b in row["beta"])  # α/β were trained
        assert row["tau"] == pytest.approx(schedule(epoch * steps - 1, epoch))
        assert 0 < row["penalty"] <= 1.0  # L_RC is normalised by the full model and (L_t / L) <= 1
        assert sum(row["p"]) == pytest.approx(1.0) and sum(row["q"]) == pytest.approx(1.0)
        assert 0 < row["exp_flops"] <= 1.0
    assert card["history"][0]["alpha"] != card["history"][1]["alpha"]
    assert card["decision"]["arch"] == result.arch.to_dict()
    assert card["options"]["tradeoff"] == 0.1 and card["options"]["selection"] == "gumbel"
    assert len(card["candidates"]) == len(sn.widths) * sn.full.layers
    assert card["full_flops"] == sn.flops_of(0, sn.full.layers - 1)


def test_card_penalty_is_the_mean_over_the_epochs_arch_steps(dataset):
    """With f = 3 and 8 steps per epoch, epochs hold 3, 3 and 2 α/β steps: each row averages its own."""
    steps = math.ceil(len(training_windows(dataset.train_sequences(), SEQ_LEN)[0]) / BATCH)
    arch_every = 3
    counts = [sum(1 for s in range(e * steps, (e + 1) * steps) if s % arch_every == 0) for e in range(3)]
    assert len(set(counts)) > 1, counts  # the setting must make epochs differ, or the test proves nothing
    torch.manual_seed(0)
    one_layer = SASRec(ArchSpec(hidden=24, inner=48, heads=3, layers=1), dataset.n_items, SEQ_LEN)
    sn = wrap(one_layer, space=SearchSpace((0.0, 1 / 3, 2 / 3), (0.0, 1 / 3, 2 / 3)), attention="linear",
              gate_layers=2)  # L_t / L = 1 always
    penalties = []

    class EpochMarks(Reporter):
        def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
            penalties.append([])

    expected_flops = sn.expected_flops

    def recorded(p, q, r=None, s=None, reference="supernet"):
        value = expected_flops(p, q, r, s, reference)
        if p.requires_grad:  # an α/β step (the per-epoch summary calls it on detached weights)
            penalties[-1].append(float(value.detach()))
        return value

    sn.expected_flops = recorded
    result = search(sn, dataset, config(epochs=3, arch_every=arch_every), device="cpu", reporter=EpochMarks())
    assert [len(p) for p in penalties] == counts
    for row, values in zip(result.history, penalties):
        assert row["penalty"] == pytest.approx(sum(values) / len(values), rel=1e-6)


@pytest.mark.parametrize("max_flops", ["40%", 150_000])
def test_max_flops_is_always_honoured(dataset, by_lambda, max_flops):
    sn = make_supernet(dataset)
    full = sn.input_flops  # a percentage is of the dense input model (softmax, no gates) by default
    budget = 0.4 * full if max_flops == "40%" else max_flops
    unconstrained = by_lambda[0.0].decision
    assert unconstrained["flops"] > budget  # the budget has to move this decision
    result = run(dataset, tradeoff=0.0, max_flops=max_flops)
    assert result.decision["flops"] <= budget
    assert result.supernet.flops_of(result.decision["width"], result.decision["depth"]) <= budget
    assert "budget moved the decision" in result.decision["note"]
    assert all(row["decision_flops"] <= budget for row in result.history)
    assert budget_flops(max_flops, sn) == pytest.approx(budget)


def test_the_budget_penalty_is_the_relative_distance_from_the_budget():
    assert budget_gap(torch.tensor(6.0), 4.0).item() == pytest.approx(0.5)
    assert budget_gap(torch.tensor(4.0), 4.0).item() == 0.0
    assert budget_gap(torch.tensor(3.0), 4.0).item() == pytest.approx(0.25)
    flops = torch.tensor([3.0, 5.0], requires_grad=True)
    budget_gap(flops, 4.0).sum().backward()
    assert flops.grad.tolist() == [-0.25, 0.25]  # under the budget pulled up, over it pulled down


def test_the_budget_penalty_settles_the_search_at_the_budget(dataset, by_lambda):
    """Where λ = 0 under a hard budget only rescues an infeasible argmax, and the paper's penalty
    pushes below any budget, the budget penalty pulls the controllers themselves to the feasible
    candidate nearest the budget, so the decision is the search's own."""
    sn = make_supernet(dataset)
    budget = 0.4 * sn.input_flops
    nearest = max(float(f) for f in sn.flops.flatten() if f <= budget)
    assert by_lambda[0.0].decision["flops"] > budget and nearest < budget
    result = run(dataset, epochs=4, tradeoff=1.0, penalty="budget", max_flops="40%")
    assert result.history[0]["penalty"] > 0
    assert result.decision["flops"] == nearest and result.decision["note"] is None
    assert abs(result.history[-1]["exp_flops"] * sn.input_flops / budget - 1) < 0.15
    paper = run(dataset, epochs=4, tradeoff=1.0, max_flops="40%")
    assert paper.decision["flops"] < nearest  # the paper's penalty does not stop at the budget
    assert result.card()["options"]["penalty"] == "budget"


@pytest.fixture(scope="module")
def falling(dataset):
    """The budget pull of the test above, decided at its best and at its last epoch, with validation
    scripted to fall after the first epoch (a best epoch that stops the pull partway)."""
    scores = iter([0.5, 0.4, 0.3, 0.2] * 2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(search_module, "score_set", lambda model, valid, k: {f"ndcg@{k}": next(scores)})
        return {decide: run(dataset, epochs=4, tradeoff=1.0, penalty="budget", max_flops="40%", decide=decide)
                for decide in ("best", "last")}


def test_decide_last_takes_the_last_epochs_controllers_and_keeps_its_supernet(falling):
    best, last = falling["best"], falling["last"]
    assert [r["alpha"] for r in best.history] == [r["alpha"] for r in last.history]  # the search is the same
    assert best.best_epoch == last.best_epoch == best.decision_epoch == 1 and last.decision_epoch == 4
    labels = [r["decision_label"] for r in best.history]
    assert labels[0] != labels[-1]  # the pull moved the argmax after the best epoch: the choice matters
    for result, row in ((best, best.history[0]), (last, last.history[-1])):
        assert result.decision["label"] == row["decision_label"] == result.arch.label()
        sn = result.supernet
        assert sn.alpha.logits.tolist() == pytest.approx(row["alpha"], abs=0)  # the deciding epoch's state
        assert sn.tau == row["tau"]
        card = result.card()
        assert card["decision_epoch"] == row["epoch"] and card["options"]["decide"] == result.config.decide
    assert last.decision["flops"] > best.decision["flops"]  # nearer the budget


def test_decide_takes_best_or_last():
    with pytest.raises(ConfigError, match="unknown decide 'first'; choose best or last"):
        SearchConfig(decide="first")


def test_the_budget_penalty_needs_a_budget():
    with pytest.raises(ConfigError, match="max_flops budget"):
        SearchConfig(penalty="budget")


@pytest.mark.parametrize("max_flops", ["1%", 50_000])
def test_a_budget_below_the_smallest_candidate_names_the_smallest_feasible_flops(dataset, max_flops):
    sn = make_supernet(dataset)
    smallest = float(sn.flops.min())
    assert smallest > 50_000
    with pytest.raises(ConfigError) as info:
        search(sn, dataset, config(max_flops=max_flops), device="cpu")
    message = str(info.value)
    assert "smallest candidate" in message and f"at {smallest:,.0f} FLOPs" in message
    assert "\n" not in message


def test_a_budget_that_is_not_a_number_is_a_config_error(dataset):
    with pytest.raises(ConfigError, match="neither a percentage"):
        budget_flops("half", make_supernet(dataset))


def test_nan_loss_raises_search_error_with_the_step_and_the_initial_state(dataset):
    sn = make_supernet(dataset)
    initial = {k: v.clone() for k, v in sn.state_dict().items()}
    cfg = config()
    cfg.lr = 1e30  # past SearchConfig's bound (10), as a model that diverges at a sane rate would
    with pytest.raises(SearchError) as info:
        search(sn, dataset, cfg, device="cpu")
    err = info.value
    assert re.search(r"loss became non-finite at step \d+ \(epoch 1\)", str(err)), str(err)
    assert "lower the learning rate" in str(err)
    assert set(err.last_good) == set(initial)
    assert all(torch.equal(err.last_good[k], initial[k]) for k in initial)  # nothing of epoch 1 was good
    assert err.history == []


def test_nan_in_a_later_epoch_keeps_the_last_good_epoch(dataset, monkeypatch):
    steps = math.ceil(len(training_windows(dataset.train_sequences(), SEQ_LEN)[0]) / BATCH)
    good = search(make_supernet(dataset), dataset, config(epochs=1), device="cpu")
    calls = {"n": 0}
    real_loss = losses_module.training_loss

    def poisoned(*args, **kwargs):
        loss = real_loss(*args, **kwargs)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == steps + 3 else loss  # the 4th step of epoch 2

    monkeypatch.setattr(losses_module, "training_loss", poisoned)  # what every weight step's loss calls
    with pytest.raises(SearchError) as info:
        search(make_supernet(dataset), dataset, config(epochs=2), device="cpu")
    err = info.value
    assert f"at step {steps + 2} (epoch 2)" in str(err) and "weights of epoch 1 are kept" in str(err)
    assert len(err.history) == 1 and err.history[0]["epoch"] == 1
    expected = good.supernet.state_dict()
    assert set(err.last_good) == set(expected)
    assert all(torch.equal(err.last_good[k], expected[k]) for k in expected)  # a copy, untouched by epoch 2


@pytest.mark.parametrize("options", [dict(selection="softmax"), dict(arch_batches="train"),
                                     dict(selection="softmax", arch_batches="train", arch_every=3)])
def test_the_official_code_variants_run(dataset, options):
    result = run(dataset, epochs=1, tradeoff=0.1, **options)
    assert len(result.history) == 1
    row = result.history[0]
    assert any(a != 0 for a in row["alpha"]) and any(b != 0 for b in row["beta"])
    assert math.isfinite(row["loss"]) and row["penalty"] > 0
    assert result.card()["options"]["selection"] == options.get("selection", "gumbel")
    assert result.card()["options"]["arch_batches"] == options.get("arch_batches", "valid")
    assert 0 <= result.decision["width"] < 3 and 0 <= result.decision["depth"] < 2


@pytest.mark.parametrize("kwargs, words", [
    (dict(selection="argmax"), "unknown selection"),
    (dict(arch_batches="test"), "unknown arch_batches"),
    (dict(epochs=0), "epochs must be >= 1"),
    (dict(arch_every=0), "arch_every must be >= 1"),
    (dict(tradeoff=-0.1), "tradeoff"),
    (dict(penalty="latency"), "unknown penalty"),
    (dict(tradeoff=float("nan")), r"tradeoff λ must be a finite number in \[0, 1e\+06\], got nan"),
    (dict(tradeoff=float("inf")), r"tradeoff λ must be a finite number in \[0, 1e\+06\], got inf"),
    (dict(tradeoff=1e25), r"tradeoff λ must be a finite number in \[0, 1e\+06\], got 1e\+25; λ weighs the FLOPs "
                          r"penalty, .* far larger values overflow the float32 α/β steps"),
    (dict(lr=float("inf")), r"lr must be a finite number in \(0, 10\]"),
    (dict(arch_lr=0.0), r"arch_lr must be a finite number in \(0, 10\]"),
    (dict(arch_lr=11.0), r"arch_lr must be a finite number in \(0, 10\], got 11.0"),
    (dict(tau_min=0.0), r"tau_min must be a finite number in \[0.0001, 100\]"),
    (dict(tau_min=1e-38), r"tau_min must be .*got 1e-38; τ divides the controllers' logits"),  # NaN mid-search
    (dict(tau_start=float("nan")), r"tau_start must be a finite number in \[0.0001, 100\]"),
    (dict(tau_rate=-1e-3), r"tau_rate must be a finite number in \[0, 1\]"),
    (dict(tau_start=0.001), "tau_start 0.001 is below tau_min 0.01: τ falls from tau_start to tau_min; raise "
                            "tau_start or lower tau_min"),
    (dict(tau_start=0.5, tau_min=2.0, tau_schedule="step"), "tau_start 0.5 is below tau_min 2"),
    (dict(epochs=2.5), "epochs must be a whole number, got 2.5"),
    (dict(seed=-1), r"seed must be in \[0, 2147483647\], got -1"),
    (dict(seed=2 ** 70), r"seed must be in \[0, 2147483647\], got 1180591620717411303424"),
    (dict(k=10_001), r"k must be in \[1, 10000\], got 10001"),
    (dict(max_minutes=float("nan")), "max_minutes must be a finite number > 0"),
    (dict(max_flops=float("nan")), "max_flops is neither a percentage like 50% nor a finite number"),
    (dict(max_flops="nan%"), "max_flops is neither a percentage"),
    (dict(max_flops=float("inf")), "max_flops is neither a percentage"),
    (dict(max_flops=True), "max_flops is neither a percentage"),
    (dict(max_flops="0"), "max_flops must be a positive number of FLOPs"),
    (dict(max_flops="-5%"), "max_flops must be a positive number of FLOPs"),
    (dict(max_flops=-1.0), "max_flops must be a positive number of FLOPs"),
])
def test_bad_search_configs_raise_config_error(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        SearchConfig(**kwargs)


def test_resource_loss_forms_against_hand_computed_values():
    ce, l_rc, flops = torch.tensor(2.0), torch.tensor(0.25), torch.tensor(math.e ** 3)
    assert resource_loss(ce, l_rc, flops, math.e ** 4, config(tradeoff=0.4)).item() == pytest.approx(2.0 + 0.4 * 0.25)
    proxyless = resource_loss(ce, l_rc, flops, math.e ** 4, config(penalty="proxyless"))
    assert proxyless.item() == pytest.approx(2.0 * (3 / 4) ** 0.6)
    assert resource_loss(None, l_rc, flops, math.e ** 4, config(penalty="proxyless")) is None  # empty shard


def test_proxyless_penalty_shrinks_the_expected_flops(dataset):
    """ProxylessNAS's multiplicative penalty pulls α/β toward cheaper candidates than λ = 0 does."""
    free, proxyless = run(dataset, tradeoff=0.0), run(dataset, penalty="proxyless")
    assert proxyless.history[-1]["exp_flops"] < free.history[-1]["exp_flops"]
    assert proxyless.card()["options"]["penalty"] == "proxyless"


@pytest.mark.parametrize("reference, symbol", [("input", "FLOPs(input)"), ("supernet", "FLOPs(full)")])
def test_the_card_names_the_normaliser_the_penalty_divided_by(reference, symbol):
    """The card's formula said FLOPs(full) under the default reference, the dense input model's FLOPs: a
    reader recomputing L_RC from it was off by the supernet's size over the input's (1.34x in the audit)."""
    from compress.app.jobs import penalty_text

    text = penalty_text(SearchConfig(flops_reference=reference))
    assert f"/ {symbol};" in text and "r_a s_g" in text
    assert "else the " + ("dense input model's" if reference == "input" else "full supernet's") in \
        penalty_text(SearchConfig(flops_reference=reference, penalty="proxyless"))
