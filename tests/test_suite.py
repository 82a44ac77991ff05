"""The benchmark suite: plan expansion and keys, resumable runs, the report, the paired test, pruning."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from clihelp import benchmark_script

import compress
from compress.arch import ArchSpec
from compress.errors import CheckpointError, ConfigError
from compress.measure.flops import model_flops
from compress.suite import load_plan, methods, paired_t_test, read_results, run_plan, write_report
from compress.suite.blocks import replace_block
from compress.suite.pareto import dominance, pareto
from compress.suite.remeasure import own_stamp, remeasure
from compress.suite.results import append_result, update_results
from compress.suite.stats import t_two_sided

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "benchmarks" / "suite.yaml"


def test_paired_t_test_matches_hand_computation():
    # differences 1, 2, 3: mean 2, sd 1, t = 2·√3, ν = 2: P(|T| ≥ t) = 1 − t/√(ν + t²) = 1 − √12/√14
    assert paired_t_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(1 - math.sqrt(12 / 14), abs=1e-12)
    # odd ν = 1 is the Cauchy distribution: 1 − (2/π)·atan(t)
    assert t_two_sided(2.0, 1) == pytest.approx(1 - 2 / math.pi * math.atan(2.0), abs=1e-12)
    # published t-table quantiles: two-sided 5% at ν = 5 (2.571) and ν = 10 (2.228)
    assert t_two_sided(2.5706, 5) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided(2.2281, 10) == pytest.approx(0.05, abs=1e-4)
    assert paired_t_test([0.3, 0.3], [0.3, 0.3]) == 1.0 and paired_t_test([1.0], [0.0]) is None


def test_pareto_front_keeps_the_undominated():
    pts = [("a", 10, 0.5, 0), ("b", 5, 0.4, 0), ("c", 7, 0.3, 0), ("d", 20, 0.6, 0)]
    assert [p[0] for p in pareto(pts)] == ["b", "a", "d"]


def test_plan_keys_are_stable_and_follow_the_options():
    plan = load_plan(str(SUITE), "smoke", variants=["torch_pruning"], seeds=[1, 2])
    names = [c.variant.name for c in plan.cells]
    assert names == ["dnsrec", "sasrec", "torch_pruning"] * 2  # what it builds on comes first
    again = load_plan(str(SUITE), "smoke", variants=["torch_pruning"], seeds=[1, 2])
    assert [c.key for c in plan.cells] == [c.key for c in again.cells]
    assert len({c.key for c in plan.cells}) == 6
    prune = plan.cells[2]
    assert prune.needs == {"reference": plan.cells[0].key, "base": plan.cells[1].key}
    cpu = load_plan(str(SUITE), "cpu", variants=["sasrec"], seeds=[1], datasets=["default"])
    assert cpu.cells[0].key != plan.cells[1].key and cpu.cells[0].options["hidden"] == 64
    bare = load_plan(str(SUITE), "smoke", variants=["dnsrec_paper_retrain_nogates"], seeds=[1]).cells
    assert [c.variant.name for c in bare] == ["dnsrec_paper", "dnsrec_paper_retrain_nogates"]  # its search first
    assert bare[0].options == bare[1].options and bare[1].variant.retrain == {"gate_layers": 0}
    assert bare[1].needs == {"reference": bare[0].key} and bare[0].key != bare[1].key


def test_a_warm_variant_builds_on_the_dense_model_its_baselines_prune():
    cells = load_plan(str(SUITE), "cpu", datasets=["default"], seeds=[1],
                      variants=["dnsrec_warm3x", "uniform_warm3x", "torch_pruning_warm3x"]).cells
    by = {c.variant.name: c for c in cells}
    dense, warm = by["sasrec"], by["dnsrec_warm3x"]
    assert list(by) == ["sasrec", "dnsrec_warm3x", "uniform_warm3x", "torch_pruning_warm3x"]  # what it builds on first
    assert warm.needs == {"base": dense.key}
    assert warm.options["max_flops"] == "33.3%" and warm.options["reorder"] == "magnitude"
    assert by["torch_pruning_warm3x"].needs == {"reference": warm.key, "base": dense.key}
    assert by["uniform_warm3x"].needs == {"reference": warm.key}
    heads = load_plan(str(SUITE), "cpu", datasets=["default"], seeds=[1], variants=["torch_pruning_heads_warm3x"]).cells
    assert heads[-1].variant.heads == "prune" and heads[-1].needs == by["torch_pruning_warm3x"].needs
    assert heads[-1].key != by["torch_pruning_warm3x"].key  # whole-head pruning is another cell


def test_a_budget_variant_searches_under_the_flops_of_the_cell_it_names(monkeypatch):
    """max_flops comes from the named cell of the same dataset and seed, at run time: the plan names
    that cell's key, and the search is given its analytic FLOPs."""
    cells = load_plan(str(SUITE), "cpu", datasets=["default", "ml-100k"], seeds=[1, 2],
                      variants=["dnsrec_warm_tp"]).cells
    by = {(c.variant.name, c.dataset, c.seed): c for c in cells}
    for data in ("default", "ml-100k"):
        for seed in (1, 2):
            warm, pruned = by["dnsrec_warm_tp", data, seed], by["torch_pruning", data, seed]
            assert warm.needs == {"base": by["sasrec", data, seed].key, "budget": pruned.key}
            assert warm.options["max_flops"] is None and warm.options["penalty"] == "budget"
    given = {}
    record = {"key": "k", "path": "unused", "cost": {"flops_analytic": 5_156_560}}

    def fake_run(opts, out, **kw):
        given.update(opts)
        raise RuntimeError("stop here")

    warm = by["dnsrec_warm_tp", "default", 1]
    monkeypatch.setattr(methods, "dnsrec_run", fake_run)
    with pytest.raises(RuntimeError, match="stop here"):
        methods.dnsrec(warm, {**warm.options, "device": "cpu"}, "/nonexistent/cell", {"base": record, "budget": record})
    assert given["max_flops"] == 5_156_560 and given["init"] == "unused" and given["penalty"] == "budget"


def test_committed_results_are_found_by_the_current_plans():
    """Keys are stable: every committed cell is still a cell the suite file describes, under the same variant
    name (a changed default would orphan them all), and the committed smoke run is complete."""
    for preset in ("smoke", "cpu"):
        results = REPO / "benchmarks" / "results" / f"suite_{preset}" / "results.jsonl"
        done = {r["key"]: r["variant"] for r in read_results(str(results))}
        planned = {c.key: c.variant.name for c in load_plan(str(SUITE), preset).cells}
        orphans = [f"{variant} ({key})" for key, variant in done.items() if planned.get(key) != variant]
        assert not orphans, orphans
        if preset == "smoke":
            missing = [name for key, name in planned.items() if key not in done]
            assert not missing, missing


@pytest.mark.parametrize("text, message", [
    ("presets: {smoke: [1, 2", "not valid YAML"),
    ("variants: {x: {method: magic}}\npresets: {smoke: {}}", "unknown method 'magic'"),
    ("variants: {x: {method: uniform}}\npresets: {smoke: {}}", "needs reference"),
    ("variants: {x: {method: dense, options: {hiden: 8}}}\npresets: {smoke: {}}", "unknown key(s) hiden"),
    ("variants: {x: {method: dense}}\npresets: {smoke: {variants: [y]}}", "unknown variant 'y'"),
    ("variants: {x: {method: dense}}\npresets: {smoke: {seeds: one}}", "seeds must be a non-empty list"),
    ("variants: {x: {method: dense}}\npresets: {smoke: {}}\nextra: 1", "unknown key(s) extra"),
    ("variants: {x: {method: dense, retrain: {gate_layers: 0}}}\npresets: {smoke: {}}", "dnsrec variants only"),
    ("variants: {x: {method: dnsrec, retrain: {hidden: 8}}}\npresets: {smoke: {}}", "unknown key(s) hidden"),
    ("variants: {x: {method: dnsrec, retrain: {gate_layers: none}}}\npresets: {smoke: {}}",
     "retrain gate_layers expects a whole number"),
    ("variants: {x: {method: dnsrec}, y: {method: dnsrec, reference: x}}\npresets: {smoke: {variants: [y]}}",
     "retrains it the same way"),
    ("variants: {x: {method: dnsrec}, y: {method: dnsrec, reference: x, options: {tradeoff: 1.0}, "
     "retrain: {gate_layers: 0}}}\npresets: {smoke: {variants: [y]}}", "not a DNS-Rec search with the same options"),
    ("variants: {d: {method: dense}, x: {method: dnsrec}, y: {method: dnsrec, reference: x, base: d, "
     "retrain: {gate_layers: 0}}}\npresets: {smoke: {}}", "give one of reference and base"),
    ("variants: {d: {method: dense}, y: {method: dnsrec, base: d, options: {init: runs/x}}}\npresets: {smoke: {}}",
     "drop options.init"),
    ("variants: {d: {method: dense}, y: {method: uniform, reference: d, base: d}}\npresets: {smoke: {}}",
     "takes no base"),
    ("variants: {d: {method: dense, heads: prune}}\npresets: {smoke: {}}", "heads applies to prune variants only"),
    ("variants: {d: {method: dense}, y: {method: uniform, reference: d, budget: d}}\npresets: {smoke: {}}",
     "takes no budget"),
    ("variants: {d: {method: dense}, y: {method: dnsrec, budget: d, options: {max_flops: 50%}}}\npresets: {smoke: {}}",
     "drop options.max_flops"),
    ("variants: {d: {method: dense}, x: {method: dnsrec}, y: {method: dnsrec, reference: x, budget: d, "
     "retrain: {gate_layers: 0}}}\npresets: {smoke: {}}", "ran under its own budget; drop budget"),
    ("variants: {d: {method: dense}, x: {method: dnsrec}, y: {method: prune, reference: x, base: d, heads: all}}"
     "\npresets: {smoke: {}}", "heads must be one of keep, prune, got 'all'"),
    # found before any cell runs, not by a traceback (int('abc')) or after a cell trained
    ("variants: {x: {method: dense}}\npresets: {smoke: {measure: {repeats: abc}}}",
     "measure.repeats must be a whole number of at least 1, got 'abc'"),
    ("variants: {x: {method: dense}}\npresets: {smoke: {measure: {repeats: 0}}}", "at least 1, got 0"),
    ("variants: {x: {method: dense}}\npresets: {smoke: {measure: {repeats: -2}}}", "at least 1, got -2"),
    ("variants: {x: {method: dense}}\npresets: {smoke: {measure: {batches: [0]}}}",
     "measure.batches must be a non-empty list of integers of at least 1, got [0]"),
    ("variants: {x: {method: dense}}\npresets: {smoke: {datasets: {default: {}, nosuchdata: {}}}}",
     "unknown dataset 'nosuchdata'; name one of default, "),
    ("variants: {a: {method: dense}, b: {method: dense, label: B}}\npresets: {smoke: {}}",
     "variants 'a' and 'b' resolve to the same cell on default, seed 2024 (key "),
])
def test_bad_suite_files_are_one_line_config_errors(tmp_path, text, message):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_plan(str(path), "smoke")
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("variants: {x: {method: dense, options: {data: ml-1m}}}\npresets: {smoke: {}}",
     "suite.yaml: variant 'x' options set data: 'ml-1m', but a preset's dataset names decide the data; drop it, "
     "and name that data under the preset's datasets"),
    ("variants: {x: {method: dense}}\npresets: {smoke: {options: {data: ml-1m}}}",
     "suite.yaml: preset 'smoke' dataset 'default': the options set data: 'ml-1m', but the dataset's name decides "
     "the data; drop it, and name that data as a dataset of the preset"),
    ("variants: {x: {method: dense}}\npresets: {smoke: {datasets: {ml-100k: {options: {data: ml-1m}}}}}",
     "suite.yaml: preset 'smoke' dataset 'ml-100k': the options set data: 'ml-1m'"),
    ("variants: {x: {method: dense}}\npresets: {smoke: {datasets: {default: {recipe: r.yaml}}}}",
     "suite.yaml: dataset 'default' runs the embedded sample, but its recipe {dir}/r.yaml sets data: 'ml-1m'; name "
     "the dataset 'ml-1m' to run on that data, or give a recipe that sets no data"),
])
def test_the_dataset_name_decides_the_data(tmp_path, text, message):
    """Before: `default` ran on the data its recipe or the options named, labelled "default" (None, the name's
    value, is no override), and under a named dataset a `data` in the options was dropped without a word."""
    (tmp_path / "r.yaml").write_text("data: ml-1m\nhidden: 32\n")
    (tmp_path / "suite.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_plan(str(tmp_path / "suite.yaml"), "smoke")
    assert str(info.value).startswith(f"{tmp_path}/" + message.format(dir=tmp_path))


def test_a_named_dataset_overrides_its_recipes_data():
    """Recipes are shared: the paper preset's Toys runs recipes/amazon.yaml, written for Beauty."""
    toys = load_plan(str(SUITE), "paper", variants=["sasrec"], seeds=[1], datasets=["toys"]).cells
    assert toys[0].options["data"] == "toys" and toys[0].dataset == "toys"


def test_two_variants_that_are_one_cell_are_refused_only_when_both_are_selected(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("variants: {a: {method: dense}, b: {method: dense}, c: {method: dense, options: {hidden: 8}}}\n"
                    "presets: {smoke: {seeds: [1]}}")
    assert [c.variant.name for c in load_plan(str(path), "smoke", variants=["b", "c"]).cells] == ["b", "c"]
    with pytest.raises(ConfigError, match="variants 'a' and 'b' resolve to the same cell"):
        load_plan(str(path), "smoke", variants=["c", "a", "b"])


def test_unknown_preset_and_variant_end_in_one_error_line(tmp_path, capsys):
    main = benchmark_script("suite").main
    assert main(["run", "--preset", "huge", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == \
        f"error: unknown preset 'huge'; {SUITE} defines smoke, cpu, paper"
    assert main(["run", "--variants", "nope", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "unknown variant 'nope'" in err and "\n" not in err
    assert main(["report", "--out", str(tmp_path / "empty")]) == 2
    assert "holds no finished cells" in capsys.readouterr().err
    assert main(["remeasure", "--out", str(tmp_path / "empty"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: ") and not (tmp_path / "empty").exists()


def test_an_update_replaces_its_records_and_keeps_cells_appended_since_they_were_read(tmp_path):
    path = tmp_path / "r.jsonl"
    for key in "ab":
        append_result(str(path), {"key": key})
    stale = read_results(str(path))  # a remeasure reads, then measures for minutes ...
    append_result(str(path), {"key": "c"})  # ... while another suite process finishes a cell
    update_results(str(path), {r["key"]: {**r, "x": 1} for r in stale})
    append_result(str(path), {"key": "d"})
    assert read_results(str(path)) == [{"key": "a", "x": 1}, {"key": "b", "x": 1}, {"key": "c"}, {"key": "d"}]
    assert not (tmp_path / "r.jsonl.tmp").exists()


def test_results_file_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    append_result(str(path), {"key": "a"})
    with open(path, "a") as fh:
        fh.write('{"key": "b", "trunc')  # a crash mid-append
    assert [r["key"] for r in read_results(str(path))] == ["a"]
    append_result(str(path), {"key": "c"})
    assert [r["key"] for r in read_results(str(path))] == ["a", "c"]
    path.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
    with pytest.raises(CheckpointError, match=r"r.jsonl:2 is not a JSON record"):
        read_results(str(path))


def _append_many(path: str, tag: str, n: int) -> None:
    for i in range(n):
        append_result(path, {"key": f"{tag}{i}", "payload": tag * 200_000})  # lines of 200 kB: many pages


def test_parallel_appends_to_one_results_file_stay_whole(tmp_path):
    """Two processes appending at once (disjoint suite slices): every line arrives whole."""
    pytest.importorskip("fcntl")
    import multiprocessing

    path = str(tmp_path / "r.jsonl")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, tag, 40)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    records = read_results(path)
    assert sorted(r["key"] for r in records) == sorted(f"{t}{i}" for t in "ab" for i in range(40))
    assert all(r["payload"] == r["key"][0] * 200_000 for r in records)


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def by_variant(records):
    """Records by variant, named without ``_paper`` (the paper's design: attention and gates fixed)."""
    return {r["variant"].replace("_paper", ""): r for r in records}


def test_smoke_preset_runs_resumes_and_reports(tmp_path):
    """The smoke preset end to end on the embedded sample (one seed, the pruning baseline and the
    cells it builds on), a second run that adds nothing, and the report from the results file."""
    pytest.importorskip("torch_pruning")
    pytest.importorskip("matplotlib")
    out, runs = tmp_path / "out", tmp_path / "runs"
    results = out / "results.jsonl"
    suite = tmp_path / "suite.yaml"  # the suite file with one epoch per training stage (the search keeps two)
    suite.write_text(replace_once(SUITE.read_text(), "epochs: 2, search_epochs: 2", "epochs: 1, search_epochs: 2"))
    plan = load_plan(str(suite), "smoke", variants=["torch_pruning_paper", "uniform_paper",
                                                     "dnsrec_paper_retrain_nogates"], seeds=[1])
    plan = type(plan)(plan.preset, plan.about, plan.cells, [1, 8], 1)  # keep the latency part short
    assert run_plan(plan, str(results), str(runs), "auto") == {"run": 5, "skipped": 0}  # suite.py's default
    records = read_results(str(results))
    by = by_variant(records)
    assert list(by) == ["dnsrec", "sasrec", "torch_pruning", "uniform", "dnsrec_retrain_nogates"]
    bare = by["dnsrec_retrain_nogates"]  # the same search, retrained without gates
    assert bare["info"]["search_of"] == by["dnsrec"]["key"] and "search" not in bare["seconds"]
    assert bare["info"]["decision"] == by["dnsrec"]["info"]["decision"] and bare["arch"]["gate_layers"] == 0
    assert {**bare["arch"], "gate_layers": 2} == by["dnsrec"]["arch"]
    assert bare["cost"]["flops_analytic"] < by["dnsrec"]["cost"]["flops_analytic"]
    for r in records:
        assert set(r["metrics"]) == {"valid/full", "valid/pop100", "test/full", "test/pop100"}
        assert {"flops_analytic", "flops_measured", "params", "latency_ms@1", "latency_ms@8",
                "peak_memory_MB@8"} <= set(r["cost"])
        assert r["versions"]["torch"] and r["machine"]["cpus"] and r["wall_s"] > 0
        assert r["dataset_stats"]["users"] == 960
    assert set(by["dnsrec"]["seconds"]) == {"search", "retrain"}
    trace = by["dnsrec"]["info"]["search"]  # the controllers' story, for the report's trajectory plot
    assert len(trace["history"]) == 2 and len(trace["widths"]) == 2
    decision = by["dnsrec"]["arch"]
    assert {k: by["uniform"]["arch"][k] for k in ("hidden", "inner", "layers")} == \
        {k: decision[k] for k in ("hidden", "inner", "layers")}
    assert by["uniform"]["arch"]["attention"] == "softmax"
    pruned = by["torch_pruning"]
    assert pruned["cost"]["flops_analytic"] <= by["dnsrec"]["cost"]["flops_analytic"]
    assert pruned["arch"]["layers"] == by["sasrec"]["arch"]["layers"] and 0 < pruned["info"]["ratio"] < 1

    before = results.read_bytes()
    assert run_plan(plan, str(results), str(runs), "cpu") == {"run": 0, "skipped": 5}
    assert results.read_bytes() == before

    assert remeasure(str(results), str(runs), [1, 8], 1, "cpu") == 5  # all five side by side, current code
    again = by_variant(read_results(str(results)))
    assert list(again) == list(by)
    for name, r in again.items():
        assert r["earlier_passes"] == [{"cost": by[name]["cost"], "measured": own_stamp(by[name])}]
        assert r["earlier_passes"][0]["measured"]["at"] >= by[name]["started"] and "cost_before" not in r
        assert set(r["cost"]) == set(by[name]["cost"])
        assert r["metrics"] == by[name]["metrics"] and r["measured"]["side_by_side"] == 5
        model = compress.load(str(runs / r["run"] / ("retrained" if r["method"] == "dnsrec" else "")))
        assert r["cost"]["flops_analytic"] == model_flops(model)["total"]
    with pytest.raises(ConfigError, match="5 cell model"):
        remeasure(str(results), str(tmp_path / "elsewhere"), [1], 1, "cpu")

    report_dir = tmp_path / "report"
    files = write_report(str(results), str(report_dir))
    text = (report_dir / "report.md").read_text()
    assert "| default | 960 | 3,381 |" in text and "Torch-Pruning" in text and "## default" in text
    assert "Costs of 5 of the 5 cells were re-measured side by side" in text
    assert [Path(p).name for p in files["plots"]] == ["pareto_default.png", "controllers_default.png"]
    assert (report_dir / "pareto_default.png").stat().st_size > 1000

    assert remeasure(str(results), str(runs), [1], 1, "cpu", variants=["sasrec"]) == 1  # a subset of the cells
    sasrec = by_variant(read_results(str(results)))["sasrec"]
    assert sasrec["measured"]["side_by_side"] == 1  # the pass of five stays in the file, with its stamp
    assert sasrec["earlier_passes"] == [{"cost": by["sasrec"]["cost"], "measured": own_stamp(by["sasrec"])},
                                        {"cost": again["sasrec"]["cost"], "measured": again["sasrec"]["measured"]}]
    with pytest.raises(ConfigError, match="no finished cell of datasets any and variants"):
        remeasure(str(results), str(runs), [1], 1, "cpu", variants=["nothing"])


STATS = {"users": 10, "items": 20, "interactions": 50, "avg_len": 5.0, "max_len": 7, "density": 0.25}


def _record(variant, method, seed, ndcg, flops, tradeoff=0.1, dataset="toy", info=None, stats=STATS, **options):
    """A results record written by hand, with what the report reads."""
    m = {"ndcg@10": ndcg, "recall@10": ndcg, "mrr@10": ndcg}
    return {"key": f"{dataset}{variant}{seed}", "dataset": dataset, "variant": variant, "label": variant,
            "method": method, "seed": seed, "preset": "hand", "from_scratch": False,
            "options": {"tradeoff": tradeoff, "seed": seed, **options},
            "arch": {"hidden": 8, "inner": 16, "layers": 1, "attention": "softmax", "gate_layers": 0},
            "metrics": {f"{s}/{p}": m for s in ("valid", "test") for p in ("full", "pop100")},
            "cost": {"flops_analytic": flops, "flops_measured": flops, "params": 5, "latency_ms@1": 1.0,
                     "peak_memory_MB@1": 1.0}, "seconds": {"train": 1.0}, "wall_s": 2.0, "info": info or {},
            "dataset_stats": stats, "versions": {"compress": "x", "torch": "y"},
            "machine": {"processor": "cpu", "cpus": 2, "device": "cpu", "torch_threads": 1}}


def test_report_has_p_values_and_a_lambda_plot_from_records_alone(tmp_path):
    """Three seeds of a baseline and of a λ sweep, records written by hand: the report needs nothing else."""
    pytest.importorskip("matplotlib")
    path = tmp_path / "r.jsonl"
    for seed, base in zip((1, 2, 3), (0.10, 0.20, 0.30)):
        append_result(str(path), _record("sasrec", "dense", seed, base, 100))
        for lam, gain in ((0.0, 1.0), (0.1, 2.0), (1.0, 3.0)):
            append_result(str(path), _record(f"dnsrec{lam}", "dnsrec", seed, base + gain * seed / 100,
                                             90 / (1 + lam), tradeoff=lam))
    files = write_report(str(path), str(tmp_path / "rep"))
    text = Path(files["report"]).read_text()
    expected = paired_t_test([0.11, 0.22, 0.33], [0.10, 0.20, 0.30])
    assert f"| {expected:.3g} |" in text
    assert sorted(Path(p).name for p in files["plots"]) == ["lambda_toy.png", "pareto_toy.png"]


def test_dominance_counts_dnsrec_points_within_the_baselines_flops():
    """λ = 0 and the ProxylessNAS penalty are other methods: they never dominate for DNS-Rec."""
    rows = {name: [_record(name, method, 1, ndcg, flops, **opts)] for name, method, ndcg, flops, opts in (
        ("dnsrec", "dnsrec", 0.30, 90, {}),
        ("dnsrec_lambda1", "dnsrec", 0.28, 50, {"tradeoff": 1.0}),
        ("dnsrec_lambda0", "dnsrec", 0.50, 30, {"tradeoff": 0.0}),
        ("dnsrec_proxyless", "dnsrec", 0.50, 30, {"penalty": "proxyless"}),
        ("uniform", "uniform", 0.25, 60, {}),
        ("torch_pruning", "prune", 0.29, 70, {}),
        ("tiny", "prune", 0.01, 20, {}))}
    verdicts = {row["baseline"][0]: row for row in dominance(rows)}
    assert list(verdicts) == ["uniform", "torch_pruning", "tiny"]
    assert verdicts["uniform"]["dominated_by"][:3] == ("dnsrec_lambda1", 50, 0.28)
    assert verdicts["torch_pruning"]["dominated_by"] is None
    assert verdicts["torch_pruning"]["best_within"][0] == "dnsrec_lambda1"
    assert verdicts["tiny"]["dominated_by"] is None and verdicts["tiny"]["best_within"] is None


def test_report_summary_verdicts_controllers_and_sequence_order(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "r.jsonl"
    trace = {"widths": [{"hidden": 8, "inner": 16}, {"hidden": 4, "inner": 8}],
             "history": [{"epoch": e, "p": [0.5 + 0.1 * e, 0.5 - 0.1 * e], "q": [0.6, 0.4]} for e in (1, 2, 3)]}
    for seed in (1, 2):
        append_result(str(path), _record("sasrec", "dense", seed, 0.30 + seed / 100, 12e6))
        append_result(str(path), _record("dnsrec", "dnsrec", seed, 0.31, 5e6, info={"search": trace}))
        append_result(str(path), _record("uniform", "uniform", seed, 0.29, 6e6))
        append_result(str(path), _record("sasrec", "dense", seed, 0.2, 100, dataset="untimed",
                                         stats={**STATS, "timed": False}))
    files = write_report(str(path), str(tmp_path / "rep"))
    text = Path(files["report"]).read_text()
    assert "| toy | 0.3150 ± 0.0071 @ 12.0 M (2) | 0.3100 @ 5.00 M (2) | 0.2900 @ 6.00 M (2) | " \
        "uniform: yes (dnsrec) |" in text
    assert "- uniform (0.2900 @ 6.00 M), 2 seed(s): dominated by dnsrec (0.3100 @ 5.00 M); ΔNDCG@10 +0.0200, " \
        "2 paired seeds" in text
    assert "| untimed | 10 | 20 | 50 | 5.00 | 25.0000% | file order (no timestamps) |" in text
    assert text.count("| per cell, 1 thr. |") == 4  # which pass each cost row's latency comes from
    assert sorted(Path(p).name for p in files["plots"]) == ["controllers_toy.png", "pareto_toy.png",
                                                             "pareto_untimed.png"]


def test_the_summary_shows_a_dnsrec_variant_run_on_one_dataset_beside_its_baselines(tmp_path):
    """A DNS-Rec variant run on one dataset only gets a column when a baseline is matched to it, so
    the table never shows a baseline without the point it was measured against."""
    pytest.importorskip("matplotlib")
    path = tmp_path / "r.jsonl"
    for dataset in ("toy", "other"):
        append_result(str(path), _record("sasrec", "dense", 1, 0.30, 12e6, dataset=dataset))
        append_result(str(path), _record("dnsrec", "dnsrec", 1, 0.29, 6e6, dataset=dataset))
    warm = _record("dnsrec_warm", "dnsrec", 1, 0.31, 4e6)
    lone = _record("dnsrec_lone", "dnsrec", 1, 0.20, 3e6)
    for record in (warm, lone, {**_record("tp_warm", "prune", 1, 0.30, 4e6), "needs": {"reference": warm["key"]}}):
        append_result(str(path), record)
    text = Path(write_report(str(path), str(tmp_path / "rep"))["report"]).read_text()
    assert "| dataset | sasrec | dnsrec | dnsrec_warm | tp_warm | DNS-Rec dominates at equal FLOPs |" in text
    assert "| other | 0.3000 @ 12.0 M (1) | 0.2900 @ 6.00 M (1) | — | — | — |" in text
    assert "- tp_warm (0.3000 @ 4.00 M), 1 seed(s): dominated by dnsrec_warm (0.3100 @ 4.00 M); ΔNDCG@10 +0.0100, " \
        "1 paired seed; against dnsrec_warm (0.3100 @ 4.00 M), the decision it is matched to: ΔNDCG@10 +0.0100, " \
        "1 paired seed" in text  # each baseline also against the decision it was measured at


def test_a_search_pulled_to_a_budget_counts_as_dns_rec_and_a_verdict_it_wins_gives_it_a_column(tmp_path):
    """penalty budget is DNS-Rec's penalty pulled to a budget (counted); ProxylessNAS's is another method (not);
    a DNS-Rec variant run on one dataset that a verdict names gets a column beside the baseline it dominates."""
    pytest.importorskip("matplotlib")
    path = tmp_path / "r.jsonl"
    for dataset in ("toy", "other"):
        append_result(str(path), _record("sasrec", "dense", 1, 0.30, 12e6, dataset=dataset))
        append_result(str(path), _record("dnsrec", "dnsrec", 1, 0.29, 6e6, dataset=dataset))
    for record in (_record("pulled", "dnsrec", 1, 0.32, 3.5e6, tradeoff=1.0, penalty="budget"),
                   _record("proxyless", "dnsrec", 1, 0.40, 3e6, penalty="proxyless"),
                   _record("tp", "prune", 1, 0.30, 4e6)):
        append_result(str(path), record)
    text = Path(write_report(str(path), str(tmp_path / "rep"))["report"]).read_text()
    assert "| dataset | sasrec | dnsrec | pulled | tp | DNS-Rec dominates at equal FLOPs |" in text
    assert "| toy | 0.3000 @ 12.0 M (1) | 0.2900 @ 6.00 M (1) | 0.3200 @ 3.50 M (1) | 0.3000 @ 4.00 M (1) | " \
        "tp: yes (pulled) |" in text


def test_torch_pruning_keeps_depth_and_meets_the_flops_target():
    pytest.importorskip("torch_pruning")
    from compress.suite.pruning import _PlainMirror, prune_to_flops

    torch.manual_seed(0)
    model = compress.get_backbone("sasrec")(ArchSpec(hidden=64, inner=128, heads=4, layers=2), 500, 20).eval()
    items = torch.randint(0, 500, (3, 20))
    items[:, 15:] = 0
    assert torch.equal(_PlainMirror(model).eval()(items), model(items))  # the traced mirror computes the same
    target = 0.6 * model_flops(model)["total"]
    pruned, ratio = prune_to_flops(model, target)
    assert pruned.arch.layers == 2 and pruned.arch.heads == 4
    assert model_flops(pruned)["total"] <= target and pruned.arch.hidden % 8 == 0
    assert pruned.arch.inner == pruned.arch.hidden * 2 and 0 < ratio < 1  # one uniform ratio everywhere
    assert model.arch.hidden == 64  # the input model is untouched
    tiny = 0.5 * model_flops(pruned.rebuilt(ArchSpec(8, 16, 4, 2)))["total"]  # below the narrowest two layers
    with pytest.raises(ConfigError, match="even 8 hidden channels cost more"):
        prune_to_flops(model, tiny)
    narrowest, _ = prune_to_flops(model, tiny, floor=True)
    assert narrowest.arch == ArchSpec(8, 16, 4, 2) and model_flops(narrowest)["total"] > tiny
    with pytest.raises(ConfigError, match="softmax attention and no gates"):
        prune_to_flops(compress.get_backbone("sasrec")(ArchSpec(64, 128, 4, 2, "linear"), 500, 20), target)


def test_torch_pruning_of_whole_heads_stands_at_the_decisions_shape_and_flops():
    """Whole heads go (the kept ones keep their 16 dims and their rows of the input model), so the
    baseline reaches exactly the FLOPs of a DNS-Rec decision of 2 heads of 16, where keeping 4 narrower
    heads costs more and lands a width lower."""
    pytest.importorskip("torch_pruning")
    from compress.suite.pruning import hidden_choices, prune_to_flops, tp_prune

    torch.manual_seed(0)
    model = compress.get_backbone("sasrec")(ArchSpec(hidden=64, inner=256, heads=4, layers=2), 500, 50).eval()
    decision = model.rebuilt(ArchSpec(32, 128, 2, 2))
    target = model_flops(decision)["total"]
    assert hidden_choices(model, "prune") == [16, 32, 48, 64]
    pruned, ratio = prune_to_flops(model, target, heads="prune")
    assert pruned.arch == decision.arch and model_flops(pruned)["total"] == target and ratio == pytest.approx(0.5)
    narrower, _ = prune_to_flops(model, target)  # head dims pruned: 4 heads of 8 cost more, so 24 channels
    assert narrower.arch.heads == 4 and narrower.arch.hidden == 24
    kept = [[int(c) for c in torch.nonzero((model.item_embedding.weight[:, None, :]  # residual channels kept
                                             == pruned.item_embedding.weight[:, j, None, None]).all(0).any(0))]
            for j in range(32)]
    assert all(len(k) == 1 for k in kept)
    cols = [k[0] for k in kept]
    query = model.state_dict()
    for name, w in pruned.state_dict().items():
        if name.endswith("query.weight"):  # (32, 32): 2 whole 16-row heads of the input's (64, 64)
            rows = [int(torch.nonzero((query[name][:, cols] == w[r]).all(1))[0]) for r in range(32)]
            heads_kept = {r // 16 for r in rows}
            assert len(heads_kept) == 2 and all(rows[16 * i:16 * i + 16] == list(range(16 * h, 16 * h + 16))
                                                for i, h in enumerate(sorted(heads_kept)))
    assert torch.isfinite(pruned(torch.randint(1, 501, (3, 50)))).all()
    with pytest.raises(ConfigError, match="choose one of \\[16, 32, 48, 64\\]"):
        tp_prune(model, 24, heads="prune")
    with pytest.raises(ConfigError, match="unknown head pruning 'all'"):
        hidden_choices(model, "all")


def test_replace_block_writes_between_the_presets_markers_only(tmp_path):
    md = tmp_path / "README.md"
    md.write_text("# T\n\nbefore\n<!-- suite:cpu -->\nold table\n<!-- /suite:cpu -->\nafter\n")
    assert replace_block(str(md), "cpu", "new table\n")
    assert md.read_text() == "# T\n\nbefore\n<!-- suite:cpu -->\nnew table\n<!-- /suite:cpu -->\nafter\n"
    assert not replace_block(str(md), "paper", "x")  # no markers for that preset: untouched
    md.write_text("<!-- /suite:cpu -->\n<!-- suite:cpu -->\n")
    with pytest.raises(ConfigError, match="must each appear once, in that order"):
        replace_block(str(md), "cpu", "x")


def test_report_writes_the_summary_into_a_readme_block(tmp_path, capsys):
    """`suite.py report --readme`: the README's table is the report's, links relative to the README."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "results" / "suite_hand"
    for seed in (1, 2):
        append_result(str(out / "results.jsonl"), _record("sasrec", "dense", seed, 0.3, 12e6))
        append_result(str(out / "results.jsonl"), _record("dnsrec", "dnsrec", seed, 0.31, 5e6))
    md = tmp_path / "README.md"
    md.write_text("intro\n<!-- suite:smoke -->\n<!-- /suite:smoke -->\nend\n")
    main = benchmark_script("suite").main
    assert main(["report", "--preset", "smoke", "--out", str(out), "--readme", str(md)]) == 0
    text = md.read_text()
    assert text.startswith("intro\n<!-- suite:smoke -->\nWritten by `python benchmarks/suite.py report --preset smoke")
    assert "[results/suite_hand/report.md](results/suite_hand/report.md)" in text and text.endswith("end\n")
    assert "| toy | 0.3000 @ 12.0 M (2) | 0.3100 @ 5.00 M (2) | — |" in text
    other = tmp_path / "OTHER.md"
    other.write_text("no markers\n")
    assert main(["report", "--preset", "smoke", "--out", str(out), "--readme", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {other} has no <!-- suite:smoke --> … <!-- /suite:smoke --> block to write the summary "
                   "into"]
    assert other.read_text() == "no markers\n"
