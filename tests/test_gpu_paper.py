"""benchmarks/gpu_paper.py at toy size on CPU: the three methods with metrics, FLOPs, throughput and
latency, and a second invocation that reuses every finished run instead of training again."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import benchmark_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_paper.py"
METHODS = ("sasrec", "sasrec_linear", "dnsrec")


def run(tmp_path: Path) -> dict:
    out_dir, results = tmp_path / "out", tmp_path / "gpu_paper.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--toy", "--device", "cpu", "--out-dir", str(out_dir),
                           "--results", str(results), "--runs", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(results.read_text())
    assert json.loads((out_dir / "gpu_paper.json").read_text()) == report
    return report


def test_toy_paper_run_then_reuse(tmp_path):
    report = run(tmp_path)
    assert report["all_ok"] and report["finished"] and report["device"] == "cpu"
    assert report["matmul_bf16"]["tflops"] > 0 and "3 x" in report["throughput_formula"]
    methods = report["datasets"]["default"]["methods"]
    assert set(methods) == set(METHODS) and report["skipped_finished"] == []
    for name in METHODS:
        m = methods[name]
        assert m["ok"] and not m["reused"], name
        for split in ("test/full", "test/pop100"):
            assert 0 <= m["metrics"][split]["ndcg@10"] <= m["metrics"][split]["recall@10"] <= 1
        assert m["flops"] > 0 and m["params"] > 0
        assert m["latency_ms"]["latency_ms@1"] > 0 and m["latency_ms"]["latency_ms@256"] > 0
        assert all(t["seqs_per_s"] > 0 and t["fraction_of_bf16_matmul"] > 0 for t in m["throughput"].values())
    assert methods["sasrec_linear"]["arch"]["attention"] == "linear"
    assert set(methods["dnsrec"]["throughput"]) == {"search", "retrain"}
    assert methods["dnsrec"]["search"]["decision"] == methods["dnsrec"]["arch"]

    again = run(tmp_path)
    assert again["skipped_finished"] == [f"default/{m}" for m in METHODS]
    for name in METHODS:
        assert again["datasets"]["default"]["methods"][name]["reused"]
        assert again["datasets"]["default"]["methods"][name]["metrics"] == methods[name]["metrics"]


def test_methods_takes_a_subset_in_the_tables_order():
    args = benchmark_script("gpu_paper").parse_args(["--toy", "--device", "cpu", "--methods", " dnsrec,sasrec "])
    assert args.methods == ["sasrec", "dnsrec"]


@pytest.mark.parametrize("methods", ["", ",", "bert4rec", "sasrec,linear"])
def test_an_unknown_or_empty_methods_list_is_a_usage_error(methods, capsys):
    with pytest.raises(SystemExit) as exc:
        benchmark_script("gpu_paper").parse_args(["--toy", "--device", "cpu", "--methods", methods])
    assert exc.value.code == 2
    assert "--methods takes a comma-separated subset of sasrec, sasrec_linear, dnsrec" in capsys.readouterr().err
