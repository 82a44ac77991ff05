"""Large catalogs: peak memory and speed of full vs sampled softmax training, and of full-ranking
evaluation chunked over the items vs through ``predict``'s (B, n_items + 1) scores.

    OMP_NUM_THREADS=1 python benchmarks/large_catalog.py                     # 1M items, 10M interactions
    OMP_NUM_THREADS=1 python benchmarks/large_catalog.py --items 100000 --interactions 1000000 \\
        --steps 10 --batch 32 --eval-users 2000                             # the small run (~2 min on CPU)

Synthetic data, seeded: users with about ``--avg-len`` interactions each, items drawn with Zipf-like
popularity (p_i ∝ i^-zipf over a random permutation of the ids), built straight into a
``SequenceDataset`` from numpy arrays (the only per-item Python objects are the 1M id strings the
dataset holds). The sequences carry no signal, so only time and memory mean anything here.

The model is a SASRec with d=64, D=128, 2 layers, 2 heads, N=50. Each measurement runs in a fresh
child process that builds the data and the model, resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``) and then measures, so each ``peak_rss_mb`` is that phase's own
(``resource.getrusage`` max RSS; ``setup_rss_mb`` is the resident size it started from); on CUDA
``torch.cuda.max_memory_allocated`` is reported as well. The full softmax and the ``predict`` path are
skipped, with the memory they would need, when their score matrices exceed ``--max-dense-gb``.
The data is also written as a gzipped TSV (user, item, timestamp; ``--load-only`` stops after this)
and read back with ``compress.load_dataset`` in a fresh process: the peak memory of reading a file,
against the file's own size. Results go to benchmarks/results/large_catalog.json (or ``--out``).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Dict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from compress.arch import ArchSpec  # noqa: E402
from compress.backbones.sasrec import SASRec  # noqa: E402
from compress.data import load_dataset  # noqa: E402
from compress.data.dataset import SequenceDataset  # noqa: E402
from compress.engine.batches import TrainingBatches  # noqa: E402
from compress.engine.config import LOSSES  # noqa: E402
from compress.engine.losses import item_log_frequency, training_loss  # noqa: E402
from compress.measure.evaluation import evaluate  # noqa: E402
from compress.store.provenance import versions  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MAX_LEN = 50


def synthetic(n_items: int, n_interactions: int, avg_len: int, zipf: float, seed: int) -> SequenceDataset:
    """Users of avg_len/2..3·avg_len/2 items (at least 3), items ∝ rank^-zipf, all from arrays."""
    rng = np.random.default_rng(seed)
    n_users = max(1, n_interactions // avg_len)
    lengths = rng.integers(max(3, avg_len // 2), max(4, 3 * avg_len // 2 + 1), n_users)  # (U,)
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    p = np.arange(1, n_items + 1, dtype=np.float64) ** -zipf
    by_rank = rng.permutation(n_items) + 1  # the id of the r-th most popular item
    items = by_rank[rng.choice(n_items, size=int(offsets[-1]), p=p / p.sum())].astype(np.int64)  # (R,)
    return SequenceDataset(items, offsets, [str(i) for i in range(1, n_items + 1)],
                           [str(u) for u in range(n_users)], "synthetic-zipf")


def model_for(data: SequenceDataset, device: str) -> SASRec:
    torch.manual_seed(0)
    return SASRec(ArchSpec(hidden=64, inner=128, heads=2, layers=2), data.n_items, MAX_LEN).to(device)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def start_measuring(device: str) -> Dict[str, Any]:
    """Resets the peak marks (kernel RSS, CUDA allocator) so that the peaks read later are this phase's."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = True
    except OSError:
        reset = False
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    return {"setup_rss_mb": round(rss_mb(), 1), "peak_reset": reset}


def peaks(device: str) -> Dict[str, Any]:
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.startswith("cuda"):
        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


def train_phase(args: argparse.Namespace, kind: str) -> Dict[str, Any]:
    """Throughput of ``--steps`` Adam steps (after one warm-up step) with the ``kind`` loss."""
    data = synthetic(args.items, args.interactions, args.avg_len, args.zipf, args.seed)
    model = model_for(data, args.device)
    log_q = item_log_frequency(data).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    stream = (batch[1:] for epoch in range(1, 1000) for batch in
              TrainingBatches(model, data, args.batch, args.seed, torch.device(args.device)).epoch(epoch))
    out = start_measuring(args.device)
    model.train()
    seen, losses = 0, []
    for step in range(args.steps + 1):
        if step == 1:
            sync(args.device)
            start = time.perf_counter()
        items, tgt = (t.to(args.device) for t in next(stream))
        loss = training_loss(model, model(items), tgt, kind, args.negatives, gen, log_q)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(round(loss.item(), 4))
        seen += len(items) if step else 0
    sync(args.device)
    seconds = time.perf_counter() - start
    return {**out, **peaks(args.device), "seqs_per_s": round(seen / seconds, 2),
            "step_seconds": round(seconds / args.steps, 3), "losses": losses}


class PredictOnly(torch.nn.Module):
    """The model seen through ``predict`` alone: ``evaluate`` then builds (B, n_items + 1) scores."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.max_len = model, model.max_len

    def predict(self, items: torch.Tensor) -> torch.Tensor:
        return self.model.predict(items)


def eval_phase(args: argparse.Namespace, path: str) -> Dict[str, Any]:
    """Full-ranking validation of the first ``--eval-users`` users, chunked or through ``predict``."""
    data = synthetic(args.items, args.interactions, args.avg_len, args.zipf, args.seed)
    users = min(args.eval_users, data.n_users)
    data = SequenceDataset(data.items[:data.offsets[users]], data.offsets[:users + 1], data.item_tokens,
                           data.user_tokens[:users], data.name)
    model = model_for(data, args.device)
    out = start_measuring(args.device)
    start = time.perf_counter()
    metrics = evaluate(model if path == "chunked" else PredictOnly(model), data, "valid", "full",
                       batch_size=args.eval_batch, item_chunk=args.item_chunk, device=args.device)
    sync(args.device)
    seconds = time.perf_counter() - start
    return {**out, **peaks(args.device), "users": users, "seconds": round(seconds, 2),
            "users_per_s": round(users / seconds, 1), "ndcg@10": metrics["ndcg@10"]}


def write_interactions(args: argparse.Namespace, path: str) -> int:
    """The synthetic interactions as a gzipped TSV (user, item, timestamp), as a user's export would
    arrive; returns its uncompressed size in bytes."""
    data = synthetic(args.items, args.interactions, args.avg_len, args.zipf, args.seed)
    size = 0
    with gzip.open(path, "wt", compresslevel=1) as fh:
        fh.write("user_id\titem_id\ttimestamp\n")
        for u in range(data.n_users):
            seq = data.sequence(u)
            block = "".join(f"u{u}\ti{item}\t{1_600_000_000 + t}\n" for t, item in enumerate(seq.tolist()))
            size += len(block)
            fh.write(block)
    return size


def load_phase(args: argparse.Namespace, path: str) -> Dict[str, Any]:
    """Peak memory and speed of reading the file into a SequenceDataset (no cache)."""
    out = start_measuring("cpu")
    t0 = time.perf_counter()
    data = load_dataset(path, use_cache=False)
    seconds = time.perf_counter() - t0
    return {**out, **peaks("cpu"), "seconds": round(seconds, 1), "rows_per_s": round(data.n_interactions / seconds),
            "dataset": data.stats()}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_phase(args: argparse.Namespace, phase: str, arg: str) -> Dict[str, Any]:
    """One phase in a fresh process, so that its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        try:
            return pool.submit(PHASES[phase], args, arg).result()
        except BrokenProcessPool:
            return {"skipped": "the child process died (out of memory?)"}


PHASES = {"train": train_phase, "eval": eval_phase, "load": load_phase}


def dense_gb(rows: int, n_items: int, copies: int) -> float:
    """float32 memory of ``copies`` (rows, n_items + 1) score matrices."""
    return round(copies * rows * (n_items + 1) * 4 / 2 ** 30, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--interactions", type=int, default=10_000_000)
    ap.add_argument("--avg-len", type=int, default=100)
    ap.add_argument("--zipf", type=float, default=0.8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--negatives", type=int, default=100)
    ap.add_argument("--eval-users", type=int, default=5000)
    ap.add_argument("--eval-batch", type=int, default=512)
    ap.add_argument("--item-chunk", type=int, default=65536)
    ap.add_argument("--max-dense-gb", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=os.path.join(RESULTS, "large_catalog.json"))
    ap.add_argument("--load-only", action="store_true", help="only the file-reading phase")
    args = ap.parse_args()
    data = synthetic(args.items, args.interactions, args.avg_len, args.zipf, args.seed)
    result = {"config": vars(args), "data": data.stats(), "versions": versions(), "threads": torch.get_num_threads(),
              "train": {}, "eval": {}}
    del data
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "interactions.tsv.gz")
        size = write_interactions(args, path)
        result["load"] = {"file_mb": round(size / 2 ** 20, 1), "gzip_mb": round(os.path.getsize(path) / 2 ** 20, 1),
                          **run_phase(args, "load", path)}
    print("load", result["load"], flush=True)
    kinds, paths = ((), ()) if args.load_only else (LOSSES, ("chunked", "predict"))
    # full softmax: logits, their softmax and its gradient, one (B·N, n_items + 1) float32 matrix each
    need = {"train": dense_gb(args.batch * MAX_LEN, args.items, 3), "eval": dense_gb(args.eval_batch, args.items, 2)}
    for kind in kinds:
        if kind == "full" and need["train"] > args.max_dense_gb:
            result["train"][kind] = {"skipped": f"needs about {need['train']} GB of logits > --max-dense-gb"}
        else:
            result["train"][kind] = run_phase(args, "train", kind)
        print(kind, result["train"][kind], flush=True)
    for path in paths:
        if path == "predict" and need["eval"] > args.max_dense_gb:
            result["eval"][path] = {"skipped": f"needs about {need['eval']} GB of scores > --max-dense-gb"}
        else:
            result["eval"][path] = run_phase(args, "eval", path)
        print("eval", path, result["eval"][path], flush=True)
    print(table(result))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print("wrote", args.out)


def table(result: Dict[str, Any]) -> str:
    rows = ["| phase | seqs or users /s | peak RSS MB (setup MB) |", "|---|---:|---:|"]
    for name, r in [*(("train " + k, v) for k, v in result["train"].items()),
                    *(("eval " + k, v) for k, v in result["eval"].items())]:
        if "skipped" in r:
            rows.append(f"| {name} | skipped: {r['skipped']} | |")
        else:
            speed = r.get("seqs_per_s", r.get("users_per_s"))
            rows.append(f"| {name} | {speed} | {r['peak_rss_mb']} ({r['setup_rss_mb']}) |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
