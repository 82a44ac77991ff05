"""The methods a suite cell can run, each through the library's own jobs (``compress.app.jobs``).

- ``dense``: train a backbone as configured (SASRec, SASRec + linear attention, BERT4Rec, ...).
- ``dnsrec``: DNS-Rec search, then retraining of the decision (weights transferred, or
  ``from_scratch``; a variant's ``retrain`` options, such as ``gate_layers: 0`` or ``from_init: true``,
  apply to this stage).
  A variant with a ``reference`` retrains a copy of that cell's search instead of searching again; one
  with a ``budget`` searches under ``max_flops`` = the analytic FLOPs of that cell's model, so that it
  stands where a baseline stands on every dataset and seed.
- ``uniform``: uniform shrinking, the dense design of the variant's options trained from scratch at
  the widths and depth the ``reference`` DNS-Rec cell decided.
- ``prune``: structured pruning of the trained ``base`` dense model with Torch-Pruning
  (``compress.suite.pruning``) to the analytic FLOPs of the ``reference`` cell's model, then fine-tuning
  (distilling from ``base`` where the options set ``distill``).

Each returns the trained model (for cost measurement) and its valid/test metrics. Interrupted
training resumes from its checkpoint in the cell's run directory, with the options (the device
included) it saved when it started; a stage killed before its first checkpoint starts over.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any, Callable, Dict

import torch

from compress.app.jobs import dnsrec_run, retrain_run, train_run
from compress.app.options import build
from compress.app.rundirs import dataset_from_options, recorded_data, write_trained
from compress.engine.checkpoint import Checkpointer, partial_dir
from compress.engine.config import TrainConfig
from compress.engine.train import fit
from compress.files import atomic_dir, read_json
from compress.layout import ARCH, CONFIG, RETRAINED, SEARCH_CARD, SUPERNET
from compress.measure.evaluation import split_metrics
from compress.measure.flops import model_flops
from compress.runtime.devices import resolve_device
from compress.store.artifacts import load
from compress.store.card import decision_epoch
from compress.store.provenance import versions
from compress.suite.pruning import prune_to_flops
from compress.suite.spec import Cell


@dataclass
class Outcome:
    model: torch.nn.Module
    metrics: Dict[str, Dict[str, float]]  # "valid/full", "valid/pop100", "test/full", "test/pop100"
    seconds: Dict[str, float]  # per stage: train, or search and retrain
    info: Dict[str, Any]


Deps = Dict[str, Dict[str, Any]]  # role -> the record of the cell built on, plus its "path"


def _interrupted(out: str) -> bool:
    """Whether a run in ``out`` left a checkpoint to resume from. A run killed before its first checkpoint
    leaves its partial directory (its lock) alone: nothing to resume, so the cell starts that stage over."""
    return Checkpointer(partial_dir(out)).exists()


def _train(opts: Dict[str, Any], out: str) -> Outcome:
    res = train_run(opts, out, overwrite=True, resume=_interrupted(out))
    return Outcome(load(res["out"], opts["device"]), res["metrics"], {"train": res["seconds"]},
                   {"best_epoch": res["best_epoch"]})


def dense(cell: Cell, opts: Dict[str, Any], out: str, deps: Deps) -> Outcome:
    return _train(opts, out)


def controller_trace(card: Dict[str, Any]) -> Dict[str, Any]:
    """The search card's controllers' story, small enough for a results record: the candidate widths,
    exit depths, attention kinds and gate depths, and p, q, r, s, τ and the expected FLOPs per search epoch (what
    the report's trajectory plots are drawn from)."""
    fields = ("epoch", "p", "q", "r", "s", "tau", "exp_flops", "decision_flops", "decision_label")
    return {"widths": [{"hidden": w["hidden"], "inner": w["inner"]} for w in card["widths"]],
            "depths": card.get("depths"), "attention": card.get("attention"), "gate_layers": card.get("gate_layers"),
            "history": [{k: row[k] for k in fields if k in row} for row in card["history"]]}


SEARCH_FILES = (CONFIG, ARCH, SEARCH_CARD, SUPERNET)


def _reuse_search(source: str, out: str) -> None:
    """Copy the finished search of the cell this one builds on (its retraining is not copied)."""
    with atomic_dir(out, overwrite=True) as tmp:
        for name in SEARCH_FILES:
            src = os.path.join(source, name)
            (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(tmp, name))


def dnsrec(cell: Cell, opts: Dict[str, Any], out: str, deps: Deps) -> Outcome:
    card_path, retrained = os.path.join(out, SEARCH_CARD), os.path.join(out, RETRAINED)
    shared = deps.get("reference")
    retrain = {"device": opts["device"], "from_scratch": cell.variant.from_scratch, **cell.variant.retrain}
    if "base" in deps:  # warm start from the trained dense model, the one the pruning baseline prunes
        opts = {**opts, "init": deps["base"]["path"]}
    if "budget" in deps:
        opts = {**opts, "max_flops": deps["budget"]["cost"]["flops_analytic"]}
    if shared is not None and not os.path.exists(card_path):
        _reuse_search(shared["path"], out)
    if _interrupted(out) or not os.path.exists(card_path) or "failed" in read_json(card_path):
        res = dnsrec_run(opts, out, overwrite=True, resume=_interrupted(out), retrain=retrain)["retrain"]
    elif _interrupted(retrained):  # continued with the options it saved: a resume refuses any given again
        res = retrain_run(out, overwrite=True, resume=True)
    else:
        res = retrain_run(out, retrain, overwrite=True)
    card = read_json(card_path)
    seconds = {"retrain": res["seconds"]} if shared else {"search": card["seconds"], "retrain": res["seconds"]}
    return Outcome(load(res["out"], opts["device"]), res["metrics"], seconds,
                   {"decision": card["decision"], "search_best_epoch": card["best_epoch"],
                    "search_decision_epoch": decision_epoch(card),
                    "slice_max_abs_diff": card["slice_max_abs_diff"], "best_epoch": res["best_epoch"],
                    "from_scratch": res["from_scratch"], "retrain_start": res["start"],
                    "retrain_options": cell.variant.retrain,
                    "search": controller_trace(card), "search_of": shared["key"] if shared else None,
                    "warm_from": deps["base"]["key"] if "base" in deps else None,
                    "budget_of": deps["budget"]["key"] if "budget" in deps else None,
                    "max_flops": opts.get("max_flops")})


def uniform(cell: Cell, opts: Dict[str, Any], out: str, deps: Deps) -> Outcome:
    arch = deps["reference"]["arch"]
    shape = {k: arch[k] for k in ("hidden", "inner", "heads", "layers")}
    outcome = _train({**opts, **shape}, out)
    outcome.info["shape_of"] = deps["reference"]["key"]
    return outcome


def prune(cell: Cell, opts: Dict[str, Any], out: str, deps: Deps) -> Outcome:
    device = resolve_device(opts["device"])
    base = load(deps["base"]["path"], str(device))
    target = deps["reference"]["cost"]["flops_analytic"]
    # a depth-keeping pruner may not reach a shallow decision
    model, ratio = prune_to_flops(base, target, floor=True, heads=cell.variant.heads)
    ds = dataset_from_options(opts)
    before = split_metrics(model, ds, opts["k"], opts["eval_seed"], device)
    cfg = build(TrainConfig, opts)
    result = fit(model, ds, cfg, device, teacher=base if cfg.distill > 0 else None)  # base: pruned copies only
    metrics = split_metrics(model, ds, opts["k"], opts["eval_seed"], device)
    info = {"ratio": ratio, "target_flops": target, "reached_target": model_flops(model)["total"] <= target,
            "pruned_from": deps["base"]["key"],
            "flops_of": deps["reference"]["key"], "before_finetune": before, "best_epoch": result.best_epoch,
            "criterion": "Torch-Pruning MetaPruner, GroupMagnitudeImportance(p=2), uniform ratio, depth kept"
                         + (", whole heads pruned" if cell.variant.heads == "prune" else ""),
            "distilled_from": deps["base"]["key"] if cfg.distill > 0 else None}
    with atomic_dir(out, overwrite=True) as tmp:
        write_trained(tmp, model, result, metrics, {"kind": "train", "data": recorded_data(opts),
                                                     "dataset": ds.stats(), "options": opts, "pruning": info,
                                                     "versions": versions()})
    return Outcome(model.eval(), metrics, {"train": result.seconds}, info)


METHOD_FUNCTIONS: Dict[str, Callable[[Cell, Dict[str, Any], str, Deps], Outcome]] = {
    "dense": dense, "dnsrec": dnsrec, "uniform": uniform, "prune": prune}
