"""Data-parallel throughput: training sequences per second of the same global batches with 1 process
and with K gloo processes (torch.distributed, as `torchrun` runs them), measured in one run.

    python benchmarks/ddp_scaling.py                          # embedded sample, 1 vs 2 processes
    COMPRESS_DATA_DIR=../shared/data python benchmarks/ddp_scaling.py --data ml-1m --seq-len 200 --hidden 128

Each process gets ``--threads`` intra-op threads (default 1), so K processes use K cores; the
single-process run is also timed with K threads, the fair comparison on the same cores. Every
configuration times the same ``--steps`` global batches after ``--warmup`` steps, with the step
code of ``compress.engine.train.fit`` (shard, weighted loss, gradient all-reduce, Adam). Writes
benchmarks/results/ddp_scaling.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import compress  # noqa: E402
from compress.engine.config import TrainConfig  # noqa: E402
from compress.engine.train import DenseTask  # noqa: E402
from compress.files import write_json  # noqa: E402
from compress.runtime.allocator import tune_allocator  # noqa: E402
from compress.runtime.launch import exit_without_teardown  # noqa: E402
from compress.store.provenance import versions  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def timed_steps(args) -> float:
    """Seconds for ``args.steps`` global training steps (after warm-up) on this rank."""
    ds = compress.load_dataset(args.data)
    torch.manual_seed(0)
    arch = compress.ArchSpec(args.hidden, 2 * args.hidden, 2, args.layers)
    model = compress.get_backbone("sasrec")(arch, ds.n_items, args.seq_len)
    task = DenseTask(model, ds, TrainConfig(batch_size=args.batch_size), torch.device("cpu"))
    steps = ((i, items, tgt) for epoch in (1, 2, 3, 4) for i, items, tgt in task.batches.epoch(epoch))
    for step, (i, items, tgt) in enumerate(steps):
        if step == args.warmup:
            t0 = time.perf_counter()
        if step == args.warmup + args.steps:
            return time.perf_counter() - t0
        task.step(step, i, items, tgt)
    raise SystemExit("the dataset has too few batches for --warmup + --steps; lower them")


def worker(rank: int, world: int, rendezvous: str, args, out: str) -> None:
    # a file store, not a TCP store on a port picked free and released before rank 0 binds it
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.set_num_threads(args.threads)
    tune_allocator()
    try:
        seconds = timed_steps(args)
        if rank == 0:
            write_json(out, {"seconds": seconds})
    finally:
        dist.destroy_process_group()
    exit_without_teardown(0)  # gloo's threads can abort the interpreter's teardown (compress.runtime.launch)


def run(world: int, args) -> float:
    """Global-batch sequences per second with ``world`` processes."""
    out = os.path.join(RESULTS, f".ddp_scaling_{world}.json")
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(world, os.path.join(tmp, "rendezvous"), args, out), nprocs=world, join=True)
    with open(out) as f:
        seconds = json.load(f)["seconds"]
    os.remove(out)
    return args.steps * args.batch_size / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset name or file (default: the embedded sample)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    k, t = args.processes, args.threads
    one = run(1, args)
    wide = run(1, argparse.Namespace(**{**vars(args), "threads": args.threads * k}))
    many = run(k, args)
    result = {"command": " ".join(["python", "benchmarks/ddp_scaling.py", *sys.argv[1:]]), "versions": versions(),
              "cpus": os.cpu_count(), "settings": vars(args),
              "seqs_per_s": {f"1 process x {t} threads": one, f"1 process x {k * t} threads": wide,
                             f"{k} processes x {t} threads": many},
              "speedup_vs_one_process": many / one, "speedup_vs_same_cores": many / wide}
    write_json(os.path.join(RESULTS, "ddp_scaling.json"), result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
