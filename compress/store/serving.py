"""Serving: top-k recommendations for raw item-id histories.

Histories speak the dataset's raw item ids (through the MODEL_DIR's ``items.json``). Unknown ids are
skipped with one warning that counts them; a history longer than N keeps its last N items (what the
model was trained to see); an empty history gets the most popular items (interaction counts over
the whole dataset), with their interaction counts as scores.
"""
from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from compress.data.batching import pad_right
from compress.errors import ConfigError


class Recommender:
    """Mixin for backbones with ``predict(items) -> (B, n_items + 1)``, ``max_len`` and ``n_items``."""

    item_ids: Optional[List[str]] = None  # raw id of item index i + 1; None: indices are the ids
    popularity: Optional[List[float]] = None  # (n_items + 1,) counts, index 0 unused

    def _index(self):
        ids = self.item_ids or [str(i) for i in range(1, self.n_items + 1)]
        return ids, {tok: i + 1 for i, tok in enumerate(ids)}

    @torch.no_grad()
    def recommend(self, histories: Sequence[Sequence], k: int = 10,
                  exclude_seen: bool = True) -> List[List[Tuple[str, float]]]:
        """Top-``k`` (raw item id, score) per history, best first."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ConfigError(f"k must be >= 1 (a whole number), got {k!r}")
        if isinstance(histories, (str, bytes)) or not isinstance(histories, Iterable):
            raise ConfigError(f"histories must be a list of histories (lists of item ids), got {_short(histories)}")
        ids, index = self._index()
        unknown, seqs = 0, []
        for hist in histories:
            if isinstance(hist, (str, bytes)) or not isinstance(hist, Iterable):  # "123" is not ["1", "2", "3"]
                raise ConfigError(f"each history must be a list of item ids, got {_short(hist)}")
            hist = list(hist)
            known = [index[str(t)] for t in hist if str(t) in index]
            unknown += len(hist) - len(known)
            seqs.append(np.asarray(known, dtype=np.int64))
        if unknown:
            warnings.warn(f"skipped {unknown} unknown item id(s) in the histories", stacklevel=2)
        k = min(int(k), self.n_items)
        out: List[List[Tuple[str, float]]] = [[] for _ in seqs]
        filled = [i for i, s in enumerate(seqs) if len(s)]
        if len(filled) < len(seqs):
            if self.popularity is None:
                raise ConfigError("an empty history (after skipping unknown ids) needs the popularity of a "
                                  "MODEL_DIR; export the model with `compress export`")
            pop = torch.tensor(self.popularity, dtype=torch.float64)[1:]
            top = pop.topk(k)
            fallback = [(ids[int(i)], float(v)) for v, i in zip(top.values, top.indices)]
            for i in set(range(len(seqs))) - set(filled):
                out[i] = list(fallback)
        if filled:
            device = next(self.parameters()).device
            items = pad_right([seqs[i] for i in filled], self.max_len).to(device)
            was_training = self.training
            self.eval()
            scores = self.predict(items).float()  # (B, n_items + 1)
            self.train(was_training)
            if exclude_seen:  # every known item of the history, also those older than the last N
                for row, i in enumerate(filled):
                    scores[row, torch.from_numpy(seqs[i]).to(device)] = float("-inf")
            scores[:, 0] = float("-inf")
            top = scores.topk(k, dim=1)
            for row, i in enumerate(filled):
                out[i] = [(ids[int(j) - 1], float(v)) for v, j in zip(top.values[row], top.indices[row])
                          if v > float("-inf")]
        return out


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
