"""Where a search's memory goes: the activations that autograd keeps for one step of the supernet,
by search space, against the dense model's step, measured side by side in fresh processes.

    OMP_NUM_THREADS=1 python benchmarks/search_memory.py                      # embedded Gowalla sample
    OMP_NUM_THREADS=1 python benchmarks/search_memory.py --out benchmarks/results/search_memory.json

Until τ has frozen the controllers, a soft (Gumbel) step weighs every width, attention kind and gate
depth with a non-zero weight, and the supernet computes each weighted choice (Eq. 10): its saved
activations grow with the number of candidates, where a one-hot step keeps one model's. Each row runs
in its own process, so its peak resident memory (ru_maxrss, which includes the interpreter, torch and
the data) is its own. The loss is the cross-entropy of the last position (``predict``), the α/β
step's; the weight step's all-position loss adds the same scoring activations to every row. With
``--recompute`` each width's layer is recomputed in the backward pass; its saved tensors go through
hooks of the recomputation's own, so that row has its peak memory only. A soft step's seconds (after
one warm-up step) say what the recomputation costs; the rows run one after another, so read their
ratio on a machine with nothing else running.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from compress.files import write_json  # noqa: E402

UNCOUPLED = {"coupled": False, "inner_ratios": [0.0, 0.125, 0.25, 0.375, 0.5]}  # the pulled warm starts' space
# (name, how the supernet is built: wrap() keywords and SearchSpace fields); "dense" is the model alone
SPACES = {
    "dense": None,
    "paper design (linear, L_d = 2; 3 widths)": {"wrap": {"attention": "linear", "gate_layers": 2}, "space": {}},
    "default (3 widths x 2 kinds x 3 gate depths)": {"wrap": {}, "space": {}},
    "uncoupled, inner in eighths (15 widths x 2 x 3)": {"wrap": {}, "space": UNCOUPLED},
    "the same, widths recomputed (--recompute)": {"wrap": {}, "space": UNCOUPLED, "recompute": True},
}

WORKER = r"""
import json, resource, sys, time, torch, torch.nn.functional as F
import compress
spec, batch, seq_len = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
data = compress.load_dataset()
model = compress.get_backbone("sasrec")(compress.ArchSpec(hidden=64, inner=256, heads=4, layers=2), data.n_items,
                                        seq_len)
items = torch.randint(1, data.n_items + 1, (batch, seq_len))
targets = torch.randint(1, data.n_items + 1, (batch,))
saved = [0]

def pack(t):
    saved[0] += t.numel() * t.element_size()
    return t

def step(forward):
    saved[0] = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(forward(), targets)
    loss.backward()
    return saved[0]

out = {}
if spec is None:
    out["saved_soft"] = step(lambda: model.predict(items))
else:
    sn = compress.wrap(model, space=compress.SearchSpace(**spec["space"]), **spec["wrap"])
    sn.recompute = spec.get("recompute", False)
    soft = [torch.softmax(torch.randn(c.logits.numel()), 0) for c in sn.controllers]
    out["candidates"] = len(sn.widths) * len(sn.kinds) * len(sn.gate_depths)
    step(lambda: sn.predict(items, *soft))  # warm-up: the allocator's first pass
    start = time.perf_counter()
    out["saved_soft"] = step(lambda: sn.predict(items, *soft))
    out["soft_step_s"] = time.perf_counter() - start
    out["saved_one_hot"] = step(lambda: sn.predict(items, 0, sn.full.layers - 1, 0, 0))
    if sn.recompute:  # the recomputed layers save through hooks of their own, which these counts do not see
        out["saved_soft"] = out["saved_one_hot"] = None
out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


def measure(spec, batch: int, seq_len: int) -> Dict:
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec), str(batch), str(seq_len)],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "the worker failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: List[str] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256, help="search batch (the cpu preset's)")
    ap.add_argument("--seq-len", type=int, default=50, help="N (the cpu preset's)")
    ap.add_argument("--out", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.seq_len < 1:
        ap.error("--batch and --seq-len must be positive")
    rows = {name: measure(spec, args.batch, args.seq_len) for name, spec in SPACES.items()}
    mib, gib = 2 ** 20, 2 ** 30
    print(f"d=64, D=256, 2 layers, 4 heads, N={args.seq_len}, batch {args.batch}, embedded Gowalla sample")
    print(f"{'model':52s} {'candidates':>10s} {'saved, soft':>12s} {'saved, one-hot':>15s} {'peak RSS':>9s} "
          f"{'soft step':>10s}")
    for name, r in rows.items():
        soft, one_hot = (f"{r[key] / mib:.0f} MiB" if r.get(key) is not None else "-"
                         for key in ("saved_soft", "saved_one_hot"))
        seconds = f"{r['soft_step_s']:.2f} s" if "soft_step_s" in r else "-"
        print(f"{name:52s} {r.get('candidates', 1):>10d} {soft:>12s} {one_hot:>15s} {r['peak_rss'] / gib:>5.2f} GiB "
              f"{seconds:>10s}")
    if args.out:
        write_json(args.out, {"batch": args.batch, "seq_len": args.seq_len, "rows": rows})


if __name__ == "__main__":
    main()
