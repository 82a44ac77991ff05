"""Measure the cost of finished cells again, from their saved models, side by side.

A cell's latency is measured when it finishes, so it reflects the machine at that moment (other
jobs on other cores), and its FLOPs reflect the code of that day. ``remeasure`` loads the models of
every cell of a dataset together and measures them in one pass with the current code: FLOPs and
parameters per model, latency interleaved across all of them (``compress.measure.cost.profile``), so
the ratios between methods are measured under the same load. Each record's ``cost`` is replaced,
and ``measured`` says when, with which code and on which machine the new figures were taken. The
figures replaced join ``earlier_passes`` (oldest first, each with its ``measured``; the cell's own
figures, taken when it finished, with ``own: true``), so a ratio quoted from any pass stays in the
file. Some records re-measured before ``earlier_passes`` existed also hold ``cost_before``: figures
older than every pass listed, whose stamp was not kept. Metrics and training times are not touched.
"""
from __future__ import annotations

import datetime
import os
from typing import Callable, List, Optional

from compress.errors import ConfigError
from compress.layout import RETRAINED
from compress.measure.cost import profile
from compress.runtime.devices import resolve_device
from compress.store.artifacts import load
from compress.store.provenance import versions
from compress.suite.pareto import by_field
from compress.suite.results import read_records, update_results
from compress.suite.runner import machine

KEPT = ("train_peak_memory_MB",)  # measured while training: not something a saved model can re-measure


def model_dir(runs_dir: str, record: dict) -> str:
    """Where a cell's final model is saved: the run directory, or its retrained/ for DNS-Rec cells."""
    run = os.path.join(runs_dir, record["run"])
    return os.path.join(run, RETRAINED) if record["method"] == "dnsrec" else run


def own_stamp(record: dict) -> dict:
    """When, with which code and where a cell measured its own cost: alone, as its run finished."""
    end = datetime.datetime.fromisoformat(record["started"]) + datetime.timedelta(seconds=record["wall_s"])
    return {"at": end.isoformat(timespec="seconds"), "versions": record["versions"], "machine": record["machine"],
            "side_by_side": 1, "own": True}


def remeasure(results: str, runs_dir: str, batches: List[int], repeats: int, device: str = "cpu",
              datasets: Optional[List[str]] = None, log: Optional[Callable[[str], None]] = None,
              variants: Optional[List[str]] = None) -> int:
    """Re-measure the cost of every finished cell (of ``datasets`` and ``variants``, default all), the
    models of a dataset side by side; returns how many. The cells are those the report counts
    (``read_records``): a record superseded by a rerun of its cell, or built on one so superseded, is not
    measured again, since no table shows it and its run directory may be gone."""
    log = log or (lambda line: None)
    records = read_records(results).records
    dev = resolve_device(device)
    chosen = [r for r in records if (datasets is None or r["dataset"] in datasets)
              and (variants is None or r["variant"] in variants)]
    if not chosen:
        raise ConfigError(f"{results} holds no finished cell of datasets {datasets or 'any'} and variants "
                          f"{variants or 'any'}")
    missing = [model_dir(runs_dir, r) for r in chosen if not os.path.isdir(model_dir(runs_dir, r))]
    if missing:
        raise ConfigError(f"{len(missing)} cell model(s) are not in {runs_dir} (first: {missing[0]}); "
                          "pass --runs with the run directories the cells were run in")
    when = datetime.datetime.now().isoformat(timespec="seconds")
    stamp = {"at": when, "versions": versions(), "machine": machine(str(dev))}
    for dataset, rows in by_field(chosen, "dataset").items():
        models = {r["key"]: load(model_dir(runs_dir, r), str(dev)) for r in rows}
        costs = profile(models, batches, repeats)
        for r in rows:
            old = r["cost"]
            replaced = {"cost": old, "measured": r.get("measured") or own_stamp(r)}
            r["earlier_passes"] = r.get("earlier_passes", []) + [replaced]
            r["cost"] = {**{k: old[k] for k in KEPT if k in old}, **costs[r["key"]]}
            r["measured"] = {**stamp, "side_by_side": len(rows)}
        log(f"{dataset}: {len(rows)} models measured side by side")
    update_results(results, {r["key"]: r for r in chosen})
    return len(chosen)
