"""Searching from a trained SASRec (warm start, with and without importance reordering) vs searching
from scratch: validation NDCG@10 per search epoch and the epochs and wall time each needs to reach
the from-scratch search's best.

    python benchmarks/warm_start.py                       # embedded Gowalla sample
    COMPRESS_DATA_DIR=../shared/data python benchmarks/warm_start.py --data lastfm

Writes benchmarks/results/warm_start_<data>.json and prints a Markdown table. Resumable: a stage
whose run directory is complete is read back instead of rerun (``--fresh`` starts over). The dense model is
trained first with the same d, D, L (softmax attention, as users have it); each search then injects
linear attention and gates and runs the same number of epochs with the same seed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from compress.app.jobs import search_run, train_run  # noqa: E402
from compress.app.recipes import resolve_options  # noqa: E402
from compress.files import read_json, write_json  # noqa: E402
from compress.runtime.allocator import tune_allocator  # noqa: E402
from compress.store.provenance import versions  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def reach(history: List[Dict], target: float) -> Optional[Dict]:
    """The first epoch whose validation NDCG@10 reaches ``target``, with the search seconds spent until then."""
    seconds = 0.0
    for row in history:
        seconds += row["train_seconds"]
        if row["valid_ndcg@10"] >= target:
            return {"epoch": row["epoch"], "train_seconds": round(seconds, 1)}
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset name or path (default: the embedded sample)")
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--inner", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=100, help="max epochs of the dense training (patience 10)")
    ap.add_argument("--search-epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--fresh", action="store_true", help="discard finished stages and run everything again")
    args = ap.parse_args()
    tune_allocator()
    name = os.path.basename(args.data or "default").split(".")[0]
    runs = os.path.join(RESULTS, f"warm_start_{name}_runs")
    if args.fresh:
        shutil.rmtree(runs, ignore_errors=True)
    common = {"data": args.data, "seq_len": args.seq_len, "hidden": args.hidden, "inner": args.inner,
              "layers": args.layers, "heads": args.heads, "epochs": args.epochs, "batch_size": args.batch_size,
              "search_batch_size": args.batch_size, "search_epochs": args.search_epochs,
              "patience": args.search_epochs, "seed": args.seed, "device": "cpu"}
    out = {"command": " ".join(["python", "benchmarks/warm_start.py", *sys.argv[1:]]), "versions": versions(),
           "threads": torch.get_num_threads(), "settings": common, "searches": {}}
    dense_dir = os.path.join(runs, "dense")
    if not os.path.exists(dense_dir):
        train_run(resolve_options("train", None, {**common, "attention": "softmax", "gate_layers": 0}), dense_dir)
    dense = read_json(os.path.join(dense_dir, "metrics.json"))
    out["dense"] = {"valid_ndcg@10": dense["metrics"]["valid/full"]["ndcg@10"], "best_epoch": dense["best_epoch"]}
    print("dense", json.dumps(out["dense"]), flush=True)
    for method, extra in (("scratch", {}), ("warm", {"init": dense_dir}),
                          ("warm_reorder", {"init": dense_dir, "reorder": "magnitude"})):
        run = os.path.join(runs, method)
        if not os.path.exists(run):
            search_run(resolve_options("search", None, {**common, **extra}), run, overwrite=True)
        card = read_json(os.path.join(run, "search_card.json"))
        history = card["history"]
        out["searches"][method] = {"valid_ndcg@10_by_epoch": [round(r["valid_ndcg@10"], 5) for r in history],
                                   "seconds": round(card["seconds"], 1), "decision": card["decision"]["arch"],
                                   "best_valid_ndcg@10": history[card["best_epoch"] - 1]["valid_ndcg@10"]}
        print(method, json.dumps(out["searches"][method]), flush=True)
    target = out["searches"]["scratch"]["best_valid_ndcg@10"]
    for method, r in out["searches"].items():
        r["reaches_scratch_best"] = reach(read_json(os.path.join(runs, method, "search_card.json"))["history"], target)
    write_json(os.path.join(RESULTS, f"warm_start_{name}.json"), out)
    print(table(out))


def table(out: dict) -> str:
    rows = ["| search start | valid NDCG@10 by epoch | best | epoch (search s) reaching scratch's best | decision |",
            "|---|---|---:|---|---|"]
    for method, r in out["searches"].items():
        a, hit = r["decision"], r["reaches_scratch_best"]
        reached = "never" if hit is None else f"{hit['epoch']} ({hit['train_seconds']} s)"
        by_epoch = " ".join(f"{v:.3f}" for v in r["valid_ndcg@10_by_epoch"])
        rows.append(f"| {method} | {by_epoch} | {r['best_valid_ndcg@10']:.4f} | {reached} | "
                    f"{a['hidden']}/{a['inner']} x {a['layers']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
