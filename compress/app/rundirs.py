"""Run directories: where a job writes (atomically, rank 0 only), its interrupted state
(``RUN_DIR.partial/``), the data it read and the options it ran with, so that ``--resume``,
``retrain``, ``export`` and ``evaluate`` can read them back."""
from __future__ import annotations

import datetime
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Tuple

import torch

from compress.app.options import build, canonical, defaults
from compress.data import ReadOptions, SequenceDataset, load_dataset
from compress.data.registry import DATASETS, DEFAULT
from compress.engine.checkpoint import Checkpointer, partial_dir
from compress.engine.loop import LoopResult
from compress.errors import CheckpointError, ConfigError
from compress.files import atomic_dir, write_json, write_text
from compress.layout import METRICS, TRAIN_LOG
from compress.runtime import distributed
from compress.store.artifacts import save_model

DATA_KEYS = ("data", "data_dir", "data_format", "user_col", "item_col", "time_col", "sep", "kcore")


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


def saved_options(options: Dict[str, Any], command: str) -> Dict[str, Any]:
    """Options read back from a run: keys written by earlier versions under their current names, and
    options added since taking their defaults."""
    return {**defaults(command), **{canonical(k): v for k, v in options.items()}}


def dataset_from_options(opts: Dict[str, Any]) -> SequenceDataset:
    opts = {canonical(k): v for k, v in opts.items()}
    return load_dataset(opts.get("data"), opts.get("data_dir"), build(ReadOptions, opts), kcore=opts.get("kcore", 0))


def recorded_data(opts: Dict[str, Any]) -> Dict[str, Any]:
    """The data options written into config.json, with file paths made absolute: ``evaluate`` reads
    them back when no ``--data`` is given, possibly from another working directory."""
    data = {k: opts[k] for k in DATA_KEYS}
    if data["data"] and data["data"] != DEFAULT and data["data"] not in DATASETS and os.path.exists(data["data"]):
        data["data"] = os.path.abspath(data["data"])
    if data["data_dir"]:
        data["data_dir"] = os.path.abspath(data["data_dir"])
    return data


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
        if kind in ("train", "search"):
            settings = saved_options(settings, kind)
        return settings, ckpt
    if ckpt.exists() and not overwrite:
        raise ConfigError(f"{ckpt.directory} holds an interrupted run; continue it with `resume` or start over with `overwrite`")
    ckpt.remove()
    ckpt.meta = {"kind": kind, "settings": settings}
    return settings, ckpt


def write_trained(directory: str, model: torch.nn.Module, result: LoopResult, metrics: Dict,
                  meta: Dict[str, Any]) -> None:
    """config.json + model.safetensors, metrics.json (best epoch, metrics, history) and train.log."""
    save_model(model, directory, meta)
    write_json(os.path.join(directory, METRICS), {"best_epoch": result.best_epoch, "metrics": metrics,
                                                  "seconds": result.seconds, "history": result.history})
    lines = [" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
             for row in result.history]
    write_text(os.path.join(directory, TRAIN_LOG), "".join(line + "\n" for line in lines))
