"""Turning per-user item sequences into right-padded tensors."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch

from compress.bounds import whole


def pad_right(seqs: Sequence[np.ndarray], length: int) -> torch.Tensor:
    """The last ``length`` items of each sequence, left-aligned, padded with 0: (B, length)."""
    length = whole("length", length)
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, s in enumerate(seqs):
        s = s[-length:]
        out[row, :len(s)] = s
    return torch.from_numpy(out)


def training_windows(seqs: List[np.ndarray], max_len: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (W, max_len): every training sequence cut into windows of max_len+1
    items from its end backwards, so every item of a long history is a target exactly once (as in
    RecBole's per-prefix expansion, with each window's history capped at max_len)."""
    max_len = whole("max_len", max_len)  # 0 would cut windows without ever moving
    windows = []
    for s in seqs:
        end = len(s)
        while end >= 2:
            windows.append(s[max(0, end - max_len - 1):end])
            end -= max_len
    inputs = pad_right([w[:-1] for w in windows], max_len)
    targets = pad_right([w[1:] for w in windows], max_len)
    return inputs, targets
