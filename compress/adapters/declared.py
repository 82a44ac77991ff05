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
``qkv`` holds query, key and value in that order along its output. Wrapping checks every mapped module
against the sizes the mapping implies (d = the item embedding's width; d -> d projections, d -> 3d for
``qkv``, d -> inner -> d for the FFN with one inner size for all layers; norms are ``nn.LayerNorm(d)``
with a weight and a bias, all with one eps) and names the key and path of the first that differs; an
item embedding whose ``padding_idx`` is another row than 0 is refused, as its items would be named one off.
The model's scores must be its hidden state times the item embedding (a tied head), as SASRec,
BERT4Rec and their HF versions do.
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
from compress.bounds import real, whole
from compress.errors import CheckpointError, ConfigError
from compress.files import first_line
from compress.nn.block import LAYER_PARTS

DOCS = "see the declared-adapter format in compress/adapters/declared.py or README 'Wrap your own model'"
REQUIRED = ("item_embedding", "position_embedding", "layers", "attention", "ffn_in", "ffn_out", "attention_norm",
            "ffn_norm", "heads")
OPTIONAL = ("embedding_norm", "final_norm", "norm", "causal", "activation", "objective", "dropout", "mask_prob")
STYLE_KEYS = ("norm", "causal", "activation", "objective", "mask_prob")
ROLE_NAMES = {"ffn_in": "FFN input projection", "ffn_out": "FFN output projection",
              "attention_norm": "attention LayerNorm", "ffn_norm": "FFN LayerNorm"}


PATHS = ("item_embedding", "position_embedding", "embedding_norm", "final_norm", "layers", "ffn_in", "ffn_out",
         "attention_norm", "ffn_norm")
SEPARATE = ("query", "key", "value")
ATTENTION_ROLES = ("qkv", *SEPARATE, "output")
PROJECTION_SIZES = {"qkv": ("d", "3d"), "ffn_in": ("d", "inner"), "ffn_out": ("inner", "d")}  # the rest: d -> d


def read_mapping(mapping: Union[str, "os.PathLike[str]", Dict[str, Any]]) -> Dict[str, Any]:
    """A mapping dict, or a YAML file holding one (a str or pathlib path); unknown or missing keys and
    values of the wrong type are named here, before any model is read."""
    if isinstance(mapping, (str, os.PathLike)):
        mapping = _read_yaml(os.fspath(mapping))
    if not isinstance(mapping, dict):
        raise ConfigError(f"a declared mapping is a dict of module paths or the path of a YAML file holding one, got "
                          f"{type(mapping).__name__}; {DOCS}")
    unknown = set(mapping) - set(REQUIRED) - set(OPTIONAL)
    missing = [k for k in REQUIRED if k not in mapping]
    if unknown or missing:
        what = (f"unknown key(s) {', '.join(sorted(map(str, unknown)))}" if unknown else "") + \
            ("; " if unknown and missing else "") + (f"missing key(s) {', '.join(missing)}" if missing else "")
        raise ConfigError(f"declared mapping: {what}; {DOCS}")
    _check_attention(mapping["attention"])
    for key in PATHS:
        if key in mapping:
            _check_path(key, mapping[key])
    whole("declared mapping: heads", mapping["heads"])
    if "dropout" in mapping:
        real("declared mapping: dropout", mapping["dropout"], low=0.0, below=1.0)
    return dict(mapping)


def _read_yaml(path: str) -> Any:
    """The YAML document in ``path``; a file that is not UTF-8 YAML text (a checkpoint passed by mistake, a
    syntax error) is refused in one line naming the problem and where it is."""
    if not os.path.isfile(path):
        raise ConfigError(f"declared mapping {path} not found")
    try:
        with open(path, encoding="utf-8") as fh:
            mapping = yaml.safe_load(fh)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"declared mapping {path} is not UTF-8 text (byte {exc.start}); give the YAML file of the "
                          f"mapping; {DOCS}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read declared mapping {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise ConfigError(f"declared mapping {path} is not valid YAML: {problem}{where}") from None
    if mapping is None:
        raise ConfigError(f"declared mapping {path} is empty; {DOCS}")
    return mapping


def _check_attention(att: Any) -> None:
    """``attention`` names ``output`` and either a packed ``qkv`` or all of query/key/value, never both."""
    if not isinstance(att, dict) or "output" not in att or not (set(SEPARATE) <= set(att) or "qkv" in att):
        raise ConfigError(f"declared mapping: attention needs 'output' and either query/key/value or qkv; {DOCS}")
    unknown = set(att) - {"qkv", "output", *SEPARATE}
    if unknown:
        raise ConfigError(f"declared mapping: attention has unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                          f"it takes output and either qkv or query/key/value; {DOCS}")
    both = sorted(set(SEPARATE) & set(att))
    if "qkv" in att and both:
        raise ConfigError(f"declared mapping: attention gives both qkv and {', '.join(both)}; name either one packed "
                          f"qkv projection or separate query/key/value ones; {DOCS}")
    for key, path in att.items():
        _check_path(f"attention.{key}", path)


def _check_path(key: str, path: Any) -> None:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"declared mapping: {key} must be a module path (a dotted string such as 'blocks' or "
                          f"'mlp.fc1'), got {path!r}; {DOCS}")


def activation_from(table: Dict[str, str], value: Any, where: str) -> str:
    """Our activation name for the user's ``value`` (e.g. HF's "gelu_new"), or an error naming the choices
    (also for a value that is not a name at all: a list or dict read from a config)."""
    if not isinstance(value, str) or value not in table:
        raise ConfigError(f"{where} {value!r} is not supported; use one of {', '.join(table)}")
    return table[value]


def check_padding(row: Any, where: str, key: str) -> None:
    """Refuse a padding row other than row 0 (``padding_idx``, Hugging Face's ``pad_token_id``): compress
    reads row 0 as padding and row i as item i, so the model's rows would all be named one off."""
    if row is not None and row != 0:
        raise ConfigError(f"{where} has {key} {row!r}: compress numbers items 1..n with row 0 the padding row; move "
                          f"row {row!r} to the front of the item table, the items after it in order, set {key} 0 and "
                          "give item_ids naming rows 1..n")


def item_count(rows: int, extra: int, where: str) -> int:
    """The items of an item table of ``rows`` rows, ``extra`` of which are not items (padding, the mask
    token), refused when it holds none."""
    if rows <= extra:
        needs = "row 0 for padding, a last row for the mask token" if extra == 2 else "row 0 for padding"
        raise ConfigError(f"{where} has {rows} row(s); it needs {extra + 1} or more: {needs} and one per item")
    return rows - extra


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


def _check_embedding(m: nn.Module, where: str, d: int) -> int:
    """The width of an nn.Embedding that must be ``d`` wide (any width for the first, the item table)."""
    if not isinstance(m, nn.Embedding):
        raise ConfigError(f"{where} is a {type(m).__name__}, expected an nn.Embedding (one row per id); {DOCS}")
    if d and m.embedding_dim != d:
        raise ConfigError(f"{where} is {m.embedding_dim} wide, expected {d}, the hidden size d of item_embedding; "
                          f"{DOCS}")
    return m.embedding_dim


def _check_norm(m: nn.Module, where: str, d: int, eps: float) -> float:
    """The eps of an nn.LayerNorm over ``d`` features with a weight and a bias, as ours; it must equal ``eps``
    (the first LayerNorm's) when that is set, since our transformer has one eps for all."""
    if not isinstance(m, nn.LayerNorm):
        raise ConfigError(f"{where} is a {type(m).__name__}, expected an nn.LayerNorm({d}): compress computes "
                          f"LayerNorm only (RMSNorm and other norms are not supported); {DOCS}")
    if tuple(m.normalized_shape) != (d,):
        raise ConfigError(f"{where} normalizes over {tuple(m.normalized_shape)}, expected ({d},), the hidden size d "
                          f"of item_embedding; {DOCS}")
    if m.weight is None or m.bias is None:
        lacks = "weight and bias" if m.weight is None else "bias"
        raise ConfigError(f"{where} is a LayerNorm without a learned {lacks} (elementwise_affine=False or bias=False), "
                          "expected both; build it with the defaults (a weight of ones and a bias of zeros compute "
                          "the same)")
    if eps and m.eps != eps:
        raise ConfigError(f"{where} has eps {m.eps:g}, another mapped LayerNorm {eps:g}; compress uses one eps for "
                          "all, give every LayerNorm the same")
    return m.eps


def _check_projection(m: nn.Module, where: str, role: str, d: int, inner: int) -> int:
    """The inner size after a projection of ``role`` checked to map the sizes it must: d -> d, d -> 3d for
    a packed qkv, d -> inner and inner -> d for the FFN (``inner`` is 0 until the first ffn_in sets it)."""
    weight, _ = weight_of(m, where)
    out_f, in_f = weight.shape
    names = PROJECTION_SIZES.get(role, ("d", "d"))
    want_in, want_out = ({"d": d, "3d": 3 * d, "inner": inner}[n] for n in names)
    if in_f == want_in and out_f == (want_out or out_f):
        return out_f if role == "ffn_in" else inner
    hint = ""
    if role == "ffn_in" and out_f == d != in_f:
        hint = "; ffn_in and ffn_out look swapped"
    elif role == "ffn_in" and in_f == d:
        hint = f"; every layer must have the first layer's inner size {inner} (per-layer widths are not supported)"
    raise ConfigError(f"{where} is a {type(m).__name__} {in_f} -> {out_f}, expected {want_in} -> {want_out or 'inner'} "
                      f"({names[0]} -> {names[1]}){hint}; {DOCS}")


@register_adapter
class DeclaredAdapter(Adapter):
    name = "declared"

    def __init__(self, mapping: Union[str, "os.PathLike[str]", Dict[str, Any], None] = None) -> None:
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

    def pairs(self, model: nn.Module,
              dense: Optional[SequenceTransformer]) -> Iterator[Tuple[str, str, nn.Module, Any]]:
        """(role, the module's path from the model's root, the user's module, the matching part of ``dense``
        or None) for every mapped part, model-level parts first, then layer by layer."""
        m = self._mapping()

        def part(layer: Optional[nn.Module], role: str) -> Optional[nn.Module]:
            return None if layer is None else layer.get_submodule(LAYER_PARTS[role])

        for role in ("item_embedding", "position_embedding", "embedding_norm", "final_norm"):
            if role in m:
                yield role, m[role], find(model, m[role], "", role), getattr(dense, MODEL_PARTS[role], None)
        layers = self.layer_modules(model)
        for i, layer in enumerate(layers):
            where = f"{m['layers']}.{i}"
            ours = dense.layers[i] if dense is not None else None
            att = m["attention"]
            if "qkv" in att:  # the three projections' common parent on our side
                yield "qkv", f"{where}.{att['qkv']}", find(layer, att["qkv"], where, "packed qkv projection"), \
                    None if ours is None else ours.get_submodule(LAYER_PARTS["query"].rsplit(".", 1)[0])
            for name in ("output",) if "qkv" in att else (*SEPARATE, "output"):
                yield name, f"{where}.{att[name]}", find(layer, att[name], where, f"attention {name} projection"), \
                    part(ours, name)
            for role in ("ffn_in", "ffn_out", "attention_norm", "ffn_norm"):
                yield role, f"{where}.{m[role]}", find(layer, m[role], where, ROLE_NAMES[role]), part(ours, role)

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
        """(full ArchSpec, n_items, N, LayerNorm eps) read off the user's modules, every one checked first."""
        m = self._mapping()
        hidden, inner, eps = self.checked_sizes(model)
        items = find(model, m["item_embedding"], "", "item embedding")
        positions = find(model, m["position_embedding"], "", "position embedding")
        arch = ArchSpec(hidden=hidden, inner=inner, heads=int(m["heads"]), layers=len(self.layer_modules(model)))
        extra = 2 if self.style().objective == "cloze" else 1
        n_items = item_count(items.num_embeddings, extra, f"the item embedding {m['item_embedding']}")
        return arch, n_items, positions.num_embeddings, eps

    def checked_sizes(self, model: nn.Module) -> Tuple[int, int, float]:
        """(d, inner, eps): the item embedding's width, the first layer's FFN width and the first LayerNorm's
        eps, with every mapped module checked against them, so that a wrong path or a part compress cannot
        compute is named with its mapping key here instead of failing, or passing silently, in a copy."""
        d, inner, eps = 0, 0, 0.0
        for role, path, module, _ in self.pairs(model, None):
            where = f"declared mapping: {'attention.' if role in ATTENTION_ROLES else ''}{role} at {path}"
            if role in ("item_embedding", "position_embedding"):
                d = _check_embedding(module, where, d)
                if role == "item_embedding":
                    check_padding(module.padding_idx, where, "padding_idx")
            elif role.endswith("norm"):
                eps = _check_norm(module, where, d, eps)
            else:
                inner = _check_projection(module, where, role, d, inner)
        return d, inner, eps

    @torch.no_grad()
    def convert(self, model: nn.Module) -> SequenceTransformer:
        arch, n_items, max_len, eps = self.read_shape(model)
        dense = SequenceTransformer(arch, n_items, max_len, float(self.mapping.get("dropout", 0.2)), eps,
                                    style=self.style())
        for role, _, theirs, ours in self.pairs(model, dense):
            if role in ("item_embedding", "position_embedding"):
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
        for role, _, theirs, ours in self.pairs(model, dense):
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
