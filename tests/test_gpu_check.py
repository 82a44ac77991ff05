"""benchmarks/gpu_check.py's parity check runs as written (on CPU here, on CUDA where there is one)."""
import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_parity_against_cpu_float64():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = gpu_check.parity(device)
    for attention in ("softmax", "linear"):
        assert result[attention]["supernet_vs_slice_on_device"] <= 1e-5
        assert len(result[attention]["candidates"]) == 4  # 2 widths x 2 depths
        for diffs in result[attention]["candidates"].values():
            assert diffs["scores_max_abs_diff"] < 1e-4 and diffs["grad_max_abs_diff"] < 1e-4
