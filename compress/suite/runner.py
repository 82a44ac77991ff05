"""Run a plan's cells in order, skipping the finished ones, and append one record per cell.

A record holds what the report needs and what a reader needs to trust it: the resolved options,
seed, versions and machine, wall time per stage, valid/test metrics under the full and pop100
protocols, FLOPs (analytic and measured), parameters, inference peak memory and latency at the
plan's batch sizes, and the dataset's statistics.
"""
from __future__ import annotations

import datetime
import os
import platform
import time
from typing import Any, Callable, Dict, Optional

import torch

from compress.app.rundirs import dataset_from_options
from compress.measure.cost import profile
from compress.runtime.devices import resolve_device
from compress.store.provenance import versions
from compress.suite.methods import METHOD_FUNCTIONS
from compress.suite.results import append_result, read_results
from compress.suite.spec import Cell, Plan


def machine(device: str) -> Dict[str, Any]:
    out = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        out["gpu"] = torch.cuda.get_device_name()
    return out


def run_cell(cell: Cell, plan: Plan, runs_dir: str, deps: Dict[str, Dict[str, Any]], device: str) -> Dict[str, Any]:
    """Train/search the cell in ``runs_dir/<cell name>``, measure its model, return its record."""
    opts = {**cell.options, "device": device}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start, t0 = datetime.datetime.now().isoformat(timespec="seconds"), time.perf_counter()
    outcome = METHOD_FUNCTIONS[cell.variant.method](cell, opts, os.path.join(runs_dir, cell.name), deps)
    cost = profile({"model": outcome.model}, plan.batches, plan.repeats)["model"]
    record = {"key": cell.key, "dataset": cell.dataset, "variant": cell.variant.name, "label": cell.variant.label,
              "method": cell.variant.method, "seed": cell.seed, "preset": plan.preset, "needs": cell.needs,
              "from_scratch": cell.variant.from_scratch, "options": opts,
              "arch": outcome.model.arch.to_dict(), "backbone": outcome.model.backbone_name,
              "metrics": outcome.metrics, "cost": cost, "seconds": outcome.seconds,
              "wall_s": time.perf_counter() - t0, "started": start, "info": outcome.info,
              "dataset_stats": dataset_from_options(opts).stats(), "versions": versions(), "machine": machine(device),
              "run": cell.name}
    if torch.cuda.is_available():
        record["cost"]["train_peak_memory_MB"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return record


def run_plan(plan: Plan, results: str, runs_dir: str, device: str = "auto",
             log: Optional[Callable[[str], None]] = None) -> Dict[str, int]:
    """Run every cell of ``plan`` whose key is not in ``results`` yet; returns {"run": n, "skipped": n}.
    A bad ``device`` is refused before any cell runs, not when the first cell to run reaches it."""
    log = log or (lambda message: None)
    resolve_device(device)
    done = {r["key"]: r for r in read_results(results)}
    names = {c.key: c.name for c in plan.cells}
    counts = {"run": 0, "skipped": 0}
    for i, cell in enumerate(plan.cells, 1):
        tag = f"[{i}/{len(plan.cells)}] {cell.variant.name} on {cell.dataset}, seed {cell.seed}"
        if cell.key in done:
            counts["skipped"] += 1
            log(f"{tag}: done before ({cell.key})")
            continue
        log(f"{tag}: running ({cell.key})")
        deps = {role: {**done[key], "path": os.path.join(runs_dir, names[key])} for role, key in cell.needs.items()}
        record = run_cell(cell, plan, runs_dir, deps, device)
        append_result(results, record)
        done[cell.key] = record
        counts["run"] += 1
        full = record["metrics"]["test/full"]
        log(f"{tag}: test NDCG@10 {full['ndcg@10']:.4f}, {record['cost']['flops_analytic']:,} FLOPs, "
            f"{record['wall_s']:.0f} s")
    return counts
