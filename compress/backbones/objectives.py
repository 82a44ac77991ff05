"""Training objectives and how each model family reads its prediction.

- ``next`` (SASRec, GPT-2): every position predicts the item after it under the causal mask; the
  prediction for a history is read at its last real item.
- ``cloze`` (BERT4Rec): random items are replaced by a mask token and predicted from both sides; a
  history is scored by appending the mask token after its last item (dropping its oldest item when
  the history already fills N) and reading that position.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch

from compress.data.batching import pad_right, training_windows

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


def query(model, items: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-padded histories (B, N) -> (the model's input (B, N), the position to score (B,))."""
    if model.style.objective == "next":
        return items, last_index(items)
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
