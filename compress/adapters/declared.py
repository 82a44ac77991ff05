"""The declared adapter: any transformer recommender whose parts a mapping names wraps without new code.

A mapping (a dict, or a YAML file of one) names module paths from the model's root; the per-layer
entries are paths inside each layer::

    item_embedding: item_emb          # nn.Embedding (n_items + 1, d), row 0 = padding (+1 mask row: cloze)
    position_embedding: pos_emb       # nn.Embedding (N, d)
    embedding_norm: emb_ln            # optional LayerNorm on item + position embeddings
    layers: blocks                    # ModuleList of transformer layers
    attention: {query: attn.q, key: attn.k, value: attn.v, output: attn.o}   # or {qkv: attn.qkv, output: …}
    ffn_in: mlp.fc1                   # d -> D
    ffn_out: mlp.fc2                  # D -> d
    attention_norm: ln1
    ffn_norm: ln2
    final_norm: ln_f                  # optional (pre-LN models)
    heads: 4
    norm: post                        # post (SASRec, BERT) or pre (GPT-2)
    causal: true
    activation: gelu                  # gelu, gelu_tanh, relu
    objective: next                   # next (causal) or cloze (bidirectional, mask token = n_items + 1)
    dropout: 0.2

Projections may be ``nn.Linear`` or Hugging Face's ``Conv1D`` (weight stored as (in, out)); a packed
``qkv`` holds query, key and value in that order along its output. The model's scores must be its
hidden state times the item embedding (a tied head), as SASRec, BERT4Rec and their HF versions do.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
import yaml
from torch import nn

from compress.adapters.base import Adapter, register_adapter
from compress.arch import ArchSpec
from compress.backbones.transformer import MODEL_PARTS, SequenceTransformer, Style, part_path
from compress.bounds import whole
from compress.errors import CheckpointError, ConfigError
from compress.nn.block import LAYER_PARTS

DOCS = "see the declared-adapter format in compress/adapters/declared.py or README 'Wrap your own model'"
REQUIRED = ("item_embedding", "position_embedding", "layers", "attention", "ffn_in", "ffn_out", "attention_norm",
            "ffn_norm", "heads")
OPTIONAL = ("embedding_norm", "final_norm", "norm", "causal", "activation", "objective", "dropout", "mask_prob")
STYLE_KEYS = ("norm", "causal", "activation", "objective", "mask_prob")
ROLE_NAMES = {"ffn_in": "FFN input projection", "ffn_out": "FFN output projection",
              "attention_norm": "attention LayerNorm", "ffn_norm": "FFN LayerNorm"}


def read_mapping(mapping: Union[str, Dict[str, Any]]) -> Dict[str, Any]:
    """A mapping dict, or a YAML file holding one; unknown or missing keys are named."""
    if isinstance(mapping, str):
        if not os.path.isfile(mapping):
            raise ConfigError(f"declared mapping {mapping} not found")
        with open(mapping) as fh:
            try:
                mapping = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise ConfigError(f"declared mapping {fh.name} is not valid YAML: {exc}") from None
    if not isinstance(mapping, dict):
        raise ConfigError(f"a declared mapping is a dict of module paths; {DOCS}")
    unknown = set(mapping) - set(REQUIRED) - set(OPTIONAL)
    missing = [k for k in REQUIRED if k not in mapping]
    if unknown or missing:
        what = (f"unknown key(s) {', '.join(sorted(unknown))}" if unknown else "") + \
            ("; " if unknown and missing else "") + (f"missing key(s) {', '.join(missing)}" if missing else "")
        raise ConfigError(f"declared mapping: {what}; {DOCS}")
    att = mapping["attention"]
    if not isinstance(att, dict) or "output" not in att or not ({"query", "key", "value"} <= set(att) or "qkv" in att):
        raise ConfigError(f"declared mapping: attention needs 'output' and either query/key/value or qkv; {DOCS}")
    whole("declared mapping: heads", mapping["heads"])
    return dict(mapping)


def activation_from(table: Dict[str, str], value: Any, where: str) -> str:
    """Our activation name for the user's ``value`` (e.g. HF's "gelu_new"), or an error naming the choices."""
    if value not in table:
        raise ConfigError(f"{where} {value!r} is not supported; use one of {', '.join(table)}")
    return table[value]


def find(root: nn.Module, path: str, where: str, role: str) -> nn.Module:
    """The submodule at dotted ``path`` under ``root``, or a ConfigError naming what was not found."""
    module = root
    for part in path.split("."):
        nxt = module._modules.get(part) if part in module._modules else getattr(module, part, None)
        if not isinstance(nxt, nn.Module):
            raise ConfigError(f"no {role} found at {where + '.' if where else ''}{path} "
                              f"(no module {part!r} under {type(module).__name__}); {DOCS}")
        module = nxt
    return module


def weight_of(m: nn.Module, where: str) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(weight as (out, in), bias) of an nn.Linear or an HF Conv1D (which stores (in, out))."""
    if isinstance(m, nn.Linear):
        return m.weight, m.bias
    if type(m).__name__ == "Conv1D" and hasattr(m, "nf"):
        return m.weight.T, m.bias
    raise ConfigError(f"{where} is a {type(m).__name__}; a projection must be nn.Linear or Conv1D; {DOCS}")


def set_weight(m: nn.Module, w: torch.Tensor, b: Optional[torch.Tensor]) -> None:
    """Write (out, in) weight and bias into an nn.Linear or a Conv1D (a bias it lacks must be zero)."""
    m.weight.copy_(w if isinstance(m, nn.Linear) else w.T)
    if m.bias is not None:
        m.bias.copy_(b)
    elif b is not None and bool(b.abs().max() > 0):
        raise CheckpointError(f"a {type(m).__name__} without bias cannot hold the trained non-zero bias; "
                              "export the dense model instead")


@register_adapter
class DeclaredAdapter(Adapter):
    name = "declared"

    def __init__(self, mapping: Union[str, Dict[str, Any], None] = None) -> None:
        self.mapping = read_mapping(mapping) if mapping is not None else None
        if self.mapping is not None:
            self.style()  # causal, norm, activation and objective checked now, not when a model is wrapped

    def to_dict(self) -> Dict[str, Any]:
        return {"mapping": self.mapping}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DeclaredAdapter":
        return cls(d.get("mapping"))

    def matches(self, model: nn.Module) -> bool:
        if self.mapping is None:
            return False
        try:
            self.pairs(model, None)
        except ConfigError:
            return False
        return True

    def _mapping(self) -> Dict[str, Any]:
        if self.mapping is None:
            raise ConfigError(f"the declared adapter needs a mapping: DeclaredAdapter(mapping); {DOCS}")
        return self.mapping

    def style(self) -> Style:
        return Style(**{k: self.mapping[k] for k in STYLE_KEYS if k in self.mapping},
                     embedding_norm="embedding_norm" in self.mapping, final_norm="final_norm" in self.mapping)

    def layer_modules(self, model: nn.Module) -> List[nn.Module]:
        layers = find(model, self.mapping["layers"], "", "layer list")
        if not isinstance(layers, (nn.ModuleList, nn.Sequential)) or len(layers) == 0:
            raise ConfigError(f"{self.mapping['layers']} is a {type(layers).__name__}, not a non-empty ModuleList of "
                              f"layers; {DOCS}")
        return list(layers)

    def pairs(self, model: nn.Module, dense: Optional[SequenceTransformer]) -> Iterator[Tuple[str, nn.Module, Any]]:
        """(role, the user's module, the matching part of ``dense`` or None) for every mapped part."""
        m = self._mapping()

        def part(layer: Optional[nn.Module], role: str) -> Optional[nn.Module]:
            return None if layer is None else layer.get_submodule(LAYER_PARTS[role])

        for role in ("item_embedding", "position_embedding", "embedding_norm", "final_norm"):
            if role in m:
                yield role, find(model, m[role], "", role), getattr(dense, MODEL_PARTS[role], None)
        layers = self.layer_modules(model)
        for i, layer in enumerate(layers):
            where = f"{m['layers']}.{i}"
            ours = dense.layers[i] if dense is not None else None
            att = m["attention"]
            if "qkv" in att:  # the three projections' common parent on our side
                yield "qkv", find(layer, att["qkv"], where, "packed qkv projection"), \
                    None if ours is None else ours.get_submodule(LAYER_PARTS["query"].rsplit(".", 1)[0])
            else:
                for name in ("query", "key", "value"):
                    yield name, find(layer, att[name], where, f"attention {name} projection"), part(ours, name)
            yield "output", find(layer, att["output"], where, "attention output projection"), part(ours, "output")
            for role in ("ffn_in", "ffn_out", "attention_norm", "ffn_norm"):
                yield role, find(layer, m[role], where, ROLE_NAMES[role]), part(ours, role)

    def user_names(self, layers: int) -> Dict[str, str]:
        """Our parameter name -> the user's, for every mapped part of a model of ``layers`` layers (a
        packed qkv has no name of its own per projection and is left out)."""
        m, out = self._mapping(), {}
        for role in ("item_embedding", "position_embedding", "embedding_norm", "final_norm"):
            if role in m:
                out[MODEL_PARTS[role]] = m[role]
        for i in range(layers):
            parts = {role: path for role, path in m["attention"].items() if role != "qkv"}
            parts.update({role: m[role] for role in ROLE_NAMES})
            for role, path in parts.items():
                out[part_path(role, i)] = f"{m['layers']}.{i}.{path}"
        return {f"{ours}.{p}": f"{theirs}.{p}" for ours, theirs in out.items() for p in ("weight", "bias")}

    def read_shape(self, model: nn.Module) -> Tuple[ArchSpec, int, int, float]:
        """(full ArchSpec, n_items, N, LayerNorm eps) read off the user's modules."""
        m = self._mapping()
        items = find(model, m["item_embedding"], "", "item embedding")
        positions = find(model, m["position_embedding"], "", "position embedding")
        layers = self.layer_modules(model)
        where = f"{m['layers']}.0"
        ffn_w, _ = weight_of(find(layers[0], m["ffn_in"], where, "FFN input projection"), f"{where}.{m['ffn_in']}")
        norm = find(layers[0], m["attention_norm"], where, "attention LayerNorm")
        hidden = items.weight.shape[1]
        arch = ArchSpec(hidden=hidden, inner=ffn_w.shape[0], heads=int(m["heads"]), layers=len(layers))
        extra = 2 if self.style().objective == "cloze" else 1
        return arch, items.weight.shape[0] - extra, positions.weight.shape[0], float(getattr(norm, "eps", 1e-12))

    @torch.no_grad()
    def convert(self, model: nn.Module) -> SequenceTransformer:
        arch, n_items, max_len, eps = self.read_shape(model)
        dense = SequenceTransformer(arch, n_items, max_len, float(self.mapping.get("dropout", 0.2)), eps,
                                    style=self.style())
        for role, theirs, ours in self.pairs(model, dense):
            if role in ("item_embedding", "position_embedding"):
                if theirs.weight.shape != ours.weight.shape:
                    raise ConfigError(f"{role} has shape {tuple(theirs.weight.shape)}, expected "
                                      f"{tuple(ours.weight.shape)}; {DOCS}")
                ours.weight.copy_(theirs.weight)
            elif role.endswith("norm"):
                ours.weight.copy_(theirs.weight)
                ours.bias.copy_(theirs.bias)
            elif role == "qkv":
                w, b = weight_of(theirs, "qkv")
                for part, wp, bp in zip((ours.query, ours.key, ours.value), w.chunk(3, 0),
                                        b.chunk(3, 0) if b is not None else (None,) * 3):
                    set_weight(part, wp, bp if bp is not None else torch.zeros(wp.shape[0]))
            else:
                w, b = weight_of(theirs, role)
                set_weight(ours, w, b if b is not None else torch.zeros(w.shape[0]))
        return dense.train(model.training)

    @torch.no_grad()
    def write_into(self, model: nn.Module, dense: SequenceTransformer) -> None:
        """The inverse of ``convert``: ``dense``'s weights into the user's ``model`` of the same shape."""
        for role, theirs, ours in self.pairs(model, dense):
            if role in ("item_embedding", "position_embedding"):
                theirs.weight.copy_(ours.weight)
            elif role.endswith("norm"):
                theirs.weight.copy_(ours.weight)
                theirs.bias.copy_(ours.bias)
            elif role == "qkv":
                set_weight(theirs, torch.cat([p.weight for p in (ours.query, ours.key, ours.value)]),
                           torch.cat([p.bias for p in (ours.query, ours.key, ours.value)]))
            else:
                set_weight(theirs, ours.weight, ours.bias)
