"""`suite.py pool`: relative differences of matched cells per seed, pooled across datasets with a t
interval, against hand-computed values; the t quantile against published tables; bad input as one
`error:` line with exit code 2."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import benchmark_script
from test_suite import _record
from test_suite_compare import _one_error_line

from compress.suite import write_report
from compress.suite.pool import pool_file, pulled_section, pulled_triples
from compress.suite.report import readme_block
from compress.suite.results import append_result
from compress.suite.stats import mean_interval, t_quantile

REPO = Path(__file__).resolve().parents[1]
# toy: ours over theirs on seeds 1-3 is +10%, -10%, +30% (seed 4: ours alone); other: +20%, +20%
OURS = {1: (0.33, 4.0e6), 2: (0.18, 4.0e6), 3: (0.26, 4.0e6), 4: (0.9, 4.0e6)}
THEIRS = {1: (0.30, 5.0e6), 2: (0.20, 5.0e6), 3: (0.20, 5.0e6)}
OTHER = {"ours": {1: (0.06, 1e6), 2: (0.12, 1e6)}, "theirs": {1: (0.05, 1e6), 2: (0.10, 1e6)}}
# pooled: +10, -10, +30, +20, +20 (%): mean 14, sd √(1/4 · (16 + 576 + 256 + 36 + 36)) = √230
POOLED_MEAN, POOLED_SD = 0.14, math.sqrt(230) / 100
T4 = 2.7764451  # two-sided 95% quantile of Student's t at ν = 4 (published tables: 2.776)


@pytest.fixture
def results(tmp_path) -> Path:
    path = tmp_path / "results.jsonl"
    for name, seeds in (("ours", OURS), ("theirs", THEIRS)):
        for seed, (ndcg, flops) in seeds.items():
            append_result(str(path), _record(name, "dnsrec", seed, ndcg, flops))
    for name, seeds in OTHER.items():
        for seed, (ndcg, flops) in seeds.items():
            append_result(str(path), _record(name, "dnsrec", seed, ndcg, flops, dataset="other"))
    append_result(str(path), _record("zero", "dnsrec", 1, 0.0, 1e6))
    append_result(str(path), _record("zero", "dnsrec", 2, 0.1, 1e6))
    append_result(str(path), _record("single", "dnsrec", 3, 0.22, 1e6))  # seed 3 only
    return path


def pool_args(results: Path, *args: str) -> list:
    return ["pool", "--preset", "smoke", "--results", str(results), *args]


def test_t_quantile_matches_tables_and_closed_forms():
    assert t_quantile(0.95, 1) == pytest.approx(math.tan(math.pi * 0.95 / 2), rel=1e-9)  # Cauchy
    assert t_quantile(0.95, 2) == pytest.approx(math.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2)), rel=1e-9)
    assert t_quantile(0.95, 4) == pytest.approx(T4, abs=1e-6)
    assert t_quantile(0.99, 10) == pytest.approx(3.169, abs=1e-3) and t_quantile(0.95, 1000) == pytest.approx(
        1.962, abs=1e-3)
    assert mean_interval([1.0]) is None and mean_interval([2.0, 2.0]) == (2.0, 2.0)
    for bad in (0.0, 1.0, -0.5, math.nan):
        with pytest.raises(ValueError):
            t_quantile(bad, 3)


def test_relative_differences_per_cell_and_pooled_by_hand(results, capsys):
    p = pool_file(str(results), [("toy", "ours", "theirs"), ("other", "ours", "theirs")])
    toy, other = p.cells
    assert toy.seeds == [1, 2, 3] and toy.left_out == {"ours": [4]}
    assert toy.relative == pytest.approx([0.1, -0.1, 0.3]) and toy.flops_ratio == pytest.approx(0.8)
    assert other.relative == pytest.approx([0.2, 0.2]) and other.flops_ratio == pytest.approx(1.0)
    half = T4 * POOLED_SD / math.sqrt(5)
    assert p.mean == pytest.approx(POOLED_MEAN) and p.interval == pytest.approx((0.14 - half, 0.14 + half))
    t = POOLED_MEAN / (POOLED_SD / math.sqrt(5))
    theta = math.atan(t / 2)  # ν = 4: P(|T| ≥ t) = 1 − sinθ (1 + cos²θ / 2), θ = atan(t / √ν)
    assert p.p == pytest.approx(1 - math.sin(theta) * (1 + math.cos(theta) ** 2 / 2), abs=1e-12)

    main = benchmark_script("suite").main
    assert main(pool_args(results, "--pairs", "toy:ours:theirs,other:ours:theirs")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("test NDCG@10 (full), each variant against its reference paired by seed")
    assert out[2].split() == ["toy", "ours", "theirs", "3", "0.80x", "+10.0%", "+10.0%,", "-10.0%,", "+30.0%"]
    assert out[3].split() == ["other", "ours", "theirs", "2", "1.00x", "+20.0%", "+20.0%,", "+20.0%"]
    assert out[4].startswith(f"pooled over 5 (cell, seed) pairs of 2 cells: mean +14.0%, 95% CI "
                             f"{100 * (0.14 - half):+.1f}% to {100 * (0.14 + half):+.1f}%, p = ")
    assert out[5] == "left out: toy ours seed 4 (not run for both)" and len(out) == 6


def test_another_level_and_metric_and_a_single_pair(results, capsys):
    main = benchmark_script("suite").main
    assert main(pool_args(results, "--pairs", "other:ours:theirs", "--level", "0.9", "--metric", "mrr@10")) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("pooled over 2 (cell, seed) pairs of 1 cell: mean +20.0%, 90% CI +20.0% to +20.0%")
    assert main(pool_args(results, "--pairs", "toy:single:theirs")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == \
        "pooled over 1 (cell, seed) pair of 1 cell: mean +10.0%; interval and p: n/a with fewer than 2 pairs"
    assert out[-1] == "left out: toy theirs seeds 1, 2 (not run for both)"
    width = [(lambda i: i[1] - i[0])(pool_file(str(results), [("toy", "ours", "theirs")], level=level).interval)
             for level in (0.5, 0.95)]
    assert width[0] < width[1]  # a lower level, a narrower interval


@pytest.mark.parametrize("args, message", [
    ([], "pool needs --pairs DATASET:VARIANT:REFERENCE"),
    (["--pairs", ","], "pool needs --pairs DATASET:VARIANT:REFERENCE"),
    (["--pairs", "toy:ours"], "--pairs takes DATASET:VARIANT:REFERENCE triples separated by commas; got 'toy:ours'"),
    (["--pairs", "toy::theirs"], "got 'toy::theirs'"),
    (["--pairs", "toy:ours:theirs:x"], "got 'toy:ours:theirs:x'"),
    (["--pairs", "toy:ours:theirs,toy:ours:theirs"], "named more than once in --pairs"),
    (["--pairs", "toy:ours:ours"], "ours named more than once in --pairs cell toy:ours:ours"),
    (["--pairs", "toy:ours:nope"], "unknown variant 'nope'"),
    (["--pairs", "mars:ours:theirs"], "unknown dataset 'mars'"),
    (["--pairs", "toy:theirs:zero"], "toy seed 1: theirs scores 0.3 and zero 0.0; a relative difference needs"),
    (["--pairs", "toy:ours:theirs", "--level", "1"], "--level is a confidence level between 0 and 1"),
    (["--pairs", "toy:ours:theirs", "--level", "nan"], "got 'nan'"),
    (["--pairs", "toy:ours:theirs", "--level", "x"], "got 'x'"),
    (["--pairs", "toy:ours:theirs", "--metric", "ndcg@20"], "choose one of mrr@10, ndcg@10, recall@10"),
])
def test_bad_input_is_one_error_line_and_exit_code_2(results, capsys, args, message):
    main = benchmark_script("suite").main
    assert main(pool_args(results, *args)) == 2
    captured = capsys.readouterr()
    assert message in _one_error_line(captured.err) and not captured.out


def test_the_script_as_a_subprocess(results, subprocess_env):
    script = [sys.executable, str(REPO / "benchmarks" / "suite.py")]
    ok = subprocess.run(script + pool_args(results, "--pairs", "toy:ours:theirs"), capture_output=True, text=True,
                        env=subprocess_env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[2].split()[-4:] == ["+10.0%", "+10.0%,", "-10.0%,", "+30.0%"]
    bad = subprocess.run(script + pool_args(results, "--pairs", "toy:ours"), capture_output=True, text=True,
                         env=subprocess_env, timeout=300)
    assert bad.returncode == 2 and not bad.stdout and "--pairs takes" in _one_error_line(bad.stderr)


def test_a_missing_results_file_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    assert benchmark_script("suite").main(pool_args(path, "--pairs", "toy:ours:theirs")) == 2
    assert _one_error_line(capsys.readouterr().err) == f"error: {path} holds no finished cells yet; run the suite first"


def _pulled_records() -> list:
    """tp (a baseline) and two searches pulled to its FLOPs per seed, with cells the pooling must skip."""
    records = []
    for seed, (base, pull, flops) in {1: (0.20, 0.22, 4e6), 2: (0.25, 0.25, 5e6), 3: (0.40, 0.36, 6e6)}.items():
        tp = _record("tp", "prune", seed, base, flops)
        records.append(tp)
        for name, ndcg, options in (("pull", pull, {"penalty": "budget", "tradeoff": 1.0}),
                                    ("pull_lambda0", 0.9, {"penalty": "budget", "tradeoff": 0.0}),  # not DNS-Rec
                                    ("pull_gone", 0.9, {"penalty": "budget", "tradeoff": 1.0})):
            r = _record(name, "dnsrec", seed, ndcg, flops / 2, **options)
            r["needs"] = {"budget": tp["key"] if name != "pull_gone" else "a cell no longer in the file"}
            records.append(r)
        other = _record("other_pull", "dnsrec", seed, 0.1, 1e6, penalty="budget", tradeoff=1.0)
        other["needs"] = {"budget": records[-3]["key"]}  # pulled to a DNS-Rec cell: not a baseline's
        records.append(other)
    zero = [_record("tp", "prune", s, 0.0 if s == 1 else 0.1, 1e6, dataset="other") for s in (1, 2)]
    for s, tp in zip((1, 2), zero):
        r = _record("pull", "dnsrec", s, 0.1, 1e6, dataset="other", penalty="budget", tradeoff=1.0)
        r["needs"] = {"budget": tp["key"]}
        records += [tp, r]
    return records


def test_the_report_pools_every_search_pulled_to_a_baselines_flops(tmp_path):
    records = _pulled_records()
    assert pulled_triples(records) == [("other", "pull", "tp"), ("toy", "pull", "tp")]
    section = pulled_section(records)
    assert "| toy | pull | tp | 3 | 0.50x | +10.0%, +0.0%, -10.0% | +0.0% |" in section
    assert "pooled over 3 (cell, seed) pairs of 1 cell: mean +0.0%, 95% CI " in section
    assert "other pull left out: other seed 1: pull scores 0.1 and tp 0.0; a relative difference needs" in section
    path = tmp_path / "results.jsonl"
    for r in records:
        append_result(str(path), r)
    report = Path(write_report(str(path), str(tmp_path / "report"))["report"]).read_text()
    assert "**Pulled to a baseline's FLOPs.**" in report and "| toy | pull | tp | 3 | 0.50x |" in report
    block = readme_block(str(path), str(tmp_path / "report" / "report.md"), str(tmp_path / "README.md"), "cmd")
    assert block.endswith(section)
    assert pulled_section([r for r in records if r["variant"] == "tp"]) == ""  # nothing pulled: no section
