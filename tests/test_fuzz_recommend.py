"""Property-based tests of ``compress.Recommender(model).recommend(histories, k, exclude_seen)`` on a tiny exported
MODEL_DIR (raw ids through items.json, popularity for empty histories) and on a built model
(indices as ids, no popularity).

Histories mix known raw ids (as strings and as ints), unknown ids, empty and very long histories
and duplicates; k is any integer (0, negative, beyond the catalogue) or not an integer at all.
The result is either a ``ConfigError`` with a one-line message or, per history, at most
min(k, n_items) distinct (raw id str, float score) pairs, best first, with no padding, no seen item
under ``exclude_seen``, the scores ``predict`` gives on the last N known items, and nothing left
out that scores higher than what was returned.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch
from conftest import synthetic_rows
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import compress
from compress.arch import ArchSpec
from compress.data.batching import pad_right
from compress.data.dataset import build_dataset
from compress.data.readers import Interactions
from compress.data.vocabulary import ItemVocabulary
from compress.errors import CompressError, ConfigError
from compress.store.export import save_model_dir

DEEP = int(os.environ.get("COMPRESS_FUZZ_EXAMPLES", 0))
FUZZ = settings(max_examples=DEEP or 80, deadline=3000, derandomize=not DEEP, database=None,
                suppress_health_check=[HealthCheck.too_slow])
N_ITEMS, MAX_LEN = 12, 6


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """compress.load of a tiny MODEL_DIR whose raw item ids are numbers ('101', '102', ...), so int
    and str histories name the same items."""
    rows = synthetic_rows(n_users=15, n_items=N_ITEMS, seed=5)
    inter = Interactions(np.array([f"u{u}" for u, _, _ in rows]), np.array([str(100 + i) for _, i, _ in rows]),
                         np.array([t for _, _, t in rows], dtype=np.float64), True, "synthetic")
    data = build_dataset(inter, name="synthetic")
    assert data.n_items == N_ITEMS
    torch.manual_seed(0)
    model = compress.get_backbone("sasrec")(ArchSpec(hidden=8, inner=16, heads=2, layers=1), N_ITEMS, MAX_LEN, 0.1)
    out = str(tmp_path_factory.mktemp("fuzz-recommend") / "model")
    save_model_dir(model, out, vocabulary=data.vocabulary(), dataset_stats=data.stats())
    return compress.load(out)


@pytest.fixture(scope="module")
def built():
    """A model never exported, its vocabulary given by hand: indices as ids, no popularity for empty histories."""
    torch.manual_seed(1)
    model = compress.get_backbone("sasrec")(ArchSpec(hidden=8, inner=16, heads=2, layers=1), N_ITEMS, MAX_LEN).eval()
    model.vocabulary = ItemVocabulary([str(i) for i in range(1, N_ITEMS + 1)])
    return model


def catalogue(model):
    return model.vocabulary.ids


UNKNOWN = st.sampled_from(["", "zzz", "0", "-1", "99999", "1e3", " 101", "101.0", "𝔁", None, 1.5, True, -3, 0,
                           10 ** 30, b"101"])


def histories_for(ids):
    known = st.sampled_from(ids)
    as_int = st.sampled_from([int(t) for t in ids if t.lstrip("-").isdigit()] or [0])
    element = st.one_of(known, known, as_int, UNKNOWN)
    history = st.one_of(st.lists(element, max_size=10), st.lists(element, min_size=40, max_size=200),
                        st.lists(st.sampled_from(ids[:2]), max_size=30))  # duplicates
    return st.lists(history, max_size=5)


K = st.one_of(st.integers(1, N_ITEMS + 5), st.integers(1, N_ITEMS + 5), st.integers(1, N_ITEMS + 5),
              st.integers(-3, 0), st.sampled_from([10 ** 9, 2 ** 70, np.int64(3)]),
              st.sampled_from([True, 2.0, "3", None, float("nan")]))


def check(model, histories, k, exclude_seen, result) -> None:
    ids = catalogue(model)
    index = {t: i + 1 for i, t in enumerate(ids)}
    assert isinstance(result, list) and len(result) == len(histories)
    want_len = min(int(k), model.n_items)
    for hist, recs in zip(histories, result):
        known = [index[str(t)] for t in hist if str(t) in index]
        rec_ids = [i for i, _ in recs]
        scores = [s for _, s in recs]
        assert all(isinstance(i, str) and i in index for i in rec_ids)  # raw ids, never padding
        assert all(type(s) is float for s in scores)
        assert len(set(rec_ids)) == len(rec_ids) <= want_len
        assert scores == sorted(scores, reverse=True)
        if not known:  # the popularity fallback: the most interacted-with items
            pop = model.vocabulary.popularity
            assert len(recs) == want_len
            assert scores == [float(pop[index[i]]) for i in rec_ids]
            assert min(scores) >= max([pop[j] for j in range(1, model.n_items + 1) if ids[j - 1] not in rec_ids],
                                      default=-math.inf)
            continue
        excluded = set(known) if exclude_seen else set()
        assert not {index[i] for i in rec_ids} & excluded  # nothing seen, even older than the last N
        assert len(recs) == min(want_len, model.n_items - len(excluded))
        with torch.no_grad():
            full = model.predict(pad_right([np.asarray(known, dtype=np.int64)], model.max_len))[0].float()
        assert scores == pytest.approx([float(full[index[i]]) for i in rec_ids], abs=1e-5)
        rest = [float(full[j]) for j in range(1, model.n_items + 1) if j not in excluded and ids[j - 1] not in rec_ids]
        if recs and rest:
            assert max(rest) <= min(scores) + 1e-6  # a true top-k


def run(model, histories, k, exclude_seen):
    """recommend's result, or None after a one-line ConfigError; unknown ids warn once, with their count,
    histories left without a known item once more, as a PopularityFallback with theirs, and lists
    shorter than k once more, with theirs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = compress.Recommender(model).recommend(histories, k=k, exclude_seen=exclude_seen)
        except CompressError as exc:
            assert isinstance(exc, ConfigError), exc
            msg = str(exc)
            assert msg and "\n" not in msg, msg
            event(f"ConfigError: {msg[:40]}")
            return None
    event("ok")
    index = set(catalogue(model))
    unknown = sum(1 for h in histories for t in h if str(t) not in index)
    empty = sum(1 for h in histories if not any(str(t) in index for t in h))
    short = sum(len(recs) < k for recs in result)
    assert len(caught) == (1 if unknown else 0) + (1 if empty else 0) + (1 if short else 0)
    if unknown:
        assert f"skipped {unknown} unknown" in str(caught[0].message)
    if empty:
        fallback = [w for w in caught if w.category is compress.PopularityFallback]
        assert len(fallback) == 1
        assert f"{empty} of {len(histories)} histories held no known item" in str(fallback[0].message)
    if short:
        assert f"{short} of {len(histories)} histories got fewer than the {k} items" in str(caught[-1].message)
    return result


@FUZZ
@given(st.data(), K, st.booleans())
@example(None, 0, True).via("k = 0")
@example(None, -2, True).via("negative k")
@example(None, N_ITEMS + 50, True).via("k beyond the catalogue")
@example(None, 2.0, True).via("a float k")
@example(None, True, True).via("a bool k")
def test_recommend_exported(exported, data, k, exclude_seen):
    ids = catalogue(exported)
    if data is None:
        histories = [[ids[0], int(ids[1]), "nope"], [], list(ids), [ids[3]] * 50, ids * 20]
    else:
        histories = data.draw(histories_for(ids))
    result = run(exported, histories, k, exclude_seen)
    if result is not None:
        check(exported, histories, k, exclude_seen, result)
    else:
        assert isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1


@FUZZ
@given(st.data(), st.integers(-1, N_ITEMS + 2), st.booleans())
def test_recommend_built(built, data, k, exclude_seen):
    """Without items.json: indices '1'..'n' are the ids; an empty history is a ConfigError."""
    histories = data.draw(histories_for(catalogue(built)))
    result = run(built, histories, k, exclude_seen)
    index = set(catalogue(built))
    empty = any(not [t for t in h if str(t) in index] for h in histories)
    if result is None:
        assert k < 1 or empty
    else:
        assert k >= 1 and not empty
        check(built, histories, k, exclude_seen, result)


@pytest.mark.parametrize("histories", ["101,102", [101], ["101", 5], None, 7, [None], [b"101"]])
def test_histories_of_the_wrong_shape(exported, histories):
    """A bare string is not a history of its characters; a scalar is not a history at all."""
    with pytest.raises(ConfigError, match="histor") as info:
        compress.Recommender(exported).recommend(histories, k=3)
    assert "\n" not in str(info.value)


def test_iterators_are_histories(exported):
    ids = catalogue(exported)
    want = compress.Recommender(exported).recommend([ids[:3]], k=4)
    assert compress.Recommender(exported).recommend(iter([iter(ids[:3])]), k=4) == want
    assert compress.Recommender(exported).recommend([tuple(ids[:3])], k=np.int64(4)) == want
