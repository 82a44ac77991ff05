"""Model directories: ``config.json`` + ``model.safetensors`` (+ JSON side files).

Nothing is pickled: a model directory is rebuilt from its ``config.json`` alone and its tensors are
loaded strictly, so a renamed, missing or reshaped tensor is an error, never a silent partial load.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from typing import Any, Dict, Optional, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from compress.data.vocabulary import ItemVocabulary
from compress.errors import CheckpointError, ConfigError
from compress.files import first_line, read_json, write_json
from compress.layout import CONFIG, ITEMS, RETRAINED, WEIGHTS
from compress.runtime.devices import as_device

FORMAT_VERSION = 1


def save_model(model: nn.Module, directory: str, extra: Optional[Dict[str, Any]] = None,
               model_config: Optional[Dict[str, Any]] = None) -> None:
    """Write ``config.json`` (``model_config`` or ``model.config()``, plus ``extra``) and
    ``model.safetensors`` (``model.state_dict()``, with ``weights_metadata``) into ``directory``.

    Floating-point tensors are written as float32 whatever the model holds them in: the file's format is
    float32 (``load_state`` refuses other dtypes, and the model it builds is float32), and a model cast
    to bfloat16 or float16 for serving upcasts exactly. Integer and bool buffers keep their dtype."""
    cfg = {"format_version": FORMAT_VERSION, "model": model_config or model.config(), **(extra or {})}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # first: the upcast takes no GPU memory
    state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    try:
        save_file(state, os.path.join(directory, WEIGHTS), metadata=weights_metadata(cfg["model"]))
    except SafetensorError as exc:  # safetensors reports a full disk as its own error
        raise OSError(errno.EIO, first_line(exc), os.path.join(directory, WEIGHTS)) from None
    write_json(os.path.join(directory, CONFIG), cfg)


def weights_metadata(model_cfg: Dict[str, Any]) -> Dict[str, str]:
    """The header of model.safetensors (strings only): ``format`` "pt" (what Hugging Face's loaders check
    for), the compress version, and the ArchSpec (JSON), n_items and max_len, so the file says what it
    holds even apart from config.json."""
    import compress

    meta = {"format": "pt", "compress": compress.__version__}
    meta.update({k: json.dumps(model_cfg[k], sort_keys=True) for k in HEADER_JSON if k in model_cfg})
    meta.update({k: str(model_cfg[k]) for k in ("n_items", "max_len") if k in model_cfg})
    return meta


HEADER_JSON = ("arch", "style")  # what the weights' header repeats of config.json's model section, as JSON


def check_header(model_cfg: Dict[str, Any], header: Dict[str, str], weights: str) -> None:
    """config.json's model section against what the ``header`` metadata of ``weights`` says it holds (where
    it says: older files carry the arch alone, or nothing): an edit that keeps every tensor's shape (the
    heads, the attention kind, where the norms sit) would load and score differently without a word."""
    try:
        saved = {k: json.loads(header[k]) for k in HEADER_JSON if k in header}
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{weights}'s header metadata is not valid JSON ({exc.msg}); the file is damaged: "
                              "export the model again") from None
    saved.update({k: header[k] for k in ("n_items", "max_len") if k in header})
    given = {k: (model_cfg.get(k) if k in HEADER_JSON else str(model_cfg.get(k))) for k in saved}
    for key, value in saved.items():
        if given[key] == value:
            continue
        parts = ([f"{f} {given[key].get(f)!r} (the weights: {v!r})" for f, v in value.items()
                  if given[key].get(f) != v] if isinstance(value, dict) and isinstance(given[key], dict) else
                 [f"{given[key]!r} (the weights: {value!r})"])
        raise CheckpointError(f"config.json's model {key} is not what {weights} holds: {', '.join(parts[:3])}; "
                              "the directory is inconsistent: export it again")


# Fields every built-in backbone writes into config.json, with what they must hold.
_COUNTS = ("n_items", "max_len")
_RANGES = {"dropout": (0.0, 1.0), "layer_norm_eps": (0.0, 1.0), "init_std": (0.0, math.inf)}


def _finite(x: Any) -> bool:
    """A real number (not a bool) that converts to a finite float."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:  # an int beyond float range
        return False


def build_model(model_cfg: Dict[str, Any], device: Optional[str] = None) -> nn.Module:
    """The model ``config.json``'s model section describes, freshly initialised (on ``device``,
    e.g. ``"meta"`` to learn its shapes without allocating them)."""
    from compress.backbones import get_backbone

    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("backbone"), str):
        raise CheckpointError("config.json has no 'model.backbone'; the artifact is corrupt")
    for key in _COUNTS:
        value = model_cfg.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"config.json model.{key} must be a positive integer, got {value!r}")
    for key, (low, high) in _RANGES.items():
        value = model_cfg.get(key, low)
        if not _finite(value) or not low <= value <= high:
            raise CheckpointError(f"config.json model.{key} must be a finite number in [{low}, {high}], "
                                  f"got {value!r}")
    backbone = get_backbone(model_cfg["backbone"])  # unknown: a ConfigError (register or install it)
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return backbone.from_config(model_cfg)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"config.json model section is incomplete ({first_line(exc)})") from None
    except (ValueError, RuntimeError, OverflowError) as exc:  # e.g. a size torch refuses
        raise CheckpointError(f"config.json model section is invalid ({first_line(exc)})") from None
    except ConfigError as exc:  # e.g. an ArchSpec edited by hand: a broken artifact, not a bad option
        raise CheckpointError(f"config.json model section is inconsistent ({exc})") from None


def weights_header(path: str) -> Tuple[Dict[str, tuple], Dict[str, str]]:
    """(name -> shape of every tensor, the metadata) of a safetensors file, read from its header alone."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path} is missing")
    try:
        with safe_open(path, framework="pt") as fh:
            return {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}, fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is corrupt ({first_line(exc)})") from None


def check_shapes(own: Dict[str, tuple], saved: Dict[str, tuple], path: str) -> None:
    """The tensors a model has (``own``) and those ``path`` holds must match, names and shapes."""
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match config.json: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, shape in saved.items():
        if tuple(shape) != tuple(own[name]):
            raise CheckpointError(f"{path}: tensor {name} has shape {tuple(shape)}, "
                                  f"config.json implies {tuple(own[name])}")


def load_state(model: nn.Module, path: str) -> None:
    """Strictly load safetensors weights into ``model``; names and shapes must match exactly."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path} is missing")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is corrupt ({first_line(exc)})") from None
    own = model.state_dict()
    check_shapes({k: tuple(v.shape) for k, v in own.items()}, {k: tuple(v.shape) for k, v in state.items()}, path)
    wrong = [f"{k} is {v.dtype}" for k, v in state.items() if v.dtype != own[k].dtype]
    if wrong:  # int64 weights would load, silently cast, into a model that scores garbage
        raise CheckpointError(f"{path}: {wrong[0]}, the model holds {own[wrong[0].split()[0]].dtype}; "
                              "the weights were not written by compress")
    model.load_state_dict(state, strict=True)




def model_dir(path: str) -> str:
    """The directory holding the dense model of a train RUN_DIR, a search RUN_DIR (its retrained/
    model) or a MODEL_DIR."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"the path to load must be a str or os.PathLike, got {type(path).__name__}")
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


def build_checked(model_cfg: Dict[str, Any], weights: str, prefix: str = "") -> nn.Module:
    """``build_model`` after checking ``model_cfg`` against the header of ``weights`` (its tensors
    under ``prefix``): a tampered size (n_items = 10**12, layers = 10**9) must be an error, not an
    allocation or a hang."""
    shapes, header = weights_header(weights)
    saved = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
    arch = model_cfg.get("arch") if isinstance(model_cfg, dict) else None
    layers, gates = (arch.get("layers"), arch.get("gate_layers", 0)) if isinstance(arch, dict) else (None, None)
    if isinstance(layers, int) and isinstance(gates, int) and layers * max(gates, 1) > len(saved):
        # each layer (and each layer's gate MLP layer) holds at least one tensor; building a
        # module per layer of a tampered depth would take hours
        raise CheckpointError(f"config.json asks for {layers} layers with gates of depth {gates}, but {weights} "
                              f"holds only {len(saved)} tensors; the directory is inconsistent")
    meta = build_model(model_cfg, device="meta")
    check_shapes({k: tuple(v.shape) for k, v in meta.state_dict().items()}, saved, weights)
    check_header(model_cfg, header, weights)  # what the shapes cannot tell
    return build_model(model_cfg)


def load(path: str, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Rebuild a model from ``config.json`` alone and load ``model.safetensors`` strictly. The item
    vocabulary (``items.json``) becomes ``model.vocabulary`` (``read_vocabulary``). ``device`` takes what
    ``--device`` takes ("auto" too), checked before anything is read."""
    device = as_device(device, torch.device("cpu"))
    path = model_dir(path)
    cfg = read_json(os.path.join(path, CONFIG))
    check_format(cfg, os.path.join(path, CONFIG))
    weights = os.path.join(path, WEIGHTS)
    model = build_checked(cfg.get("model"), weights)
    load_state(model, weights)
    model.vocabulary = read_vocabulary(path, cfg, model.n_items)
    return model.to(device).eval()


def check_format(cfg: Dict[str, Any], where: str) -> None:
    """Refuse a config.json of a format this version cannot read (one written by a newer compress, or by
    Hugging Face) rather than read its fields as they meant something else; files from before format 1
    carry no version."""
    if "format_version" not in cfg and ("model_type" in cfg or "architectures" in cfg):
        raise CheckpointError(f"{where} is a Hugging Face config (an export's native/, or save_pretrained's): "
                              "load it with transformers' from_pretrained; compress reads the MODEL_DIR that holds "
                              "native/, or warm-starts from it with `init`")
    version = cfg.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where}: format_version must be a whole number >= 1, got {version!r}; the file is "
                              "corrupt: export the model again")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where} is in format {version}, written by a newer compress; this one reads format "
                              f"{FORMAT_VERSION}: upgrade compress (pip install -U dnsrec-compress)")


def read_vocabulary(path: str, cfg: Dict[str, Any], n_items: int) -> Optional[ItemVocabulary]:
    """The item vocabulary ``items.json`` in ``path`` holds (None where there is none); one that
    ``cfg`` (its config.json) names but that is missing is an error, not a model serving its row
    numbers as item ids."""
    items_file = os.path.join(path, ITEMS)
    if os.path.exists(items_file):
        return ItemVocabulary.from_json(read_json(items_file), n_items, items_file)
    if cfg.get("items"):
        raise CheckpointError(f"{items_file} is missing, though {CONFIG} names it: without it the model cannot say "
                              "which item each row is; restore the file or export the model again")
    return None


def load_config(path: str) -> Dict[str, Any]:
    return read_json(os.path.join(path, CONFIG))


