"""Side-by-side inference cost of models, measured in one process, one run."""
from __future__ import annotations

from typing import Dict, List

import torch

from compress.measure.flops import measured_flops, model_flops, params_count
from compress.measure.latency import latencies_ms, peak_memory_bytes
from compress.runtime.devices import model_device


def profile(models: Dict[str, torch.nn.Module], batches: List[int], repeats: int) -> Dict[str, Dict[str, float]]:
    """Per model: params, FLOPs, and per batch size latency (interleaved across models; on CUDA eager and
    replayed as CUDA graphs) and peak memory."""
    rows = {}
    for name, model in models.items():
        rows[name] = {"params": params_count(model),
                      "flops_analytic": model_flops(model)["total"],
                      "flops_measured": measured_flops(model, model.max_len)}
    cuda = any(model_device(m).type == "cuda" for m in models.values())
    for b in dict.fromkeys(batches):  # a size given twice is measured once
        for name, ms in zip(models, latencies_ms(list(models.values()), b, repeats)):
            rows[name][f"latency_ms@{b}"] = ms
        if cuda:  # per-call launch overhead removed: what a served model costs
            for name, ms in zip(models, latencies_ms(list(models.values()), b, repeats, graphs=True)):
                rows[name][f"latency_ms_graphs@{b}"] = ms
        for name, model in models.items():
            rows[name][f"peak_memory_MB@{b}"] = peak_memory_bytes(model, b)["total"] / 2 ** 20
    return rows
