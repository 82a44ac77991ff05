"""RecBole's ``SASRec`` (recbole.model.sequential_recommender.SASRec): a declared mapping over its names.

RecBole is not a dependency: the adapter reads the model object's modules by name, so it needs
RecBole only to build that object. A decision with softmax attention and no gates goes back as a
RecBole state dict (``native/model.safetensors``, RecBole's parameter names) and the config keys
RecBole builds SASRec from (``native/config.yaml``: hidden_size, inner_size, n_layers, n_heads, …):
``SASRec(config, dataset).load_state_dict(safetensors.torch.load_file(...))`` restores it.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

import yaml
from safetensors.torch import save_file
from torch import nn

from compress.adapters.base import register_adapter, vanilla
from compress.adapters.declared import DeclaredAdapter, activation_from
from compress.backbones.transformer import SequenceTransformer
from compress.errors import ConfigError
from compress.layout import WEIGHTS

ACTIVATIONS = {"gelu": "gelu", "relu": "relu"}
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
        return type(model).__name__ == "SASRec" and isinstance(getattr(model, "trm_encoder", None), nn.Module)

    def convert(self, model: nn.Module) -> SequenceTransformer:
        if not self.matches(model):
            raise ConfigError(f"{type(model).__name__} is not a RecBole SASRec (no trm_encoder)")
        self.recbole_config = {"hidden_size": model.hidden_size, "inner_size": model.inner_size,
                               "n_layers": model.n_layers, "n_heads": model.n_heads,
                               "hidden_dropout_prob": model.hidden_dropout_prob,
                               "attn_dropout_prob": model.attn_dropout_prob, "hidden_act": model.hidden_act,
                               "layer_norm_eps": model.layer_norm_eps, "MAX_ITEM_LIST_LENGTH": model.max_seq_length}
        self.mapping = recbole_mapping(self.recbole_config)
        return super().convert(model)

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
