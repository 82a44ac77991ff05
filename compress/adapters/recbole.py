"""RecBole's ``SASRec`` (recbole.model.sequential_recommender.SASRec): a declared mapping over its names.

RecBole is not a dependency: the adapter reads the model object's modules by name, so it needs
RecBole only to build that object. A decision with softmax attention and no gates goes back as a
RecBole state dict (``native/model.safetensors``, RecBole's parameter names) and the config keys
RecBole builds SASRec from (``native/config.yaml``: hidden_size, inner_size, n_layers, n_heads, …):
``SASRec(config, dataset).load_state_dict(safetensors.torch.load_file(...))`` restores it.
"""
from __future__ import annotations

import importlib
import os
import pickle
from typing import Any, Dict, List, Optional, Tuple

import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from compress.adapters.base import register_adapter, vanilla
from compress.adapters.declared import DeclaredAdapter, activation_from, item_count
from compress.arch import ArchSpec
from compress.backbones.transformer import SequenceTransformer
from compress.bounds import real, whole
from compress.errors import CheckpointError, ConfigError
from compress.files import first_line
from compress.layout import WEIGHTS

ACTIVATIONS = {"gelu": "gelu", "relu": "relu"}
CONFIG_KEYS = ("hidden_size", "inner_size", "n_layers", "n_heads", "hidden_dropout_prob", "attn_dropout_prob",
               "hidden_act", "layer_norm_eps", "MAX_ITEM_LIST_LENGTH")  # what RecBole builds a SASRec from
# the attribute of RecBole's SASRec object each of those keys is read from
ATTRIBUTES = {**{key: key for key in CONFIG_KEYS if key != "MAX_ITEM_LIST_LENGTH"},
              "MAX_ITEM_LIST_LENGTH": "max_seq_length"}
# RecBole's SASRec module names, by role (compress.nn.block.LAYER_PARTS, MODEL_PARTS)
PATHS = {"item_embedding": "item_embedding", "position_embedding": "position_embedding",
         "embedding_norm": "LayerNorm", "layers": "trm_encoder.layer",
         "attention": {"query": "multi_head_attention.query", "key": "multi_head_attention.key",
                       "value": "multi_head_attention.value", "output": "multi_head_attention.dense"},
         "ffn_in": "feed_forward.dense_1", "ffn_out": "feed_forward.dense_2",
         "attention_norm": "multi_head_attention.LayerNorm", "ffn_norm": "feed_forward.LayerNorm"}


def recbole_mapping(config: Dict[str, Any]) -> Dict[str, Any]:
    """The declared mapping of a RecBole SASRec with this config (hidden_size, n_heads, hidden_act, ...)."""
    return {**PATHS, "heads": config["n_heads"], "norm": "post", "causal": True, "objective": "next",
            "activation": activation_from(ACTIVATIONS, config["hidden_act"], "RecBole hidden_act"),
            "dropout": config["hidden_dropout_prob"]}


@register_adapter
class RecBoleSASRecAdapter(DeclaredAdapter):
    name = "recbole-sasrec"
    has_native = True

    def __init__(self, recbole_config: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(None)
        self.recbole_config = recbole_config

    def to_dict(self) -> Dict[str, Any]:
        return {"recbole_config": self.recbole_config}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RecBoleSASRecAdapter":
        return cls(d.get("recbole_config"))

    def matches(self, model: nn.Module) -> bool:
        return type(model).__name__ == "SASRec" and not _lacks(model)

    def convert(self, model: nn.Module) -> SequenceTransformer:
        if isinstance(model, SequenceTransformer) and self.recbole_config is not None:
            return model  # already ours: read from a checkpoint by ``from_state``
        if not self.matches(model):
            what = "not named SASRec" if type(model).__name__ != "SASRec" else f"no {', '.join(_lacks(model))}"
            raise ConfigError(f"{type(model).__name__} is not a RecBole SASRec ({what}); describe its modules with "
                              "the declared adapter (compress.DeclaredAdapter)")
        self.recbole_config = {key: getattr(model, name) for key, name in ATTRIBUTES.items()}
        self.mapping = recbole_mapping(self.recbole_config)
        return super().convert(model)

    @torch.no_grad()
    def from_state(self, state: Dict[str, Any]) -> SequenceTransformer:
        """Our transformer holding a RecBole SASRec state dict (RecBole's names): every tensor the config
        implies, of the shape it implies, and nothing else, so a checkpoint whose state and config disagree
        is refused rather than truncated."""
        c = self.recbole_config
        arch = ArchSpec(c["hidden_size"], c["inner_size"], c["n_heads"], c["n_layers"])
        rows, positions = (_rows(state, f"{name}.weight") for name in ("item_embedding", "position_embedding"))
        dense = SequenceTransformer(arch, item_count(rows, 1, "the state_dict's item_embedding.weight"), positions,
                                    c["hidden_dropout_prob"], c["layer_norm_eps"], style=self.style())
        names = self.user_names(arch.layers)
        want = {names[ours]: t for ours, t in dense.state_dict().items()}  # RecBole's name -> our tensor
        implied = f"final_config_dict's hidden_size={arch.hidden}, inner_size={arch.inner}, n_layers={arch.layers}"
        for what, keys, its in (("lacks", sorted(set(want) - set(state)), "has"),
                                ("has", sorted(map(str, set(state) - set(want))), "does not")):
            if keys:
                raise CheckpointError(f"the state_dict {what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}, "
                                      f"which the SASRec of {implied} {its}; the checkpoint's config and weights "
                                      "disagree (is it a SASRec's?)")
        for name, t in want.items():
            value = state[name]
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"the state_dict's {name} is a {type(value).__name__}, not a tensor")
            if value.shape != t.shape:
                raise CheckpointError(f"the state_dict's {name} has shape {tuple(value.shape)}, but {implied} imply "
                                      f"{tuple(t.shape)}; the checkpoint's config and weights disagree")
            if not bool(torch.isfinite(value).all()):  # named here by RecBole's name, not by ours after conversion
                raise CheckpointError(f"the state_dict's {name} holds NaN or infinity (the training diverged); start "
                                      "from a checkpoint of finite weights, e.g. an earlier one")
            t.copy_(value)
        return dense

    def native(self, dense: SequenceTransformer, directory: str) -> Optional[str]:
        if not vanilla(dense.arch):
            return None
        a = dense.arch
        config = {**(self.recbole_config or {}), "hidden_size": a.hidden, "inner_size": a.inner,
                  "n_layers": a.layers, "n_heads": a.heads, "MAX_ITEM_LIST_LENGTH": dense.max_len}
        os.makedirs(directory, exist_ok=True)
        self.mapping = recbole_mapping(config)
        names = self.user_names(a.layers)
        save_file({names[k]: v.contiguous() for k, v in dense.state_dict().items()}, os.path.join(directory, WEIGHTS))
        with open(os.path.join(directory, "config.yaml"), "w") as fh:
            yaml.safe_dump(config, fh, sort_keys=False)
        return directory


def _lacks(model: nn.Module) -> List[str]:
    """What of RecBole SASRec's own attributes ``model`` lacks: its encoder and the settings it was built from
    (a user's class that is merely named SASRec lacks some)."""
    encoder = [] if isinstance(getattr(model, "trm_encoder", None), nn.Module) else ["trm_encoder"]
    return encoder + [name for name in ATTRIBUTES.values() if not hasattr(model, name)]


class _Stub:
    """Stands in for every class a RecBole checkpoint pickles besides tensors and containers (its
    Config, enums, ...): it keeps the state it is given and runs no code."""

    def __init__(self, *args, **kwargs) -> None:
        self.state: Any = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Unpickler(pickle.Unpickler):
    """Rebuilds tensors, storages and plain containers only; any other class becomes a ``_Stub``, so a
    checkpoint (a pickle) can be read without RecBole installed and without running its code."""

    SAFE = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "object"),
            ("builtins", "slice"), ("copyreg", "_reconstructor"), ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_parameter"), ("torch", "device"), ("torch", "Size")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.SAFE:
            return getattr(importlib.import_module(module), name)
        return type(name, (_Stub,), {"__module__": "stub." + module})


class _RestrictedPickle:
    """The ``pickle_module`` torch.load reads the checkpoint with."""

    Unpickler = _Unpickler
    load = staticmethod(lambda fh, **kw: _Unpickler(fh, **kw).load())


def _rows(state: Dict[str, Any], name: str) -> int:
    """The row count of an embedding table in a RecBole state dict: the vocabulary or the positions."""
    table = state.get(name)
    if not isinstance(table, torch.Tensor) or table.dim() != 2:
        found = "nothing" if table is None else f"a {table.dim()}-D tensor" if isinstance(table, torch.Tensor) \
            else f"a {type(table).__name__}"
        raise CheckpointError(f"the state_dict's {name} is {found}, expected a 2-D (rows, hidden_size) tensor; "
                              "is it a SASRec's?")
    return table.shape[0]


def _settings(settings: Dict[str, Any]) -> Dict[str, Any]:
    """The SASRec keys of a checkpoint's final_config_dict (RecBole records them all), each checked to be
    of the kind RecBole gives it."""
    missing = [k for k in CONFIG_KEYS if k not in settings]
    if missing:
        raise CheckpointError(f"final_config_dict lacks {', '.join(missing)}; a RecBole SASRec checkpoint records "
                              f"{', '.join(CONFIG_KEYS)}: save it with RecBole's trainer")
    config = {k: settings[k] for k in CONFIG_KEYS}
    for key in ("hidden_size", "inner_size", "n_layers", "n_heads", "MAX_ITEM_LIST_LENGTH"):
        config[key] = whole(f"final_config_dict {key}", config[key])
    for key in ("hidden_dropout_prob", "attn_dropout_prob"):
        config[key] = real(f"final_config_dict {key}", config[key], low=0.0, below=1.0)
    config["layer_norm_eps"] = real("final_config_dict layer_norm_eps", config["layer_norm_eps"], above=0.0)
    return config


def read_checkpoint(path: str) -> Tuple[SequenceTransformer, "RecBoleSASRecAdapter"]:
    """A RecBole SASRec checkpoint (``saved/SASRec-*.pth``) as our sliceable transformer, read without
    RecBole and without unpickling any class but tensors. Its item rows are numbered as RecBole numbers
    the training file (``item_numbering: recbole``)."""
    try:
        ckpt = torch.load(path, map_location="cpu", pickle_module=_RestrictedPickle, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a foreign or damaged file, whatever torch makes of it
        raise CheckpointError(f"{path} is not a readable RecBole checkpoint ({first_line(exc)})") from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    config = getattr(ckpt.get("config"), "state", None) if isinstance(ckpt, dict) else None
    settings = config.get("final_config_dict") if isinstance(config, dict) else None
    if not isinstance(state, dict) or not isinstance(settings, dict):
        raise CheckpointError(f"{path} holds no RecBole state_dict and config; save it with RecBole's trainer")
    if settings.get("model") != "SASRec":
        raise ConfigError(f"{path} holds a RecBole {settings.get('model')!r}; the RecBole adapter reads SASRec")
    try:
        adapter = RecBoleSASRecAdapter(_settings(settings))
        adapter.mapping = recbole_mapping(adapter.recbole_config)
        return adapter.from_state(state), adapter
    except (ConfigError, CheckpointError) as exc:  # the file's config and weights are at fault: name it
        raise CheckpointError(f"{path}: {exc}") from None


