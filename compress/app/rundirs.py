"""Run directories: where a job writes (atomically, rank 0 only), its interrupted state
(``RUN_DIR.partial/``), the data it read and the options it ran with, so that ``--resume``,
``retrain``, ``export`` and ``evaluate`` can read them back."""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager, nullcontext
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from compress.app.options import build, canonical, defaults
from compress.data import ReadOptions, SequenceDataset, load_dataset
from compress.data.registry import DATASETS, DEFAULT
from compress.engine.checkpoint import STATE, Checkpointer, partial_dir
from compress.engine.loop import LoopResult
from compress.engine.sinks import MetricsSink, csv_text
from compress.errors import CheckpointError, ConfigError
from compress.files import atomic_dir, check_out_dir, read_json, write_json, write_text
from compress.layout import (
    CARD,
    CHECKPOINT,
    ITEMS,
    LOCK,
    MARKER,
    METRICS,
    METRICS_CSV,
    RUN_META,
    SEARCH_CARD,
    TRAIN_LOG,
)
from compress.runtime import distributed
from compress.runtime.lock import RunLock
from compress.store.artifacts import save_model

log = logging.getLogger(__name__)
DATA_KEYS = ("data", "data_dir", "data_format", "user_col", "item_col", "time_col", "sep", "kcore", "item_numbering")


@contextmanager
def output_dir(out: str, overwrite: bool, inputs: Iterable[Optional[str]] = ()) -> Iterator[str]:
    """Where a job writes ``out``: atomically, on rank 0. The other ranks of a distributed run write
    into a scratch directory that is discarded (the same code path, nothing published), then every
    rank waits until ``out`` is complete, so a following stage can read it on any rank."""
    if distributed.is_main():
        with atomic_dir(out, overwrite, inputs) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield tmp
    distributed.barrier()


def default_out(kind: str, opts: Dict[str, Any]) -> str:
    data = os.path.basename(str(opts["data"] or "default")).split(".")[0]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{kind}-{opts['backbone']}-{data}-{stamp}")


def saved_options(options: Dict[str, Any], command: str) -> Dict[str, Any]:
    """Options read back from a run: keys written by earlier versions under their current names, and
    options added since taking their defaults."""
    return {**defaults(command), **{canonical(k): v for k, v in options.items()}}


def dataset_from_options(opts: Dict[str, Any]) -> SequenceDataset:
    opts = {canonical(k): v for k, v in opts.items()}
    return load_dataset(opts.get("data"), opts.get("data_dir"), build(ReadOptions, opts), kcore=opts.get("kcore", 0),
                        numbering=opts.get("item_numbering", "compress"))


def run_inputs(opts: Dict[str, Any]) -> List[Optional[str]]:
    """The paths a run reads: its output may not be, hold or lie inside one of them."""
    data = opts.get("data")
    return [data if data and os.path.exists(data) else None, opts.get("init")]


def recorded_data(opts: Dict[str, Any]) -> Dict[str, Any]:
    """The data options written into config.json, with file paths made absolute: ``evaluate`` reads
    them back when no ``--data`` is given, possibly from another working directory."""
    return absolute_data({k: opts[k] for k in DATA_KEYS})


def recorded_eval_seed(src: str, cfg: Dict[str, Any]) -> Optional[int]:
    """The seed a run's (or its export's) recorded metrics drew the sampled protocols' negatives with:
    the run's options in config.json, or an export's card.json; None when neither says."""
    seed = (cfg.get("options") or {}).get("eval_seed") if isinstance(cfg.get("options"), dict) else None
    if seed is None and os.path.isfile(os.path.join(src, CARD)):
        card = read_json(os.path.join(src, CARD))
        seed = card.get("eval_seed") if isinstance(card, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def absolute_data(opts: Dict[str, Any]) -> Dict[str, Any]:
    """``opts`` with ``data`` (a file or folder, not a dataset name) and ``data_dir`` as absolute paths."""
    data, data_dir = opts.get("data"), opts.get("data_dir")
    if data and data != DEFAULT and data not in DATASETS and os.path.exists(data):
        opts = {**opts, "data": os.path.abspath(data)}
    return {**opts, "data_dir": os.path.abspath(data_dir)} if data_dir else opts


def run_data(opts: Dict[str, Any], ckpt: Checkpointer) -> SequenceDataset:
    """The data of a run with a checkpoint: its digest goes into the run's record, and a resumed run
    refuses data that changed since (a file rewritten, another file at the path), which it would
    otherwise continue training on as if nothing happened."""
    ds = dataset_from_options(opts)
    digest = data_digest(ds)
    if ckpt.meta is not None:  # a fresh run: recorded with its first checkpoint
        ckpt.meta["data_digest"] = digest
    elif ckpt.exists():
        recorded = ckpt.read_meta().get("data_digest")
        if recorded is not None and recorded != digest:
            raise CheckpointError(f"the data of the run in {ckpt.directory} changed since it was interrupted "
                                  f"({opts.get('data')} now holds {ds.n_users:,} users and {ds.n_items:,} items of "
                                  "other interactions); restore the data it started on, or start over with `overwrite`")
    return ds


def data_digest(ds: SequenceDataset) -> str:
    """A digest of what a run learns from: every user's item sequence and the raw id of every item."""
    h = hashlib.sha256()
    for array in (ds.items, ds.offsets):
        h.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    h.update("\n".join(ds.item_tokens).encode())
    return h.hexdigest()[:16]


@contextmanager
def run_state(kind: str, settings: Dict[str, Any], out: str, overwrite: bool,
              resume: bool, stage: Optional[str] = None) -> Iterator[Tuple[Dict[str, Any], Checkpointer]]:
    """(the run's settings, its Checkpointer in ``out.partial/``), held by this process alone (a lock
    file) while the block runs. Resuming reads the saved settings; a fresh run refuses to silently
    discard an interrupted one, and records ``stage`` (what the command was asked to run: a resume runs
    the same, ``recorded_stage``). A run that fails before writing a checkpoint leaves nothing behind."""
    ckpt = Checkpointer(partial_dir(out))
    try:
        os.makedirs(ckpt.directory, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write beside {out}: {exc.strerror}") from None
    # one lock per run, held by rank 0: the other ranks of a distributed run are the same run
    held = RunLock(os.path.join(ckpt.directory, LOCK)) if distributed.is_main() else nullcontext(None)
    with held as lock:
        if lock is not None and lock.note:
            log.warning(lock.note)
        try:
            yield _settings(kind, settings, ckpt, overwrite, resume, stage), ckpt
        except BaseException:
            if distributed.is_main() and not ckpt.exists():  # rank 0 writes checkpoints, so it alone knows
                shutil.rmtree(ckpt.directory, ignore_errors=True)
            raise


def drop_finished_checkpoint(out: str) -> bool:
    """Remove ``out.partial/`` when ``out`` was published after its last checkpoint: the run completed and
    was killed between publishing and removing its checkpoint, which ``resume`` would otherwise stumble on
    ("already exists"). A checkpoint newer than ``out`` (a run started over it with ``overwrite``) stays."""
    partial, marker = partial_dir(out), os.path.join(out, MARKER)
    state = os.path.join(partial, CHECKPOINT, STATE)
    if not (os.path.isfile(marker) and os.path.isfile(state)) or os.path.getmtime(marker) <= os.path.getmtime(state):
        return False
    log.warning("removed %s: %s was published after that run's last checkpoint, so the run had completed", partial,
                out)
    shutil.rmtree(partial, ignore_errors=True)
    return True


def check_run_out(out: str, overwrite: bool, opts: Dict[str, Any], resume: bool) -> None:
    """Before a run writes ``out``: a resume of a run that completed (``drop_finished_checkpoint``) has
    nothing left to do; otherwise ``out`` must be one the run may write (``check_out_dir``)."""
    if resume and drop_finished_checkpoint(out):
        raise CheckpointError(f"nothing to resume: {out} is complete")
    check_out_dir(out, overwrite, run_inputs(opts))


def recorded_stage(out: str) -> Optional[str]:
    """The stage an interrupted run in ``out.partial/`` was asked to run (None: none recorded)."""
    meta = os.path.join(partial_dir(out), RUN_META)
    return read_json(meta).get("stage") if os.path.isfile(meta) else None


def _settings(kind: str, settings: Dict[str, Any], ckpt: Checkpointer, overwrite: bool,
              resume: bool, stage: Optional[str]) -> Dict[str, Any]:
    if resume:
        if not ckpt.exists():
            raise CheckpointError(f"nothing to resume: {ckpt.directory} holds no checkpoint of an interrupted run")
        meta = ckpt.read_meta()
        if meta.get("kind") != kind:
            raise CheckpointError(f"{ckpt.directory} holds a {meta.get('kind')!r} run, not a {kind!r} run")
        return saved_options(meta["settings"], kind) if kind in ("train", "search") else meta["settings"]
    if ckpt.exists() and not overwrite:
        raise ConfigError(f"{ckpt.directory} holds an interrupted run; continue it with `resume` or start over "
                          "with `overwrite`")
    ckpt.clear()
    settings = absolute_data(settings)  # a resume from another working directory reads the same file
    ckpt.meta = {"kind": kind, "settings": settings, **({"stage": stage} if stage else {})}
    return settings


def write_trained(directory: str, model: torch.nn.Module, result: LoopResult, metrics: Dict,
                  meta: Dict[str, Any]) -> None:
    """config.json + model.safetensors, items.json (the model's item vocabulary), metrics.json (best
    epoch, metrics, history), metrics.csv (the history) and train.log."""
    save_model(model, directory, {**meta, "items": ITEMS})
    write_json(os.path.join(directory, ITEMS), model.vocabulary.to_json())
    write_json(os.path.join(directory, METRICS), {"best_epoch": result.best_epoch, "metrics": metrics,
                                                  "seconds": result.seconds, "history": result.history})
    lines = [" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
             for row in result.history]
    write_text(os.path.join(directory, TRAIN_LOG), "".join(line + "\n" for line in lines))
    write_text(os.path.join(directory, METRICS_CSV), csv_text(result.history))


def metrics_sink(opts: Dict[str, Any], partial: str, out: str, run: str, stage: str) -> MetricsSink:
    """A stage's epoch rows: ``partial``/metrics.csv while it runs, and TensorBoard events under
    ``tensorboard``/RUN/STAGE when that option is given, checked now, before any data is read."""
    root = opts.get("tensorboard")
    if root and os.path.commonpath([os.path.realpath(root), os.path.realpath(out)]) == os.path.realpath(out):
        raise ConfigError(f"`tensorboard` {root} lies inside {out}, which is written whole when the run ends; "
                          "choose a directory outside it")
    return MetricsSink(os.path.join(partial, METRICS_CSV), os.path.join(root, run, stage) if root else None)


def read_search_card(run_dir: str) -> Dict[str, Any]:
    """A search RUN_DIR's search_card.json, the fields that retraining and export read from it checked:
    a card edited by hand, or written by another version, is one error naming what it lacks."""
    path = os.path.join(run_dir, SEARCH_CARD)
    card = read_json(path)
    decision = card.get("decision")
    if not isinstance(decision, dict):
        problem = "no decision"
    elif any(isinstance(decision.get(k), bool) or not isinstance(decision.get(k), int) for k in ("width", "depth")):
        problem = "no whole width and depth choices in its decision"
    elif not isinstance(decision.get("arch"), dict):
        problem = "no architecture in its decision"
    elif any(isinstance(card.get(k), bool) or not isinstance(card.get(k), (int, float))
             for k in ("best_epoch", "full_flops", "seconds")):
        problem = "no best_epoch, full_flops or seconds"
    else:
        return card
    raise CheckpointError(f"{path} holds {problem}; the artifact is corrupt or from another version of compress")
