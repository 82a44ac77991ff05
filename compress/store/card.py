"""The model card people read: MODEL_DIR/README.md, rendered from card.json alone.

card.json stays the machine-readable source of every number; README.md says the same to someone
deciding whether to serve the model: what was decided, what it costs next to the model it came from,
how well it ranks, what it was trained on, what produced it, and how to load it with compress, with
safetensors and torch alone, or as the user's own class. Rendering from the card (never from the
model) keeps the two from disagreeing. The native/ folder gets the same card, its own class first.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from compress.arch import ArchSpec

# adapter -> (the class native/ holds, how to load it and score a batch ``items`` (B, N) of item rows)
NATIVE = {
    "hf-gpt2": ("transformers.GPT2Model", """import torch, transformers
model = transformers.GPT2Model.from_pretrained("NATIVE_DIR").eval()
h = model(input_ids=items, attention_mask=(items > 0).long()).last_hidden_state   # (B, N, d)
last = (items > 0).sum(1) - 1                                                       # last real position
scores = h[torch.arange(len(items)), last] @ model.wte.weight.T                     # (B, n_items + 1)"""),
    "hf-bert": ("transformers.BertModel", """import torch, transformers
model = transformers.BertModel.from_pretrained("NATIVE_DIR").eval()
n_items = model.config.vocab_size - 2                        # row n_items + 1 is the mask token
real = (items > 0).sum(1)
full = real == items.shape[1]                                # a full history drops its oldest item
items = torch.where(full[:, None], torch.cat([items[:, 1:], 0 * items[:, :1]], 1), items)
at = torch.where(full, real - 1, real)                       # the mask token goes after the last item
items = items.scatter(1, at[:, None], n_items + 1)
h = model(input_ids=items, attention_mask=(items > 0).long()).last_hidden_state   # (B, N, d)
scores = h[torch.arange(len(items)), at] @ model.embeddings.word_embeddings.weight[:n_items + 1].T"""),
    "recbole-sasrec": ("RecBole SASRec (state dict)", """from safetensors.torch import load_file
from recbole.config import Config
from recbole.model.sequential_recommender import SASRec
config = Config(model="SASRec", dataset="<your dataset>", config_file_list=["NATIVE_DIR/config.yaml"])
model = SASRec(config, dataset)                 # dataset: RecBole's, numbering items as items.json does
model.load_state_dict(load_file("NATIVE_DIR/model.safetensors"))"""),
}
METRIC = re.compile(r"^(ndcg|recall|mrr|hit)@(\d+)$")
METRIC_NAMES = {"ndcg": "NDCG", "recall": "Recall", "mrr": "MRR", "hit": "Hit"}


def render(card: Dict[str, Any], native: bool = False) -> str:
    """README.md of a MODEL_DIR, or (``native``) of its native/ folder, from the MODEL_DIR's card."""
    arch = ArchSpec.from_dict(card["arch"])
    sections = [_title(card, arch, native), _cost(card, arch),
                _accuracy(card.get("metrics") or {}, card.get("eval_seed")),
                _data(card), _provenance(card), _loading(card, native), _files(card, native)]
    return "\n\n".join(s for s in sections if s) + "\n"


def _title(card: Dict[str, Any], arch: ArchSpec, native: bool) -> str:
    shape = card.get("model") or {}
    gates = f"data-aware gates of depth {arch.gate_layers}" if arch.gate_layers else "no gates"
    what = (f"A dense {shape.get('backbone', 'sequential')} recommender: hidden size d = {arch.hidden}, FFN size "
            f"D = {arch.inner}, {arch.heads} head{'s' if arch.heads > 1 else ''} of {arch.head_dim}, {arch.layers} "
            f"layer{'s' if arch.layers > 1 else ''}, {arch.attention} attention, {gates}")
    if "n_items" in shape:
        what += f"; it scores {shape['n_items']:,} items from histories of up to N = {shape['max_len']} items"
    if not native:
        return f"# {arch.label()}\n\n{what}. `MODEL_DIR` below is this directory."
    cls = NATIVE.get(card["native"]["adapter"], ("the wrapped model's class",))[0]
    return (f"# {arch.label()} as {cls}\n\n{what}. This folder holds it as the class it was wrapped from "
            f"({cls}), with `items.json` naming the raw item id of every embedding row, so it stands alone; the "
            "folder above (`MODEL_DIR`) holds the same model for compress. `NATIVE_DIR` below is this folder.")


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def _cost(card: Dict[str, Any], arch: ArchSpec) -> str:
    flops, ref = card.get("flops") or {}, card.get("input")
    rows: List[List[str]] = []
    if "analytic" in flops:
        rows.append(["FLOPs (analytic, total)", _si(flops["analytic"]["total"]),
                     _versus(flops["analytic"]["total"], ref["flops"]["total"], _si) if ref else None])
    if flops.get("measured") is not None:
        rows.append(["FLOPs (measured: matrix products, FlopCounterMode; input: analytic)", _si(flops["measured"]),
                     _versus(flops["measured"], ref["flops"]["matmul"], _si) if ref else None])
    if card.get("params") is not None:
        rows.append(["parameters", f"{card['params']:,}",
                     _versus(card["params"], ref["params"], "{:,}".format) if ref else None])
    for key, ms in (card.get("latency_ms") or {}).items():
        rows.append([f"latency, {key.replace('_', ' ')} (median)", f"{ms:.3g} ms", None])
    head = ["", f"this model ({arch.label()})"] + ([f"input model ({ref['label']})"] if ref else [])
    lines = ["## Cost", "", "| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, value, versus in rows:
        lines.append(f"| {name} | {value} |" + (f" {versus or '—'} |" if ref else ""))
    n = (card.get("model") or {}).get("max_len", "N")
    lines += ["", f"FLOPs = 2 × multiply-adds of scoring one history of length N = {n} against every item (all "
                  "layers at every position, the item head at the last). The measured count covers matrix products "
                  "only; the analytic total adds an estimate of the elementwise work."]
    return "\n".join(lines)


def _versus(ours: float, theirs: float, fmt) -> str:
    """The input model's number, and how many times this model's it is."""
    return f"{fmt(theirs)} ({theirs / ours:.2f}x)" if ours else fmt(theirs)


def _accuracy(metrics: Dict[str, Dict[str, float]], seed: Optional[int] = None) -> str:
    if not metrics:
        return "## Accuracy\n\nNo metrics were recorded when this model was exported."
    names = sorted({k for row in metrics.values() for k in row if METRIC.match(k)},
                   key=lambda k: (list(METRIC_NAMES).index(METRIC.match(k).group(1)), int(METRIC.match(k).group(2))))
    order = sorted(metrics, key=lambda s: (not s.startswith("test"), s))
    head = "| split / protocol | " + " | ".join(_metric_name(k) for k in names) + " |"
    lines = ["## Accuracy", "", head, "|---" + "|---:" * len(names) + "|"]
    for split in order:
        lines.append(f"| {split.replace('/', ' / ')} | " +
                     " | ".join(f"{metrics[split][k]:.4f}" if k in metrics[split] else "—" for k in names) + " |")
    lines += ["", "Leave-one-out: valid = each user's penultimate item, test = the last. `full` ranks the target "
                  "against every item; `pop100` / `uni100` against 100 negatives drawn by popularity / uniformly"
                  + (f", with seed {seed} (`compress evaluate` draws them so again)." if seed is not None else ".")]
    return "\n".join(lines)


def _metric_name(key: str) -> str:
    m = METRIC.match(key)
    return f"{METRIC_NAMES[m.group(1)]}@{m.group(2)}"


def _data(card: Dict[str, Any]) -> Optional[str]:
    stats, options = card.get("dataset") or {}, card.get("data") or {}
    if not stats and not options:
        return None
    name = stats.get("name") or options.get("data") or "the embedded Gowalla sample (the default dataset)"
    facts = [f"{stats[k]:,} {k}" for k in ("users", "items", "interactions") if isinstance(stats.get(k), int)]
    numbering = stats.get("numbering") or options.get("item_numbering")
    text = f"## Data\n\nTrained on **{name}**" + (f": {', '.join(facts)}" if facts else "") + "."
    if stats.get("aligned"):
        dropped = stats.get("dropped_interactions") or 0
        text += (" Items are numbered as the wrapped model numbered them (its `item_ids`)"
                 + (f"; {dropped:,} interactions with items outside that vocabulary were dropped" if dropped else "")
                 + "; `items.json` holds the numbering.")
    elif numbering:
        text += f" Items were numbered as {numbering} numbers them; `items.json` holds the numbering."
    return text


def decision_epoch(search: Dict[str, Any]) -> int:
    """The epoch whose controllers a search's decision is (and whose weights its supernet holds), from a
    search card or a model card's ``search``; one written before ``decide`` existed decided at its best."""
    return search.get("decision_epoch", search["best_epoch"])


def exit_depths(search: Dict[str, Any]) -> List[int]:
    """The exit depths β picked from, in the order of each epoch row's ``q``, from a search card or a
    results record's controller trace; one written before depths were a choice had every depth from 1."""
    if search.get("depths"):
        return list(search["depths"])
    return list(range(1, len(search["history"][0]["q"]) + 1)) if search["history"] else []


def _provenance(card: Dict[str, Any]) -> str:
    command = card.get("command")
    made = f"Made by `{command}`" if command else "Made from the Python API (`compress.export` or `SearchResult.export`)"
    if card.get("source"):
        made += f", from the {card.get('kind') or 'run'} run `{card['source']}`"
    search = card.get("search") or {}
    if search.get("best_epoch") is not None:
        made += f"; the search's decision is that of epoch {decision_epoch(search)}"
    v = card.get("versions") or {}
    made += "."
    if v:
        commit = f" (commit {v['commit']})" if v.get("commit") else ""
        made += (f" Versions: compress {v.get('compress')}{commit}, torch {v.get('torch')}, Python {v.get('python')}"
                 f", {v.get('processes', 1)} process{'es' if v.get('processes', 1) > 1 else ''}.")
    return "## Provenance\n\n" + made


def _loading(card: Dict[str, Any], native: bool) -> str:
    n = (card.get("model") or {}).get("max_len", "N")
    compress_way = f"""With compress:

```python
import compress
model = compress.load("MODEL_DIR")                  # rebuilt from config.json, weights loaded strictly
compress.Recommender(model).recommend([["<item id>", "<item id>"]], k=10)   # raw item ids in and out
```

Without compress, with safetensors and torch alone: `model.safetensors` holds plain float32 tensors,
`config.json` the shapes and style, `items.json` the raw id of every row (row i + 1 is `item_ids[i]`, row 0
is padding). Input: item rows (B, N = {n}) int64, right-padded with 0; output: scores (B, n_items + 1), column 0
the padding. The tensors and the computation are documented in compress's README, section "MODEL_DIR format".

```python
import json
from safetensors.torch import load_file
weights = load_file("MODEL_DIR/model.safetensors")           # name -> tensor
config = json.load(open("MODEL_DIR/config.json"))["model"]   # arch, n_items, max_len, style
item_ids = json.load(open("MODEL_DIR/items.json"))["item_ids"]
```"""
    extra = []
    if card.get("onnx_max_abs_diff") is not None or card.get("format") == "onnx":
        extra.append(f'ONNX: `onnxruntime.InferenceSession("MODEL_DIR/model.onnx").run(None, {{"items": items}})[0]`, '
                     f"items int64 (batch, N = {n}): the sequence length is fixed at N, the batch size is free.")
    if card.get("format") == "torchscript":
        extra.append(f'TorchScript: `torch.jit.load("MODEL_DIR/model.pt")(items)`, items (batch, N = {n}) int64.')
    way = NATIVE.get((card.get("native") or {}).get("adapter"))
    native_way = None
    if way is not None and (card.get("native") or {}).get("path"):
        native_way = f"As {way[0]} (`NATIVE_DIR` = `MODEL_DIR/native`):\n\n```python\n{way[1]}\n```"
    parts = [native_way, compress_way] if native else [compress_way, native_way]
    return "## Load it\n\n" + "\n\n".join(p for p in parts + extra if p)


def _files(card: Dict[str, Any], native: bool) -> str:
    if native:
        return ("## Files\n\nThe class's own files (`config.json` / `config.yaml`, `model.safetensors`), `items.json` "
                "(`item_ids`: row i + 1 is `item_ids[i]`; `popularity`: interaction counts) and this card. "
                "`../card.json` holds every number above, machine-readable.")
    rows = [("config.json", "the model: backbone, ArchSpec, n_items, max_len, style; the data it was trained on"),
            ("model.safetensors", "the weights, float32; metadata: format, compress version, ArchSpec, n_items, max_len"),
            ("items.json", "`item_ids` (row i + 1 is `item_ids[i]`, row 0 padding) and `popularity`"),
            ("card.json", "every number above, machine-readable"), ("README.md", "this card")]
    if card.get("format") == "torchscript":
        rows.append(("model.pt", "TorchScript: items (B, N) -> scores (B, n_items + 1)"))
    if card.get("format") == "onnx":
        rows.append(("model.onnx", "ONNX: `items` (batch, N) int64 -> `scores` (batch, n_items + 1)"))
    if (card.get("native") or {}).get("path"):
        rows.append(("native/", "the same model as the class it was wrapped from, with items.json and this card"))
    elif card.get("native"):
        rows.append(("(no native/)", card["native"].get("note") or ""))
    return "## Files\n\n| file | what |\n|---|---|\n" + "\n".join(f"| `{f}` | {w} |" for f, w in rows)
