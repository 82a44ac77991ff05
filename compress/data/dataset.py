"""From raw interactions to per-user item sequences with a leave-one-out split.

Items are remapped to ``1..n_items`` (0 is padding) in order of first appearance; each user's rows
are sorted by time, stable on ties (file order decides). The split is the field's leave-one-out:
validation target = penultimate item, test target = last item, training = everything before.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

from compress.data.readers import Interactions
from compress.data.vocabulary import ItemVocabulary
from compress.errors import ConfigError, DataError

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

    def vocabulary(self) -> ItemVocabulary:
        """The raw id of every item index, with item popularity."""
        return ItemVocabulary(self.item_tokens, self.item_popularity().tolist())

    def aligned(self, item_ids: Sequence[str], unknown: str = "drop",
                min_interactions: int = MIN_INTERACTIONS) -> "SequenceDataset":
        """This data with its items numbered as ``item_ids`` numbers them (a model's vocabulary: row
        i + 1 is ``item_ids[i]``). Interactions with items ``item_ids`` lacks are dropped and counted
        (``unknown="drop"``), then users left with fewer than ``min_interactions``; or those items get
        new rows after the known ones (``"append"``; the model then needs the rows:
        ``compress.wrap(model, item_ids=data.item_tokens)``)."""
        if unknown not in ("drop", "append"):
            raise ConfigError(f"unknown_items must be drop or append, got {unknown!r}")
        tokens = ItemVocabulary(item_ids).ids
        index = {t: i + 1 for i, t in enumerate(tokens)}
        mapping = np.zeros(self.n_items + 1, dtype=np.int64)  # our index -> theirs (0: dropped)
        for ours, token in enumerate(self.item_tokens, 1):
            if token not in index and unknown == "append":
                tokens.append(token)
                index[token] = len(tokens)
            mapping[ours] = index.get(token, 0)
        items = mapping[self.items]
        keep = items > 0
        user = np.repeat(np.arange(self.n_users), np.diff(self.offsets))[keep]
        lengths = np.bincount(user, minlength=self.n_users)
        long = lengths >= min_interactions
        if not long.any():  # ids of another dataset, or spelled otherwise ("0001" for "1")
            matched = int((mapping[1:] > 0).sum())
            raise DataError(f"the {len(item_ids)} item_ids given match {matched} of the data's {self.n_items} items, "
                            f"which leaves no user with {min_interactions} or more interactions; are they this "
                            "data's ids? give the model's raw item ids as the data file writes them")
        rows = long[user]
        offsets = np.concatenate([[0], np.cumsum(lengths[long])]).astype(np.int64)
        info = {**self.info, "aligned": True, "dropped_interactions": int((~keep).sum()),
                "dropped_users_after_alignment": int((~long).sum()), "appended_items": len(tokens) - len(item_ids)}
        if info["dropped_interactions"]:
            log.warning("dropped %d interactions with items the vocabulary lacks", info["dropped_interactions"])
        if info["dropped_users_after_alignment"]:
            log.warning("dropped %d users left with fewer than %d interactions", info["dropped_users_after_alignment"],
                        min_interactions)
        return SequenceDataset(items[keep][rows], offsets, tokens, [u for u, ok in zip(self.user_tokens, long) if ok],
                               self.name, info)

    def item_popularity(self) -> np.ndarray:
        """(n_items+1,) interaction counts over the whole dataset; index 0 (padding) is 0."""
        return np.bincount(self.items, minlength=self.n_items + 1).astype(np.float64)

    def stats(self) -> Dict:
        lengths = np.diff(self.offsets)
        return {"users": self.n_users, "items": self.n_items, "interactions": self.n_interactions,
                "avg_len": round(float(lengths.mean()), 2), "max_len": int(lengths.max()),
                "density": round(self.n_interactions / (self.n_users * self.n_items), 6), **self.info}

    def save(self, path: str) -> None:
        """An .npz of the arrays; the tokens as UTF-8 bytes and offsets, so each costs its own length."""
        np.savez(path, items=self.items, offsets=self.offsets, **pack("item_tokens", self.item_tokens),
                 **pack("user_tokens", self.user_tokens),
                 meta=np.array(json.dumps({"name": self.name, "info": self.info})))

    @classmethod
    def load(cls, path: str) -> "SequenceDataset":
        # our own handle: np.load leaks its file when the archive is corrupt, and the caller then deletes it
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(z["items"], z["offsets"], unpack(z, "item_tokens"), unpack(z, "user_tokens"),
                       meta["name"], meta["info"])


def pack(name: str, tokens: List[str]) -> Dict[str, np.ndarray]:
    """Strings as one UTF-8 byte array and their end offsets (no pickle, no fixed-width padding)."""
    encoded = [t.encode("utf-8") for t in tokens]
    ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
    return {f"{name}_bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8), f"{name}_ends": ends}


def unpack(archive, name: str) -> List[str]:
    blob, ends = archive[f"{name}_bytes"].tobytes(), archive[f"{name}_ends"]
    starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
    return [blob[s:e].decode("utf-8") for s, e in zip(starts.tolist(), ends.tolist())]


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


NUMBERINGS = ("compress", "recbole")


def build_dataset(inter: Interactions, name: str = "dataset", kcore_k: int = 0,
                  min_interactions: int = MIN_INTERACTIONS, numbering: str = "compress") -> SequenceDataset:
    """Group rows per user in time order, filter, and number items (0 = padding): ``compress`` by first
    appearance in the users' time-ordered histories; ``recbole`` as RecBole does, by first appearance
    in the file (after the k-core filter, before users too short for leave-one-out are dropped, whose
    items keep their numbers), so that a RecBole model's embedding rows are the data's items."""
    if numbering not in NUMBERINGS:
        raise DataError(f"unknown item numbering {numbering!r}; choose one of {', '.join(NUMBERINGS)}")
    users, items, order = inter.users, inter.items, inter.order
    if len(users) == 0:
        raise DataError(f"{inter.source}: no interactions")
    if kcore_k > 1:
        keep = kcore(users, items, kcore_k)
        if not keep.any():
            raise DataError(f"{inter.source}: the {kcore_k}-core filter (kcore) removed every interaction; lower kcore")
        users, items, order = users[keep], items[keep], order[keep]
    file_codes, file_first = _codes_in_first_order(items)  # RecBole's numbering
    user_codes, user_first = _codes_in_first_order(users)
    user_names = user_first if inter.user_vocab is None else inter.user_vocab[user_first]
    rows = np.lexsort((np.arange(len(users)), order, user_codes))  # user, then time, then file order
    user_codes, items, file_codes = user_codes[rows], items[rows], file_codes[rows]
    counts = np.bincount(user_codes, minlength=len(user_first))
    short = counts < min_interactions
    dropped = int(short.sum())
    if dropped:
        log.warning("dropped %d users with fewer than %d interactions", dropped, min_interactions)
        keep = ~short[user_codes]
        user_codes, items, file_codes = user_codes[keep], items[keep], file_codes[keep]
    if len(items) == 0:
        raise DataError(f"{inter.source}: no user has {min_interactions} or more interactions "
                        "(leave-one-out needs a training item, a validation and a test target)")
    item_codes, item_first = (file_codes, file_first) if numbering == "recbole" else _codes_in_first_order(items)
    item_names = item_first if inter.item_vocab is None else inter.item_vocab[item_first]
    kept_users = np.flatnonzero(~short)
    remap_user = np.full(len(user_first), -1, dtype=np.int64)
    remap_user[kept_users] = np.arange(len(kept_users))
    user_codes = remap_user[user_codes]
    offsets = np.zeros(len(kept_users) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_codes, minlength=len(kept_users)), out=offsets[1:])
    info = {"dropped_users": dropped, "timed": inter.timed, "kcore": kcore_k, "numbering": numbering}
    return SequenceDataset(item_codes.astype(np.int64) + 1, offsets, [str(t) for t in item_names],
                           [str(user_names[u]) for u in kept_users], name, info)


def _codes_in_first_order(tokens: np.ndarray):
    """Integer codes numbered by first appearance, and the tokens in that order."""
    uniq, first_idx, inverse = np.unique(tokens, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    by_first = np.argsort(first_idx, kind="stable")
    rank[by_first] = np.arange(len(uniq))
    return rank[inverse], uniq[by_first]
