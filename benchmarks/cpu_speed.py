"""CPU speed of two versions of compress, side by side: dense training and the search, timed in
alternating runs so that both see the same machine load.

    python benchmarks/cpu_speed.py --base 8ffb2ed --rounds 3    # the code before the device-resident loop

Each version is checked out once into a git worktree under --work (HEAD is the checkout itself);
each round runs one worker per version, in alternating order, in a fresh process with one thread
(OMP_NUM_THREADS=1). A worker trains a d=64, D=256, 2-layer, N=50 SASRec for `--epochs` epochs on
the embedded Gowalla sample and runs a search of `--epochs` epochs with the paper's fixed design
(linear attention, L_d = 2, which every version has), and on versions that search the attention
kind and the gates, the searched design as well. Prints and writes (--out) the median seconds and
the ratio new/base per task; ratios below 1 are faster.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
import json, time, torch
import compress
torch.manual_seed(0)
data = compress.load_dataset()
arch = compress.ArchSpec(hidden=64, inner=256, heads=4, layers=2)
space = compress.SearchSpace((0.0, 0.25, 0.5), (0.0, 0.25, 0.5))
out = {}
model = compress.get_backbone("sasrec")(arch, data.n_items, 50)
t = time.perf_counter()
compress.fit(model, data, compress.TrainConfig(epochs=EPOCHS, batch_size=256, patience=EPOCHS), "cpu")
out["train"] = time.perf_counter() - t
fixed = compress.wrap(compress.get_backbone("sasrec")(arch, data.n_items, 50), space=space, attention="linear",
                      gate_layers=2)
cfg = {"epochs": EPOCHS, "batch_size": 256, "patience": EPOCHS}
if "tau_schedule" in compress.SearchConfig.__dataclass_fields__:
    cfg["tau_schedule"] = "step"
t = time.perf_counter()
compress.search(fixed, data, compress.SearchConfig(**cfg), "cpu")
out["search_paper_design"] = time.perf_counter() - t
if "tau_schedule" in cfg:
    searched = compress.wrap(compress.get_backbone("sasrec")(arch, data.n_items, 50), space=space)
    t = time.perf_counter()
    compress.search(searched, data, compress.SearchConfig(epochs=EPOCHS, batch_size=256, patience=EPOCHS), "cpu")
    out["search_searched_design"] = time.perf_counter() - t
print("RESULT " + json.dumps(out))
"""


def checkout(rev: str, work: str) -> str:
    """The source tree of ``rev``: this checkout for HEAD, else a worktree under ``work``."""
    if rev == "HEAD":
        return REPO
    path = os.path.join(work, rev)
    if not os.path.isdir(path):
        subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", path, rev], check=True,
                       capture_output=True)
    return path


def run_worker(tree: str, epochs: int) -> Dict[str, float]:
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = WORKER.replace("EPOCHS", str(epochs))
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"worker in {tree} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the git revision to compare against")
    ap.add_argument("--new", default="HEAD")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--work", default="/tmp/compress_cpu_speed")
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "cpu_speed.json"))
    args = ap.parse_args(argv)
    trees = {"base": checkout(args.base, args.work), "new": checkout(args.new, args.work)}
    runs: Dict[str, List[Dict[str, float]]] = {"base": [], "new": []}
    for r in range(args.rounds):
        order = ("base", "new") if r % 2 == 0 else ("new", "base")
        for which in order:
            runs[which].append(run_worker(trees[which], args.epochs))
            print(f"round {r + 1} {which}: " + ", ".join(f"{k} {v:.1f} s" for k, v in runs[which][-1].items()),
                  flush=True)
    medians = {w: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for w, rs in runs.items()}
    ratios = {k: medians["new"][k] / medians["base"][k] for k in medians["base"] if k in medians["new"]}
    commits = {w: subprocess.run(["git", "-C", tree, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                 text=True).stdout.strip() for w, tree in trees.items()}
    report = {"base": args.base, "new": args.new, "commits": commits, "rounds": args.rounds, "epochs": args.epochs,
              "median_seconds": medians, "ratio_new_over_base": ratios, "runs": runs}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    for k, v in ratios.items():
        print(f"{k}: base {medians['base'][k]:.1f} s, new {medians['new'][k]:.1f} s, new/base {v:.2f}")
    if "search_searched_design" in medians["new"]:
        print(f"search_searched_design (new only): {medians['new']['search_searched_design']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
