"""Item vocabularies are data: the raw item id of every embedding row travels with the model.

Row ``i + 1`` of a model's item embedding means ``ids[i]`` (row 0 is padding). Two numberings of the
same items differ as soon as one is built another way (RecBole numbers items by file order, a
Hugging Face model by its user's tokenizer, we by first appearance in the users' time-ordered
histories), and equal item counts prove nothing, so wherever a model meets data the vocabularies are
compared, row by row.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from compress.errors import CheckpointError, ConfigError

ALIGN_HINT = ("load the data onto the model's vocabulary: compress.load_dataset(..., item_ids=<the model's ids>), "
              "or on the command line train/search with --init and the same data")


def _raw_id(token: Any, row: int) -> str:
    """An item id as the data's readers give it: a non-empty string, or an integer written as one. A
    float (1.0 is not "1", NaN is a missing value) or None would name a row that no data can match."""
    if isinstance(token, numbers.Integral) and not isinstance(token, bool):
        return str(int(token))
    if isinstance(token, str) and token.strip():
        return str(token)
    raise ConfigError(f"item id {token!r} of row {row} is neither a non-empty string nor an integer; "
                      "give the raw ids as the data has them, one per row")


@dataclass
class ItemVocabulary:
    """The raw id of every item row (``ids[i]`` is row ``i + 1``) and, where known, each item's
    interaction count over the whole dataset (``popularity``: n + 1 numbers, index 0 unused), which
    serves a history with no known item."""

    ids: List[str]
    popularity: Optional[List[float]] = None
    _index: Dict[str, int] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.ids, (str, bytes, Set, Mapping)) or not isinstance(self.ids, (Sequence, np.ndarray)):
            raise ConfigError(f"item ids must be an ordered list of ids (row i + 1 is ids[i]), got "
                              f"{type(self.ids).__name__}")
        ids = list(self.ids)
        if not all(type(t) is str and t.strip() for t in ids):  # the readers' strings pass at list speed
            ids = [_raw_id(t, row) for row, t in enumerate(ids, 1)]
        self.ids = ids
        if not ids:
            raise ConfigError("item ids name no item: give the raw id of every item row (row i + 1 is ids[i])")
        if len(set(self.ids)) != len(self.ids):
            raise ConfigError("item ids must be distinct: an id given twice would name two embedding rows")
        if self.popularity is not None:
            listed = isinstance(self.popularity, Sequence) and not isinstance(self.popularity, str)
            pop = self.popularity if listed else ()
            if len(pop) != len(self.ids) + 1 or not all(  # interaction counts: never negative
                    isinstance(p, numbers.Real) and 0 <= p < float("inf") for p in pop):
                raise ConfigError(f"popularity must be {len(self.ids) + 1} finite counts >= 0 (index 0 unused)")
            self.popularity = [float(p) for p in pop]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def index(self) -> Dict[str, int]:
        """raw id -> embedding row (1-based)."""
        if self._index is None:
            self._index = {t: i + 1 for i, t in enumerate(self.ids)}
        return self._index

    def to_json(self) -> Dict[str, Any]:
        return {"item_ids": self.ids, "popularity": self.popularity}

    @classmethod
    def from_json(cls, obj: Dict[str, Any], n_items: int, where: str) -> "ItemVocabulary":
        """A vocabulary read from ``items.json``, checked against the model's item count."""
        ids, pop = obj.get("item_ids"), obj.get("popularity")
        if not isinstance(ids, list) or len(ids) != n_items:
            count = len(ids) if isinstance(ids, list) else "no"
            raise CheckpointError(f"{where} maps {count} items but config.json says {n_items}; "
                                  "the model directory is inconsistent")
        if not all(isinstance(t, str) for t in ids):
            raise CheckpointError(f"{where}: item_ids must be {n_items} distinct strings; "
                                  "the model directory is corrupt")
        try:
            return cls(ids, pop)
        except ConfigError as exc:
            raise CheckpointError(f"{where}: {exc}; the model directory is corrupt") from None

    def difference(self, other: "ItemVocabulary") -> Optional[str]:
        """None when the two number every item alike; else what differs, in words."""
        if self.ids == other.ids:
            return None
        moved = sum(1 for a, b in zip(self.ids, other.ids) if a != b)
        missing = len(set(other.ids) - set(self.ids))
        return (f"{moved:,} of {min(len(self), len(other)):,} rows hold another item"
                + (f", {missing:,} of the data's items are unknown to the model" if missing else "")
                + (f" ({len(self):,} items in the model, {len(other):,} in the data)"
                   if len(self) != len(other) else ""))


def check_same(model_vocab: Optional[ItemVocabulary], data_vocab: ItemVocabulary, what: str) -> None:
    """Refuse a model and data whose items are numbered differently (``what`` names the model)."""
    if model_vocab is None:
        return
    differs = model_vocab.difference(data_vocab)
    if differs:
        raise ConfigError(f"{what} and the data number their items differently ({differs}); {ALIGN_HINT}")


def as_vocabulary(given: Union[None, ItemVocabulary, Sequence[str]]) -> Optional[ItemVocabulary]:
    """``given`` as an ItemVocabulary: a list of raw ids is checked as such; None stays None."""
    return given if given is None or isinstance(given, ItemVocabulary) else ItemVocabulary(given)


def own_or_given(model: Any, given: Union[None, ItemVocabulary, Sequence[str]],
                 what: str = "vocabulary") -> Optional[ItemVocabulary]:
    """``given`` (argument ``what``) or else the vocabulary ``model`` carries, None when neither is there. A
    model that carries one (from ``compress.load`` or ``compress.fit``) names its own rows: a given one that
    names them otherwise is refused, as it would relabel every score without a word. Equal ids pass, and
    so do more ids whose first ones are the model's (items the data appended, for which wrap adds rows)."""
    given = as_vocabulary(given)
    own = getattr(model, "vocabulary", None)
    if given is None or own is None or given.ids[:len(own)] == own.ids:
        return given if given is not None else own
    moved = sum(1 for a, b in zip(own.ids, given.ids) if a != b)
    sizes = f"; {len(own):,} ids in the model's, {len(given):,} given" if len(own) != len(given) else ""
    raise ConfigError(f"the model carries its own item vocabulary and the {what} given names its rows otherwise "
                      f"({moved:,} of {min(len(own), len(given)):,} rows hold another item{sizes}); drop {what} (the "
                      "model's own names its rows) or give the same ids")


def vocabulary_of(model: Any, given: Union[None, ItemVocabulary, Sequence[str]] = None) -> ItemVocabulary:
    """The vocabulary naming ``model``'s item rows: ``given``, or the one the model carries (a model
    from ``compress.load`` or trained by ``compress.fit``); refused when absent, of another size, or
    another than the one the model carries."""
    vocabulary = own_or_given(model, given)
    if vocabulary is None:
        raise ConfigError("the model has no item vocabulary, so its rows cannot be named as raw item ids; pass "
                          "vocabulary= (e.g. dataset.vocabulary() of the data it was trained on) or use a MODEL_DIR "
                          "(compress.load)")
    if len(vocabulary) != model.n_items:
        raise ConfigError(f"the vocabulary names {len(vocabulary)} items but the model scores {model.n_items}")
    return vocabulary
