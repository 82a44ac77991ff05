"""ML-1M SASRec baseline benchmark (LinRec's baseline settings), with a wall-clock budget.

Command used for benchmarks/results/sasrec_ml1m.json (CPU, torch default threads):

    COMPRESS_DATA_DIR=/work/shared/data nohup python benchmarks/sasrec_ml1m.py --max-minutes 70 \
        > benchmarks/results/sasrec_ml1m.log 2>&1 &

LinRec variant (linear attention; writes benchmarks/results/sasrec_ml1m_linear.json):

    COMPRESS_DATA_DIR=/work/shared/data python benchmarks/sasrec_ml1m.py --linear --max-minutes 70

Settings (LinRec, SIGIR 2023, SASRec baseline on ML-1M): N = 200 (seq_len), d = 128, D = 256,
2 layers, 8 heads, dropout 0.2, Adam lr 1e-3, early-stopping patience 10 on validation NDCG@10
(full ranking). LinRec trains with batch 2048; on CPU the default here is --batch-size 256 (2048 does not fit in
memory on a 23 GB machine; 256 was as fast per sequence as 512 at half the peak memory).

Training runs through ``compress.engine.train.fit``. The budget is a Reporter whose ``epoch_end``
raises once the elapsed time passes ``--max-minutes`` (the epoch that crosses the budget is
finished and validated first); the reporter keeps its own copy of the best-validation weights,
which the script restores, because ``fit`` never reaches its own restore when interrupted.

MovieLens is read at run time from $COMPRESS_DATA_DIR (never copied into the repository).
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root: run from anywhere
import compress  # noqa: E402
from compress.arch import ArchSpec  # noqa: E402
from compress.backbones import get_backbone  # noqa: E402
from compress.data import load_dataset  # noqa: E402
from compress.data.batching import training_windows  # noqa: E402
from compress.engine.config import TrainConfig  # noqa: E402
from compress.engine.progress import Reporter  # noqa: E402
from compress.engine.train import fit  # noqa: E402
from compress.files import write_json  # noqa: E402
from compress.measure.evaluation import split_metrics  # noqa: E402
from compress.runtime.allocator import tune_allocator  # noqa: E402
from compress.runtime.devices import resolve_device  # noqa: E402
from compress.store.artifacts import save_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


class BudgetExceeded(Exception):
    """Raised from the reporter to leave ``fit`` once the wall-clock budget is spent."""


class BudgetReporter(Reporter):
    """Logs one line per epoch, keeps the best-validation weights and enforces the time budget."""

    def __init__(self, model: torch.nn.Module, budget_s: Optional[float], n_targets: int, epochs: int) -> None:
        self.model, self.budget_s, self.n_targets, self.epochs = model, budget_s, n_targets, epochs
        self.start = time.perf_counter()
        self.history: List[Dict] = []
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.best_epoch = 0
        self.stopped_by_budget = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def epoch_end(self, row: Dict, improved: bool) -> None:
        row = {**row, "items_per_s": self.n_targets / row["train_seconds"], "elapsed_s": self.elapsed()}
        self.history.append(row)
        if improved:
            self.best_epoch = row["epoch"]
            self.best_state = copy.deepcopy(self.model.state_dict())
        print(f"epoch {row['epoch']:>3}  loss {row['loss']:.4f}  valid ndcg@10 {row['valid_ndcg@10']:.4f}"
              f"  recall@10 {row['valid_recall@10']:.4f}  train {row['train_seconds']:.1f}s"
              f"  eval {row['valid_eval_seconds']:.1f}s  {row['seqs_per_s']:.1f} seq/s"
              f"  {row['items_per_s']:.0f} items/s  elapsed {row['elapsed_s'] / 60:.1f} min"
              f"{'  *' if improved else ''}", flush=True)
        if self.budget_s is not None and self.elapsed() > self.budget_s and row["epoch"] < self.epochs:
            self.stopped_by_budget = True
            raise BudgetExceeded


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="ml-1m", help="dataset name or file (default ml-1m via $COMPRESS_DATA_DIR)")
    p.add_argument("--data-dir", default=None, help="where named datasets live (else $COMPRESS_DATA_DIR)")
    p.add_argument("--seq-len", type=int, default=200, help="N, the maximum history length (LinRec: 200)")
    p.add_argument("--hidden", type=int, default=128, help="d (LinRec: 128)")
    p.add_argument("--inner", type=int, default=256, help="D, the FFN inner size (LinRec: 256)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--linear", action="store_true", help="linear attention (the LinRec variant)")
    p.add_argument("--epochs", type=int, default=200, help="maximum epochs")
    p.add_argument("--batch-size", type=int, default=256,
                   help="LinRec uses 2048; 256 is the CPU default (as fast as 512 per sequence, half the memory)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-clock budget: stop after the epoch that exceeds it (default: none)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="keep glibc's default mmap/trim thresholds (about 2x slower per step on CPU)")
    p.add_argument("--out", default=None,
                   help="result JSON (default benchmarks/results/sasrec_ml1m[_linear].json)")
    p.add_argument("--save-model", default=None, metavar="DIR",
                   help="also write the best-validation model (config.json + model.safetensors) to DIR")
    return p.parse_args(argv)


def main(argv=None) -> Dict:
    args = parse_args(argv)
    malloc_tuned = False if args.no_malloc_tuning else tune_allocator()
    out = args.out or os.path.join(RESULTS, "sasrec_ml1m_linear.json" if args.linear else "sasrec_ml1m.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    device = resolve_device(args.device)
    wall0 = time.perf_counter()

    t0 = time.perf_counter()
    ds = load_dataset(args.data, args.data_dir)
    load_s = time.perf_counter() - t0
    print(f"data {ds.name}: {ds.n_users} users, {ds.n_items} items, {ds.n_interactions} interactions "
          f"({load_s:.1f}s)", flush=True)

    arch = ArchSpec(args.hidden, args.inner, args.heads, args.layers, "linear" if args.linear else "softmax")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                      seed=args.seed, k=10)
    torch.manual_seed(cfg.seed)
    model = get_backbone("sasrec")(arch, ds.n_items, args.seq_len, args.dropout)
    n_params = sum(p.numel() for p in model.parameters())

    # The same windows fit() builds: used only to count sequences and real target items per epoch.
    inputs, targets = training_windows(ds.train_sequences(), args.seq_len)
    n_seqs, n_targets = len(inputs), int((targets > 0).sum())
    del inputs, targets
    print(f"model sasrec {arch.to_dict()} N={args.seq_len} params={n_params}; {n_seqs} training sequences, "
          f"{n_targets} target items per epoch; batch {cfg.batch_size}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; malloc tuning {malloc_tuned}; budget {args.max_minutes} min", flush=True)

    reporter = BudgetReporter(model, None if args.max_minutes is None else args.max_minutes * 60,
                              n_targets, cfg.epochs)
    try:
        fit(model, ds, cfg, device, reporter)
        stop = "patience" if len(reporter.history) < cfg.epochs else "epochs"
    except BudgetExceeded:
        model.load_state_dict(reporter.best_state)  # fit() was left before its own restore
        stop = "budget"
    train_wall_s = reporter.elapsed()
    history = reporter.history
    best = history[reporter.best_epoch - 1]

    t0 = time.perf_counter()
    metrics = split_metrics(model, ds, cfg.k, device=device)
    final_eval_s = time.perf_counter() - t0

    train_s = sum(r["train_seconds"] for r in history)
    valid_eval_s = [r["valid_eval_seconds"] for r in history]
    ndcgs = [r["valid_ndcg@10"] for r in history]
    result = {
        "benchmark": "sasrec_ml1m",
        "command": "COMPRESS_DATA_DIR=/work/shared/data python benchmarks/sasrec_ml1m.py "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "dataset": ds.stats(),
        "model": {"backbone": "sasrec", "arch": arch.to_dict(), "seq_len": args.seq_len,
                  "dropout": args.dropout, "params": n_params},
        "train_config": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                         "patience": cfg.patience, "seed": cfg.seed, "max_minutes": args.max_minutes},
        "epochs_run": len(history),
        "best_epoch": reporter.best_epoch,
        "stopped_by": stop,
        "epochs_since_best": len(history) - reporter.best_epoch,
        "best_valid": {k[len("valid_"):]: v for k, v in best.items() if k.startswith("valid_")},
        "timing": {
            "wall_seconds": round(time.perf_counter() - wall0, 1),
            "train_wall_seconds": round(train_wall_s, 1),  # fit(): training + per-epoch validation
            "train_step_seconds": round(train_s, 1),  # optimisation steps only
            "seconds_per_epoch": round(train_wall_s / len(history), 1),
            "data_load_seconds": round(load_s, 1),
            "final_eval_seconds": round(final_eval_s, 1),
        },
        "throughput": {
            "sequences_per_epoch": n_seqs,
            "target_items_per_epoch": n_targets,
            "sequences_per_s": round(n_seqs * len(history) / train_s, 2),
            "target_items_per_s": round(n_targets * len(history) / train_s, 1),
            "sequences_per_s_by_epoch": [round(r["seqs_per_s"], 2) for r in history],
        },
        "eval_seconds": {
            "valid_full_per_epoch_mean": round(sum(valid_eval_s) / len(valid_eval_s), 3),
            **{split_proto: m["eval_seconds"] for split_proto, m in metrics.items()},
        },
        "test": {proto: {m: metrics[f"test/{proto}"][m] for m in ("ndcg@10", "recall@10", "mrr@10")}
                 for proto in ("full", "pop100")},
        "metrics": metrics,
        "valid_ndcg@10_by_epoch": [round(v, 5) for v in ndcgs],
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "interop_threads": torch.get_num_interop_threads(), "device": str(device),
                        "cpu_count": os.cpu_count(), "malloc_tuning": malloc_tuned, "python": platform.python_version(),
                        "compress": compress.__version__, "machine": platform.machine()},
        "history": history,
    }
    write_json(out, result)
    if args.save_model:
        os.makedirs(args.save_model, exist_ok=True)
        save_model(model, args.save_model, {"kind": "train", "dataset": ds.stats(), "benchmark": out})

    print(f"stopped by {stop} after {len(history)} epochs (best epoch {reporter.best_epoch}); "
          f"train wall {train_wall_s / 60:.1f} min; {result['throughput']['sequences_per_s']} seq/s, "
          f"{result['throughput']['target_items_per_s']} items/s")
    for proto in ("full", "pop100"):
        t = result["test"][proto]
        print(f"test {proto:>6}: NDCG@10 {t['ndcg@10']:.4f}  Recall@10 {t['recall@10']:.4f}  "
              f"MRR@10 {t['mrr@10']:.4f}  (eval {metrics[f'test/{proto}']['eval_seconds']:.1f}s)")
    print(f"wrote {out}", flush=True)
    return result


if __name__ == "__main__":
    main()
