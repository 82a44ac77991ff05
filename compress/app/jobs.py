"""One job per pipeline, called alike by the command line, the suite, the benchmarks and the examples:
options (``compress.app.options``) in, a RUN_DIR or MODEL_DIR (or metrics) out.

- ``train_run``: a dense backbone.            - ``search_run``: the DNS-Rec search.
- ``retrain_run``: the decision of a search.  - ``dnsrec_run``: search, then retrain (resumable either way).
- ``export_run``: a MODEL_DIR from a run.     - ``evaluate_run``: metrics of a run or model on data.

Options are checked, and configurations built, before any data is read.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any, Callable, Dict, Optional

import torch

from compress.adapters import adapter_class, get_adapter
from compress.app.options import BY_KEY, build, defaults
from compress.app.orientation import retrain_title, search_header, train_header
from compress.app.recipes import resolve_options, taken_by
from compress.app.rundirs import (
    DATA_KEYS,
    check_run_out,
    dataset_from_options,
    default_out,
    drop_finished_checkpoint,
    metrics_sink,
    output_dir,
    read_search_card,
    recorded_data,
    recorded_eval_seed,
    run_data,
    run_inputs,
    run_state,
    saved_options,
    write_trained,
)
from compress.app.warm import Init, load_init, prepare_init, weights_digest
from compress.arch import ArchSpec
from compress.backbones import get_backbone
from compress.backbones.objectives import training_batch, training_data
from compress.data.batching import pad_right
from compress.data.dataset import SequenceDataset
from compress.data.vocabulary import ItemVocabulary
from compress.engine.checkpoint import Checkpointer, partial_dir
from compress.engine.config import TrainConfig
from compress.engine.progress import LogReporter, Reporter, Reporters
from compress.engine.sinks import csv_text
from compress.engine.train import fit
from compress.errors import CheckpointError, ConfigError, DataError, Interrupted, SearchError
from compress.files import read_json, write_json, write_text
from compress.layout import ARCH, CARD, CONFIG, METRICS, METRICS_CSV, RETRAINED, SEARCH_CARD, SUPERNET
from compress.measure.cost import profile
from compress.measure.evaluation import evaluate, split_metrics
from compress.measure.flops import measured_flops, model_flops, params_count
from compress.nas.config import SearchConfig
from compress.nas.search import SearchResult, decision_index, search
from compress.nas.space import SearchSpace
from compress.nas.wrap import load_supernet, save_supernet, wrap
from compress.runtime import distributed
from compress.runtime.devices import resolve_device
from compress.store.artifacts import load, load_config, model_dir
from compress.store.card import decision_epoch
from compress.store.export import reference_cost, save_model_dir
from compress.store.provenance import versions

log = logging.getLogger(__name__)

EXPECTED = "Σ p_k q_l r_a s_g FLOPs(k, l, a, g)"  # over width, exit depth, attention kind and gate depth
REFERENCE_TEXT = {"input": ("FLOPs(input)", "the dense input model's FLOPs"),  # the normaliser, by flops_reference
                  "supernet": ("FLOPs(full)", "the full supernet's FLOPs")}


def penalty_text(cfg: SearchConfig) -> str:
    """The objective the search card records, with the normaliser this search divided by."""
    ref, meaning = REFERENCE_TEXT[cfg.flops_reference]
    return {"dnsrec": f"CE + λ·L_RC, L_RC = (L_t/L) · {EXPECTED} / {ref}; FLOPs(k, l, a, g) = inference FLOPs of "
                      f"width k exiting after layer l with attention kind a and gates of depth g; {ref} = {meaning}",
            "budget": f"CE + λ·|F / B − 1|, F = {EXPECTED} under softmax(logits/τ), B = the max_flops budget",
            "proxyless": f"CE · (log F / log F_ref)^0.6 (ProxylessNAS), F = {EXPECTED}, F_ref = the max_flops budget, "
                         f"else {meaning}"}[cfg.penalty]


DECIDE_TEXT = {"best": "the argmax of the controllers at the best validation epoch, whose supernet is kept",
               "last": "the argmax of the controllers at the last epoch, whose supernet is kept"}


def new_backbone(opts: Dict[str, Any], arch: ArchSpec, n_items: int) -> torch.nn.Module:
    torch.manual_seed(opts["seed"])
    return get_backbone(opts["backbone"])(arch, n_items, opts["seq_len"], opts["dropout"])


def train_run(opts: Dict[str, Any], out: Optional[str] = None, overwrite: bool = False,
              reporter: Optional[Reporter] = None, resume: bool = False) -> Dict[str, Any]:
    """Train a dense backbone and write RUN_DIR: config.json, model.safetensors, metrics.json, train.log.
    Until it completes, RUN_DIR.partial/ holds a checkpoint that ``resume=True`` continues from."""
    out = out or default_out("train", opts)
    check_run_out(out, overwrite, opts, resume)
    with run_state("train", opts, out, overwrite, resume) as (opts, ckpt), ckpt:
        ckpt.every = opts["checkpoint_every"]
        arch, cfg = build(ArchSpec, opts), build(TrainConfig, opts)
        get_backbone(opts["backbone"])
        device = resolve_device(opts["device"])
        sink = metrics_sink(opts, ckpt.directory, out, os.path.basename(os.path.abspath(out)), "train")
        ds = run_data(opts, ckpt)
        model = new_backbone(opts, arch, ds.n_items)
        reporter = Reporters(reporter or LogReporter(), sink)
        reporter.header(train_header(f"training {opts['backbone']} {arch.label()}", ds, model, device, cfg))
        with sink:
            result = fit(model, ds, cfg, device, reporter, ckpt)
        metrics = split_metrics(model, ds, cfg.k, opts["eval_seed"], device, cfg.eval_batch_size)
        with ckpt.publishing(), output_dir(out, overwrite, run_inputs(opts)) as tmp:
            write_trained(tmp, model, result, metrics, {"kind": "train", "data": recorded_data(opts),
                                                        "dataset": ds.stats(), "options": taken_by("train", opts),
                                                        "versions": versions()})
    return {"out": out, "best_epoch": result.best_epoch, "metrics": metrics, "seconds": result.seconds,
            "dataset": ds.stats()}


def evaluate_run(path: str, given: Dict[str, Any]) -> Dict[str, Any]:
    """Metrics of a RUN_DIR or MODEL_DIR under the ``given`` options (those not given take their
    defaults). What the run recorded fills what was not given, so that the same command reproduces its
    metrics: the dataset and how it was read (a ``data`` given is read with the recorded columns,
    separator, k-core and numbering unless those are given too) and the seed of the sampled protocols'
    negatives. The data is read onto the model's item vocabulary."""
    given = {k: v for k, v in given.items() if v is not None}
    opts = resolve_options("evaluate", None, given)
    model = load(path, str(resolve_device(opts["device"])))
    src = model_dir(path)
    cfg = load_config(src)
    seed = recorded_eval_seed(src, cfg)
    if "eval_seed" not in given and seed is not None:
        opts["eval_seed"] = seed
    if opts.get("data"):
        recorded = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
        ds = dataset_from_options({**opts, **{k: v for k, v in recorded.items() if k in DATA_KEYS and k != "data"
                                              and k not in given}})
        if model.vocabulary is not None:  # the model's numbering, whatever order the file brings its items in
            ds = aligned_for(ds, model.vocabulary, path)
        elif ds.n_items != model.n_items:
            raise CheckpointError(f"{path} was trained on {model.n_items} items but the data has {ds.n_items}; "
                                  "pass the `data` it was trained on")
    else:
        ds = recorded_dataset(src, cfg, opts)
    metrics = evaluate(model, ds, opts["split"], opts["protocol"], opts["k"], opts["eval_batch_size"],
                       opts["eval_seed"])
    return {"metrics": metrics, "protocol": opts["protocol"], "split": opts["split"], "k": opts["k"], "path": path,
            "model": {"backbone": model.backbone_name, "arch": model.arch.to_dict(), "params": params_count(model)},
            "dataset": opts.get("data") or (cfg.get("data") or {}).get("data") or "default"}


def aligned_for(ds: SequenceDataset, vocabulary: ItemVocabulary, path: str) -> SequenceDataset:
    """``ds`` numbered as the model at ``path`` numbers its items (its ``vocabulary``), whatever order the
    file brings them in, interactions with items it does not know dropped (and said: the metrics then
    cover the rest)."""
    try:
        aligned = ds.aligned(vocabulary.ids)
    except DataError:
        known = set(vocabulary.ids)
        matched = sum(token in known for token in ds.item_tokens)
        raise DataError(f"the data's items are not those {path} scores: {matched} of its {ds.n_items} items are "
                        "among the model's, which leaves no user with enough interactions; pass data of the items "
                        "it was trained on") from None
    if aligned.info["dropped_interactions"]:
        log.warning("dropped %d interactions with items %s does not know (and %d users left with too few): the "
                    "metrics cover the rest", aligned.info["dropped_interactions"], path,
                    aligned.info["dropped_users_after_alignment"])
    return aligned


def recorded_dataset(src: str, cfg: Dict[str, Any], opts: Dict[str, Any]) -> SequenceDataset:
    """The dataset a run recorded in its config.json. The path comes from a file, not from the user: a
    failure names it without quoting its content."""
    if not isinstance(cfg.get("data"), dict):
        raise ConfigError(f"{src}/{CONFIG} records no dataset (a model saved from Python); pass the `data` to use")
    try:
        return dataset_from_options({**opts, **cfg["data"]})
    except DataError:
        raise DataError(f"the dataset recorded in {src}/{CONFIG} ({cfg['data'].get('data') or 'default'}) cannot be "
                        "read as interactions; pass the `data` to use") from None


def hard_slice_gap(supernet, dense, choice: tuple, ds: SequenceDataset, device) -> float:
    """Max |supernet(one-hot choice) − sliced dense model| over the scores of up to 64 validation users."""
    histories, _ = ds.eval_pairs("valid")
    items = pad_right(histories[:64], supernet.max_len).to(device)
    supernet.eval(), dense.eval()
    with torch.no_grad():
        a, b = supernet.predict(items, *choice), dense.predict(items)
    return float((a[:, 1:] - b[:, 1:]).abs().max())


def importance_batch(model, ds: SequenceDataset, size: int, seed: int):
    """One training batch (items, targets) for the Taylor importance of ``reorder: taylor``."""
    inputs, targets = training_data(model, ds.train_sequences())
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(inputs), generator=gen)[:size]
    return training_batch(model, inputs[idx], targets[idx], torch.rand(len(idx), inputs.shape[1], generator=gen))


def search_supernet(opts: Dict[str, Any], ds: SequenceDataset, init: Optional[Init] = None):
    """(the supernet to search, the options with the warm start's shape, the warm start or None, the data
    numbered as the supernet numbers its items): a fresh dense backbone (softmax attention, no gates: the
    model a user compares against), or the trained model ``init`` names (compress, RecBole or Hugging
    Face; see ``compress.app.warm``), wrapped with the searched design injected. A warm start with an
    item vocabulary (items.json) gets the data put onto it, as ``evaluate`` does, since the file's own
    order numbers the same items otherwise; a RecBole checkpoint's rows are the data's, read in RecBole's
    numbering (``prepare_init``). ``init``: that model as ``load_init`` read it, when the caller has it
    already (it is read here otherwise); it is left as it was."""
    arch = build(ArchSpec, opts, attention="softmax", gate_layers=0)
    model = new_backbone(opts, arch, ds.n_items)  # drawn for a warm start too: the draws after it stay as they were
    adapter, vocabulary = None, None
    if opts["init"]:  # warm start: the trained model's weights and shape
        init = init or load_init(opts["init"])
        model, adapter, vocabulary = init
        if vocabulary is not None:
            ds = aligned_for(ds, vocabulary, opts["init"])
        elif adapter is not None and ds.n_items == model.n_items:  # RecBole's: rows in the file's numbering
            vocabulary = ds.vocabulary()
    taylor = importance_batch(get_adapter(model, adapter).convert(model), ds, opts["search_batch_size"],
                              opts["seed"]) if opts["reorder"] == "taylor" else None
    supernet = wrap(model, adapter, build(SearchSpace, opts), opts["attention"], opts["gate_layers"],
                    arch.gate_placement, opts["reorder"], taylor,
                    item_ids=None if vocabulary is None else vocabulary.ids)
    if opts["init"]:
        shape = supernet.full
        taken = {"backbone": supernet.backbone.backbone_name, "hidden": shape.hidden, "inner": shape.inner,
                 "heads": shape.heads, "layers": shape.layers, "seq_len": supernet.max_len}
        check_init_shape(opts, taken)
        opts = {**opts, **taken}
    return supernet, opts, init, ds


def check_init_shape(opts: Dict[str, Any], taken: Dict[str, Any]) -> None:
    """Refuse a shape asked for beside a warm start (a value other than the default and the init's): the
    search starts from the init's own shape, and replacing the options asked for without a word would run
    another backbone or size than the command says."""
    base = defaults("search")
    asked = [f"`{k}` {opts[k]}" for k, v in taken.items() if opts[k] != base[k] and opts[k] != v]
    if asked:
        shape = ", ".join(f"{k} {v}" for k, v in taken.items())
        raise ConfigError(f"`init` {opts['init']} fixes the model searched ({shape}); drop {', '.join(asked)}: a warm "
                          "start searches inside the model it starts from")


def search_card(result: SearchResult, opts: Dict[str, Any], ds: SequenceDataset, device) -> Dict[str, Any]:
    """The search card: the result's own card plus what the sliced decision measures."""
    cfg, dense = result.config, result.slice()
    card = result.card()
    card["slice_max_abs_diff"] = hard_slice_gap(result.supernet, dense, decision_index(result.decision), ds, device)
    card["decision"]["flops_measured"] = measured_flops(dense, dense.max_len)
    card["decision"]["params"] = params_count(dense)
    card.update({"seed": opts["seed"], "versions": versions(), "dataset": ds.stats(),
                 "choices": {"selection": cfg.selection, "arch_batches": cfg.arch_batches, "tradeoff": cfg.tradeoff,
                             "tau": {"schedule": cfg.tau_schedule, "start": cfg.tau_start, "rate": cfg.tau_rate,
                                     "min": cfg.tau_min},
                             "penalty": penalty_text(cfg), "decide": DECIDE_TEXT[cfg.decide]}})
    return card


def search_run(opts: Dict[str, Any], out: Optional[str] = None, overwrite: bool = False,
               reporter: Optional[Reporter] = None, resume: bool = False, stage: str = "search") -> Dict[str, Any]:
    """DNS-Rec search; RUN_DIR gets config.json, arch.json, search_card.json and supernet/. Until it
    completes, RUN_DIR.partial/ holds a checkpoint that ``resume=True`` continues from, and the ``stage``
    asked for (the search alone, or ``all`` from ``dnsrec_run``), which a resume of the command runs."""
    out = out or default_out("search", opts)
    check_run_out(out, overwrite, opts, resume)
    with run_state("search", opts, out, overwrite, resume, stage) as (opts, ckpt), ckpt:
        ckpt.every = opts["checkpoint_every"]
        cfg = build(SearchConfig, opts)
        build(ArchSpec, opts, attention="softmax", gate_layers=0), build(TrainConfig, opts)  # every setting checked
        build(SearchSpace, opts).fixing(opts["attention"], opts["gate_layers"])  # up front
        get_backbone(opts["backbone"])
        device = resolve_device(opts["device"])
        sink = metrics_sink(opts, ckpt.directory, out, os.path.basename(os.path.abspath(out)), "search")
        opts = prepare_init(opts)
        ds = run_data(opts, ckpt)
        supernet, opts, init, ds = search_supernet(opts, ds)
        digest = None if init is None else weights_digest(init[0])
        reporter = Reporters(reporter or LogReporter(), sink)
        reporter.header(search_header(ds, supernet, device, cfg))
        run_config = {"kind": "search", "data": recorded_data(opts), "dataset": ds.stats(), "options": opts,
                      "versions": versions()}
        try:
            with sink:
                result = search(supernet, ds, cfg, device, reporter, ckpt)
        except SearchError as exc:
            write_failed_search(out, overwrite, run_config, supernet, exc)
            raise
        card = {**search_card(result, opts, ds, device), **({"init_digest": digest} if digest else {})}
        with ckpt.publishing(), output_dir(out, overwrite, run_inputs(opts)) as tmp:
            write_json(os.path.join(tmp, CONFIG), run_config)
            write_json(os.path.join(tmp, ARCH), result.arch.to_dict())
            write_json(os.path.join(tmp, SEARCH_CARD), card)
            write_text(os.path.join(tmp, METRICS_CSV), csv_text(result.history))
            save_supernet(supernet, os.path.join(tmp, SUPERNET))
    return search_summary(out, card)


def write_failed_search(out: str, overwrite: bool, run_config: Dict[str, Any], supernet, exc: SearchError) -> None:
    """A diverged search's RUN_DIR: its error, its history and the supernet of its best epoch."""
    supernet.load_state_dict(exc.last_good)
    with output_dir(out, overwrite) as tmp:
        write_json(os.path.join(tmp, CONFIG), {**run_config, "failed": str(exc)})
        write_json(os.path.join(tmp, SEARCH_CARD), {"failed": str(exc), "history": exc.history})
        write_text(os.path.join(tmp, METRICS_CSV), csv_text(exc.history))
        save_supernet(supernet, os.path.join(tmp, SUPERNET))


def search_summary(out: str, card: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What a finished search RUN_DIR decided: decision, best and deciding epochs, seconds, and the
    validation of the supernet it keeps (the deciding epoch's)."""
    card = card or read_json(os.path.join(out, SEARCH_CARD))
    epoch = decision_epoch(card)
    kept = card["history"][epoch - 1]
    return {"out": out, "decision": card["decision"], "best_epoch": card["best_epoch"], "decision_epoch": epoch,
            "seconds": card["seconds"], "slice_max_abs_diff": card["slice_max_abs_diff"],
            "valid": {m[len("valid_"):]: v for m, v in kept.items() if m.startswith("valid_")}}


RETRAIN_STARTS = ("supernet", "scratch", "init")


def retrain_start(opts: Dict[str, Any]) -> str:
    """Which weights the retraining starts from: the supernet's (paper §2.7), fresh ones
    (``from_scratch``, official code) or the warm start's own (``from_init``). Refuses what needs a
    warm start (``from_init``, and ``distill``, whose teacher it is) in a search that had none."""
    if opts["from_scratch"] and opts["from_init"]:
        raise ConfigError("from_scratch and from_init are both set: retrain from fresh weights or from the warm "
                          "start's, not both")
    for key, what in (("from_init", "retrains from"), ("distill", "distils from")):
        if opts[key] and not opts["init"]:
            raise ConfigError(f"{key} {what} the model a search was warm-started from, and this search started "
                              f"from fresh weights (no init); drop {key}")
    return "scratch" if opts["from_scratch"] else "init" if opts["from_init"] else "supernet"


def checked_init(run_dir: str, opts: Dict[str, Any], card: Dict[str, Any]) -> Init:
    """The trained model a search RUN_DIR started from (its ``init``), read again as ``load_init`` reads
    it: refused where the file is gone or no longer holds the weights the search recorded."""
    if not os.path.exists(opts["init"]):
        raise CheckpointError(f"{run_dir} was warm-started from {opts['init']}, which is gone; restore it, or "
                              "drop from_init and distill")
    init = load_init(opts["init"])
    if "init_digest" not in card:
        log.warning("%s predates init digests: the init %s is taken as the model the search started from",
                    run_dir, opts["init"])
    elif weights_digest(init[0]) != card["init_digest"]:
        raise CheckpointError(f"{opts['init']} no longer holds the model {run_dir} was warm-started from (its "
                              "weights changed since the search); restore it, or drop from_init and distill")
    return init


def retrained_start(run_dir: str, supernet, decision: Dict[str, Any], gates: Optional[int], start: str):
    """The model the retraining starts from: the decision sliced out of ``supernet`` (the search's, or
    for ``start="init"`` the one it started from, rebuilt by ``search_supernet``: the init reordered as
    the search reordered it, the same criterion, seed and data, the injected parts fresh), or fresh weights of its shape
    (``start="scratch"``); ``gates`` another gate depth (0: none; Table 6, "retrain only")."""
    model = supernet.slice(*decision_index(decision))
    if model.arch.to_dict() != decision["arch"]:
        raise CheckpointError(f"{run_dir}: supernet/ and search_card.json disagree on the decided architecture")
    gates = model.arch.gate_layers if gates is None else gates
    if start == "scratch":
        return supernet.backbone.rebuilt(replace(model.arch, gate_layers=gates))
    return model.regated(gates)


def warn_over_budget(model: torch.nn.Module, card: Dict[str, Any]) -> None:
    """Say so when the model retrained (another gate depth than the decision's) costs more than the search's
    hard budget: the decision kept to it, and the card's decision still reads as if the model did."""
    budget = (card.get("budget") or {}).get("flops")
    flops = model_flops(model)["total"]
    if budget is not None and flops > budget:
        log.warning("the model retrained, %s, costs %s FLOPs: over the search's max_flops budget of %s FLOPs that "
                    "its decision, %s, kept to", model.arch.label(), f"{flops:,.0f}", f"{budget:,.0f}",
                    card["decision"]["label"])


def retrain_run(run_dir: str, overrides: Optional[Dict[str, Any]] = None, overwrite: bool = False,
                reporter: Optional[Reporter] = None, resume: bool = False) -> Dict[str, Any]:
    """Slice the decision out of a search RUN_DIR and retrain it with early stopping, the search's
    options updated by ``overrides`` (epochs, batch_size, gate_layers, from_scratch, ...); writes
    RUN_DIR/retrained/."""
    cfg = load_config(run_dir)
    if cfg.get("kind") != "search" or cfg.get("failed"):
        raise CheckpointError(f"{run_dir} holds no finished search; run `compress search` first")
    card = read_search_card(run_dir)
    out = os.path.join(run_dir, RETRAINED)
    if os.path.exists(out) and not overwrite:
        raise ConfigError(f"{out} already exists; pass `overwrite` to retrain again")
    asked = {k: v for k, v in (overrides or {}).items() if v is not None}
    with run_state("retrain", {"overrides": overrides or {}}, out, overwrite, resume) as (settings, ckpt), ckpt:
        overrides = settings["overrides"]
        # the saved options are the run's: other ones would be dropped without a word (the same ones, as a
        # rerun of the whole pipeline passes them again, are what the run continues with)
        changed = [BY_KEY[k].flag("retrain") if k in BY_KEY else k for k, v in asked.items() if overrides.get(k) != v]
        if resume and changed:
            raise ConfigError(f"`resume` continues the retraining of {run_dir} with its saved options; drop "
                              f"{', '.join(sorted(changed))}")
        opts = {**saved_options(cfg["options"], "search"), **{k: v for k, v in overrides.items() if v is not None}}
        start = retrain_start(opts)
        ckpt.every = opts["checkpoint_every"]
        train_cfg = build(TrainConfig, opts)
        device = resolve_device(opts["device"])
        sink = metrics_sink(opts, ckpt.directory, out, os.path.basename(os.path.abspath(run_dir)), "retrain")
        ds = run_data(opts, ckpt)
        torch.manual_seed(opts["seed"])
        # the init read and checked once, for the supernet it rebuilds and for the teacher it is
        init = checked_init(run_dir, opts, card) if start == "init" or train_cfg.distill > 0 else None
        if start == "init":
            supernet, _, _, ds = search_supernet(opts, ds, init)
        else:
            supernet = load_supernet(os.path.join(run_dir, SUPERNET))
            if opts["init"] and supernet.vocabulary is not None:  # the data onto the warm start's numbering
                ds = aligned_for(ds, supernet.vocabulary, opts["init"])
        model = retrained_start(run_dir, supernet, card["decision"], overrides.get("gate_layers"), start)
        warn_over_budget(model, card)
        teacher = get_adapter(init[0], init[1]).convert(init[0]) if train_cfg.distill > 0 else None
        reporter = Reporters(reporter or LogReporter(), sink)
        reporter.header(train_header(retrain_title(model, start, train_cfg), ds, model, device, train_cfg))
        with sink:
            result = fit(model, ds, train_cfg, device, reporter, ckpt, teacher)
        metrics = split_metrics(model, ds, train_cfg.k, opts["eval_seed"], device, train_cfg.eval_batch_size)
        with ckpt.publishing(), output_dir(out, overwrite) as tmp:
            write_trained(tmp, model, result, metrics, {"kind": "retrain", "data": cfg["data"],
                                                        "dataset": ds.stats(), "options": opts,
                                                        "from_scratch": start == "scratch", "start": start,
                                                        "versions": versions()})
    return {"out": out, "best_epoch": result.best_epoch, "metrics": metrics, "seconds": result.seconds,
            "arch": model.arch.to_dict(), "from_scratch": start == "scratch", "start": start}


def search_finished(out: str) -> bool:
    """Whether the search of RUN_DIR ``out`` was published whole, its checkpoint gone."""
    return not os.path.exists(partial_dir(out)) and os.path.exists(os.path.join(out, SEARCH_CARD))


def dnsrec_run(opts: Dict[str, Any], out: Optional[str] = None, overwrite: bool = False,
               reporters: Optional[Callable[[str], Reporter]] = None, resume: bool = False,
               on_search: Optional[Callable[[Dict[str, Any]], None]] = None,
               retrain: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """DNS-Rec end to end: search, then retrain the decision (``retrain``: options of that stage only).
    Resuming continues the stage that was left: the search, or (the search finished) the retraining.
    ``reporters(stage)`` gives each stage's progress reporter; ``on_search`` sees the search's result
    before the retraining starts."""
    reporters = reporters or (lambda stage: None)
    retrain_start({**opts, **{k: v for k, v in (retrain or {}).items() if v is not None}})  # before the search
    out = out or default_out("search", opts)
    retrained = os.path.join(out, RETRAINED)
    if resume:  # a search killed after publishing: its retraining is what is left
        drop_finished_checkpoint(out)
    searched = resume and search_finished(out)
    if searched and os.path.exists(retrained):
        raise CheckpointError(f"nothing to resume: {out} holds a finished search and its retrained model")
    try:
        found = search_summary(out) if searched else search_run(opts, out, overwrite, reporters("search"), resume,
                                                                "all")
    except Interrupted:
        if search_finished(out):
            raise Interrupted(f"interrupted after the search: {out} holds it whole; `resume` retrains its decision"
                              ) from None  # "the run had completed" read as if the retraining had run too
        raise
    if on_search is not None:
        on_search(found)
    # a retraining killed before its first checkpoint left only its lock: it starts over
    result = retrain_run(out, retrain, reporter=reporters("retrain"),
                         resume=searched and Checkpointer(partial_dir(retrained)).exists())
    return {**found, "retrain": result}


def export_run(run_dir: str, out: str, fmt: str = "safetensors", overwrite: bool = False) -> Dict[str, Any]:
    """Write MODEL_DIR ``out`` from a train RUN_DIR, a retrained search RUN_DIR or a MODEL_DIR."""
    src = model_dir(run_dir)
    model = load(src)
    cfg = load_config(src)
    vocabulary, stats = model.vocabulary, cfg.get("dataset")
    if vocabulary is None:  # a run written before runs kept their vocabulary: the data it recorded
        ds = recorded_dataset(src, cfg, {})
        vocabulary, stats = ds.vocabulary(), ds.stats()
    metrics_file = os.path.join(src, METRICS)
    card: Dict[str, Any] = {"source": os.path.abspath(run_dir), "kind": load_config(run_dir).get("kind"),
                            "metrics": read_json(metrics_file)["metrics"] if os.path.exists(metrics_file) else {},
                            "eval_seed": recorded_eval_seed(src, cfg)}  # what `evaluate` reproduces them with
    if os.path.exists(os.path.join(run_dir, SEARCH_CARD)):
        s = read_search_card(run_dir)
        card["search"] = {"decision": s["decision"], "best_epoch": s["best_epoch"],
                          "decision_epoch": decision_epoch(s), "full_flops": s["full_flops"],
                          "seconds": s["seconds"], "choices": s.get("choices"), "budget": s.get("budget")}
    adapter = None
    supernet_cfg = os.path.join(run_dir, SUPERNET, CONFIG)
    if os.path.exists(supernet_cfg):
        saved = read_json(supernet_cfg)["supernet"]
        adapter = adapter_class(saved["adapter"]).from_dict(saved.get("adapter_config", {}))
        if "input_arch" in saved:  # the model the search started from: the card compares costs with it
            card["input"] = reference_cost(model, ArchSpec.from_dict(saved["input_arch"]))
    if distributed.is_main():  # under torchrun one rank writes; the others would find `out` already there
        card = save_model_dir(model, out, fmt, overwrite, card, cfg.get("data"), adapter, vocabulary, stats,
                              [run_dir])
    distributed.barrier()
    return {"out": out, "card": card if distributed.is_main() else read_json(os.path.join(out, CARD))}


def bench_run(path: str, baseline: Optional[str], opts: Dict[str, Any]) -> Dict[str, Any]:
    """Inference cost of a MODEL_DIR (or RUN_DIR) and, side by side in this process, of a baseline:
    FLOPs, parameters, latency and peak memory at ``opts["batch"]`` sizes."""
    device = resolve_device(opts["device"])
    models = {"model": load(path, str(device))}
    if baseline:
        models["baseline"] = load(baseline, str(device))
        shapes = {name: (m.max_len, m.n_items) for name, m in models.items()}
        if shapes["model"] != shapes["baseline"]:  # the ratios would measure N and the catalogue too
            log.warning("the model scores histories of N = %d over %d items, the baseline N = %d over %d: its "
                        "ratios compare those as well as the architectures", *shapes["model"], *shapes["baseline"])
    rows = profile(models, opts["batch"], opts["repeats"])
    for name, model in models.items():  # what every figure is per: one history of N, scored against the items
        rows[name] = {"max_len": model.max_len, "n_items": model.n_items, **rows[name]}
    return {"device": str(device), "threads": torch.get_num_threads(), "models": rows,
            "rows": list(next(iter(rows.values())))}
