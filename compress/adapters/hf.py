"""Hugging Face adapters: recommenders built on ``transformers.BertModel`` (BERT4Rec-style, cloze)
and ``transformers.GPT2Model`` (causal, next item).

Both are declared mappings over the HF module names plus the few things a mapping cannot say: BERT's
token-type embedding (row 0, which every position gets) is folded into the position embedding, and
each model's config is checked for options our transformer does not compute. The item vocabulary is
the word embedding: ids 1..n_items are items, 0 is padding and, for BERT, ``n_items + 1`` (the last
row) is the mask token, so a config whose pad_token_id is another row is refused. Scores are hidden
states times the word embedding (a tied head); a Hugging Face head class around the model
(BertForMaskedLM, an untied GPT2LMHeadModel, a classifier) or the user's own module adding parameters
(an output layer) or other models scores otherwise and is refused, while a GPT2LMHeadModel whose lm_head
is the tied word embedding wraps as its GPT2Model.

``native`` writes a smaller decision back as the user's own HF class (``from_pretrained`` loads it)
when the decision keeps softmax attention and no gates, which HF's classes cannot express.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from compress.adapters.base import register_adapter, vanilla
from compress.adapters.declared import DeclaredAdapter, activation_from, check_padding
from compress.backbones.transformer import SequenceTransformer
from compress.errors import ConfigError

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("the Hugging Face adapters need transformers: pip install transformers") from None
    return transformers


def located(model: nn.Module, cls_name: str) -> List[Tuple[str, nn.Module]]:
    """(path, module) of ``model`` itself or each submodule of class ``cls_name``."""
    return [(name, m) for name, m in model.named_modules() if type(m).__name__ == cls_name]


def check_head(model: nn.Module, inner: nn.Module) -> None:
    """Refuse a model that scores otherwise than ``inner``'s hidden states × its item embedding, which is
    what compress computes, so that no part of the user's recommender is dropped without a word: a
    Hugging Face head class around ``inner`` (BertForMaskedLM, an untied GPT2LMHeadModel,
    BertForSequenceClassification, GPT2DoubleHeadsModel, ...), or the user's own module holding ``inner``
    beside parameters of its own (an output layer) or other Hugging Face models. A head that is that
    table itself (GPT-2's default tied lm_head, no bias, no other parameter) is what we compute."""
    if model is inner:
        return
    pretrained = _transformers().PreTrainedModel
    attr = next(name for name, m in model.named_modules() if m is inner)
    if isinstance(model, pretrained):
        extra = _parameters_outside(model, [inner])
        head = model.get_output_embeddings()
        tied = head is None or (getattr(head, "weight", None) is inner.get_input_embeddings().weight
                                and getattr(head, "bias", None) is None)
        if extra or not tied:
            found = _listed(extra) or "an untied output layer"
            raise ConfigError(f"{type(model).__name__} scores with its own head ({found}), not the tied item embedding "
                              f"table compress scores with; wrap the inner {type(inner).__name__} (model.{attr}) if "
                              "the recommender's scores are its hidden states × item embeddings")
        return
    # the user's own module: other HF models (a head class around inner is not one: its head's parameters are
    # outside inner) and parameters of its own
    others = {name: m for name, m in model.named_modules()
              if isinstance(m, pretrained) and not any(sub is inner for sub in m.modules())}
    extra = _parameters_outside(model, [inner, *others.values()])
    if extra or others:
        held = [f"parameters of its own ({_listed(extra)})"] if extra else []
        held += [f"other Hugging Face models ({_listed([f'{n}: {type(m).__name__}' for n, m in others.items()])})"
                 ] if others else []
        raise ConfigError(f"{type(model).__name__} holds {' and '.join(held)} beside its {type(inner).__name__} "
                          f"(model.{attr}), which compress would drop: it scores the hidden states × the item "
                          f"embedding alone; wrap model.{attr} itself if those are the recommender's scores, or "
                          "describe the whole model with the declared adapter")


def _parameters_outside(model: nn.Module, parts: List[nn.Module]) -> List[str]:
    """The names of ``model``'s parameters that none of ``parts`` holds (a tied one is held)."""
    held = {id(p) for part in parts for p in part.parameters()}
    return [name for name, p in model.named_parameters() if id(p) not in held]


def _listed(names: List[str]) -> str:
    """The first three ``names``, comma-separated, "..." after them when there are more."""
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def _check(cfg, wanted: Dict[str, Any], family: str) -> None:
    for key, value in wanted.items():
        got = getattr(cfg, key, value)
        if got != value:
            raise ConfigError(f"{family} config has {key}={got!r}; the {family} adapter supports {key}={value!r} "
                              "only (describe other models with the declared adapter)")


class HFAdapter(DeclaredAdapter):
    """Shared by the BERT and GPT-2 adapters: locate the HF model, build the mapping from its config."""
    cls_name = ""
    config_cls = ""
    has_native = True

    def __init__(self, hf_config: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(None)
        self.hf_config = hf_config

    def to_dict(self) -> Dict[str, Any]:
        return {"hf_config": self.hf_config}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "HFAdapter":
        return cls(d.get("hf_config"))

    def matches(self, model: nn.Module) -> bool:
        return bool(located(model, self.cls_name))

    def hf_model(self, model: nn.Module) -> nn.Module:
        """The one ``cls_name`` model inside ``model`` (or ``model`` itself), whose scores are compress's."""
        found = located(model, self.cls_name)
        if not found:
            raise ConfigError(f"no {self.cls_name} inside {type(model).__name__}; the {self.name} adapter wraps a "
                              f"{self.cls_name} or a module holding one")
        if len(found) > 1:
            raise ConfigError(f"{type(model).__name__} holds more than one {self.cls_name} "
                              f"({_listed([name for name, _ in found])}); pass the one that is the recommender, "
                              f"e.g. model.{found[0][0]}")
        check_head(model, found[0][1])
        check_padding(getattr(found[0][1].config, "pad_token_id", None), f"the {self.cls_name} config", "pad_token_id")
        return found[0][1]

    def mapping_for(self, cfg) -> Dict[str, Any]:
        raise NotImplementedError

    def convert(self, model: nn.Module) -> SequenceTransformer:
        hf = self.hf_model(model)
        self.mapping = self.mapping_for(hf.config)
        self.hf_config = json.loads(hf.config.to_json_string(use_diff=False))  # JSON-native, as saved
        return super().convert(hf)

    def sizes(self, dense: SequenceTransformer) -> Dict[str, int]:
        """The native config's sizes for ``dense``: widths, depth, heads and the item vocabulary, which
        grows when wrap(..., item_ids=...) added rows for items the data appended."""
        raise NotImplementedError

    def native(self, dense: SequenceTransformer, directory: str) -> Optional[str]:
        if not vanilla(dense.arch) or self.hf_config is None:
            return None
        transformers = _transformers()
        cfg_cls = getattr(transformers, self.config_cls)
        drop = {"architectures", "transformers_version", "model_type", "_name_or_path", "dtype", "torch_dtype"}
        cfg = cfg_cls(**{**{k: v for k, v in self.hf_config.items() if k not in drop}, **self.sizes(dense)})
        model = getattr(transformers, self.cls_name)(cfg).eval()
        self.mapping = self.mapping_for(cfg)
        self.write_into(model, dense)
        self.after_write(model)
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # one small file: no "Writing model shards" bar
        try:
            model.save_pretrained(directory)
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
        return directory

    def after_write(self, model: nn.Module) -> None:
        """Parts of the HF model that our transformer does not have."""


@register_adapter
class HFBertAdapter(HFAdapter):
    name = "hf-bert"
    cls_name = "BertModel"
    config_cls = "BertConfig"

    def mapping_for(self, cfg) -> Dict[str, Any]:
        _check(cfg, {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False},
               "BERT")
        if cfg.type_vocab_size < 1:  # token type 0, which every position gets, is folded into the positions
            raise ConfigError(f"BERT config has type_vocab_size={cfg.type_vocab_size}; the BERT adapter needs "
                              "type_vocab_size >= 1 (BertModel itself looks up token type 0 for every position)")
        return {"item_embedding": "embeddings.word_embeddings", "position_embedding": "embeddings.position_embeddings",
                "embedding_norm": "embeddings.LayerNorm", "layers": "encoder.layer",
                "attention": {"query": "attention.self.query", "key": "attention.self.key",
                              "value": "attention.self.value", "output": "attention.output.dense"},
                "ffn_in": "intermediate.dense", "ffn_out": "output.dense",
                "attention_norm": "attention.output.LayerNorm", "ffn_norm": "output.LayerNorm",
                "heads": cfg.num_attention_heads, "norm": "post", "causal": False,
                "activation": activation_from(ACTIVATIONS, cfg.hidden_act, "BERT hidden_act"),
                "objective": "cloze", "dropout": cfg.hidden_dropout_prob}

    @torch.no_grad()
    def convert(self, model: nn.Module) -> SequenceTransformer:
        dense = super().convert(model)
        token_type = self.hf_model(model).embeddings.token_type_embeddings.weight[0]  # (d,): every position's type 0
        dense.position_embedding.weight += token_type
        return dense

    def sizes(self, dense: SequenceTransformer) -> Dict[str, int]:
        a = dense.arch
        return {"hidden_size": a.hidden, "intermediate_size": a.inner, "num_hidden_layers": a.layers,
                "num_attention_heads": a.heads, "vocab_size": dense.n_items + 2}  # + padding + mask token

    @torch.no_grad()
    def after_write(self, model: nn.Module) -> None:
        model.embeddings.token_type_embeddings.weight.zero_()  # folded into the position embedding
        if getattr(model, "pooler", None) is not None:  # not part of the recommender: zero, not random
            model.pooler.dense.weight.zero_()
            model.pooler.dense.bias.zero_()


@register_adapter
class HFGPT2Adapter(HFAdapter):
    name = "hf-gpt2"
    cls_name = "GPT2Model"
    config_cls = "GPT2Config"

    def mapping_for(self, cfg) -> Dict[str, Any]:
        _check(cfg, {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                     "reorder_and_upcast_attn": False, "add_cross_attention": False}, "GPT-2")
        return {"item_embedding": "wte", "position_embedding": "wpe", "layers": "h",
                "attention": {"qkv": "attn.c_attn", "output": "attn.c_proj"}, "ffn_in": "mlp.c_fc",
                "ffn_out": "mlp.c_proj", "attention_norm": "ln_1", "ffn_norm": "ln_2", "final_norm": "ln_f",
                "heads": cfg.n_head, "norm": "pre", "causal": True,
                "activation": activation_from(ACTIVATIONS, cfg.activation_function, "GPT-2 activation_function"),
                "objective": "next", "dropout": cfg.resid_pdrop}

    def sizes(self, dense: SequenceTransformer) -> Dict[str, int]:
        a = dense.arch
        return {"n_embd": a.hidden, "n_inner": a.inner, "n_layer": a.layers, "n_head": a.heads,
                "vocab_size": dense.n_items + 1}  # + padding

