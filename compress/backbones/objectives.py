"""Training objectives and how each model family reads its prediction.

- ``next`` (SASRec, GPT-2): every position predicts the item after it under the causal mask; the
  prediction for a history is read at its last real item.
- ``cloze`` (BERT4Rec): random items are replaced by a mask token and predicted from both sides; a
  history is scored by appending the mask token after its last item (dropping its oldest item when
  the history already fills N) and reading that position.

Both read their input as right-padded rows of item indices, so ``query`` first refuses what it would
misread (``check_histories``): a negative index would silently read an embedding from the end of the
table, and a left-padded row would be scored at a padding position.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from compress.data.batching import pad_right, training_windows
from compress.errors import ConfigError

OBJECTIVES = ("next", "cloze")


def item_windows(seqs: List[np.ndarray], length: int) -> torch.Tensor:
    """Every sequence cut into windows of ``length`` items from its end backwards: (W, length)."""
    windows = []
    for s in seqs:
        end = len(s)
        while end >= 2:
            windows.append(s[max(0, end - length):end])
            end -= length
    return pad_right(windows, length)


def training_data(model, seqs: List[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (W, N). For ``cloze`` both are the raw windows; ``training_batch`` masks."""
    if model.style.objective == "next":
        return training_windows(seqs, model.max_len)
    windows = item_windows(seqs, model.max_len)
    return windows, windows


def training_batch(model, items: torch.Tensor, targets: torch.Tensor,
                   draws: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The batch the loss sees: unchanged for ``next``; for ``cloze`` each real item is masked where its
    uniform draw in ``draws`` (B, N) is below ``mask_prob`` (a row with none masked gets its last item
    masked) and only masked positions keep a target. Data-independent shapes: no host read on a GPU."""
    if model.style.objective == "next":
        return items, targets
    real = items > 0
    masked = (draws < model.style.mask_prob) & real  # (B, N)
    last = torch.arange(items.shape[1], device=items.device) == last_index(items)[:, None]  # (B, N)
    masked |= last & real & ~masked.any(1, keepdim=True)
    return items.masked_fill(masked, model.n_items + 1), targets.masked_fill(~masked, 0)


def check_histories(model, items: torch.Tensor, highest: Optional[int] = None) -> None:
    """Refuse histories ``predict`` would misread, with the fix. Kind, dtype and shape are checked on any
    device; the values (indices in 0..``highest``, by default n_items; items before padding) only on the
    CPU, where reading them costs nothing: on an accelerator it would stall every call (and break CUDA
    graph capture), so there the caller vouches for them, as ``Recommender`` does by building the
    indices itself. A training batch of a cloze model may also hold its mask token, n_items + 1."""
    highest = model.n_items if highest is None else highest
    if not isinstance(items, torch.Tensor):
        raise ConfigError(f"histories must be a (batch, N) tensor of item indices, got {type(items).__name__}; "
                          "build one with torch.tensor(rows, dtype=torch.long), or serve raw item ids with "
                          "compress.Recommender")
    if items.dtype not in (torch.int64, torch.int32):  # uint8 would index as a mask, floats not at all
        raise ConfigError(f"histories must hold int64 item indices, got {items.dtype}; convert them with .long()")
    if items.dim() != 2 or not 1 <= items.shape[1] <= model.max_len:
        raise ConfigError(f"histories must be (batch, N) item indices with 1 <= N <= max_len = {model.max_len}, got "
                          f"shape {tuple(items.shape)}; give one history as items[None] and keep each history's "
                          f"last {model.max_len} items")
    if items.device.type != "cpu" or torch.jit.is_tracing():
        return
    outside = (items < 0) | (items > highest)  # (B, N)
    if bool(outside.any()):
        row = int(outside.any(1).nonzero()[0])
        raise ConfigError(f"item indices must be in 0..{highest} (0 pads), got {int(items[outside][0])} in "
                          f"row {row}; map raw item ids to indices with model.vocabulary.index, or serve raw ids "
                          "with compress.Recommender")
    real = items > 0
    gap = real[:, 1:] & ~real[:, :-1]  # (B, N - 1): an item right after a padding 0
    if bool(gap.any()):
        row = int(gap.any(1).nonzero()[0])
        raise ConfigError(f"histories must be right-padded (items first, then 0s), but row {row} has an item "
                          "after a 0; move each row's items to its front (left padding is read as padding)")


def query(model, items: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-padded histories (B, N) -> (the model's input (B, N'), the position to score (B,)).

    The cloze objective scores a mask token placed after the last item: N' = N + 1 while the model's
    max_len leaves room for it, so a history given narrower than max_len keeps its oldest item (it was
    dropped as though the history filled the model), and only a history of max_len items loses it."""
    check_histories(model, items)
    if model.style.objective == "next":
        return items, last_index(items)
    if items.shape[1] < model.max_len:
        items = F.pad(items, (0, 1))  # (B, N + 1): a padding column for the mask
    n_real = (items > 0).sum(1)
    full = n_real == items.shape[1]
    shifted = torch.cat([items[:, 1:], torch.zeros_like(items[:, :1])], 1)  # oldest item dropped
    items = torch.where(full[:, None], shifted, items)
    index = torch.where(full, n_real - 1, n_real)
    return items.scatter(1, index[:, None], model.n_items + 1), index


def last_index(items: torch.Tensor) -> torch.Tensor:
    """(B, N) right-padded -> (B,) position of each row's last real item (0 for an empty row)."""
    return (items > 0).sum(1).clamp(min=1) - 1


def at(h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """h: (B, N, d) -> (B, d), row b read at position index[b]."""
    return h[torch.arange(h.shape[0], device=h.device), index]
