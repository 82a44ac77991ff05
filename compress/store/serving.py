"""Serving: top-k recommendations of a model for histories of raw item ids.

A ``Recommender`` wraps a model (anything with ``predict(items) -> (B, n_items + 1)``, ``max_len``
and ``n_items``) and the item vocabulary of a MODEL_DIR (``items.json``: the raw id of every
embedding row, and item popularity). Unknown ids are skipped with one warning that counts them; a
history longer than N keeps its last N items (what the model was trained to see); an empty history
gets the most popular items (interaction counts over the whole dataset) with those counts as scores,
and a ``PopularityFallback`` warning says so, since those are not the model's scores.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Set
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from compress.bounds import instance, whole
from compress.data.batching import pad_right
from compress.data.vocabulary import ItemVocabulary, vocabulary_of
from compress.errors import ConfigError
from compress.nn.modes import evaluating
from compress.runtime.devices import model_device
from compress.runtime.replay import Replayed

Recommendations = List[List[Tuple[str, float]]]


class PopularityFallback(UserWarning):
    """Some histories held no known item, so they got the most popular items, scored by interaction
    counts: numbers on another scale than the model's scores, which a caller must not mix with them."""


class Recommender:
    """Top-k (raw item id, score) lists from ``model`` through its item vocabulary (``model.vocabulary``,
    which ``compress.load`` reads from ``items.json`` and ``compress.fit`` takes from the data, or the
    one given). On CUDA the model's ``predict`` is replayed as CUDA graphs, one per batch size bucket
    (a power of two: a batch is padded with empty histories up to it), so a small model's latency
    follows its FLOPs."""

    def __init__(self, model: nn.Module, vocabulary: Union[None, ItemVocabulary, Sequence[str]] = None,
                 graphs: bool = True) -> None:
        instance("the model served", model, nn.Module, "a MODEL_DIR is served by compress.Recommender.load(path)")
        instance("graphs", graphs, bool, "True replays predict as CUDA graphs on a GPU, False calls it as it is")
        self.model, self.vocabulary = model, vocabulary_of(model, vocabulary)
        device = model_device(model)
        self.predict = Replayed(model.predict, device) if graphs else model.predict
        self.ids, self.index = self.vocabulary.ids, self.vocabulary.index  # raw id of row i + 1; raw id -> row

    @classmethod
    def load(cls, path: str, device: Union[str, torch.device] = "cpu") -> "Recommender":
        """The MODEL_DIR (or RUN_DIR) at ``path``, ready to serve."""
        from compress.store.artifacts import load

        return cls(load(path, device))

    @torch.no_grad()
    def recommend(self, histories: Sequence[Sequence], k: int = 10, exclude_seen: bool = True) -> Recommendations:
        """Top-``k`` (raw item id, score) per history, best first."""
        k = whole("k", k)
        instance("exclude_seen", exclude_seen, bool, "True leaves out the items of the history, False keeps them")
        seqs = self.indices(histories)
        asked, k = k, min(k, self.model.n_items)
        out: Recommendations = [[] for _ in seqs]
        filled = [i for i, s in enumerate(seqs) if len(s)]
        empty = sorted(set(range(len(seqs))) - set(filled))
        for i in empty:
            out[i] = self.most_popular(k)
        if empty:
            warnings.warn(f"{len(empty)} of {len(seqs)} histories held no known item: they get the most popular "
                          "items, scored by interaction count, not by the model", PopularityFallback, stacklevel=2)
        if filled:
            for i, recs in zip(filled, self.top_k([seqs[i] for i in filled], k, exclude_seen)):
                out[i] = recs
        short = sum(len(recs) < asked for recs in out)
        if short:  # a list shorter than asked for is no silent truncation
            seen = ", less the items of the history" if exclude_seen else ""
            warnings.warn(f"{short} of {len(out)} histories got fewer than the {asked} items asked for: the catalogue "
                          f"holds {self.model.n_items}{seen}", stacklevel=2)
        return out

    def indices(self, histories: Sequence[Sequence]) -> List[np.ndarray]:
        """Each history as embedding indices, unknown ids skipped (and counted in one warning)."""
        if isinstance(histories, (str, bytes)) or not isinstance(histories, Iterable):
            raise ConfigError(f"histories must be a list of histories (lists of item ids), got {_short(histories)}")
        unknown, seqs = 0, []
        for hist in histories:
            if isinstance(hist, (str, bytes)) or not isinstance(hist, Iterable):  # "123" is not ["1", "2", "3"]
                raise ConfigError(f"each history must be a list of item ids, got {_short(hist)}")
            if isinstance(hist, (Set, Mapping)):  # no order: the model would read the items in hash order
                raise ConfigError(f"each history must be an ordered list of item ids (oldest first), got a "
                                  f"{type(hist).__name__}: {_short(hist)}")
            if isinstance(hist, torch.Tensor):  # embedding rows, not raw ids: each became "tensor(79)", unknown
                raise ConfigError(f"each history must be a list of raw item ids, got a {type(hist).__name__}; a "
                                  "tensor of embedding rows is scored by model.predict")
            hist = list(hist)
            known = [self.index[str(t)] for t in hist if str(t) in self.index]
            unknown += len(hist) - len(known)
            seqs.append(np.asarray(known, dtype=np.int64))
        if unknown:
            warnings.warn(f"skipped {unknown} unknown item id(s) in the histories", stacklevel=3)
        return seqs

    def most_popular(self, k: int) -> List[Tuple[str, float]]:
        """What an empty history gets: the ``k`` most interacted-with items."""
        if self.vocabulary.popularity is None:
            raise ConfigError("an empty history (after skipping unknown ids) needs item popularity, which this "
                              "model's items.json lacks: export it with the data it was trained on (`compress "
                              "export`, or compress.export(..., dataset=data))")
        top = torch.tensor(self.vocabulary.popularity, dtype=torch.float64)[1:].topk(k)
        return [(self.ids[int(i)], float(v)) for v, i in zip(top.values, top.indices)]

    def top_k(self, seqs: List[np.ndarray], k: int, exclude_seen: bool) -> Recommendations:
        """The model's top ``k`` for non-empty index histories."""
        model = self.model
        device = model_device(model)
        bucket = 1 << (len(seqs) - 1).bit_length()  # padded rows are empty histories, scored and dropped
        items = pad_right(seqs + [np.zeros(0, dtype=np.int64)] * (bucket - len(seqs)), model.max_len).to(device)
        with evaluating(model):
            scores = self.predict(items)[:len(seqs)].float()  # (B, n_items + 1)
        if not bool(torch.isfinite(scores[:, 1:]).all()):
            raise ConfigError("the model's scores are not finite (NaN or infinity): its weights diverged; "
                              "serve a model that trained to the end")
        if exclude_seen:  # every known item of the history, also those older than the last N
            for row, seq in enumerate(seqs):
                scores[row, torch.from_numpy(seq).to(device)] = float("-inf")
        scores[:, 0] = float("-inf")
        top = scores.topk(k, dim=1)
        values, indices = top.values.cpu().tolist(), top.indices.cpu().tolist()
        return [[(self.ids[j - 1], v) for v, j in zip(vs, js) if v > float("-inf")] for vs, js in zip(values, indices)]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
