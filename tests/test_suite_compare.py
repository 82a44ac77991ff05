"""`suite.py compare`: means over the seeds the variants share, differences and paired p-values against the
first variant, from a results file written by hand; and bad input as one `error:` line with exit code 2."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import benchmark_script
from test_suite import _record

from compress.suite.compare import compare_file
from compress.suite.results import append_result

REPO = Path(__file__).resolve().parents[1]
# base and wide on seeds 1-3 differ by 0.01, 0.02, 0.03: mean 0.02, sd 0.01, t = 0.02 / (0.01 / √3) = 2√3,
# ν = 2, and for ν = 2 the two-sided p is 1 − t / √(ν + t²) = 1 − √(12/14) = 0.0742
HAND_P = 1 - (2 * math.sqrt(3)) / math.sqrt(2 + 12)
BASE = {1: (0.30, 4.0e6), 2: (0.20, 4.2e6), 3: (0.25, 4.4e6)}
WIDE = {1: (0.31, 5.0e6), 2: (0.22, 5.0e6), 3: (0.28, 6.5e6), 4: (0.99, 50e6)}  # seed 4: wide's alone


@pytest.fixture
def results(tmp_path) -> Path:
    path = tmp_path / "results.jsonl"
    for name, seeds in (("base", BASE), ("wide", WIDE)):
        for seed, (ndcg, flops) in seeds.items():
            append_result(str(path), _record(name, "dnsrec", seed, ndcg, flops))
    append_result(str(path), _record("lone", "dnsrec", 1, 0.5, 1e6))  # one seed only
    append_result(str(path), _record("late", "dnsrec", 9, 0.5, 1e6))  # a seed no other variant has
    append_result(str(path), _record("elsewhere", "dnsrec", 1, 0.5, 1e6, dataset="other"))
    return path


def compare(results: Path, *args: str) -> list:
    return ["compare", "--preset", "smoke", "--results", str(results), *args]


def test_means_differences_and_paired_p_over_the_shared_seeds(results, capsys):
    c = compare_file(str(results), "toy", ["base", "wide"])
    assert c.seeds == [1, 2, 3] and c.left_out == {"wide": [4]}
    base, wide = c.rows
    assert (base.score, base.flops, base.diff, base.p) == (pytest.approx(0.25), pytest.approx(4.2e6), None, None)
    assert wide.score == pytest.approx(0.27) and wide.flops == pytest.approx(5.5e6)  # seed 4 left out
    assert wide.diff == pytest.approx(0.02) and wide.p == pytest.approx(HAND_P, abs=1e-9) and wide.own_seeds == 4

    main = benchmark_script("suite").main
    assert main(compare(results, "--dataset", "toy", "--variants", "base,wide")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == \
        "toy: test NDCG@10 (full) and analytic FLOPs, means over the 3 seeds all 2 variants share (1, 2, 3)"
    assert out[1] == "diff and p: against the reference base, two-sided paired t-test, paired by seed"
    assert out[2].split() == ["variant", "seeds", "NDCG@10", "FLOPs", "(M)", "diff", "p", "label"]
    assert out[3].split() == ["base", "3", "0.2500", "4.20", "-", "-", "base"]
    assert out[4].split() == ["wide", "3", "of", "4", "0.2700", "5.50", "+0.0200", f"{HAND_P:.2f}", "wide"]
    assert f"{HAND_P:.2f}" == "0.07" and out[5] == "left out: wide seed 4 (not run for every variant)"
    assert len(out) == 6


def test_another_metric_and_a_single_shared_seed(results, capsys):
    """The reference decides nothing about seeds: only the seeds every variant has count; one seed has no p."""
    main = benchmark_script("suite").main
    assert main(compare(results, "--dataset", "toy", "--variants", "wide,base,lone", "--metric", "mrr@10",
                        "--protocol", "pop100")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "toy: test MRR@10 (pop100) and analytic FLOPs, means over the 1 seed all 3 variants share (1)"
    assert out[3].split() == ["wide", "1", "of", "4", "0.3100", "5.00", "-", "-", "wide"]
    assert out[4].split() == ["base", "1", "of", "3", "0.3000", "4.00", "-0.0100", "n/a", "base"]
    assert out[5].split() == ["lone", "1", "0.5000", "1.00", "+0.1900", "n/a", "lone"]
    assert out[-1] == "p: n/a with fewer than 2 shared seeds"


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--dataset", "toy", "--variants", "base,nope"], "unknown variant 'nope'; "),
    (["--dataset", "mars", "--variants", "base,wide"], "unknown dataset 'mars'; the preset runs default, and "),
    (["--dataset", "default", "--variants", "base,wide"],
     "has no records for dataset 'default'; it holds records for other, toy"),
    (["--dataset", "toy", "--variants", "base,elsewhere"],
     "variant 'elsewhere' has no records for dataset 'toy' in "),
    (["--dataset", "toy", "--variants", "base"], "compare needs at least two variants"),
    (["--dataset", "toy"], "compare needs at least two variants"),
    (["--variants", "base,wide"], "compare needs --dataset NAME"),
    (["--dataset", "toy", "--variants", "base,base"], "base named more than once"),
    (["--dataset", "toy", "--variants", "base,late"], "the variants share no seed on toy (base: 1, 2, 3; late: 9)"),
    (["--dataset", "toy", "--variants", "base,wide", "--metric", "ndcg@20"],
     "choose one of mrr@10, ndcg@10, recall@10"),
    (["--dataset", "toy", "--variants", "base,wide", "--preset", "huge"], "unknown preset 'huge'"),
])
def test_bad_input_is_one_error_line_and_exit_code_2(results, capsys, args, message):
    main = benchmark_script("suite").main
    assert main(compare(results, *args)) == 2
    captured = capsys.readouterr()
    assert message in _one_error_line(captured.err) and not captured.out


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_results_file_is_one_error_line(tmp_path, capsys, content):
    path = tmp_path / "results.jsonl"
    if content is not None:
        path.write_text(content)
    main = benchmark_script("suite").main
    assert main(compare(path, "--dataset", "toy", "--variants", "base,wide")) == 2
    assert _one_error_line(capsys.readouterr().err) == \
        f"error: {path} holds no finished cells yet; run the suite first"


def test_the_script_as_a_subprocess(results, subprocess_env):
    script = [sys.executable, str(REPO / "benchmarks" / "suite.py")]
    ok = subprocess.run(script + compare(results, "--dataset", "toy", "--variants", "base,wide"), capture_output=True,
                        text=True, env=subprocess_env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[4].split()[-3:] == ["+0.0200", "0.07", "wide"]
    bad = subprocess.run(script + compare(results, "--dataset", "toy", "--variants", "base,nope"),
                         capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert bad.returncode == 2 and not bad.stdout
    assert "unknown variant 'nope'" in _one_error_line(bad.stderr)
