"""DNS-Rec on ML-1M (recipes/ml-1m.yaml): search, retrain, and the cost of the decision against the
dense 2-layer d=128 SASRec baseline, measured side by side in one process.

    COMPRESS_DATA_DIR=../shared/data python benchmarks/dnsrec_ml1m.py --search-minutes 30 --retrain-minutes 30
    COMPRESS_DATA_DIR=../shared/data python benchmarks/dnsrec_ml1m.py --search-epochs 3 --retrain-epochs 20
    COMPRESS_DATA_DIR=../shared/data python benchmarks/dnsrec_ml1m.py --timing-only   # seconds per step only

Writes benchmarks/results/dnsrec_ml1m.json (and the run directory benchmarks/results/dnsrec_ml1m_run,
not committed) and prints every figure. CPU preset: the paper's Table 2 model settings
(d=128, D=256, N=200, L=4, λ=0.1, pruning {0, 25, 50}%), with batch 256 instead of 1024/2048 (the
full-item head over 200 positions does not fit larger batches in 24 GB) and wall-clock budgets
instead of the paper's epoch counts; the JSON records how many epochs each stage reached.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import compress  # noqa: E402
from compress.app.jobs import dnsrec_run  # noqa: E402
from compress.app.options import build  # noqa: E402
from compress.app.recipes import resolve_options  # noqa: E402
from compress.app.rundirs import dataset_from_options  # noqa: E402
from compress.arch import ArchSpec  # noqa: E402
from compress.backbones import get_backbone  # noqa: E402
from compress.engine.config import TrainConfig  # noqa: E402
from compress.engine.train import DenseTask  # noqa: E402
from compress.files import read_json, write_json  # noqa: E402
from compress.measure.cost import profile  # noqa: E402
from compress.measure.flops import analytic_flops  # noqa: E402
from compress.nas.config import SearchConfig  # noqa: E402
from compress.nas.search import SearchTask  # noqa: E402
from compress.nas.space import SearchSpace  # noqa: E402
from compress.runtime.allocator import tune_allocator  # noqa: E402
from compress.store.provenance import versions  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
RECIPE = os.path.join(os.path.dirname(HERE), "recipes", "ml-1m.yaml")
DENSE = ArchSpec(128, 256, 8, 2)  # LinRec's dense SASRec on ML-1M: the baseline of the headline


def interleaved_seconds(first, second, steps: int):
    """Mean seconds per call of two step functions, alternated so machine load hits both alike."""
    first(), second()  # warm-up
    t = [0.0, 0.0]
    for _ in range(steps):
        for i, fn in enumerate((first, second)):
            t0 = time.perf_counter()
            fn()
            t[i] += time.perf_counter() - t0
    return t[0] / steps, t[1] / steps


def time_steps(ds, opts, batch: int, steps: int) -> dict:
    """Seconds per training step of the supernet (``SearchTask.step``: a weight step and an α/β step)
    vs the dense SASRec with the same d, D, L and softmax attention (``DenseTask.step``), both the
    library's own steps on the same batch."""
    device = torch.device(opts["device"] if opts["device"] != "auto" else "cpu")
    full = ArchSpec(opts["hidden"], opts["inner"], opts["heads"], opts["layers"])
    dense = get_backbone("sasrec")(full, ds.n_items, opts["seq_len"])
    dense_task = DenseTask(dense, ds, build(TrainConfig, {**opts, "batch_size": batch}), device)
    supernet = compress.wrap(dense, space=build(SearchSpace, opts))
    search_task = SearchTask(supernet, ds, build(SearchConfig, {**opts, "search_batch_size": batch}), device)
    _, items, targets = next(dense_task.batches.epoch(1))
    search_task.begin_epoch(1)
    d, s = interleaved_seconds(lambda: dense_task.step(0, 0, items, targets),
                               lambda: search_task.step(0, 0, items, targets), steps)
    windows = dense_task.batches.windows
    return {"batch": batch, "steps": steps, "dense_step_s": d, "search_step_s": s, "ratio": s / d,
            "dense_epoch_s_est": d * windows / batch, "search_epoch_s_est": s * windows / batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search-minutes", type=float, default=30)
    ap.add_argument("--retrain-minutes", type=float, default=30)
    ap.add_argument("--search-epochs", type=int, default=None, help="search epochs (default: the recipe's 10)")
    ap.add_argument("--retrain-epochs", type=int, default=None, help="retrain epochs (default: the recipe's)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--budget-vs-dense", type=float, default=None, metavar="R",
                    help="hard FLOPs budget: the dense 2-layer d=128 SASRec's analytic FLOPs divided by R")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run (dnsrec_ml1m_run.partial/)")
    ap.add_argument("--timing-steps", type=int, default=3)
    ap.add_argument("--timing-only", action="store_true", help="measure seconds per step and stop")
    args = ap.parse_args()
    tune_allocator()
    run_dir = os.path.join(RESULTS, "dnsrec_ml1m_run")
    overrides = {"search_batch_size": args.batch_size, "batch_size": args.batch_size,
                 "search_max_minutes": args.search_minutes, "max_minutes": args.retrain_minutes,
                 "device": "cpu", "search_epochs": args.search_epochs, "epochs": args.retrain_epochs}
    opts = resolve_options("search", RECIPE, overrides)
    ds = dataset_from_options(opts)
    if args.budget_vs_dense:
        dense_flops = analytic_flops(DENSE, opts["seq_len"], ds.n_items)["total"]
        opts = resolve_options("search", RECIPE, {**overrides, "max_flops": dense_flops / args.budget_vs_dense})
    out = {"command": " ".join(["python", "benchmarks/dnsrec_ml1m.py", *sys.argv[1:]]), "versions": versions(),
           "threads": torch.get_num_threads(), "options": opts}
    if not args.resume:
        out["step_timing"] = time_steps(ds, opts, args.batch_size, args.timing_steps)
        print("step timing", json.dumps(out["step_timing"]), flush=True)
    if args.timing_only:
        write_json(os.path.join(RESULTS, "dnsrec_ml1m_timing.json"), out)
        return
    partial = os.path.join(RESULTS, "dnsrec_ml1m_run.partial")
    if args.resume:  # continue the interrupted search with its saved settings, and this command's budgets
        meta = read_json(os.path.join(partial, "run.json"))
        meta["settings"].update(search_max_minutes=args.search_minutes, max_minutes=args.retrain_minutes)
        write_json(os.path.join(partial, "run.json"), meta)
        out["options"] = opts = meta["settings"]
        out["resumed"] = "the search continued from its last epoch checkpoint; its wall-clock budget counts " \
                         "from the resume"
    result = dnsrec_run(opts, run_dir, overwrite=not args.resume, resume=args.resume,
                        on_search=lambda found: print("search", json.dumps(found), flush=True))
    out["retrain"] = result.pop("retrain")
    out["search"] = result
    print("retrain", json.dumps(out["retrain"]), flush=True)
    card = read_json(os.path.join(run_dir, "search_card.json"))
    out["search_history"] = [{k: row[k] for k in ("epoch", "tau", "p", "q", "decision", "valid_ndcg@10",
                                                  "train_seconds")} for row in card["history"]]
    small = compress.load(run_dir)
    baseline = get_backbone("sasrec")(DENSE, ds.n_items, 200)
    linear = get_backbone("sasrec")(dataclasses.replace(DENSE, attention="linear"), ds.n_items, 200)
    out["cost"] = profile({"dnsrec": small, "sasrec": baseline, "sasrec_linear": linear}, [1, 256], repeats=10)
    retrained = read_json(os.path.join(run_dir, "retrained", "metrics.json"))
    out["metrics"], out["retrain_history"] = retrained["metrics"], retrained["history"]
    write_json(os.path.join(RESULTS, "dnsrec_ml1m.json"), out)
    print(json.dumps({"cost": out["cost"], "metrics": out["metrics"]}, indent=1))


if __name__ == "__main__":
    main()
