"""From raw interactions to per-user item sequences with a leave-one-out split.

Items are remapped to ``1..n_items`` (0 is padding) in order of first appearance; each user's rows
are sorted by time, stable on ties (file order decides). The split is the field's leave-one-out:
validation target = penultimate item, test target = last item, training = everything before.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from compress.data.readers import Interactions
from compress.errors import DataError

log = logging.getLogger(__name__)

MIN_INTERACTIONS = 3  # leave-one-out needs one training item, a validation and a test target


@dataclass
class SequenceDataset:
    """Per-user item sequences stored flat: user u's items are ``items[offsets[u]:offsets[u+1]]``."""

    items: np.ndarray  # (R,) int64 in 1..n_items
    offsets: np.ndarray  # (U+1,) int64
    item_tokens: List[str]  # raw id of item index i+1
    user_tokens: List[str]
    name: str = "dataset"
    info: Dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        return len(self.item_tokens)

    @property
    def n_interactions(self) -> int:
        return int(self.offsets[-1])

    def sequence(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u]:self.offsets[u + 1]]

    def sequences(self) -> List[np.ndarray]:
        return [self.sequence(u) for u in range(self.n_users)]

    def train_sequences(self) -> List[np.ndarray]:
        """Everything but the last two items of each user."""
        return [s[:-2] for s in self.sequences()]

    def eval_pairs(self, split: str):
        """(histories, targets) for ``valid`` (penultimate item) or ``test`` (last item)."""
        if split not in ("valid", "test"):
            raise DataError(f"unknown split {split!r}; choose 'valid' or 'test'")
        cut = 2 if split == "valid" else 1
        seqs = self.sequences()
        return [s[:-cut] for s in seqs], np.array([s[-cut] for s in seqs], dtype=np.int64)

    def item_popularity(self) -> np.ndarray:
        """(n_items+1,) interaction counts over the whole dataset; index 0 (padding) is 0."""
        return np.bincount(self.items, minlength=self.n_items + 1).astype(np.float64)

    def stats(self) -> Dict:
        lengths = np.diff(self.offsets)
        return {"users": self.n_users, "items": self.n_items, "interactions": self.n_interactions,
                "avg_len": round(float(lengths.mean()), 2), "max_len": int(lengths.max()),
                "density": round(self.n_interactions / (self.n_users * self.n_items), 6), **self.info}

    def save(self, path: str) -> None:
        np.savez(path, items=self.items, offsets=self.offsets,
                 item_tokens=np.array(self.item_tokens), user_tokens=np.array(self.user_tokens),
                 meta=np.array(json.dumps({"name": self.name, "info": self.info})))

    @classmethod
    def load(cls, path: str) -> "SequenceDataset":
        # our own handle: np.load leaks its file when the archive is corrupt, and the caller then deletes it
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(z["items"], z["offsets"], z["item_tokens"].tolist(), z["user_tokens"].tolist(),
                       meta["name"], meta["info"])


def kcore(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean row mask keeping users and items with at least ``k`` interactions, iterated to a fixpoint."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        _, uinv, ucount = np.unique(users[keep], return_inverse=True, return_counts=True)
        _, iinv, icount = np.unique(items[keep], return_inverse=True, return_counts=True)
        ok = (ucount[uinv] >= k) & (icount[iinv] >= k)
        if ok.all():
            return keep
        idx = np.flatnonzero(keep)
        keep[idx[~ok]] = False


def build_dataset(inter: Interactions, name: str = "dataset", kcore_k: int = 0,
                  min_interactions: int = MIN_INTERACTIONS) -> SequenceDataset:
    """Group rows per user in time order, filter, and remap ids (0 = padding)."""
    users, items, order = inter.users, inter.items, inter.order
    if len(users) == 0:
        raise DataError(f"{inter.source}: no interactions")
    if kcore_k > 1:
        keep = kcore(users, items, kcore_k)
        users, items, order = users[keep], items[keep], order[keep]
    user_codes, user_first = _codes_in_first_order(users)
    user_names = user_first if inter.user_vocab is None else inter.user_vocab[user_first]
    rows = np.lexsort((np.arange(len(users)), order, user_codes))  # user, then time, then file order
    user_codes, items = user_codes[rows], items[rows]
    counts = np.bincount(user_codes, minlength=len(user_first))
    short = counts < min_interactions
    dropped = int(short.sum())
    if dropped:
        log.warning("dropped %d users with fewer than %d interactions", dropped, min_interactions)
        keep = ~short[user_codes]
        user_codes, items = user_codes[keep], items[keep]
    if len(items) == 0:
        raise DataError(f"{inter.source}: no user has {min_interactions} or more interactions "
                        "(leave-one-out needs a training item, a validation and a test target)")
    item_codes, item_first = _codes_in_first_order(items)
    item_names = item_first if inter.item_vocab is None else inter.item_vocab[item_first]
    kept_users = np.flatnonzero(~short)
    remap_user = np.full(len(user_first), -1, dtype=np.int64)
    remap_user[kept_users] = np.arange(len(kept_users))
    user_codes = remap_user[user_codes]
    offsets = np.zeros(len(kept_users) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_codes, minlength=len(kept_users)), out=offsets[1:])
    info = {"dropped_users": dropped, "timed": inter.timed, "kcore": kcore_k}
    return SequenceDataset(item_codes.astype(np.int64) + 1, offsets, [str(t) for t in item_names],
                           [str(user_names[u]) for u in kept_users], name, info)


def _codes_in_first_order(tokens: np.ndarray):
    """Integer codes numbered by first appearance, and the tokens in that order."""
    uniq, first_idx, inverse = np.unique(tokens, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    by_first = np.argsort(first_idx, kind="stable")
    rank[by_first] = np.arange(len(uniq))
    return rank[inverse], uniq[by_first]
