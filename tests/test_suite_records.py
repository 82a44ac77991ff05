"""Records the suite reads back: a bad one (non-finite or missing metric, missing field, string seed) is a
one-line error naming it; a cell recorded twice counts once everywhere; a whole last line without its newline
is kept; and the p-value stays None for non-finite input and above 0 in the far tail."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from clihelp import benchmark_script
from test_suite import _record
from test_suite_compare import _one_error_line

from compress.suite import remeasure as remeasure_module
from compress.suite.compare import compare_file
from compress.suite.pool import pool_file
from compress.suite.report import write_report
from compress.suite.results import append_result, read_records, read_results
from compress.suite.stats import paired_t_test, t_two_sided

BASE = {1: 0.30, 2: 0.20, 3: 0.25}
WIDE = {1: 0.31, 2: 0.22, 3: 0.28}


def _write(path: Path, records) -> Path:
    for r in records:
        append_result(str(path), r)
    return path


def _pair(dataset: str = "toy") -> list:
    return [_record(name, "dnsrec", seed, ndcg, 1e6, dataset=dataset)
            for name, seeds in (("base", BASE), ("wide", WIDE)) for seed, ndcg in seeds.items()]


def test_a_nan_gives_no_p_value_and_a_far_tail_is_not_zero():
    assert paired_t_test([math.nan, 0.2, 0.3], [0.1, 0.2, 0.25]) is None  # was 0: "significant"
    assert paired_t_test([0.1, 0.2, 0.3], [0.1, math.inf, 0.25]) is None
    with pytest.raises(ValueError, match="NaN"):
        t_two_sided(math.nan, 3)
    assert t_two_sided(20, 30) == pytest.approx(6.749083665771e-19, rel=1e-9)  # was 0.0 (1 − inside)
    assert 0 < t_two_sided(60, 30) < t_two_sided(40, 30) < t_two_sided(20, 30)
    assert t_two_sided(1e200, 3) == 0.0 and t_two_sided(0.0, 3) == 1.0


def _mutated(record: dict, how: str) -> dict:
    r = json.loads(json.dumps(record))
    if how == "nan":
        r["metrics"]["test/full"]["ndcg@10"] = math.nan
    elif how == "null":
        r["metrics"]["valid/pop100"]["mrr@10"] = None
    elif how == "text":
        r["metrics"]["test/full"]["ndcg@10"] = "0.3"
    elif how == "no test/full":
        del r["metrics"]["test/full"]
    elif how == "no cost":
        del r["cost"]
    elif how in ("no seed", "no variant"):
        del r[how[3:]]
    elif how == "string seed":
        r["seed"] = "2"
    return r


@pytest.mark.parametrize("how, problem", [
    ("nan", "has test/full ndcg@10 nan, not a finite number"),
    ("null", "has valid/pop100 mrr@10 None, not a finite number"),
    ("text", "has test/full ndcg@10 '0.3', not a finite number"),
    ("no test/full", "has test/full ndcg@10 None, not a finite number"),
    ("no cost", "has no finite cost.flops_analytic"),
    ("no seed", "has no integer seed"),
    ("string seed", "has no integer seed"),
    ("no variant", "has no variant name"),
])
def test_a_bad_record_is_one_error_line_naming_it(tmp_path, capsys, how, problem):
    """Before: NaN read as p = 0 and won dominance verdicts, a string seed was paired as another seed, and a
    missing field was a traceback (KeyError) or "choose one of none"."""
    records = _pair()
    records[4] = _mutated(records[4], how)  # wide, seed 2
    path = _write(tmp_path / "results.jsonl", records)
    name = "toy/?" if how == "no variant" else "toy/wide"
    seed = "'?'" if how == "no seed" else "'2'" if how == "string seed" else "2"
    main = benchmark_script("suite").main
    for args in (["compare", "--dataset", "toy", "--variants", "base,wide"], ["pool", "--pairs", "toy:wide:base"],
                 ["report", "--out", str(tmp_path)]):
        assert main([*args, "--preset", "smoke", *(["--results", str(path)] if args[0] != "report" else [])]) == 2
        assert _one_error_line(capsys.readouterr().err) == \
            f"error: {path}: the record of {name} seed {seed} (key toywide2) {problem}; correct or remove that " \
            "line, or run the cell again"


def test_the_last_record_of_a_dataset_variant_and_seed_counts_everywhere(tmp_path):
    """A variant's options edited and the suite run again: its seed 1 recorded twice under two keys. Compare and
    pool took the last record, while the report averaged both ("4 seeds")."""
    pytest.importorskip("matplotlib")
    old = {**_record("wide", "dnsrec", 1, 0.90, 9e6), "key": "toywide1-before-the-edit"}
    path = _write(tmp_path / "results.jsonl", [old] + _pair())
    finished = read_records(str(path))
    assert finished.superseded == 1 and len(finished.records) == 6 and old["key"] not in \
        {r["key"] for r in finished.records}
    assert compare_file(str(path), "toy", ["base", "wide"]).rows[1].score == pytest.approx(0.27)
    assert pool_file(str(path), [("toy", "wide", "base")]).cells[0].relative[0] == pytest.approx(0.01 / 0.30)
    text = Path(write_report(str(path), str(tmp_path / "rep"))["report"]).read_text()
    assert "From `results.jsonl`: 6 cells (and 1 older record of a dataset, variant and seed recorded again " \
        "later, superseded by the last one and not counted), " in text
    assert "| toy | 0.2500 ± 0.0500 @ 1.00 M (3) | 0.2700 ± 0.0458 @ 1.00 M (3) | — |" in text  # the summary
    assert "| wide | 8/16 x 1, softmax, L_d=0 | 3 | 0.2700 ± 0.0458 |" in text  # the accuracy table


def test_records_built_on_a_superseded_or_missing_cell_are_left_out_and_named(tmp_path, capsys):
    """DNS-Rec's options edited and only dnsrec run again: the baselines matched to the old decision stood in the
    summary and the dominance lines beside the new one, and a search pulled to one of them in the pooled section
    (the runner itself gives them new keys, and runs them again once they are selected)."""
    pytest.importorskip("matplotlib")
    old = _record("dnsrec", "dnsrec", 1, 0.31, 4e6)
    uniform = {**_record("uniform", "uniform", 1, 0.30, 5e6), "needs": {"reference": old["key"]}}
    pruned = {**_record("tp", "prune", 1, 0.29, 5e6), "needs": {"reference": old["key"], "base": "toysasrec1"}}
    pulled = {**_record("pulled", "dnsrec", 1, 0.32, 5e6, penalty="budget"), "needs": {"budget": pruned["key"]}}
    orphan = {**_record("lost", "uniform", 1, 0.25, 5e6), "needs": {"reference": "never-recorded"}}
    new = {**_record("dnsrec", "dnsrec", 1, 0.20, 1e6, tradeoff=100.0), "key": "toydnsrec1-after-the-edit"}
    path = _write(tmp_path / "results.jsonl",
                  [_record("sasrec", "dense", 1, 0.30, 12e6), old, uniform, pruned, pulled, orphan, new])
    finished = read_records(str(path))
    assert [r["variant"] for r in finished.records] == ["sasrec", "dnsrec"] and finished.superseded == 1
    assert [r["variant"] for r in finished.stale] == ["uniform", "tp", "lost", "pulled"]  # pulled: built on tp
    text = Path(write_report(str(path), str(tmp_path / "rep"))["report"]).read_text()
    assert "From `results.jsonl`: 2 cells (and 1 older record of a dataset, variant and seed recorded again later, " \
        "superseded by the last one and not counted; 4 records built on a superseded or missing cell (matched to a " \
        "decision no longer counted) left out: rerun their variants (lost, pulled, tp, uniform)), " in text
    assert "| dataset | sasrec | dnsrec | DNS-Rec dominates at equal FLOPs |" in text
    assert "No baseline variants (uniform shrinking, pruning) in these results." in text
    assert "Pulled to a baseline" not in text
    main = benchmark_script("suite").main
    assert main(["compare", "--preset", "smoke", "--results", str(path), "--dataset", "toy",
                 "--variants", "dnsrec,uniform"]) == 2
    assert _one_error_line(capsys.readouterr().err) == \
        f"error: the records of variant 'uniform' on toy in {path} are built on a cell that was run again since " \
        "(or is missing), so they are not counted; run it again there (suite.py run --datasets toy --variants uniform)"


def test_remeasure_measures_the_records_the_report_counts(tmp_path, monkeypatch):
    """A cell run again after an edit: remeasure measured its superseded record too, and refused to run at all
    once that record's run directory was cleaned away."""
    runs = tmp_path / "runs"
    old, new = ({**_record("sasrec", "dense", 1, ndcg, 1e6), "key": key, "run": key, "started": "2024-01-01T00:00:00"}
                for key, ndcg in (("before-the-edit", 0.30), ("after-the-edit", 0.31)))
    (runs / new["run"]).mkdir(parents=True)  # the superseded cell's run directory is gone
    path = _write(tmp_path / "results.jsonl", [old, new])
    measured = []
    monkeypatch.setattr(remeasure_module, "load", lambda directory, device: directory)
    monkeypatch.setattr(remeasure_module, "profile", lambda models, batches, repeats: {
        key: measured.append(key) or {"flops_analytic": 2e6} for key in models})
    assert remeasure_module.remeasure(str(path), str(runs), [1], 1, "cpu") == 1 and measured == ["after-the-edit"]
    assert [r["cost"]["flops_analytic"] for r in read_results(str(path))] == [1e6, 2e6]  # the old one untouched


def test_a_whole_last_record_without_its_newline_is_kept_and_an_append_keeps_it(tmp_path):
    """Before: read as torn, left out, then cut off by the next append: a finished cell lost."""
    path = tmp_path / "results.jsonl"
    path.write_text('{"key": "a"}\n{"key": "b"}')  # merged or edited by hand
    assert [r["key"] for r in read_results(str(path))] == ["a", "b"]
    append_result(str(path), {"key": "c"})
    assert path.read_text() == '{"key": "a"}\n{"key": "b"}\n{"key": "c"}\n'
    path.write_text('{"key": "a"}\n{"key": "b", "tr')  # a torn append is still cut off
    append_result(str(path), {"key": "c"})
    assert [r["key"] for r in read_results(str(path))] == ["a", "c"]


def test_a_directory_as_the_results_file_is_one_error_line(tmp_path, capsys):
    main = benchmark_script("suite").main
    assert main(["pool", "--preset", "smoke", "--pairs", "toy:wide:base", "--results", str(tmp_path)]) == 2
    assert _one_error_line(capsys.readouterr().err) == \
        f"error: {tmp_path} is a directory; give the results file in it (e.g. {tmp_path}/results.jsonl)"


@pytest.mark.parametrize("args, message", [
    (["run", "--variants", ","], "the variants selection names none (e.g. --variants ',')"),
    (["run", "--variants", ""], "the variants selection names none"),
    (["run", "--seeds", ","], "the seeds selection names none"),
    (["run", "--datasets", " , "], "the datasets selection names none"),
    (["remeasure", "--variants", ","], "the variants selection names none"),
    (["remeasure", "--variants", "sasrec,nosuch"], "unknown variant 'nosuch'"),
    (["remeasure", "--datasets", "mars"], "preset 'smoke' has no dataset 'mars'"),
])
def test_empty_and_unknown_selections_are_refused_before_anything_runs(tmp_path, capsys, args, message):
    """Before: an empty --variants ran the whole preset, and remeasure ignored a variant it did not know."""
    out = tmp_path / "out"
    assert benchmark_script("suite").main([*args, "--out", str(out), "--device", "cpu"]) == 2
    assert message in _one_error_line(capsys.readouterr().err) and not out.exists()
