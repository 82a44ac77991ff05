"""Side-by-side inference cost of a model and its baseline, measured in one process, one run."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

from compress.runtime.devices import resolve_device

from compress.store.artifacts import load
from compress.measure.flops import measured_flops, model_flops, params_count
from compress.measure.latency import latencies_ms, peak_memory_bytes


def profile(models: Dict[str, torch.nn.Module], batches: List[int], repeats: int) -> Dict[str, Dict[str, float]]:
    """Per model: params, FLOPs, and per batch size latency (interleaved across models) and peak memory."""
    rows = {}
    for name, model in models.items():
        rows[name] = {"params": params_count(model),
                      "flops_analytic": model_flops(model)["total"],
                      "flops_measured": measured_flops(model, model.max_len)}
    for b in batches:
        for name, ms in zip(models, latencies_ms(list(models.values()), b, repeats)):
            rows[name][f"latency_ms@{b}"] = ms
        for name, model in models.items():
            rows[name][f"peak_memory_MB@{b}"] = peak_memory_bytes(model, b)["total"] / 2 ** 20
    return rows


def compare(path: str, baseline: Optional[str], batches: List[int], repeats: int = 30,
            device: str = "auto") -> Dict:
    dev = resolve_device(device)
    models = {"model": load(path, str(dev))}
    if baseline:
        models["baseline"] = load(baseline, str(dev))
    rows = profile(models, batches, repeats)
    return {"device": str(dev), "threads": torch.get_num_threads(), "models": rows,
            "rows": list(next(iter(rows.values())))}
