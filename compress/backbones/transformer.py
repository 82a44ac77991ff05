"""The sliceable sequential transformer every backbone and adapter maps onto.

One class covers SASRec (causal, post-LN, next-item), BERT4Rec (bidirectional, post-LN, cloze) and
GPT-2-style models (causal, pre-LN with a final LayerNorm): a ``Style`` says which. Item
embeddings are tied to the scoring head; 0 is padding and, for cloze models, ``n_items + 1`` is the
mask token. Sequences are right-padded (RecBole's layout). Every part reads the leading slices of
its full-size weights, which is what makes width search and exact slicing possible.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Optional

import torch
from torch import nn

from compress.arch import ArchSpec, Width
from compress.backbones.objectives import OBJECTIVES, at, query
from compress.backbones.registry import register_backbone
from compress.bounds import real, whole
from compress.errors import ConfigError
from compress.nn.block import ACTIVATIONS, LAYER_PARTS, NORMS, TransformerLayer
from compress.nn.width import layer_norm
from compress.runtime.devices import host_memory_bytes


@dataclass(frozen=True)
class Style:
    causal: bool = True
    norm: str = "post"  # post: LN after each residual add (SASRec, BERT); pre: LN before each sublayer (GPT-2)
    activation: str = "gelu"  # gelu (erf), gelu_tanh (GPT-2's gelu_new), relu
    embedding_norm: bool = True  # LN on item + position embeddings
    final_norm: bool = False  # LN after the last layer (pre-LN models)
    objective: str = "next"  # next or cloze
    mask_prob: float = 0.2  # cloze: share of items masked per training sequence

    def __post_init__(self) -> None:
        for name in ("causal", "embedding_norm", "final_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"style {name} must be true or false, got {getattr(self, name)!r}")
        for name in ("norm", "activation", "objective"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"style {name} must be a string, got {getattr(self, name)!r}")
        if isinstance(self.mask_prob, bool) or not isinstance(self.mask_prob, (int, float)):
            raise ConfigError(f"style mask_prob must be a number, got {self.mask_prob!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm placement {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.objective == "next" and not self.causal:
            raise ConfigError("a next-item objective needs a causal model; bidirectional models train with 'cloze'")
        if not 0 < self.mask_prob < 1:
            raise ConfigError(f"mask_prob must be in (0, 1), got {self.mask_prob}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Style":
        if not isinstance(d, dict):
            raise ConfigError(f"a model style must be a mapping of causal, norm, ..., got {d!r}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown style keys: {', '.join(sorted(repr(k) for k in unknown))}")
        return cls(**d)


def check_fits(arch: ArchSpec, rows: int, max_len: int) -> None:
    """Refuse a model whose float32 weights alone outgrow the machine's memory, before allocating them:
    torch would fail deep in an allocation, or the machine swap for minutes. Counted from the shapes
    (embeddings, attention and FFN matrices; biases, norms and gates add little); models built on the
    meta device (shapes only) or on an accelerator are not limited by it."""
    if torch.empty(0).device.type != "cpu":
        return
    d, inner = arch.hidden, arch.inner
    weights = 4 * ((rows + max_len) * d + arch.layers * (4 * d * d + 2 * d * inner))
    memory = host_memory_bytes()
    if memory is not None and weights > memory:
        raise ConfigError(f"a model of hidden {d}, inner {inner} and {arch.layers} layers over {rows - 1:,} items "
                          f"holds {weights / 2 ** 30:,.1f} GiB of weights, more than this machine's "
                          f"{memory / 2 ** 30:,.1f} GiB of memory; choose a smaller `hidden`, `inner` or `layers`")


# The roles of the model's own parts and where each lives (with LAYER_PARTS inside ``layers.{i}``).
MODEL_PARTS = {"item_embedding": "item_embedding", "position_embedding": "position_embedding",
               "embedding_norm": "emb_norm", "final_norm": "final_norm", "layers": "layers"}


def part_path(role: str, layer: Optional[int] = None) -> str:
    """The module path of ``role`` in a SequenceTransformer (of layer ``layer`` for a layer's part)."""
    return MODEL_PARTS[role] if layer is None else f"{MODEL_PARTS['layers']}.{layer}.{LAYER_PARTS[role]}"


@register_backbone("transformer")
class SequenceTransformer(nn.Module):
    """The generic sliceable transformer; what wrapped Hugging Face, RecBole and declared models become."""
    default_style = Style()

    def __init__(self, arch: ArchSpec, n_items: int, max_len: int, dropout: float = 0.2,
                 layer_norm_eps: float = 1e-12, init_std: float = 0.02, style: Optional[Style] = None) -> None:
        super().__init__()
        if not isinstance(arch, ArchSpec):
            raise ConfigError(f"arch must be a compress.ArchSpec, got {type(arch).__name__}")
        n_items, max_len = whole("n_items", n_items), whole("max_len", max_len)  # a max_len of 0 never windows
        real("dropout", dropout, low=0.0, below=1.0)
        real("layer_norm_eps", layer_norm_eps, above=0.0)
        real("init_std", init_std, above=0.0)
        self.style = style or self.default_style
        self.arch, self.n_items, self.max_len = arch, n_items, max_len
        self.vocabulary = None  # ItemVocabulary: the raw id of every item row, once known
        self.dropout, self.layer_norm_eps, self.init_std = dropout, layer_norm_eps, init_std
        vocab = n_items + (2 if self.style.objective == "cloze" else 1)  # + padding (+ mask token)
        check_fits(arch, vocab, max_len)
        self.item_embedding = nn.Embedding(vocab, arch.hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, arch.hidden)
        if self.style.embedding_norm:
            self.emb_norm = nn.LayerNorm(arch.hidden, eps=layer_norm_eps)
        self.emb_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(arch, dropout, layer_norm_eps, self.style.causal, self.style.norm, self.style.activation)
            for _ in range(arch.layers))
        if self.style.final_norm:
            self.final_norm = nn.LayerNorm(arch.hidden, eps=layer_norm_eps)
        self.apply(self._init)

    @property
    def causal(self) -> bool:
        return self.style.causal

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            m.weight.data.normal_(0.0, self.init_std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            m.bias.data.zero_()
        if isinstance(m, nn.LayerNorm):
            m.weight.data.fill_(1.0)
            m.bias.data.zero_()

    def config(self) -> Dict[str, Any]:
        """Everything needed to rebuild this model (``config.json``)."""
        return {"backbone": self.backbone_name, "arch": self.arch.to_dict(), "n_items": self.n_items,
                "max_len": self.max_len, "dropout": self.dropout, "layer_norm_eps": self.layer_norm_eps,
                "init_std": self.init_std, "style": self.style.to_dict()}

    @classmethod
    def from_config(cls, cfg: Dict[str, Any]) -> "SequenceTransformer":
        style = Style.from_dict(cfg["style"]) if "style" in cfg else None
        return cls(ArchSpec.from_dict(cfg["arch"]), cfg["n_items"], cfg["max_len"], cfg.get("dropout", 0.2),
                   cfg.get("layer_norm_eps", 1e-12), cfg.get("init_std", 0.02), style)

    def rebuilt(self, arch: ArchSpec) -> "SequenceTransformer":
        """A fresh model of the same class, style, data shape and item vocabulary at ``arch``."""
        model = type(self)(arch, self.n_items, self.max_len, self.dropout, self.layer_norm_eps, self.init_std,
                           self.style)
        model.vocabulary = self.vocabulary
        return model

    def with_items(self, n_items: int) -> "SequenceTransformer":
        """This model scoring ``n_items`` >= its own items: the new items get fresh embedding rows after
        the known ones (a cloze model's mask row stays last); every other tensor is carried over."""
        if n_items == self.n_items:
            return self
        if n_items < self.n_items:
            raise ConfigError(f"cannot shrink the item table from {self.n_items} to {n_items} items")
        model = type(self)(self.arch, n_items, self.max_len, self.dropout, self.layer_norm_eps, self.init_std,
                           self.style).to(self.item_embedding.weight.device)
        old, new = self.state_dict(), model.state_dict()
        with torch.no_grad():
            for name, t in new.items():
                if name != "item_embedding.weight":
                    t.copy_(old[name])
            rows, table = self.n_items + 1, old["item_embedding.weight"]
            new["item_embedding.weight"][:rows] = table[:rows]
            if self.style.objective == "cloze":
                new["item_embedding.weight"][-1] = table[-1]
        return model

    def regated(self, gate_layers: int) -> "SequenceTransformer":
        """This model with gates of another depth (0: none), every other tensor carried over: the paper's
        "retrain only" gate ablation (Table 6). New gates start fresh, since a gate of another depth
        computes something else from its input."""
        if gate_layers == self.arch.gate_layers:
            return self
        model = self.rebuilt(replace(self.arch, gate_layers=gate_layers)).to(self.item_embedding.weight.device)
        source = self.state_dict()
        with torch.no_grad():
            for name, t in model.state_dict().items():
                if ".gates." not in name:
                    t.copy_(source[name])
        return model

    def embed(self, items: torch.Tensor, hidden: Optional[int] = None) -> torch.Tensor:
        """items: (B, N) right-padded ids -> E: (B, N, d_k), the kept leading ``hidden`` dims."""
        hidden = hidden or self.arch.hidden
        pos = torch.arange(items.shape[1], device=items.device)
        e = self.item_embedding.weight[items, :hidden] + self.position_embedding.weight[pos, :hidden]
        if self.style.embedding_norm:
            e = layer_norm(self.emb_norm, e)
        return self.emb_drop(e)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's output (B, N, d_k) -> the model's output (the final LN of pre-LN models)."""
        return layer_norm(self.final_norm, x) if self.style.final_norm else x

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """items: (B, N) -> hidden states at every position (B, N, d)."""
        valid = items > 0
        e = self.embed(items)
        x = e
        for layer in self.layers:
            x = layer(x, valid, e)
        return self.finish(x)

    def item_table(self, hidden: Optional[int] = None) -> torch.Tensor:
        """The scoring head: item embeddings (n_items + 1, d_k), row 0 = padding; the mask token never scores."""
        return self.item_embedding.weight[:self.n_items + 1, :hidden or self.arch.hidden]

    def score(self, h: torch.Tensor) -> torch.Tensor:
        """h: (..., d_k) -> logits over all items (..., n_items + 1); column 0 (padding) is -inf."""
        logits = h @ self.item_table(h.shape[-1]).T
        logits[..., 0] = float("-inf")
        return logits

    def query_hidden(self, items: torch.Tensor) -> torch.Tensor:
        """Right-padded histories (B, N) -> the hidden state that scores their next item (B, d)."""
        inputs, index = query(self, items)
        return at(self(inputs), index)

    def predict(self, items: torch.Tensor) -> torch.Tensor:
        """Next-item logits after each right-padded history: (B, N) -> (B, n_items + 1)."""
        return self.score(self.query_hidden(items))

    def width(self) -> Width:
        return Width(self.arch.hidden, self.arch.inner)
