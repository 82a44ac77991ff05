"""The whole command-line journey on one device, as a new user runs it, in one run: a proof that
the CUDA path is correct end to end, not a benchmark (small models on the embedded sample).

Stages, each isolated (a failure is recorded and the next stage still runs):

- ``parity``: forward/backward of the supernet and of every sliced candidate on the device against
  CPU float64 (max |diff| <= 1e-4; supernet vs slice on the device <= 1e-5), in this process;
- every other stage is a real ``python -m compress ... --device DEVICE`` subprocess: ``train``,
  ``search`` (search then retrain), ``kill_resume`` (a search SIGKILLed after its first
  checkpoint, then ``search --resume``), ``retrain --gate-layers 0``, ``export`` as safetensors,
  TorchScript and ONNX (skipped when ``onnx`` is not installed), ``evaluate`` (full, pop100),
  ``recommend``, ``bench`` against the dense run (graph-replayed latency on CUDA), ``flops``,
  ``inspect --plot``, ``train`` in bf16 and fp16 (fp16: CUDA only), a bf16 search, a search with
  and without ``--recompute`` (their controllers compared), ``train --compile`` and ``train`` under
  ``torchrun``.

    python benchmarks/gpu_check.py --out-dir "$OUT"                    # on the GPU (d=64 models)
    python benchmarks/gpu_check.py --device cpu --toy --skip compile   # CPU toy run

Time: the GPU run took 203 s on an H200, mostly the start of 19 processes and torch.compile's first
build (34 s); the CPU toy run costs about 2.5 minutes of CPU time, 2.5-6 minutes of wall time on two
cores shared with other jobs. The default
sizes on a CPU take far longer (a search passes the 300-second ``--timeout``); use ``--toy`` there.

Writes benchmarks/results/gpu_check_<device type>.json (``--results`` elsewhere) and, with
``--out-dir``, the same file there, after every stage, so a killed run leaves its partial results;
prints one line per stage. Each stage records ``ok`` (true, false, or null when skipped), ``error``
(the last non-empty stderr line of a failed command, or the exception, one line), ``seconds``,
``skipped`` (the reason) and its figures; ``all_ok`` is true when no stage failed. Exit code 0 when
all stages passed or were skipped, 1 otherwise. ``--toy`` shrinks every model to d=16 and every
stage to one epoch under a 3-second training budget; ``torch.compile`` alone then still takes about
two minutes on a cold CPU cache, hence ``--skip compile`` for a quick CPU run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import compress  # noqa: E402
from compress.engine.checkpoint import STATE, partial_dir  # noqa: E402
from compress.engine.losses import next_item_loss  # noqa: E402
from compress.errors import CompressError  # noqa: E402
from compress.files import read_json, write_json  # noqa: E402
from compress.layout import CHECKPOINT, ITEMS, METRICS  # noqa: E402
from compress.nas.controllers import one_hot  # noqa: E402
from compress.runtime.devices import resolve_device  # noqa: E402
from compress.store.provenance import versions  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results")
MAX_DIFF, MAX_GAP = 1e-4, 1e-5  # parity limits: float32 on the device vs float64 on the CPU; supernet vs slice
TAIL_LINES = 20  # stderr lines kept in the JSON for a failed command


def parity(device: torch.device) -> dict:
    """Max |device − CPU float64| of scores and weight gradients, per attention kind and candidate."""
    out = {}
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(1, 61, (8, 32), generator=gen)
    items[3, 20:] = 0
    targets = torch.roll(items, -1, 1)
    for attention in ("softmax", "linear"):
        torch.manual_seed(0)
        base = compress.get_backbone("sasrec")(compress.ArchSpec(64, 128, 4, 2), 60, 32, dropout=0.0)
        sn = compress.wrap(base, space=compress.SearchSpace((0.0, 0.5), (0.0, 0.5)), attention=attention,
                           gate_layers=2).eval()
        diffs = {}
        for k in range(len(sn.widths)):
            for depth in range(2):
                runs = {}  # CPU float64 reference first, then the device in float32
                for dev, dtype in ((torch.device("cpu"), torch.float64), (device, torch.float32)):
                    net = sn.slice(k, depth).to(dev, dtype).eval()
                    scores = net.predict(items.to(dev))
                    loss = next_item_loss(net(items.to(dev)), targets.to(dev), net.score)
                    loss.backward()
                    runs[dev.type + str(dtype)] = (scores.detach().double().cpu(),
                                                   [p.grad.double().cpu() for p in net.parameters()])
                (s64, g64), (s32, g32) = runs.values()
                finite = torch.isfinite(s64)  # column 0 (padding) is -inf in both
                diffs[f"width{k}_depth{depth + 1}"] = {
                    "scores_max_abs_diff": float((s64[finite] - s32[finite]).abs().max()),
                    "grad_max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(g64, g32))}
        with torch.no_grad():  # the supernet on the device computes the sliced model exactly
            sn = sn.to(device)
            gap = (sn.predict(items.to(device), one_hot(1, 2, device), one_hot(0, 2, device)) -
                   sn.slice(1, 0).eval().predict(items.to(device)))[:, 1:].abs().max()
        out[attention] = {"candidates": diffs, "supernet_vs_slice_on_device": float(gap)}
    return out


class StageError(Exception):
    """A stage that failed, said in one line; ``tail`` keeps the end of the command's stderr."""

    def __init__(self, message: str, tail: Optional[List[str]] = None) -> None:
        super().__init__(message)
        self.tail = tail or []


class Skip(Exception):
    """A stage that cannot run here; the message is the reason."""


class Journey:
    """Where and how big the stages run; the paths they hand on to each other live in ``work``, and
    ``finished`` keeps the figures of the stages that passed."""

    def __init__(self, device: str, toy: bool, timeout: float, work: str) -> None:
        self.device, self.toy, self.timeout, self.work = device, toy, timeout, work
        self.finished: Dict[str, Dict[str, Any]] = {}

    def path(self, name: str) -> str:
        return os.path.join(self.work, name)

    def model(self) -> List[str]:
        """Model flags of every training command (train and search alike)."""
        if self.toy:
            return ["--hidden", "16", "--inner", "32", "--heads", "2", "--layers", "2", "--seq-len", "20"]
        return ["--hidden", "64", "--inner", "128", "--heads", "4", "--layers", "2", "--seq-len", "50"]

    def epochs(self, n: int) -> str:
        return "1" if self.toy else str(n)

    def budget(self, search: bool = False) -> List[str]:
        """Toy runs: a 3-second training budget per stage, so a loaded CPU still finishes in minutes."""
        if not self.toy:
            return []
        return ["--max-minutes", "0.05"] + (["--search-max-minutes", "0.05"] if search else [])

    def search_args(self) -> List[str]:
        return [*self.model(), "--search-epochs", self.epochs(2), "--retrain-epochs", self.epochs(2),
                *self.budget(search=True)]


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def stderr_tail(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip()][-TAIL_LINES:]


def cli_env() -> Dict[str, str]:
    """The environment of every command: the checkout importable as ``compress`` from any directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a command and everything it started (torchrun's workers too); it runs in its own session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_command(cmd: List[str], timeout: float) -> Tuple[str, str]:
    """(stdout, stderr) of a command that must exit 0 within ``timeout`` seconds."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise StageError(f"timed out after {timeout:g} s", stderr_tail(err)) from None
    if proc.returncode != 0:
        tail = stderr_tail(err)
        raise StageError(tail[-1].strip() if tail else f"exit code {proc.returncode}", tail)
    return out, err


def last_json(stdout: str) -> Any:
    """The result a ``--json`` command printed: its last line that parses as JSON."""
    for line in reversed(stdout.splitlines()):
        if line.strip().startswith(("{", "[")):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise StageError("the command printed no JSON result")


def compress_cmd(args: List[str]) -> List[str]:
    return [sys.executable, "-m", "compress", *args]


def cli(j: Journey, args: List[str], device: bool = True) -> Any:
    """Run ``compress ARGS`` (with ``--device``: commands that take it) and return its JSON result."""
    stdout, _ = run_command(compress_cmd([*args, *(["--device", j.device] if device else [])]), j.timeout)
    return last_json(stdout) if "--json" in args else None


def needs(path: str, stage: str) -> str:
    """``path``, which an earlier stage should have written; its absence names that stage."""
    if not os.path.exists(path):
        raise StageError(f"{os.path.basename(path)} is missing: stage {stage} did not write it")
    return path


def ten(metrics: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """NDCG@10 and Recall@10 of each split/protocol, the figures worth reading at a glance."""
    return {split: {m: round(v[m], 5) for m in ("ndcg@10", "recall@10") if m in v} for split, v in metrics.items()}


def throughput(run_dir: str) -> List[float]:
    """Training sequences per second of each epoch, from the run's metrics.json."""
    return [round(row["seqs_per_s"], 1) for row in read_json(os.path.join(run_dir, METRICS))["history"]]


def stage_parity(j: Journey) -> Dict[str, Any]:
    result = parity(resolve_device(j.device))
    worst = max(v for kind in result.values() for c in kind["candidates"].values() for v in c.values())
    gap = max(kind["supernet_vs_slice_on_device"] for kind in result.values())
    ok = worst <= MAX_DIFF and gap <= MAX_GAP
    return {"ok": ok, "error": None if ok else f"max |diff| {worst:.2e} (limit {MAX_DIFF:g}), supernet vs slice "
            f"{gap:.2e} (limit {MAX_GAP:g})", "max_abs_diff": worst, "supernet_vs_slice": gap, "parity": result}


def train_stage(j: Journey, name: str, extra: List[str], epochs: int = 1) -> Dict[str, Any]:
    """A dense ``compress train`` into WORK/NAME; its metrics and throughput."""
    out = j.path(name)
    result = cli(j, ["train", *j.model(), "--epochs", j.epochs(epochs), *j.budget(), *extra, "--out", out,
                     "--overwrite", "--json"])
    return {"best_epoch": result["best_epoch"], "metrics": ten(result["metrics"]), "seqs_per_s": throughput(out)}


def searched(result: Dict[str, Any]) -> Dict[str, Any]:
    """The figures of a search result: decision, supernet-vs-slice gap and the retrained metrics."""
    out = {"decision": result["decision"]["arch"], "flops": result["decision"]["flops"],
           "slice_max_abs_diff": result["slice_max_abs_diff"]}
    if "retrain" in result:
        out["retrained_metrics"] = ten(result["retrain"]["metrics"])
    return out


def stage_search(j: Journey) -> Dict[str, Any]:
    return searched(cli(j, ["search", *j.search_args(), "--out", j.path("search"), "--overwrite", "--json"]))


def wait_for(path: str, proc: subprocess.Popen, log: str, timeout: float) -> float:
    """Seconds until ``path`` exists; an error (with the end of ``log``, the command's stderr) if the
    command exits first or the wait passes ``timeout``."""
    t0 = time.perf_counter()
    while not os.path.exists(path):
        if proc.poll() is not None:
            with open(log) as fh:
                tail = stderr_tail(fh.read())
            raise StageError(tail[-1].strip() if tail else f"the search exited with code {proc.returncode} "
                             "before its first checkpoint", tail)
        if time.perf_counter() - t0 > timeout:
            raise StageError(f"no checkpoint after {timeout:g} s")
        time.sleep(0.02)
    return time.perf_counter() - t0


def stage_kill_resume(j: Journey) -> Dict[str, Any]:
    """A search SIGKILLed once its first step checkpoint exists, then continued with ``--resume``."""
    out = j.path("resumed")
    cmd = compress_cmd(["search", *j.search_args(), "--checkpoint-every", "2", "--out", out, "--overwrite",
                        "--device", j.device])
    log = j.path("kill_resume.stderr")
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        try:
            waited = wait_for(os.path.join(partial_dir(out), CHECKPOINT, STATE), proc, log, j.timeout)
        finally:
            kill_group(proc)
    if os.path.exists(out):
        raise StageError("the search finished before it was killed; nothing was left to resume")
    result = searched(cli(j, ["search", "--resume", out, "--json"], device=False))
    first = j.finished.get("search", {}).get("decision")
    return {"killed_after_s": round(waited, 2), **result,
            "same_decision_as_search": None if first is None else first == result["decision"]}


def stage_retrain(j: Journey) -> Dict[str, Any]:
    run = needs(j.path("search"), "search")
    result = cli(j, ["retrain", run, "--gate-layers", "0", "--epochs", j.epochs(1), *j.budget(), "--overwrite",
                     "--json"])
    return {"arch": result["arch"], "metrics": ten(result["metrics"])}


def export_stage(fmt: str) -> Callable[[Journey], Dict[str, Any]]:
    """The stage exporting the search run as ``fmt`` into WORK/model_FMT."""
    def stage(j: Journey) -> Dict[str, Any]:
        if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
            raise Skip("the onnx package is not installed (pip install onnx)")
        run = needs(j.path("search"), "search")
        card = cli(j, ["export", run, "--out", j.path(f"model_{fmt}"), "--format", fmt, "--overwrite", "--json"],
                   device=False)["card"]
        return {"params": card["params"], "flops": card["flops"]["measured"],
                **{k: v for k, v in card.items() if k.endswith("max_abs_diff")}}
    return stage


def model_dir(j: Journey) -> str:
    return needs(j.path("model_safetensors"), "export_safetensors")


def evaluate_stage(protocol: str) -> Callable[[Journey], Dict[str, Any]]:
    def stage(j: Journey) -> Dict[str, Any]:
        result = cli(j, ["evaluate", model_dir(j), "--protocol", protocol, "--json"])
        return {"metrics": ten({f"{result['split']}/{protocol}": result["metrics"]})}
    return stage


def stage_recommend(j: Journey) -> Dict[str, Any]:
    history = read_json(os.path.join(model_dir(j), ITEMS))["item_ids"][:3]
    recs = cli(j, ["recommend", model_dir(j), "--history", ",".join(history), "--json"], device=False)
    if len(recs) != 10:
        raise StageError(f"recommend returned {len(recs)} items, not 10")
    return {"history": history, "top": recs[:3]}


def stage_bench(j: Journey) -> Dict[str, Any]:
    baseline = needs(j.path("train"), "train")
    result = cli(j, ["bench", model_dir(j), "--baseline", baseline, "--batch", "1,256",
                     "--repeats", "3" if j.toy else "30", "--json"])
    return {"bench": result, "graphs": any("graphs" in row for row in result["rows"])}


def stage_flops(j: Journey) -> Dict[str, Any]:
    result = cli(j, ["flops", model_dir(j), "--json"], device=False)
    return {"analytic": result["analytic"]["total"], "measured": result["measured"],
            "matmul_agreement": result["matmul_agreement"], "params": result["params"]}


def stage_inspect(j: Journey) -> Dict[str, Any]:
    run = needs(j.path("search"), "search")
    cli(j, ["inspect", run, "--plot"], device=False)
    return {"plots": sorted(f for f in os.listdir(run) if f.endswith(".png"))}


def stage_train_fp16(j: Journey) -> Dict[str, Any]:
    if not j.device.startswith("cuda"):
        raise Skip("fp16 autocast needs CUDA")
    return train_stage(j, "train_fp16", ["--precision", "fp16"])


def stage_search_bf16(j: Journey) -> Dict[str, Any]:
    return searched(cli(j, ["search", *j.model(), "--precision", "bf16", "--search-epochs", "1", "--stage", "search",
                            *j.budget(search=True), "--out", j.path("search_bf16"), "--overwrite", "--json"]))


def stage_search_recompute(j: Journey) -> Dict[str, Any]:
    """One search epoch twice, keeping and recomputing each width's activations (``--recompute``): the
    same search, up to the order of parallel reductions (CUDA's atomics, several CPU threads; bit for bit
    on one CPU thread). Toy runs stop on a wall-clock budget, so their two searches may take different
    steps and are not compared."""
    runs = {name: cli(j, ["search", *j.model(), "--search-epochs", "1", "--stage", "search", *extra,
                          *j.budget(search=True), "--out", j.path(name), "--overwrite", "--json"])
            for name, extra in (("search_kept", []), ("search_recompute", ["--recompute"]))}
    out = searched(runs["search_recompute"])
    if not j.toy:
        kept, recomputed = (read_json(os.path.join(j.path(name), "search_card.json"))["history"][-1]["alpha"]
                            for name in runs)
        out["alpha_max_abs_diff"] = max(abs(a - b) for a, b in zip(kept, recomputed))
        out["same_decision"] = runs["search_kept"]["decision"]["arch"] == runs["search_recompute"]["decision"]["arch"]
    return out


def stage_torchrun(j: Journey) -> Dict[str, Any]:
    """``compress train`` as one data-parallel process under PyTorch's launcher (NCCL on CUDA, gloo on CPU)."""
    out = j.path("torchrun")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "compress",
           "train", *j.model(), "--epochs", "1", *j.budget(), "--out", out, "--overwrite", "--json",
           "--device", j.device]
    result = last_json(run_command(cmd, j.timeout)[0])
    return {"metrics": ten(result["metrics"]), "seqs_per_s": throughput(out)}


STAGES: List[Tuple[str, Callable[[Journey], Dict[str, Any]]]] = [
    ("parity", stage_parity),
    ("train", lambda j: train_stage(j, "train", [], epochs=3)),
    ("search", stage_search),
    ("kill_resume", stage_kill_resume),
    ("retrain", stage_retrain),
    ("export_safetensors", export_stage("safetensors")),
    ("export_torchscript", export_stage("torchscript")),
    ("export_onnx", export_stage("onnx")),
    ("evaluate_full", evaluate_stage("full")),
    ("evaluate_pop100", evaluate_stage("pop100")),
    ("recommend", stage_recommend),
    ("bench", stage_bench),
    ("flops", stage_flops),
    ("inspect", stage_inspect),
    ("train_bf16", lambda j: train_stage(j, "train_bf16", ["--precision", "bf16"])),
    ("train_fp16", stage_train_fp16),
    ("search_bf16", stage_search_bf16),
    ("search_recompute", stage_search_recompute),
    ("compile", lambda j: train_stage(j, "compile", ["--compile"])),
    ("torchrun", stage_torchrun),
]


class Report:
    """The results JSON, rewritten to every destination after each stage."""

    def __init__(self, paths: List[str], header: Dict[str, Any]) -> None:
        self.paths, self.data = paths, {**header, "finished": False, "all_ok": True, "stages": {}}
        for path in paths:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def record(self, name: str, entry: Dict[str, Any]) -> None:
        self.data["stages"][name] = entry
        self.data["all_ok"] = all(e["ok"] is not False for e in self.data["stages"].values())
        self.write()
        status = {True: "ok", False: "FAILED", None: "skipped"}[entry["ok"]]
        note = entry.get("error") or entry.get("skipped") or ""
        print(f"{name:<20} {status:<8} {entry['seconds']:7.1f} s  {note}".rstrip(), flush=True)

    def write(self) -> None:
        for path in self.paths:
            write_json(path, self.data)


def run_stage(report: Report, j: Journey, name: str, fn: Callable[[Journey], Dict[str, Any]]) -> None:
    """Run one stage; whatever it raises is recorded as its outcome, never passed on."""
    t0 = time.perf_counter()
    try:
        entry = {"ok": True, "error": None, **fn(j)}
        j.finished[name] = entry
    except Skip as exc:
        entry = {"ok": None, "error": None, "skipped": str(exc)}
    except StageError as exc:
        entry = {"ok": False, "error": str(exc), **({"stderr_tail": exc.tail} if exc.tail else {})}
    except Exception as exc:  # noqa: BLE001 - one stage's bug must not stop the others
        entry = {"ok": False, "error": one_line(exc)}
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    report.record(name, entry)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, cpu or auto")
    ap.add_argument("--toy", action="store_true", help="tiny models, one epoch, 3-second budgets (a CPU test)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed to each command")
    ap.add_argument("--work-dir", default=None, help="where runs and models are written (default: a temporary "
                    "directory, removed at the end)")
    ap.add_argument("--out-dir", default=None, help="also write the results JSON into this folder")
    ap.add_argument("--results", default=None, help="the results JSON (default benchmarks/results/"
                    "gpu_check_<device type>.json)")
    ap.add_argument("--skip", default="", help="comma-separated stages not to run, e.g. compile")
    args = ap.parse_args(argv)
    unknown = sorted(set(filter(None, args.skip.split(","))) - {name for name, _ in STAGES})
    if unknown:
        ap.error(f"unknown stage(s) in --skip: {', '.join(unknown)}; stages: {', '.join(n for n, _ in STAGES)}")
    try:
        resolve_device(args.device)
    except CompressError as exc:
        ap.error(str(exc))
    return args


def header(device: torch.device, args: argparse.Namespace) -> Dict[str, Any]:
    v = versions()
    return {"command": " ".join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]), "commit": v.get("commit"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "toy": args.toy, "versions": v}


def run_all(args: argparse.Namespace, work: str) -> bool:
    """Every stage in order on ``work``; True when none failed."""
    device = resolve_device(args.device)
    name = f"gpu_check_{device.type}.json"
    paths = [args.results or os.path.join(RESULTS, name)] + ([os.path.join(args.out_dir, name)] if args.out_dir
                                                              else [])
    report = Report(paths, header(device, args))
    j = Journey(str(device), args.toy, args.timeout, work)
    skipped = set(args.skip.split(","))
    for stage, fn in STAGES:
        if stage in skipped:
            report.record(stage, {"ok": None, "error": None, "skipped": "--skip", "seconds": 0.0})
        else:
            run_stage(report, j, stage, fn)
    report.data["finished"] = True
    report.write()
    return report.data["all_ok"]


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
        return 0 if run_all(args, os.path.abspath(args.work_dir)) else 1
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        return 0 if run_all(args, work) else 1


if __name__ == "__main__":
    sys.exit(main())
