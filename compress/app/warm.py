"""Warm starts: the trained models a search can start from (``init``), whoever trained them.

- a compress RUN_DIR or MODEL_DIR: its item vocabulary is in its ``items.json``;
- a RecBole SASRec checkpoint (``saved/SASRec-*.pth``), read without RecBole and without unpickling
  anything but tensors: its item rows are numbered as RecBole numbers the training file, so the data
  is read with ``item_numbering: recbole`` (set for it when left at the default);
- a Hugging Face model directory (``save_pretrained`` of a ``BertModel`` or ``GPT2Model``) with an
  ``items.json`` beside its ``config.json``: ``{"item_ids": [...]}``, the raw item id of embedding
  rows 1..n (row 0 padding, BERT's last row the mask token).
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from compress.adapters.recbole import read_checkpoint
from compress.data.vocabulary import ItemVocabulary
from compress.errors import CheckpointError, ConfigError
from compress.files import read_json
from compress.layout import CONFIG, ITEMS
from compress.store.artifacts import load

log = logging.getLogger(__name__)

Init = Tuple[nn.Module, Any, Optional[ItemVocabulary]]  # what load_init reads: (model, its adapter, its items)


def init_kind(path: str) -> str:
    """``recbole``, ``hf`` or ``compress``: what kind of trained model ``path`` holds."""
    if os.path.isfile(path):
        return "recbole"
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG)) and \
            "model_type" in read_json(os.path.join(path, CONFIG)):
        return "hf"
    return "compress"


def prepare_init(opts: Dict[str, Any]) -> Dict[str, Any]:
    """The options a warm start needs before the data is read: RecBole's item numbering."""
    if opts.get("init") and init_kind(opts["init"]) == "recbole" and opts["item_numbering"] == "compress":
        log.info("init is a RecBole checkpoint: items are numbered as RecBole numbers the file (item_numbering "
                 "recbole)")
        return {**opts, "item_numbering": "recbole"}
    return opts


def load_init(path: str) -> Init:
    """(the trained model, the adapter to wrap it with or None to find one, its item vocabulary or None)."""
    kind = init_kind(path)
    if kind == "recbole":
        model, adapter = read_checkpoint(path)
        return model, adapter, None
    if kind == "hf":
        return _hugging_face(path), None, _hf_vocabulary(path)
    model = load(path).train()
    return model, None, model.vocabulary


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state (names, shapes, dtypes and bytes), whatever file it was read from: a
    search records its init's, so that retraining from that init (``from_init``) can tell that the file
    still holds the model the search started from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _hugging_face(path: str) -> nn.Module:
    try:
        import transformers
    except ImportError:
        raise ConfigError("a Hugging Face `init` needs transformers: pip install transformers") from None
    try:
        return transformers.AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} is not a loadable Hugging Face model ({str(exc).splitlines()[0]})") from None


def _hf_vocabulary(path: str) -> ItemVocabulary:
    items = os.path.join(path, ITEMS)
    if not os.path.isfile(items):
        raise ConfigError(f"{path} has no {ITEMS}: a Hugging Face model numbers items by its own tokenizer, so "
                          f'put {{"item_ids": [...]}} (the raw item id of embedding rows 1..n) beside its config.json')
    obj = read_json(items)
    try:
        return ItemVocabulary(obj.get("item_ids"))
    except ConfigError as exc:
        raise CheckpointError(f"{items}: {exc}") from None
