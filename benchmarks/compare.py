"""Side by side on one dataset: dense SASRec (softmax), SASRec with linear attention (LinRec) and
DNS-Rec (search + retrain) at the same d, D, L, all trained with the same settings, then their
accuracy and inference cost measured in one process.

    python benchmarks/compare.py                                   # embedded Gowalla sample
    python benchmarks/compare.py --backbone bert4rec               # the same for BERT4Rec (cloze)
    COMPRESS_DATA_DIR=../shared/data python benchmarks/compare.py --data lastfm

Writes benchmarks/results/compare_<data>[_<backbone>].json and prints a Markdown table. Run
directories go to benchmarks/results/compare_<data>[_<backbone>]_runs/ (not committed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import compress  # noqa: E402
from compress.app.jobs import dnsrec_run, train_run  # noqa: E402
from compress.app.recipes import resolve_options  # noqa: E402
from compress.files import write_json  # noqa: E402
from compress.measure.cost import profile  # noqa: E402
from compress.runtime.allocator import tune_allocator  # noqa: E402
from compress.store.provenance import versions  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
METRICS = ("ndcg@10", "recall@10", "mrr@10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset name or path (default: the embedded sample)")
    ap.add_argument("--backbone", default="sasrec", help="sasrec or bert4rec")
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--inner", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=100, help="max epochs of each training stage (patience 10)")
    ap.add_argument("--search-epochs", type=int, default=10)
    ap.add_argument("--tradeoff", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget of each stage")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    tune_allocator()
    name = os.path.basename(args.data or "default").split(".")[0] + \
        ("" if args.backbone == "sasrec" else f"_{args.backbone}")
    runs = os.path.join(RESULTS, f"compare_{name}_runs")
    shutil.rmtree(runs, ignore_errors=True)
    common = {"data": args.data, "backbone": args.backbone, "seq_len": args.seq_len, "hidden": args.hidden, "inner": args.inner,
              "layers": args.layers, "heads": args.heads, "epochs": args.epochs, "batch_size": args.batch_size,
              "search_batch_size": args.batch_size, "search_epochs": args.search_epochs, "tradeoff": args.tradeoff,
              "max_minutes": args.minutes, "search_max_minutes": args.minutes, "seed": args.seed, "device": "cpu"}
    out = {"command": " ".join(["python", "benchmarks/compare.py", *sys.argv[1:]]), "versions": versions(),
           "threads": torch.get_num_threads(), "settings": common, "methods": {}}
    paths = {}
    for method, extra in ((args.backbone, {"attention": "softmax"}), (f"{args.backbone}_linear", {"attention": "linear"})):
        opts = resolve_options("train", None, {**common, **extra, "gate_layers": 0})
        res = train_run(opts, os.path.join(runs, method))
        paths[method] = res["out"]
        out["methods"][method] = {"metrics": res["metrics"], "best_epoch": res["best_epoch"], "seconds": res["seconds"]}
        print(method, json.dumps(res["metrics"]["test/full"]), flush=True)
    opts = resolve_options("search", None, common)
    res = dnsrec_run(opts, os.path.join(runs, "dnsrec"))
    ret = res["retrain"]
    paths["dnsrec"] = res["out"]
    out["methods"]["dnsrec"] = {"metrics": ret["metrics"], "best_epoch": ret["best_epoch"],
                                "seconds": res["seconds"] + ret["seconds"], "search_seconds": res["seconds"],
                                "decision": res["decision"]}
    print("dnsrec", json.dumps(ret["metrics"]["test/full"]), json.dumps(res["decision"]["arch"]), flush=True)
    models = {m: compress.load(p) for m, p in paths.items()}
    cost = profile(models, [1, 256], repeats=20)
    for m in models:
        out["methods"][m]["cost"] = cost[m]
        out["methods"][m]["arch"] = models[m].arch.to_dict()
    write_json(os.path.join(RESULTS, f"compare_{name}.json"), out)
    print(table(out))


def table(out: dict) -> str:
    base = next(iter(out["methods"].values()))["cost"]  # the dense softmax backbone
    rows = ["| method | arch (d/D x L, attention, gates) | test NDCG@10 full | Recall@10 full | NDCG@10 pop100 | "
            "FLOPs | params | latency b=1 (ms) | latency b=256 (ms) | speed-up b=256 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m, r in out["methods"].items():
        a, c, full, pop = r["arch"], r["cost"], r["metrics"]["test/full"], r["metrics"]["test/pop100"]
        rows.append(f"| {m} | {a['hidden']}/{a['inner']} x {a['layers']}, {a['attention']}, L_d={a['gate_layers']} | "
                    f"{full['ndcg@10']:.4f} | {full['recall@10']:.4f} | {pop['ndcg@10']:.4f} | "
                    f"{c['flops_measured']:,} | {c['params']:,} | {c['latency_ms@1']:.2f} | {c['latency_ms@256']:.1f} | "
                    f"{base['latency_ms@256'] / c['latency_ms@256']:.2f}x |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
