"""Artifacts on disk: ``config.json`` + ``model.safetensors`` (+ JSON side files), written atomically.

Nothing is pickled: a model directory is rebuilt from its ``config.json`` alone and its tensors are
loaded strictly, so a renamed, missing or reshaped tensor is an error, never a silent partial load.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Dict, Iterator, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from compress.errors import CheckpointError, ConfigError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1


def check_out_dir(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not overwrite:
        raise ConfigError(f"output directory {out} already exists; pass --overwrite or choose another --out")


@contextlib.contextmanager
def atomic_dir(out: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary directory beside ``out``; on success it replaces ``out`` in one rename, on
    failure it is removed, so an interrupted write never leaves a half-written ``out``."""
    check_out_dir(out, overwrite)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.{uuid.uuid4().hex[:12]}")
    os.mkdir(tmp)  # not mkdtemp: its 0o700 would make the final ``out`` private; mkdir honours the umask
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old.", dir=parent)
        os.replace(out, os.path.join(old, "x"))
    os.replace(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is this a compress run or model directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the artifact is corrupt") from None
    if not isinstance(obj, dict):  # every artifact file is an object; callers index it by key
        raise CheckpointError(f"{path} is not a JSON object; the artifact is corrupt")
    return obj


def save_model(model: nn.Module, directory: str, extra: Optional[Dict[str, Any]] = None,
               model_config: Optional[Dict[str, Any]] = None) -> None:
    """Write ``config.json`` (``model_config`` or ``model.config()``, plus ``extra``) and
    ``model.safetensors`` (``model.state_dict()``) into ``directory``."""
    cfg = {"format_version": FORMAT_VERSION, "model": model_config or model.config(), **(extra or {})}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(directory, WEIGHTS))
    write_json(os.path.join(directory, CONFIG), cfg)


def build_model(model_cfg: Dict[str, Any]) -> nn.Module:
    from compress.backbones import get_backbone

    if not isinstance(model_cfg, dict) or "backbone" not in model_cfg:
        raise CheckpointError("config.json has no 'model.backbone'; the artifact is corrupt")
    backbone = get_backbone(model_cfg["backbone"])  # unknown: a ConfigError (register or install it)
    try:
        return backbone.from_config(model_cfg)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"config.json model section is incomplete ({exc})") from None
    except ConfigError as exc:  # e.g. an ArchSpec edited by hand: a broken artifact, not a bad option
        raise CheckpointError(f"config.json model section is inconsistent ({exc})") from None


def load_state(model: nn.Module, path: str) -> None:
    """Strictly load safetensors weights into ``model``; names and shapes must match exactly."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path} is missing")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is corrupt ({exc})") from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match config.json: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, t in state.items():
        if t.shape != own[name].shape:
            raise CheckpointError(f"{path}: tensor {name} has shape {tuple(t.shape)}, "
                                  f"config.json implies {tuple(own[name].shape)}")
    model.load_state_dict(state, strict=True)


ITEMS = "items.json"
RETRAINED = "retrained"


def model_dir(path: str) -> str:
    """The directory holding the dense model of a train RUN_DIR, a search RUN_DIR (its retrained/
    model) or a MODEL_DIR."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path} is not a directory with {CONFIG} and {WEIGHTS}")
    kind = read_json(os.path.join(path, CONFIG)).get("kind")
    if kind == "search":
        retrained = os.path.join(path, RETRAINED)
        if not os.path.isdir(retrained):
            raise CheckpointError(f"{path} has a search decision but no retrained model yet; "
                                  f"run `compress retrain {path}`")
        return retrained
    if kind == "supernet":
        raise CheckpointError(f"{path} is a supernet checkpoint; load it with compress.load_supernet")
    return path


def load(path: str, device: str = "cpu") -> nn.Module:
    """Rebuild a model from ``config.json`` alone and load ``model.safetensors`` strictly. A MODEL_DIR's
    id mapping (``items.json``) is attached so ``model.recommend`` speaks raw item ids."""
    path = model_dir(path)
    cfg = read_json(os.path.join(path, CONFIG))
    model = build_model(cfg.get("model"))
    load_state(model, os.path.join(path, WEIGHTS))
    items_file = os.path.join(path, ITEMS)
    if os.path.exists(items_file):
        items = read_json(items_file)
        if len(items.get("item_ids", [])) != model.n_items:
            raise CheckpointError(f"{items_file} maps {len(items.get('item_ids', []))} items but config.json "
                                  f"says {model.n_items}; the model directory is inconsistent")
        model.item_ids, model.popularity = items["item_ids"], items.get("popularity")
    return model.to(device).eval()


def load_config(path: str) -> Dict[str, Any]:
    return read_json(os.path.join(path, CONFIG))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available; use --device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)
