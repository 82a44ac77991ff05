"""Whole jobs behind the CLI commands: options in, a RUN_DIR (or metrics) out."""
from __future__ import annotations

import datetime
import os
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Dict, Iterator, Optional, Tuple

import torch

from compress.runtime import distributed
from compress.store.provenance import versions
from compress.arch import ArchSpec
from compress.files import atomic_dir, check_out_dir, read_json, write_json
from compress.runtime.devices import resolve_device
from compress.adapters import adapter_class
from compress.store.artifacts import CONFIG, RETRAINED, load, load_config, model_dir, save_model
from compress.store.export import save_model_dir
from compress.backbones import get_backbone
from compress.engine.checkpoint import Checkpointer, partial_dir
from compress.data.batching import pad_right
from compress.data import ReadOptions, SequenceDataset, load_dataset
from compress.data.registry import DATASETS, DEFAULT
from compress.errors import CheckpointError, ConfigError, SearchError
from compress.measure.evaluation import evaluate
from compress.measure.flops import measured_flops, params_count
from compress.nas.controllers import one_hot
from compress.nas.search import SearchConfig, search
from compress.nas.space import SearchSpace
from compress.nas.wrap import load_supernet, save_supernet, wrap
from compress.backbones.objectives import training_batch, training_data
from compress.engine.progress import Reporter
from compress.app.recipes import DEFAULTS
from compress.nas.reorder import CRITERIA
from compress.engine.loop import LoopResult
from compress.engine.train import TrainConfig, fit

DATA_KEYS = ("data", "data_dir", "format", "user_col", "item_col", "time_col", "sep", "kcore")


@contextmanager
def output_dir(out: str, overwrite: bool) -> Iterator[str]:
    """Where a job writes ``out``: atomically, on rank 0. The other ranks of a distributed run write
    into a scratch directory that is discarded (the same code path, nothing published), then every
    rank waits until ``out`` is complete, so a following stage can read it on any rank."""
    if distributed.is_main():
        with atomic_dir(out, overwrite) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield tmp
    distributed.barrier()


def default_out(kind: str, opts: Dict[str, Any]) -> str:
    data = os.path.basename(str(opts["data"] or "default")).split(".")[0]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{kind}-{opts['backbone']}-{data}-{stamp}")


def dataset_from_options(opts: Dict[str, Any]) -> SequenceDataset:
    read = ReadOptions(opts["format"], opts["user_col"], opts["item_col"], opts["time_col"], opts["sep"])
    return load_dataset(opts["data"], opts["data_dir"], read, kcore=opts["kcore"])


def recorded_data(opts: Dict[str, Any]) -> Dict[str, Any]:
    """The data options written into config.json, with file paths made absolute: ``evaluate`` reads
    them back when no ``--data`` is given, possibly from another working directory."""
    data = {k: opts[k] for k in DATA_KEYS}
    if data["data"] and data["data"] != DEFAULT and data["data"] not in DATASETS and os.path.exists(data["data"]):
        data["data"] = os.path.abspath(data["data"])
    if data["data_dir"]:
        data["data_dir"] = os.path.abspath(data["data_dir"])
    return data


def arch_from_options(opts: Dict[str, Any]) -> ArchSpec:
    return ArchSpec(opts["hidden"], opts["inner"], opts["heads"], opts["layers"], opts["attention"],
                    opts["gate_layers"], opts["gate_placement"])


def train_config(opts: Dict[str, Any]) -> TrainConfig:
    return TrainConfig(opts["epochs"], opts["batch_size"], opts["lr"], opts["weight_decay"], opts["patience"],
                       opts["seed"], opts["k"], max_minutes=opts["max_minutes"], loss=opts["loss"],
                       negatives=opts["negatives"], precision=opts["precision"])


def test_metrics(model: torch.nn.Module, ds: SequenceDataset, k: int, seed: int, device) -> Dict[str, Dict]:
    """Validation and test metrics under the full and pop100 protocols."""
    return {f"{split}/{proto}": evaluate(model, ds, split, proto, k, seed=seed, device=device)
            for split in ("valid", "test") for proto in ("full", "pop100")}


def open_checkpoint(kind: str, settings: Dict[str, Any], out: str, overwrite: bool,
                    resume: bool) -> Tuple[Dict[str, Any], Checkpointer]:
    """(the run's settings, its Checkpointer in ``out.partial/``). Resuming reads the saved settings;
    a fresh run refuses to silently discard an interrupted one."""
    ckpt = Checkpointer(partial_dir(out))
    if resume:
        if not ckpt.exists():
            raise CheckpointError(f"nothing to resume: {ckpt.directory} holds no checkpoint of an interrupted run")
        meta = ckpt.read_meta()
        if meta.get("kind") != kind:
            raise CheckpointError(f"{ckpt.directory} holds a {meta.get('kind')!r} run, not a {kind!r} run")
        settings = meta["settings"]
        if kind in ("train", "search"):  # options added since the checkpoint was written take their defaults
            settings = {**DEFAULTS, **settings}
        return settings, ckpt
    if ckpt.exists() and not overwrite:
        raise ConfigError(f"{ckpt.directory} holds an interrupted run; continue it with --resume or start "
                          "over with --overwrite")
    ckpt.remove()
    ckpt.meta = {"kind": kind, "settings": settings}
    return settings, ckpt


def prepare_run(kind: str, opts: Dict[str, Any], out: Optional[str], overwrite: bool):
    """(out dir, device, dataset, freshly initialised backbone), refusing an existing out dir up front."""
    out = out or default_out(kind, opts)
    check_out_dir(out, overwrite)
    device = resolve_device(opts["device"])
    ds = dataset_from_options(opts)
    torch.manual_seed(opts["seed"])
    model = get_backbone(opts["backbone"])(arch_from_options(opts), ds.n_items, opts["seq_len"], opts["dropout"])
    return out, device, ds, model


def train_run(opts: Dict[str, Any], out: Optional[str], overwrite: bool = False,
              reporter: Optional[Reporter] = None, resume: bool = False) -> Dict[str, Any]:
    """Train a dense backbone and write RUN_DIR: config.json, model.safetensors, metrics.json, train.log.
    Until it completes, RUN_DIR.partial/ holds a checkpoint that ``resume=True`` continues from."""
    out = out or default_out("train", opts)
    check_out_dir(out, overwrite)
    opts, ckpt = open_checkpoint("train", opts, out, overwrite, resume)
    ckpt.every = opts["checkpoint_every"]
    out, device, ds, model = prepare_run("train", opts, out, overwrite)
    cfg = train_config(opts)
    with ckpt:
        result = fit(model, ds, cfg, device, reporter, ckpt)
    metrics = test_metrics(model, ds, cfg.k, cfg.seed, device)
    with output_dir(out, overwrite) as tmp:
        write_trained(tmp, model, result, metrics, {"kind": "train", "data": recorded_data(opts),
                                                    "dataset": ds.stats(), "options": opts, "versions": versions()})
    ckpt.remove()
    return {"out": out, "best_epoch": result.best_epoch, "metrics": metrics, "seconds": result.seconds,
            "dataset": ds.stats()}


def write_trained(directory: str, model: torch.nn.Module, result: LoopResult, metrics: Dict,
                  meta: Dict[str, Any]) -> None:
    """config.json + model.safetensors, metrics.json (best epoch, metrics, history) and train.log."""
    save_model(model, directory, meta)
    write_json(os.path.join(directory, "metrics.json"), {"best_epoch": result.best_epoch, "metrics": metrics,
                                                          "seconds": result.seconds, "history": result.history})
    with open(os.path.join(directory, "train.log"), "w") as fh:
        for row in result.history:
            fh.write(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()) + "\n")


def evaluate_path(path: str, opts: Dict[str, Any], split: str, protocol: str, k: int) -> Dict[str, Any]:
    """Evaluate a RUN_DIR or MODEL_DIR; the dataset defaults to the one recorded at training time."""
    cfg = load_config(path)
    model = load(path, str(resolve_device(opts["device"])))
    data_opts = opts if opts.get("data") else {**opts, **cfg.get("data", {})}
    ds = dataset_from_options(data_opts)
    if ds.n_items != model.n_items:
        raise CheckpointError(f"{path}/{CONFIG} was trained on {model.n_items} items but the data has "
                              f"{ds.n_items}; pass the --data it was trained on")
    metrics = evaluate(model, ds, split, protocol, k, seed=opts["seed"])
    return {"metrics": metrics, "protocol": protocol, "split": split, "k": k, "path": path,
            "model": {"backbone": model.backbone_name, "arch": model.arch.to_dict(),
                      "params": sum(p.numel() for p in model.parameters())},
            "dataset": data_opts["data"] or "default"}


PENALTY_TEXT = {
    "dnsrec": "CE + λ·L_RC, L_RC = (L_t/L) * sum_l q_l sum_k p_k FLOPs(k, l) / FLOPs(full); "
              "FLOPs(k, l) = inference FLOPs of width k exiting after layer l",
    "proxyless": "CE * (log F / log F_ref)^0.6 (ProxylessNAS), F = sum_l q_l sum_k p_k FLOPs(k, l), "
                 "F_ref = the --max-flops budget, else FLOPs(full)"}


def search_config(opts: Dict[str, Any]) -> SearchConfig:
    return SearchConfig(opts["search_epochs"], opts["search_batch_size"], opts["lr"], opts["arch_lr"],
                        opts["arch_every"], opts["tradeoff"], opts["selection"], opts["arch_batches"],
                        opts["tau_start"], opts["tau_rate"], opts["tau_min"], opts["max_flops"], opts["patience"],
                        opts["seed"], opts["k"], opts["search_max_minutes"], opts["loss"], opts["negatives"],
                        opts["precision"], opts["penalty"])


def search_space(opts: Dict[str, Any]) -> SearchSpace:
    return SearchSpace(tuple(opts["hidden_ratios"]), tuple(opts["inner_ratios"]), opts["coupled"], opts["round_to"])


def hard_slice_gap(supernet, dense, k: int, l: int, ds: SequenceDataset, device) -> float:
    """Max |supernet(one-hot k, l) − sliced dense model| over the scores of up to 64 validation users."""
    histories, _ = ds.eval_pairs("valid")
    items = pad_right(histories[:64], supernet.max_len).to(device)
    supernet.eval(), dense.eval()
    with torch.no_grad():
        a = supernet.predict(items, one_hot(k, len(supernet.widths), device), one_hot(l, supernet.full.layers, device))
        b = dense.predict(items)
    return float((a[:, 1:] - b[:, 1:]).abs().max())


def load_trained(path: str, ds: SequenceDataset) -> torch.nn.Module:
    """A trained model (RUN_DIR or MODEL_DIR) to start the search from, checked against the data."""
    model = load(path).train()
    if model.n_items != ds.n_items:
        raise CheckpointError(f"--init {path} scores {model.n_items} items but the data has {ds.n_items}; "
                              "pass the --data it was trained on")
    return model


def importance_batch(model, ds: SequenceDataset, size: int, seed: int):
    """One training batch (items, targets) for the Taylor importance of ``--reorder taylor``."""
    inputs, targets = training_data(model, ds.train_sequences())
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(inputs), generator=gen)[:size]
    return training_batch(model, inputs[idx], targets[idx], torch.rand(len(idx), inputs.shape[1], generator=gen))


def search_run(opts: Dict[str, Any], out: Optional[str], overwrite: bool = False,
               reporter: Optional[Reporter] = None, resume: bool = False) -> Dict[str, Any]:
    """DNS-Rec search; RUN_DIR gets config.json, arch.json, search_card.json and supernet/. Until it
    completes, RUN_DIR.partial/ holds a checkpoint that ``resume=True`` continues from."""
    out = out or default_out("search", opts)
    check_out_dir(out, overwrite)
    opts, ckpt = open_checkpoint("search", opts, out, overwrite, resume)
    ckpt.every = opts["checkpoint_every"]
    if opts["reorder"] not in (None, *CRITERIA):
        raise ConfigError(f"unknown --reorder {opts['reorder']!r}; choose one of {', '.join(CRITERIA)}")
    out, device, ds, backbone = prepare_run("search", opts, out, overwrite)
    space, cfg = search_space(opts), search_config(opts)
    arch = backbone.arch
    if opts["init"]:  # warm start: the trained model's weights and shape, the searched design injected
        backbone = load_trained(opts["init"], ds)
        shape = backbone.arch
        opts = {**opts, "backbone": backbone.backbone_name, "hidden": shape.hidden, "inner": shape.inner,
                "heads": shape.heads, "layers": shape.layers, "seq_len": backbone.max_len}
    taylor = importance_batch(backbone, ds, opts["search_batch_size"], opts["seed"]) if opts["reorder"] == "taylor" \
        else None
    supernet = wrap(backbone, space=space, attention=arch.attention, gate_layers=arch.gate_layers,
                    gate_placement=arch.gate_placement, reorder=opts["reorder"], reorder_batch=taylor)
    run_config = {"kind": "search", "data": recorded_data(opts), "dataset": ds.stats(),
                  "options": opts, "versions": versions()}
    try:
        with ckpt:
            result = search(supernet, ds, cfg, device, reporter, ckpt)
    except SearchError as exc:
        supernet.load_state_dict(exc.last_good)
        with output_dir(out, overwrite) as tmp:
            write_json(os.path.join(tmp, CONFIG), {**run_config, "failed": str(exc)})
            write_json(os.path.join(tmp, "search_card.json"), {"failed": str(exc), "history": exc.history})
            save_supernet(supernet, os.path.join(tmp, "supernet"))
        raise
    dense = result.slice()
    card = result.card()
    card["slice_max_abs_diff"] = hard_slice_gap(supernet, dense, result.decision["width"],
                                                result.decision["depth"], ds, device)
    card["decision"]["flops_measured"] = measured_flops(dense, dense.max_len)
    card["decision"]["params"] = params_count(dense)
    card.update({"seed": opts["seed"], "versions": versions(), "dataset": ds.stats(),
                 "choices": {"selection": cfg.selection, "arch_batches": cfg.arch_batches, "tradeoff": cfg.tradeoff,
                             "tau": {"start": cfg.tau_start, "rate": cfg.tau_rate, "min": cfg.tau_min},
                             "penalty": PENALTY_TEXT[cfg.penalty]}})
    with output_dir(out, overwrite) as tmp:
        write_json(os.path.join(tmp, CONFIG), run_config)
        write_json(os.path.join(tmp, "arch.json"), result.arch.to_dict())
        write_json(os.path.join(tmp, "search_card.json"), card)
        save_supernet(supernet, os.path.join(tmp, "supernet"))
    ckpt.remove()
    best = card["history"][result.best_epoch - 1]
    return {"out": out, "decision": card["decision"], "best_epoch": result.best_epoch, "seconds": result.seconds,
            "slice_max_abs_diff": card["slice_max_abs_diff"],
            "valid": {m[len("valid_"):]: v for m, v in best.items() if m.startswith("valid_")}}



def retrain_run(run_dir: str, overrides: Dict[str, Any], from_scratch: bool = False, overwrite: bool = False,
                reporter: Optional[Reporter] = None, resume: bool = False) -> Dict[str, Any]:
    """Paper §2.7: slice the decision out of the search checkpoint, transfer its weights (or start from
    scratch, as the official code does), retrain with early stopping; writes RUN_DIR/retrained/.
    An override of ``gate_layers`` retrains with gates of that depth (0: none; Table 6, "retrain only")."""
    cfg = load_config(run_dir)
    if cfg.get("kind") != "search" or cfg.get("failed"):
        raise CheckpointError(f"{run_dir} holds no finished search; run `compress search` first")
    card = read_json(os.path.join(run_dir, "search_card.json"))
    out = os.path.join(run_dir, RETRAINED)
    if os.path.exists(out) and not overwrite:  # not check_out_dir: its advice names --out, which retrain lacks
        raise ConfigError(f"{out} already exists; pass --overwrite to retrain again")
    settings, ckpt = open_checkpoint("retrain", {"overrides": overrides, "from_scratch": from_scratch}, out,
                                     overwrite, resume)
    overrides, from_scratch = settings["overrides"], settings["from_scratch"]
    opts = {**cfg["options"], **{k: v for k, v in overrides.items() if v is not None}}
    ckpt.every = opts.get("checkpoint_every") or 0
    device = resolve_device(opts["device"])
    ds = dataset_from_options(opts)
    supernet = load_supernet(os.path.join(run_dir, "supernet"))
    decision = card["decision"]
    torch.manual_seed(opts["seed"])
    model = supernet.slice(decision["width"], decision["depth"])
    if model.arch.to_dict() != decision["arch"]:
        raise CheckpointError(f"{run_dir}: supernet/ and search_card.json disagree on the decided architecture")
    gates = overrides.get("gate_layers")
    if gates is None:
        gates = model.arch.gate_layers
    if from_scratch:
        model = supernet.backbone.rebuilt(replace(model.arch, gate_layers=gates))
    else:
        model = model.regated(gates)  # the paper's "retrain only" gate ablation when the depth changes
    with ckpt:
        result = fit(model, ds, train_config(opts), device, reporter, ckpt)
    metrics = test_metrics(model, ds, opts["k"], opts["seed"], device)
    with output_dir(out, overwrite) as tmp:
        write_trained(tmp, model, result, metrics, {"kind": "retrain", "data": cfg["data"], "dataset": ds.stats(),
                                                    "options": opts, "from_scratch": from_scratch,
                                                    "versions": versions()})
    ckpt.remove()
    return {"out": out, "best_epoch": result.best_epoch, "metrics": metrics, "seconds": result.seconds,
            "arch": model.arch.to_dict(), "from_scratch": from_scratch}


def export_run(run_dir: str, out: str, fmt: str = "safetensors", overwrite: bool = False) -> Dict[str, Any]:
    """Write MODEL_DIR ``out`` from a train RUN_DIR or a retrained search RUN_DIR."""
    src = model_dir(run_dir)
    model = load(src)
    cfg = load_config(src)
    ds = dataset_from_options({**cfg["options"], **cfg.get("data", {})})
    metrics_file = os.path.join(src, "metrics.json")
    card: Dict[str, Any] = {"source": os.path.abspath(run_dir), "kind": load_config(run_dir).get("kind"),
                            "metrics": read_json(metrics_file)["metrics"] if os.path.exists(metrics_file) else {}}
    search_card = os.path.join(run_dir, "search_card.json")
    if os.path.exists(search_card):
        s = read_json(search_card)
        card["search"] = {"decision": s["decision"], "best_epoch": s["best_epoch"], "full_flops": s["full_flops"],
                          "seconds": s["seconds"], "choices": s.get("choices")}
    adapter = None
    supernet_cfg = os.path.join(run_dir, "supernet", CONFIG)
    if os.path.exists(supernet_cfg):
        saved = read_json(supernet_cfg)["supernet"]
        adapter = adapter_class(saved["adapter"]).from_dict(saved.get("adapter_config", {}))
    return {"out": out, "card": save_model_dir(model, ds, out, fmt, overwrite, card, cfg.get("data"), adapter)}
