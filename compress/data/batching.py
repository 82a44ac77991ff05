"""Turning per-user item sequences into right-padded tensors."""
from __future__ import annotations

import reprlib
from operator import attrgetter
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch

from compress.bounds import whole
from compress.errors import ConfigError

TAKES = "pad_right takes a list of 1-D integer sequences or arrays of item indices, one per user, e.g. [[3, 5, 7], [2]]"


def pad_right(seqs: Sequence[np.ndarray], length: int) -> torch.Tensor:
    """The last ``length`` items of each sequence, left-aligned, padded with 0: (B, length). Item
    indices only: a float would be cast to another item, a negative one fail in the model's embedding.
    The callers' integer arrays are checked a whole batch at once (their dtypes as a set, their
    dimensions by the copy itself, the sign on the result): about 25 ns a row on a copy of 300."""
    length = whole("length", length)
    if isinstance(seqs, (str, bytes)) or not isinstance(seqs, (Sequence, np.ndarray, torch.Tensor)):
        raise ConfigError(f"pad_right got a {type(seqs).__name__}; {TAKES}")
    try:  # lists and tuples have no dtype, tensors a torch one
        arrays = all(isinstance(d, np.dtype) and d.kind in "iu" for d in set(map(attrgetter("dtype"), seqs)))
    except AttributeError:
        arrays = False
    rows = seqs if arrays else [_indices(s, row) for row, s in enumerate(seqs)]
    out = np.zeros((len(rows), length), dtype=np.int64)
    for row, s in enumerate(rows):
        try:
            tail = s[-length:]
            out[row, :len(tail)] = tail
        except (IndexError, ValueError):  # an integer array of 0 or 2+ dimensions, a numpy scalar
            _indices(s, row)
    if (out < 0).any():
        row = int(np.flatnonzero((out < 0).any(axis=1))[0])
        raise ConfigError(f"row {row} of pad_right's input holds a negative item index; item indices run "
                          "1..n_items (0 is padding)")
    return torch.from_numpy(out)


def _indices(s: Any, row: int) -> np.ndarray:
    """Row ``row`` as a 1-D int64 array, given a list, a tuple, a tensor or a float array of whole
    numbers; anything else (a number, a string, bools, fractions, a nested list) a ConfigError."""
    try:
        a = np.asarray(s)
    except (TypeError, ValueError, RuntimeError):  # a ragged nested list, a tensor on a GPU
        a = np.asarray(None)
    whole_floats = a.dtype.kind == "f" and bool(np.all(np.isfinite(a) & (a == np.round(a))))
    if a.ndim != 1 or not (a.dtype.kind in "iu" or whole_floats):
        shown = reprlib.repr(a.tolist()) if a.dtype != object else type(s).__name__
        raise ConfigError(f"row {row} of pad_right's input, {shown}, is not a 1-D sequence of whole item indices; "
                          f"{TAKES}")
    return a.astype(np.int64, copy=False)


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
