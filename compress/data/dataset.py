"""From raw interactions to per-user item sequences with a leave-one-out split.

Items are remapped to ``1..n_items`` (0 is padding) in order of first appearance; each user's rows
are sorted by time, stable on ties (file order decides). The split is the field's leave-one-out:
validation target = penultimate item, test target = last item, training = everything before.
"""
from __future__ import annotations

import json
import logging
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

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
        """The dataset ``save`` wrote to ``path``, checked (``check``): a truncated, foreign or altered
        file raises DataError here, where a caller can rebuild it, instead of a TypeError or a wrong
        error about the data deep in training. A file that cannot be opened raises OSError."""
        # our own handle: np.load leaks its file when the archive is corrupt, and the caller then deletes it
        with open(path, "rb") as fh:
            try:
                with np.load(fh, allow_pickle=False) as z:
                    meta = json.loads(str(z["meta"]))
                    ds = cls(_indices("items", z["items"]), _indices("offsets", z["offsets"]),
                             unpack(z, "item_tokens"), unpack(z, "user_tokens"), meta["name"], meta["info"])
            except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, zipfile.BadZipFile,
                    zlib.error) as exc:
                raise DataError(f"{path} is not a dataset SequenceDataset.save wrote ({type(exc).__name__}: "
                                f"{exc}); save it again") from None
        ds.check(path)
        return ds

    def check(self, source: str) -> None:
        """Refuse arrays that break what every method here relies on (offsets from 0 to the number of
        interactions, no user too short for leave-one-out, items in 1..n_items, a token per user), so
        that a damaged save fails as such rather than as a wrong diagnosis of the data. Vectorised: O(R)."""
        flaw = _flaw(self)
        if flaw:
            raise DataError(f"{source}: {flaw}; it is not a dataset compress built: build it again from the data")


def _indices(name: str, array: np.ndarray) -> np.ndarray:
    """A saved index array as int64 (the dtype bincount and torch expect), refused when it is not 1-D
    integers; a uint64 above 2**63 turns negative, which ``_flaw`` then catches."""
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array, got {array.dtype} of shape {array.shape}")
    return array.astype(np.int64)


def _flaw(ds: SequenceDataset) -> Optional[str]:
    """What in ``ds`` breaks the invariants ``check`` names, or None."""
    items, offsets = np.asarray(ds.items), np.asarray(ds.offsets)
    if not all(a.ndim == 1 and np.issubdtype(a.dtype, np.integer) for a in (items, offsets)):
        return f"items and offsets must be 1-D integer arrays, got {items.dtype} and {offsets.dtype}"
    if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(items):
        return f"offsets must run from 0 to the {len(items)} interactions, got {len(offsets)} offsets"
    if np.diff(offsets).min() < MIN_INTERACTIONS:
        return f"offsets must grow by {MIN_INTERACTIONS} or more per user (leave-one-out needs as many items)"
    if len(ds.user_tokens) != len(offsets) - 1:
        return f"{len(offsets) - 1} users but {len(ds.user_tokens)} user ids"
    if items.min() < 1 or items.max() > len(ds.item_tokens):
        return f"items must lie in 1..{len(ds.item_tokens)} (the item ids), got {items.min()}..{items.max()}"
    if not isinstance(ds.name, str) or not isinstance(ds.info, dict):
        return f"name and info must be a str and a dict, got {type(ds.name).__name__} and {type(ds.info).__name__}"
    return None


SAMPLED = {"pop100": "item(s) with interactions", "uni100": "item(s) in the catalogue"}  # where negatives are drawn
MIN_ITEMS = 2  # a sampled protocol ranks each target against negatives: items other than the target


def check_evaluable(ds: SequenceDataset, protocols: Sequence[str] = ("full", *SAMPLED),
                    source: Optional[str] = None) -> None:
    """Refuse data that evaluation under ``protocols`` would fail on, so that a run fails before it
    trains rather than after (every run ends with ``pop100``). ``full`` ranks against every item and
    takes any data; a sampled protocol draws each target's negatives among the other items, ``pop100``
    among those with interactions, ``uni100`` among the catalogue, so it needs 2 of them."""
    for protocol in protocols:
        if protocol == "full":
            continue
        if protocol not in SAMPLED:
            raise ConfigError(f"unknown protocol {protocol!r}; choose one of full, {', '.join(SAMPLED)}")
        have = ds.n_items if protocol == "uni100" else int(np.count_nonzero(ds.item_popularity()[1:]))
        if have < MIN_ITEMS:
            raise DataError(f"{source or ds.name}: {have} {SAMPLED[protocol]} ({ds.n_users} users, "
                            f"{ds.n_interactions} interactions), but the {protocol} evaluation ranks each target "
                            f"against other such items; use data with at least {MIN_ITEMS} distinct items")


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
    ds = SequenceDataset(item_codes.astype(np.int64) + 1, offsets, [str(t) for t in item_names],
                         [str(user_names[u]) for u in kept_users], name, info)
    check_evaluable(ds, source=inter.source)  # here, not after a whole training run
    return ds


def _codes_in_first_order(tokens: np.ndarray):
    """Integer codes numbered by first appearance, and the tokens in that order."""
    uniq, first_idx, inverse = np.unique(tokens, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    by_first = np.argsort(first_idx, kind="stable")
    rank[by_first] = np.arange(len(uniq))
    return rank[inverse], uniq[by_first]
