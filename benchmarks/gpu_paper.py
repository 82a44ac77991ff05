"""The paper's ML-1M comparison at full scale in one resumable run: dense SASRec, SASRec with linear
attention, and DNS-Rec (search, then retraining with transferred weights), each to convergence or to
a wall-clock budget, measured side by side.

Methods (per dataset):

- ``sasrec``: LinRec's SASRec settings (the dataset's recipe with 2 layers, 8 heads, softmax
  attention, no gates; on ML-1M d=128, D=256, N=200, dropout 0.2, lr 1e-3, patience 10);
- ``sasrec_linear``: the same with causal linear attention;
- ``dnsrec``: the dataset's recipe (recipes/ml-1m.yaml: paper Table 2, 10 search epochs), then the
  decision retrained with transferred weights until validation NDCG@10 stops improving (patience 10).

    timeout -s TERM 540 python benchmarks/gpu_paper.py --data-dir DATA --out-dir "$OUT"   # on the GPU
    python benchmarks/gpu_paper.py --data-dir DATA --datasets ml-1m,gowalla,douban-book
    python benchmarks/gpu_paper.py --toy --device cpu --runs /tmp/runs   # CPU toy: 45 s; rerun (reused): 20 s
    python benchmarks/gpu_paper.py --data-dir DATA --methods sasrec   # one method (the rest: later, reused)

DATA holds ml-1m/ (or give $COMPRESS_DATA_DIR). Each method writes its RUN_DIR under
``--runs/DATASET/METHOD`` (default benchmarks/results/gpu_paper_runs, not committed). A finished
RUN_DIR is reused on the next invocation (listed in ``skipped_finished``, ``"reused": true``); an
interrupted one (``RUN_DIR.partial/``, or a DNS-Rec search without its retraining) is resumed, so
two shorter runs finish what one could not: SIGTERM (``timeout -s TERM``) makes the running job
write a checkpoint and the script stop with exit code 130; the same command continues it. Without
budgets each method trains to convergence (patience 10, at most ``--epochs``); ``--max-minutes``
bounds each training stage and ``--search-max-minutes`` the search (a budget-stopped run is
finished, not resumed; budgets count from a resume).

Writes benchmarks/results/gpu_paper.json (``--results`` elsewhere; ``--out-dir``: also there) at the
start of and after every method (``running`` names the method in progress): test NDCG@10 and
Recall@10 under full ranking and pop100, FLOPs, parameters, the settings each run used, each training
stage's throughput against the device's measured bf16 matmul rate (the formula is in the JSON), and,
after a dataset's methods, the latency at batch 1 and 256 of all its finished models, measured side by
side (eager; on CUDA also CUDA-graph replayed). ``--toy``: the embedded sample, d=16 models, one epoch
each and one search epoch under 3-second training budgets.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from compress.app.jobs import dnsrec_run, train_run  # noqa: E402
from compress.app.recipes import resolve_options  # noqa: E402
from compress.engine.checkpoint import Checkpointer, partial_dir  # noqa: E402
from compress.engine.progress import Reporter  # noqa: E402
from compress.errors import CompressError, Interrupted  # noqa: E402
from compress.files import read_json, write_json  # noqa: E402
from compress.layout import CONFIG, METRICS, RETRAINED, SEARCH_CARD  # noqa: E402
from compress.measure.cost import profile  # noqa: E402
from compress.measure.flops import model_flops, params_count  # noqa: E402
from compress.runtime.devices import resolve_device  # noqa: E402
from compress.store.artifacts import load  # noqa: E402
from compress.store.provenance import versions  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results")
RECIPES = {"ml-1m": "ml-1m.yaml", "gowalla": "gowalla.yaml", "douban-book": "douban.yaml"}
METHODS = ("sasrec", "sasrec_linear", "dnsrec")
SHOWN = ("data", "seq_len", "hidden", "inner", "layers", "heads", "attention", "gate_layers", "dropout", "lr",
         "batch_size", "epochs", "patience", "max_minutes", "precision", "compile")  # the settings worth citing
SEARCH_SHOWN = ("tradeoff", "hidden_ratios", "inner_ratios", "search_epochs", "search_batch_size",
                "search_max_minutes")
DENSE = {"layers": 2, "heads": 8, "gate_layers": 0}  # LinRec's SASRec: the recipe's data and widths, 2 layers
TOY = {"hidden": 16, "inner": 32, "heads": 2, "layers": 2, "seq_len": 20, "epochs": 1, "batch_size": 256,
       "max_minutes": 0.05}  # 3-second training budgets: minutes in all on a loaded CPU
TOY_SEARCH = {"search_epochs": 1, "search_batch_size": 256, "search_max_minutes": 0.05}
FORMULA = ("training FLOPs per sequence = 3 x (F - H + N x H): F = analytic FLOPs of scoring one length-N "
           "history (compress.measure.flops, 2 x multiply-adds), H = 2 d (n_items + 1) its full-item head, "
           "which training applies at all N positions; backward ~ 2 x forward. Search: F = the search card's "
           "full_flops (the widest, deepest candidate with the costliest attention and gates). achieved = "
           "median seqs_per_s over epochs x that; fraction = achieved / measured bf16 matmul rate")


class EpochLines(Reporter):
    """One printed line per epoch, so an unattended run leaves a readable log."""

    def __init__(self, label: str) -> None:
        self.label = label

    def epoch_end(self, row: Dict, improved: bool) -> None:
        print(f"  {self.label} epoch {row['epoch']:>3}  loss {row['loss']:.4f}  valid ndcg@10 "
              f"{row.get('valid_ndcg@10', float('nan')):.4f}  {row['seqs_per_s']:.0f} seq/s"
              f"{'  *' if improved else ''}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, toy: bool) -> Dict[str, Any]:
    """The device's measured bf16 matmul rate: the ceiling throughput is stated against."""
    size, calls = (8192, 50) if device.type == "cuda" else ((512, 3) if toy else (2048, 3))
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        torch.matmul(a, b)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        torch.matmul(a, b)
    sync(device)
    seconds = time.perf_counter() - t0
    return {"tflops": 2 * size ** 3 * calls / seconds / 1e12, "size": size, "calls": calls, "seconds": seconds}


def options(args: argparse.Namespace, dataset: str, method: str) -> Dict[str, Any]:
    """The job options of ``method``: the dataset's recipe (none for --toy), then this run's flags."""
    dnsrec = method == "dnsrec"
    flags: Dict[str, Any] = {"device": args.device, "data_dir": args.data_dir, "precision": args.precision,
                             "compile": args.compile, "epochs": args.epochs, "max_minutes": args.max_minutes}
    if dnsrec:
        flags.update({"search_max_minutes": args.search_max_minutes, "search_batch_size": args.search_batch_size,
                      "batch_size": args.retrain_batch_size})
    else:
        flags.update({**DENSE, "batch_size": args.batch_size,
                      "attention": "linear" if method == "sasrec_linear" else "softmax"})
    if args.toy:
        flags.update({**TOY, **(TOY_SEARCH if dnsrec else {})})
        return resolve_options("search" if dnsrec else "train", None, flags)
    recipe = os.path.join(REPO, "recipes", RECIPES[dataset])
    return resolve_options("search" if dnsrec else "train", recipe, {**flags, "data": dataset})


def model_path(method: str, run_dir: str) -> str:
    return os.path.join(run_dir, RETRAINED) if method == "dnsrec" else run_dir


def finished(method: str, run_dir: str) -> bool:
    return os.path.exists(os.path.join(model_path(method, run_dir), CONFIG))


def interrupted(method: str, run_dir: str) -> bool:
    """Whether ``run_dir`` holds a run to continue: a checkpoint, or (DNS-Rec) a finished search."""
    if Checkpointer(partial_dir(run_dir)).exists():
        return True
    return method == "dnsrec" and os.path.exists(os.path.join(run_dir, SEARCH_CARD))


def stage_rate(rows: List[Dict[str, Any]], forward: int, n: int, head: int, peak: Optional[float]) -> Dict[str, Any]:
    """Throughput of one training stage from its per-epoch history, against the bf16 matmul rate."""
    per_seq = 3 * (forward - head + n * head)
    seqs = statistics.median(row["seqs_per_s"] for row in rows)
    achieved = seqs * per_seq / 1e12
    return {"seqs_per_s": seqs, "train_flops_per_seq": per_seq, "achieved_tflops": achieved,
            "fraction_of_bf16_matmul": achieved / peak if peak else None}


def throughput(method: str, run_dir: str, model: torch.nn.Module, peak: Optional[float]) -> Dict[str, Any]:
    """Each training stage's throughput: the dense training, or DNS-Rec's search and retraining."""
    head = 2 * model.arch.hidden * (model.n_items + 1)
    history = read_json(os.path.join(model_path(method, run_dir), METRICS))["history"]
    out = {("retrain" if method == "dnsrec" else "train"):
           stage_rate(history, model_flops(model)["total"], model.max_len, head, peak)}
    if method == "dnsrec":  # the supernet computes its widest, deepest candidate: the card's full FLOPs
        opts = read_json(os.path.join(run_dir, CONFIG))["options"]
        card = read_json(os.path.join(run_dir, SEARCH_CARD))
        out["search"] = stage_rate(card["history"], card["full_flops"], opts["seq_len"],
                                   2 * opts["hidden"] * (model.n_items + 1), peak)
    return out


def describe(method: str, run_dir: str, peak: Optional[float]) -> Dict[str, Any]:
    """What a finished method reached, read back from its RUN_DIR: the same whether it ran now or before."""
    path = model_path(method, run_dir)
    saved = read_json(os.path.join(path, METRICS))
    model = load(path)
    opts = read_json(os.path.join(path, CONFIG))["options"]
    shown = SHOWN + (SEARCH_SHOWN if method == "dnsrec" else ())
    out = {"run_dir": run_dir, "options": {k: opts[k] for k in shown if k in opts},
           "arch": model.arch.to_dict(), "best_epoch": saved["best_epoch"],
           "epochs": len(saved["history"]), "train_seconds": saved["seconds"],
           "metrics": {split: {m: saved["metrics"][split][m] for m in ("ndcg@10", "recall@10")}
                       for split in ("test/full", "test/pop100")},
           "flops": model_flops(model)["total"], "params": params_count(model),
           "throughput": throughput(method, run_dir, model, peak)}
    if method == "dnsrec":
        card = read_json(os.path.join(run_dir, SEARCH_CARD))
        out["search"] = {"decision": card["decision"]["arch"], "best_epoch": card["best_epoch"],
                         "epochs": len(card["history"]), "seconds": card["seconds"], "full_flops": card["full_flops"]}
    return out


def run_method(args: argparse.Namespace, dataset: str, method: str, peak: Optional[float]) -> Dict[str, Any]:
    """Run (or resume, or reuse) one method and describe it."""
    run_dir = os.path.join(args.runs, dataset, method)
    if finished(method, run_dir):
        return {"reused": True, **describe(method, run_dir, peak)}
    resume = interrupted(method, run_dir)
    opts = options(args, dataset, method)
    t0 = time.perf_counter()
    if method == "dnsrec":
        dnsrec_run(opts, run_dir, reporters=lambda stage: EpochLines(f"{dataset}/dnsrec {stage}"), resume=resume)
    else:
        train_run(opts, run_dir, reporter=EpochLines(f"{dataset}/{method}"), resume=resume)
    return {"reused": False, "resumed": resume, "seconds": time.perf_counter() - t0,
            **describe(method, run_dir, peak)}


def latency(args: argparse.Namespace, dataset: str, methods: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Latency of every finished model of ``dataset``, measured side by side in this process."""
    device = str(resolve_device(args.device))
    models = {m: load(model_path(m, r["run_dir"]), device) for m, r in methods.items() if r.get("ok")}
    if not models:
        raise RuntimeError("no finished model to measure")
    rows = profile(models, [1, 256], args.repeats)
    for name, row in rows.items():
        methods[name]["latency_ms"] = {k: v for k, v in row.items() if k.startswith("latency_ms")}
    return rows


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def attempt(fn: Callable[[], Any]) -> Dict[str, Any]:
    """``fn()``'s result as ``{"ok": true, ...}``, or its failure as one line; only an interruption passes."""
    t0 = time.perf_counter()
    try:
        result = fn()
        out = {"ok": True, "error": None, **(result if isinstance(result, dict) else {"result": result})}
    except Interrupted:
        raise  # SIGTERM or Ctrl-C: the job wrote its checkpoint; the whole run stops
    except Exception as exc:  # noqa: BLE001 - one method's failure must not stop the others
        out = {"ok": False, "error": one_line(exc)}
    out.setdefault("seconds", time.perf_counter() - t0)
    return out


class Report:
    """The results JSON, rewritten to every destination after each method."""

    def __init__(self, paths: List[str], data: Dict[str, Any]) -> None:
        self.paths, self.data = paths, data
        for path in paths:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self) -> None:
        parts = [self.data.get("matmul_bf16", {})]
        for entry in self.data["datasets"].values():
            parts += [*entry["methods"].values(), entry.get("latency", {})]
        self.data["all_ok"] = all(part.get("ok", True) for part in parts)
        for path in self.paths:
            write_json(path, self.data)


def run_dataset(args: argparse.Namespace, report: Report, dataset: str) -> None:
    """Every method of ``dataset`` in turn (each written as it finishes), then their latency side by side."""
    peak = report.data["matmul_bf16"].get("tflops")
    entry: Dict[str, Any] = {"methods": {}}
    report.data["datasets"][dataset] = entry
    for method in args.methods:
        report.data["running"] = f"{dataset}/{method}"  # what a killed run was doing
        report.write()
        result = attempt(lambda: run_method(args, dataset, method, peak))
        report.data["running"] = None
        entry["methods"][method] = result
        if result.get("reused"):
            report.data["skipped_finished"].append(f"{dataset}/{method}")
        print(f"{dataset}/{method:<14} {'ok' if result['ok'] else 'FAILED':<7} {result['seconds']:8.1f} s  "
              f"{summary(result)}", flush=True)
        report.write()
    entry["latency"] = attempt(lambda: latency(args, dataset, entry["methods"]))
    print(f"{dataset}/latency        {'ok' if entry['latency']['ok'] else 'FAILED'}  "
          f"{entry['latency'].get('error') or ''}", flush=True)
    report.write()


def summary(result: Dict[str, Any]) -> str:
    if not result["ok"]:
        return result["error"]
    full = result["metrics"]["test/full"]
    return (f"{'reused  ' if result['reused'] else ''}test NDCG@10 {full['ndcg@10']:.4f}  Recall@10 "
            f"{full['recall@10']:.4f}  FLOPs {result['flops']:.3g}  params {result['params']:,}")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, cpu or auto")
    ap.add_argument("--datasets", default="ml-1m", help=f"comma-separated, of {', '.join(RECIPES)}")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated subset, e.g. one per process to train them side by side")
    ap.add_argument("--data-dir", default=None, help="where named datasets live (else $COMPRESS_DATA_DIR)")
    ap.add_argument("--runs", default=os.path.join(RESULTS, "gpu_paper_runs"), help="where RUN_DIRs go")
    ap.add_argument("--results", default=os.path.join(RESULTS, "gpu_paper.json"), help="the results JSON")
    ap.add_argument("--out-dir", default=None, help="also write the results JSON into this folder")
    ap.add_argument("--batch-size", type=int, default=1024, help="training batch of the dense methods")
    ap.add_argument("--search-batch-size", type=int, default=None, help="DNS-Rec search batch (default: the recipe's)")
    ap.add_argument("--retrain-batch-size", type=int, default=None,
                    help="DNS-Rec retraining batch (default: the recipe's)")
    ap.add_argument("--epochs", type=int, default=200, help="most training epochs (early stopping, patience 10)")
    ap.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget of each training stage")
    ap.add_argument("--search-max-minutes", type=float, default=None, help="wall-clock budget of the search")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    ap.add_argument("--repeats", type=int, default=30, help="timed repeats of each latency")
    ap.add_argument("--toy", action="store_true", help="the embedded sample, tiny models, one epoch (a CPU test)")
    args = ap.parse_args(argv)
    args.datasets = ["default"] if args.toy else [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(args.datasets) - set(RECIPES) - ({"default"} if args.toy else set()))
    if unknown:
        ap.error(f"no recipe for dataset(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    asked = {m.strip() for m in args.methods.split(",") if m.strip()}
    if not asked or asked - set(METHODS):
        ap.error(f"--methods takes a comma-separated subset of {', '.join(METHODS)}, not {args.methods!r}")
    args.methods = [m for m in METHODS if m in asked]  # in the table's order, whatever the order given
    try:
        resolve_device(args.device)
    except CompressError as exc:
        ap.error(str(exc))
    if args.toy:
        args.repeats = min(args.repeats, 3)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    v = versions()
    paths = [args.results] + ([os.path.join(args.out_dir, "gpu_paper.json")] if args.out_dir else [])
    report = Report(paths, {
        "command": " ".join(["python", "benchmarks/gpu_paper.py", *sys.argv[1:]]), "commit": v.get("commit"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "cuda": torch.version.cuda, "versions": v, "toy": args.toy,
        "settings": {k: v for k, v in vars(args).items() if k not in ("results", "out_dir")},
        "throughput_formula": FORMULA, "finished": False, "running": None, "skipped_finished": [], "datasets": {}})
    report.data["matmul_bf16"] = attempt(lambda: matmul_rate(device, args.toy))
    print(f"bf16 matmul: {report.data['matmul_bf16'].get('tflops', float('nan')):.3g} TFLOP/s", flush=True)
    report.write()
    try:
        for dataset in args.datasets:
            run_dataset(args, report, dataset)
    except Interrupted as exc:
        report.data["interrupted"] = str(exc)
        report.write()
        print(f"{report.data['running']}: {exc}", flush=True)
        return 130
    report.data["finished"] = True
    report.write()
    return 0 if report.data["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
