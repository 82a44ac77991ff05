"""Knowledge distillation while retraining (`distill`): the loss against hand-computed values, the
teacher's contract, and the retraining of a warm-started search that distils from its init."""
from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from clihelp import error_line, invoke, read
from synthetic import walking_dataset

import compress.app.jobs as jobs
import compress.engine.losses as losses
from compress.arch import ArchSpec
from compress.backbones.sasrec import SASRec
from compress.data.batching import training_windows
from compress.engine.config import TrainConfig
from compress.engine.losses import Distillation, StepLoss, distillation_loss
from compress.engine.train import fit
from compress.errors import ConfigError

WARM = ["--search-epochs", "1", "--hidden-ratios", "0,0.5", "--inner-ratios", "0,0.5", "--max-flops", "40%",
        "--attention", "softmax", "--gate-layers", "0", "--reorder", "magnitude", "--device", "cpu"]


def identity_score(h: torch.Tensor) -> torch.Tensor:
    """Hidden states that are already logits, column 0 (padding) -inf as a model's scores are."""
    out = h.clone()
    out[..., 0] = float("-inf")
    return out


def by_hand(student: torch.Tensor, teacher: torch.Tensor, T: float) -> float:
    """T²·Σ_i p_i (log p_i − log q_i) over the items 1..n of one position, in float64."""
    p = torch.softmax(teacher[1:].double() / T, 0)
    q = torch.softmax(student[1:].double() / T, 0)
    return float(T * T * (p * (p.log() - q.log())).sum())


@pytest.mark.parametrize("T", [1.0, 2.0, 0.5])
def test_the_loss_is_the_temperature_scaled_kl_over_the_positions_with_a_target(T):
    torch.manual_seed(0)
    h, t = torch.randn(2, 3, 6), torch.randn(2, 3, 6)  # 5 items and the padding column
    targets = torch.tensor([[0, 2, 3], [1, 0, 5]])  # two positions without a target
    real = [(0, 1), (0, 2), (1, 0), (1, 2)]
    expected = [by_hand(h[b, n], t[b, n], T) for b, n in real]
    mean = distillation_loss(h, t, targets, identity_score, identity_score, T)
    total = distillation_loss(h, t, targets, identity_score, identity_score, T, "sum")
    assert math.isclose(float(mean), sum(expected) / 4, rel_tol=1e-5)
    assert math.isclose(float(total), sum(expected), rel_tol=1e-5)


def test_rows_without_a_target_count_for_nothing_where_every_row_is_scored(monkeypatch):
    """On an accelerator every position is scored, padding keeping target 0: those rows are masked out."""
    torch.manual_seed(1)
    h, t = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    targets = torch.tensor([[0, 2, 3], [1, 0, 5]])
    on_cpu = distillation_loss(h, t, targets, identity_score, identity_score, 2.0)
    monkeypatch.setattr(losses, "scored_positions", lambda h, y: (h.reshape(-1, h.shape[-1]), y.reshape(-1)))
    assert torch.allclose(distillation_loss(h, t, targets, identity_score, identity_score, 2.0), on_cpu)


def test_a_teacher_identical_to_the_model_teaches_nothing():
    torch.manual_seed(0)
    h = torch.randn(2, 4, 7)
    loss = distillation_loss(h, h.clone(), torch.ones(2, 4, dtype=torch.long), identity_score, identity_score, 3.0)
    assert abs(float(loss)) < 1e-6


def small_model(data, seed: int, hidden: int = 16) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(ArchSpec(hidden=hidden, inner=2 * hidden, heads=2, layers=1), data.n_items, 20, dropout=0.0)


def test_the_step_loss_mixes_cross_entropy_and_distillation():
    data = walking_dataset()
    model, teacher = small_model(data, 0), small_model(data, 1, hidden=24)
    items, targets = training_windows(data.train_sequences()[:8], 20)
    plain = StepLoss("full", 100, 0, data)
    mixed = Distillation(plain, model, teacher, 0.3, 2.0)
    hidden = mixed.forward(model)(items)
    assert torch.equal(hidden[0], model(items)) and torch.equal(hidden[1], teacher(items))
    ce = plain(model, hidden[0], targets, 0)
    kd = distillation_loss(hidden[0], hidden[1], targets, model.score, teacher.score, 2.0)
    assert torch.allclose(mixed(model, hidden, targets, 0), 0.7 * ce + 0.3 * kd)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_fit_distils_from_the_teacher_and_leaves_it_untouched():
    data = walking_dataset()
    teacher = small_model(data, 1, hidden=24)
    fit(teacher, data, TrainConfig(epochs=2, batch_size=64, seed=0), "cpu")
    before = copy.deepcopy(teacher.state_dict())
    cfg = TrainConfig(epochs=2, batch_size=64, seed=0, patience=5)
    plain, distilled = small_model(data, 0), small_model(data, 0)
    fit(plain, data, cfg, "cpu")
    result = fit(distilled, data, TrainConfig(**{**cfg.__dict__, "distill": 0.5, "distill_temperature": 2.0}), "cpu",
                 teacher=teacher)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(plain.state_dict()["item_embedding.weight"], distilled.state_dict()["item_embedding.weight"])
    assert all(math.isfinite(row["loss"]) for row in result.history)


def test_fit_refuses_a_teacher_without_weight_and_a_weight_without_teacher():
    data = walking_dataset()
    with pytest.raises(ConfigError, match="needs a teacher"):
        fit(small_model(data, 0), data, TrainConfig(epochs=1, distill=0.5), "cpu")
    with pytest.raises(ConfigError, match="would teach nothing"):
        fit(small_model(data, 0), data, TrainConfig(epochs=1), "cpu", teacher=small_model(data, 1))


def test_a_teacher_over_other_items_is_refused():
    data = walking_dataset()
    other = SASRec(ArchSpec(hidden=16, inner=32, heads=2, layers=1), data.n_items + 3, 20)
    with pytest.raises(ConfigError, match="must score the items the model scores"):
        fit(small_model(data, 0), data, TrainConfig(epochs=1, distill=0.5), "cpu", teacher=other)


@pytest.mark.parametrize("kwargs, match", [
    ({"distill": -0.1}, "distill must be a finite number in"), ({"distill": 1.5}, "distill must be a finite number in"),
    ({"distill": float("nan")}, "distill must be a finite number in"),
    ({"distill_temperature": 0.0}, "distill_temperature must"),
    ({"distill_temperature": float("inf")}, "distill_temperature must"),
    ({"distill_temperature": float("nan")}, "distill_temperature must"),
    ({"distill": 0.5, "loss": "uniform"}, "use loss full")])
def test_bad_distillation_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


@pytest.fixture(scope="module")
def warm_search(artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("distil")
    result = invoke("search", "--init", artifacts["baseline"], *WARM, "--stage", "search", "--out", root / "search")
    assert result.exit_code == 0, result.stderr
    return root / "search"


def copied(search, tmp_path):
    out = tmp_path / "search"
    shutil.copytree(search, out, ignore=shutil.ignore_patterns("retrained"))
    return out


def test_retrain_distils_from_the_warm_start(warm_search, tmp_path):
    run = copied(warm_search, tmp_path)
    result = invoke("retrain", run, "--distill", "0.5", "--distill-temperature", "2", "--epochs", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert "distilling from the warm start (w=0.5, T=2)" in " ".join(result.stderr.split())  # wrapped at 80
    options = read(run / "retrained" / "config.json")["options"]
    assert (options["distill"], options["distill_temperature"]) == (0.5, 2.0)
    assert json.loads(result.stdout)["start"] == "supernet"


def test_retrain_from_init_and_distilling_together(warm_search, tmp_path, monkeypatch):
    run = copied(warm_search, tmp_path)
    calls = {"load_init": 0, "weights_digest": 0}

    def counted(name):
        real = getattr(jobs, name)

        def call(*args):
            calls[name] += 1
            return real(*args)
        return call
    for name in calls:
        monkeypatch.setattr(jobs, name, counted(name))
    result = invoke("retrain", run, "--from-init", "--distill", "0.3", "--epochs", "1")
    assert result.exit_code == 0, result.stderr
    assert "from the warm start's weights, distilling from the warm start (w=0.3, T=1)" in \
        " ".join(result.stderr.split())
    assert calls == {"load_init": 1, "weights_digest": 1}  # one read, one check, for the supernet and the teacher


def test_distilling_a_cold_search_is_refused(artifacts, tmp_path):
    run = copied(artifacts["search"], tmp_path)
    line = error_line(invoke("retrain", run, "--distill", "0.5"))
    assert "distill distils from the model a search was warm-started from" in line
    assert not (run / "retrained").exists()


@pytest.mark.parametrize("value", ["1.5", "-0.5", "nan", "inf", "x"])
def test_bad_distill_values_exit_2_with_one_line(warm_search, tmp_path, value):
    run = copied(warm_search, tmp_path)
    line = error_line(invoke("retrain", run, "--distill", value))
    assert "distill" in line
    assert not (run / "retrained").exists()


def test_distilling_a_changed_init_is_refused(warm_search, artifacts, tmp_path):
    run = copied(warm_search, tmp_path)
    init = tmp_path / "init"
    shutil.copytree(artifacts["baseline"], init)
    from safetensors.torch import load_file, save_file

    state = load_file(str(init / "model.safetensors"))
    state["position_embedding.weight"] *= 2
    save_file(state, str(init / "model.safetensors"))
    cfg = read(run / "config.json")
    cfg["options"]["init"] = str(init)
    (run / "config.json").write_text(json.dumps(cfg))
    assert "no longer holds the model" in error_line(invoke("retrain", run, "--distill", "0.5"))
    assert not (run / "retrained").exists()


def test_a_distilled_retraining_resumes_as_an_uninterrupted_one_would(warm_search, tmp_path):
    """The teacher holds no state and runs without dropout: a crashed and resumed run ends as the
    uninterrupted one, from the same weights to the same metrics."""
    from crash import Crash, CrashAt

    from compress.app.jobs import retrain_run
    from compress.store.artifacts import load

    run = copied(warm_search, tmp_path)
    settings = {"epochs": 2, "distill": 0.5, "distill_temperature": 2.0, "from_init": True}
    expected = retrain_run(str(run), settings)
    weights = load(str(run / "retrained")).state_dict()
    shutil.rmtree(run / "retrained")
    with pytest.raises(Crash):
        retrain_run(str(run), {**settings, "checkpoint_every": 2}, reporter=CrashAt(5))
    resumed = retrain_run(str(run), {}, resume=True)
    assert all(torch.equal(v, weights[k]) for k, v in load(str(run / "retrained")).state_dict().items())
    assert {k: {m: x for m, x in v.items() if m != "eval_seconds"} for k, v in resumed["metrics"].items()} == \
        {k: {m: x for m, x in v.items() if m != "eval_seconds"} for k, v in expected["metrics"].items()}


def test_kl_matches_torch_on_a_model_sized_case():
    torch.manual_seed(3)
    s, t = torch.randn(5, 41), torch.randn(5, 41)
    expected = F.kl_div(F.log_softmax(s[:, 1:], -1), F.log_softmax(t[:, 1:], -1), reduction="batchmean",
                        log_target=True)
    got = distillation_loss(s[None], t[None], torch.ones(1, 5, dtype=torch.long), identity_score, identity_score)
    assert torch.allclose(got, expected)


def test_the_suite_prunes_then_fine_tunes_distilling_from_the_unpruned_model(artifacts, tmp_path, monkeypatch):
    """A prune variant with ``distill``: Torch-Pruning's copy fine-tuned with the dense base as the teacher."""
    pytest.importorskip("torch_pruning")
    from compress.app.recipes import resolve_options
    from compress.measure.flops import model_flops
    from compress.store.artifacts import load
    from compress.suite import methods
    from compress.suite.spec import Cell, Variant

    seen = {}
    real_fit = methods.fit

    def spy(model, ds, cfg, device, teacher=None):
        seen.update(teacher=teacher, distill=cfg.distill, hidden=model.arch.hidden)
        return real_fit(model, ds, cfg, device, teacher=teacher)

    monkeypatch.setattr(methods, "fit", spy)
    base = load(str(artifacts["baseline"]))
    opts = resolve_options("search", None, {"epochs": 1, "device": "cpu", "distill": 0.5, "attention": "softmax",
                                            "gate_layers": 0})
    variant = Variant("tp_kd", "prune", "tp kd", {"distill": 0.5}, needs={"reference": "r", "base": "b"})
    deps = {"base": {"path": str(artifacts["baseline"]), "key": "b"},
            "reference": {"key": "r", "cost": {"flops_analytic": 0.6 * model_flops(base)["total"]}}}
    outcome = methods.prune(Cell("default", variant, 1, opts, "k", {}), opts, str(tmp_path / "cell"), deps)
    assert seen["distill"] == 0.5 and seen["hidden"] < 16
    assert seen["teacher"].arch == base.arch  # the unpruned model teaches
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in seen["teacher"].state_dict().items())
    assert outcome.info["distilled_from"] == "b"
