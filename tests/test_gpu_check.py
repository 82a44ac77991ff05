"""benchmarks/gpu_check.py: the parity check as written (on CPU here, on CUDA where there is one), and the
whole command-line journey at toy size on CPU, every stage passing or skipped with its reason."""
import json
import subprocess
import sys
from pathlib import Path

import torch
from clihelp import benchmark_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_parity_against_cpu_float64():
    gpu_check = benchmark_script("gpu_check")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = gpu_check.parity(device)
    for attention in ("softmax", "linear"):
        assert result[attention]["supernet_vs_slice_on_device"] <= 1e-5
        assert len(result[attention]["candidates"]) == 4  # 2 widths x 2 depths
        for diffs in result[attention]["candidates"].values():
            assert diffs["scores_max_abs_diff"] < 1e-4 and diffs["grad_max_abs_diff"] < 1e-4


def test_toy_journey_on_cpu(tmp_path):
    # torch.compile's first CPU build alone takes about two minutes; the GPU run keeps the stage. The
    # torchrun and bf16 searches are tested in tests/test_distributed.py and tests/test_precision.py.
    # The journey costs about 1.5 CPU-minutes; the timeout leaves room for a machine shared with other jobs.
    out_dir, results = tmp_path / "out", tmp_path / "gpu_check_cpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--toy", "--skip", "compile,torchrun,search_bf16",
                           "--out-dir", str(out_dir), "--results", str(results), "--work-dir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=480)
    report = json.loads(results.read_text())
    assert json.loads((out_dir / "gpu_check_cpu.json").read_text()) == report
    assert report["device"] == "cpu" and report["commit"] != "" and report["finished"]
    failed = {name: s["error"] for name, s in report["stages"].items() if s["ok"] is False}
    assert not failed, f"{failed}\n{proc.stdout}"
    assert proc.returncode == 0 and report["all_ok"]
    for name, stage in report["stages"].items():
        assert stage["ok"] is True or stage["skipped"], name
        assert stage["seconds"] >= 0
    assert report["stages"]["train_fp16"]["skipped"] and report["stages"]["compile"]["skipped"] == "--skip"
    assert report["stages"]["torchrun"]["skipped"] == "--skip" and report["stages"]["train_bf16"]["ok"]
    assert report["stages"]["parity"]["max_abs_diff"] <= 1e-4
    recomputed = report["stages"]["search_recompute"]
    assert recomputed["ok"] and recomputed["decision"] and "alpha_max_abs_diff" not in recomputed  # toy: not compared
    assert report["stages"]["kill_resume"]["decision"]["layers"] >= 1
    assert report["stages"]["bench"]["bench"]["models"]["baseline"]["latency_ms@256"] > 0
    assert len(proc.stdout.strip().splitlines()) == len(report["stages"])  # one line per stage
