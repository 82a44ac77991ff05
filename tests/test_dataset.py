"""Per-user sequences: time order, id remapping, filtering, leave-one-out split, cache, named datasets."""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from compress.data import ReadOptions, build_dataset, load_dataset
from compress.data.dataset import SequenceDataset, check_evaluable, kcore
from compress.data.loading import resolve_source
from compress.data.readers import Interactions
from compress.data.registry import cache_root, resolve
from compress.errors import ConfigError, DataError
from compress.measure.evaluation import eval_set


def inter(rows, timed=True) -> Interactions:
    users, items, order = zip(*rows)
    return Interactions(np.array(users), np.array(items), np.array(order, dtype=np.float64), timed, "test")


def tokens(ds, u) -> list:
    return [ds.item_tokens[i - 1] for i in ds.sequence(u)]


def test_chronological_order_with_stable_ties():
    ds = build_dataset(inter([
        ("a", "x", 30), ("b", "p", 5), ("a", "y", 10),
        ("a", "t1", 20), ("a", "t2", 20), ("a", "t3", 20),  # equal times keep file order
        ("b", "q", 1), ("b", "r", 9),
    ]))
    assert ds.user_tokens == ["a", "b"]  # users in order of first appearance
    assert tokens(ds, 0) == ["y", "t1", "t2", "t3", "x"]
    assert tokens(ds, 1) == ["q", "p", "r"]


def test_stable_ties_survive_reversed_ties():
    # the tie-break is file position, not item id or token order
    ds = build_dataset(inter([("u", "9", 5), ("u", "3", 5), ("u", "1", 5), ("u", "7", 5)]))
    assert tokens(ds, 0) == ["9", "3", "1", "7"]


def test_id_remapping():
    ds = build_dataset(inter([("u1", "m", 1), ("u1", "k", 2), ("u1", "m", 3),
                              ("u2", "z", 1), ("u2", "k", 2), ("u2", "a", 3)]))
    # 0 is padding; items 1..n in order of first appearance (users in file order, each in time order)
    assert ds.item_tokens == ["m", "k", "z", "a"]
    assert ds.n_items == 4 and ds.n_users == 2
    assert ds.items.tolist() == [1, 2, 1, 3, 2, 4]
    assert ds.offsets.tolist() == [0, 3, 6]
    assert ds.items.min() == 1 and ds.items.dtype == np.int64
    pop = ds.item_popularity()
    assert pop.tolist() == [0, 2, 2, 1, 1]  # padding has no popularity


def test_short_users_dropped_and_counted(caplog):
    rows = [("a", "1", 1), ("a", "2", 2), ("a", "3", 3),
            ("b", "1", 1), ("b", "2", 2),  # 2 interactions: dropped
            ("c", "9", 1),  # 1 interaction: dropped, and item 9 disappears with it
            ("d", "3", 1), ("d", "1", 2), ("d", "2", 3), ("d", "4", 4)]
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(inter(rows))
    assert ds.info["dropped_users"] == 2
    assert "dropped 2 users" in caplog.text
    assert ds.user_tokens == ["a", "d"]
    assert ds.item_tokens == ["1", "2", "3", "4"]  # no id for an item only dropped users had
    assert ds.stats()["dropped_users"] == 2


def test_all_users_too_short_is_a_data_error():
    with pytest.raises(DataError, match="3 or more interactions"):
        build_dataset(inter([("a", "1", 1), ("a", "2", 2), ("b", "1", 1)]))


def test_kcore_iterates_to_a_fixpoint():
    rows = [("a", "x", 1), ("a", "y", 2), ("b", "x", 1), ("b", "y", 2), ("b", "z", 3), ("c", "z", 1)]
    users, items = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    # z has 2 users but c has one interaction; dropping c leaves z with one, which drops b's z
    keep = kcore(users, items, 2)
    assert keep.tolist() == [True, True, True, True, False, False]
    for u in np.unique(users[keep]):
        assert (users[keep] == u).sum() >= 2
    for i in np.unique(items[keep]):
        assert (items[keep] == i).sum() >= 2


def test_kcore_in_build_dataset():
    rows = [(u, i, t) for u in "abc" for t, i in enumerate("pqr")] + [("d", "p", 0), ("d", "s", 1), ("d", "q", 2)]
    ds = build_dataset(inter(rows), kcore_k=2)
    assert "s" not in ds.item_tokens  # s has one interaction
    assert ds.user_tokens == ["a", "b", "c"]  # d keeps p, q after the 2-core: then too short for the split
    assert ds.info["kcore"] == 2 and ds.info["dropped_users"] == 1


def test_leave_one_out_split():
    ds = build_dataset(inter([("u", str(i), i) for i in range(1, 7)] + [("v", str(i), i) for i in (7, 8, 9)]))
    hist, tgt = ds.eval_pairs("valid")
    assert [h.tolist() for h in hist] == [[1, 2, 3, 4], [7]]
    assert tgt.tolist() == [5, 8]
    hist, tgt = ds.eval_pairs("test")
    assert [h.tolist() for h in hist] == [[1, 2, 3, 4, 5], [7, 8]]
    assert tgt.tolist() == [6, 9]
    assert [s.tolist() for s in ds.train_sequences()] == [[1, 2, 3, 4], [7]]
    with pytest.raises(DataError, match="unknown split 'train'"):
        ds.eval_pairs("train")


def test_save_load_round_trip(tmp_path):
    ds = build_dataset(inter([("u", "x", 1), ("u", "y", 2), ("u", "é", 3)]), name="n")
    ds.save(str(tmp_path / "d.npz"))
    back = type(ds).load(str(tmp_path / "d.npz"))
    assert np.array_equal(back.items, ds.items) and np.array_equal(back.offsets, ds.offsets)
    assert back.item_tokens == ds.item_tokens and back.user_tokens == ds.user_tokens
    assert back.name == "n" and back.info == ds.info


# ---------------------------------------------------------------- loading and the cache


def cache_files() -> set:
    root = Path(cache_root()) / "processed"
    return set(root.glob("*.npz")) if root.exists() else set()


def salted(path: Path, salt: str) -> Path:
    """A copy of ``path`` with one extra row, so this test owns its cache entry."""
    out = path.with_name(f"{path.stem}-{salt}{path.suffix}")
    out.write_text(path.read_text() + f"salt-{salt}\ti1\t1\n")
    return out


def test_cache_hit_returns_equal_arrays(tiny_interactions):
    assert cache_root() != os.path.join(os.path.expanduser("~"), ".cache", "compress")
    tiny_interactions = salted(tiny_interactions, "hit")
    before = cache_files()
    first = load_dataset(str(tiny_interactions))
    created = cache_files() - before
    assert len(created) == 1
    entry = created.pop()
    stamp = entry.stat().st_mtime_ns
    second = load_dataset(str(tiny_interactions))
    assert entry.stat().st_mtime_ns == stamp  # read, not rewritten
    assert np.array_equal(first.items, second.items) and np.array_equal(first.offsets, second.offsets)
    assert first.item_tokens == second.item_tokens and first.user_tokens == second.user_tokens
    assert first.stats() == second.stats()
    uncached = load_dataset(str(tiny_interactions), use_cache=False)
    assert np.array_equal(uncached.items, second.items)


def test_changed_source_file_does_not_reuse_cache(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("user_id,item_id,timestamp\n1,a,1\n1,b,2\n1,c,3\n")
    assert load_dataset(str(path)).item_tokens == ["a", "b", "c"]
    path.write_text("user_id,item_id,timestamp\n1,a,1\n1,b,2\n1,d,3\n1,c,4\n")
    ds = load_dataset(str(path))
    assert ds.item_tokens == ["a", "b", "d", "c"]
    assert ds.n_interactions == 4


def test_changed_options_do_not_reuse_cache(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("user_id,item_id,timestamp\n1,a,3\n1,b,2\n1,c,1\n")
    assert load_dataset(str(path)).item_tokens == ["c", "b", "a"]
    assert load_dataset(str(path), options=ReadOptions(time_col="none")).item_tokens == ["a", "b", "c"]


def test_corrupt_cache_entry_is_rebuilt(tiny_interactions):
    tiny_interactions = salted(tiny_interactions, "corrupt")
    before = cache_files()
    good = load_dataset(str(tiny_interactions))
    entry = (cache_files() - before).pop()
    blob = entry.read_bytes()
    for damaged in (blob[: len(blob) // 2], b"garbage" * 10):
        entry.write_bytes(damaged)
        again = load_dataset(str(tiny_interactions))
        assert np.array_equal(again.items, good.items)


def own_cache(monkeypatch, tmp_path: Path, data: Path) -> Path:
    """A cache of this test's own holding ``data``'s entry: (the entry's path)."""
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    load_dataset(str(data))
    (entry,) = (tmp_path / "cache" / "processed").glob("*.npz")
    return entry


def rewrite(entry: Path, **arrays) -> None:
    """Rewrite a cache entry with ``arrays`` replacing its own (None: left out): a well-formed .npz of bad content."""
    with np.load(entry) as z:
        saved = {**{k: z[k] for k in z.files}, **arrays}
    with open(entry, "wb") as fh:
        np.savez(fh, **{k: v for k, v in saved.items() if v is not None})


DAMAGE = {  # what each damaged entry used to end in: a TypeError, or an error blaming the good data file
    "nan items": lambda ds: {"items": np.full(len(ds.items), np.nan)},
    "reversed offsets": lambda ds: {"offsets": ds.offsets[::-1].copy()},
    "items out of range": lambda ds: {"items": ds.items + 1000},
    "huge uint64 items": lambda ds: {"items": ds.items.astype(np.uint64) + np.uint64(2 ** 63)},
    "a user too short": lambda ds: {"offsets": np.concatenate([[0, 1], ds.offsets[2:]])},
    "offsets short of the items": lambda ds: {"offsets": ds.offsets[:-1]},
    "a user id missing": lambda ds: {"user_tokens_ends": np.zeros(0, dtype=np.int64)},
    "2-D items": lambda ds: {"items": ds.items[:, None]},
    "meta not a dict": lambda ds: {"meta": np.array("[1]")},
    "items missing": lambda ds: {"items": None},
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_entry_is_rebuilt_and_replaced(monkeypatch, tmp_path, tiny_interactions, caplog, damage):
    entry = own_cache(monkeypatch, tmp_path, tiny_interactions)
    fresh = load_dataset(str(tiny_interactions), use_cache=False)
    rewrite(entry, **DAMAGE[damage](fresh))
    with pytest.raises(DataError, match=f"^{entry}"):  # any loader of a saved dataset is protected
        SequenceDataset.load(str(entry))
    with caplog.at_level(logging.WARNING):
        again = load_dataset(str(tiny_interactions))
    assert "corrupt cache entry" in caplog.text and f"rebuilding it from {tiny_interactions}" in caplog.text
    assert np.array_equal(again.items, fresh.items) and np.array_equal(again.offsets, fresh.offsets)
    assert again.item_tokens == fresh.item_tokens and again.user_tokens == fresh.user_tokens
    replaced = SequenceDataset.load(str(entry))  # the entry was written anew
    assert np.array_equal(replaced.items, fresh.items) and replaced.stats() == fresh.stats()


def test_a_saved_dataset_loads_as_int64(tmp_path):
    ds = build_dataset(inter([("u", "x", 1), ("u", "y", 2), ("u", "z", 3)]))
    ds.items, ds.offsets = ds.items.astype(np.int32), ds.offsets.astype(np.uint16)
    ds.save(str(tmp_path / "d.npz"))
    back = SequenceDataset.load(str(tmp_path / "d.npz"))
    assert back.items.dtype == back.offsets.dtype == np.int64 and back.items.tolist() == [1, 2, 3]


def test_check_refuses_a_dataset_built_by_hand():
    ds = SequenceDataset(np.array([1, 2, 3]), np.array([0, 3]), ["x", "y"], ["u"])
    with pytest.raises(DataError, match=r"^mine: items must lie in 1\.\.2 .* got 1\.\.3"):
        ds.check("mine")


def unwritable_once(caplog, data: Path) -> None:
    """Two loads of ``data`` succeed, equal to a load without the cache, with one warning that names the fix."""
    fresh = load_dataset(str(data), use_cache=False)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert np.array_equal(load_dataset(str(data)).items, fresh.items)
    warned = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(warned) == 1 and "set COMPRESS_CACHE_DIR to a writable directory" in warned[0]


def test_a_file_as_cache_dir_only_warns(monkeypatch, tmp_path, tiny_interactions, caplog):
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "afile"))
    unwritable_once(caplog, tiny_interactions)
    assert f"{tmp_path / 'afile' / 'processed'} cannot be used (Not a directory)" in caplog.text


def test_an_unusable_home_without_cache_dir_only_warns(monkeypatch, tmp_path, tiny_interactions, caplog):
    (tmp_path / "home").write_text("")
    monkeypatch.delenv("COMPRESS_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    unwritable_once(caplog, tiny_interactions)


def test_a_read_only_cache_only_warns(monkeypatch, tmp_path, tiny_interactions, caplog):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache" / "processed").mkdir(parents=True)

    def read_only(*args, **kwargs):  # chmod does not stop root: the OSError a read-only mount gives
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(SequenceDataset, "save", read_only)
    unwritable_once(caplog, tiny_interactions)
    assert "Read-only file system" in caplog.text


def test_a_failed_rename_leaves_no_temporary_file(monkeypatch, tmp_path, tiny_interactions, caplog):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "replace", full)
    unwritable_once(caplog, tiny_interactions)
    assert list((tmp_path / "cache" / "processed").iterdir()) == []


def test_an_unreadable_cache_entry_is_built_instead(monkeypatch, tmp_path, tiny_interactions, caplog):
    own_cache(monkeypatch, tmp_path, tiny_interactions)

    def unreadable(cls, path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    monkeypatch.setattr(SequenceDataset, "load", classmethod(unreadable))
    unwritable_once(caplog, tiny_interactions)
    assert "(Permission denied)" in caplog.text


def test_a_download_into_an_unusable_cache_is_a_data_error(monkeypatch, tmp_path):
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "afile"))
    monkeypatch.delenv("COMPRESS_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="'ml-100k' cannot be saved under .*afile.*set COMPRESS_CACHE_DIR to a "
                                        "writable directory, or download it by hand"):
        resolve("ml-100k")


# ---------------------------------------------------------------- a catalogue too small to evaluate


def test_data_of_one_item_is_refused_when_built():
    rows = [(u, "x", t) for u in "ab" for t in range(3)]
    with pytest.raises(DataError, match=r"^test: 1 item\(s\) with interactions \(2 users, 6 interactions\), but the "
                                        "pop100 evaluation .* at least 2 distinct items"):
        build_dataset(inter(rows))


def test_data_left_with_one_item_by_kcore_is_refused():
    rows = [(u, "x", t) for u in "abc" for t in range(3)] + [("a", "y", 9)]
    assert build_dataset(inter(rows)).n_items == 2
    with pytest.raises(DataError, match="1 item.* with interactions"):
        build_dataset(inter(rows), kcore_k=2)


def test_two_items_are_enough_for_every_protocol():
    ds = build_dataset(inter([(u, i, t) for u in "ab" for t, i in enumerate("xyx")]))
    check_evaluable(ds)
    for protocol in ("full", "pop100", "uni100"):
        assert len(eval_set(ds, "test", protocol, 4)) == 2


def test_check_evaluable_follows_each_protocol():
    # a model's catalogue of 3 items, the data's interactions all on one: uni100 can draw, pop100 cannot
    ds = SequenceDataset(np.ones(3, dtype=np.int64), np.array([0, 3]), ["x", "y", "z"], ["u"], "aligned")
    check_evaluable(ds, ("full", "uni100"))
    with pytest.raises(DataError, match="^aligned: 1 item.* with interactions"):
        check_evaluable(ds, ("full", "pop100"))
    with pytest.raises(ConfigError, match="no negative items"):  # what evaluation would have said, too late
        eval_set(ds, "test", "pop100", 4)
    with pytest.raises(ConfigError, match="unknown protocol 'pop50'"):
        check_evaluable(ds, ("pop50",))


def test_directory_with_one_file(tmp_path, tiny_interactions):
    path, _, name = resolve_source(str(tiny_interactions.parent))
    assert path == str(tiny_interactions) and name == "tiny"


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="neither an existing path nor a known dataset"):
        load_dataset("ml-5m")


def test_embedded_default_dataset():
    ds = load_dataset()
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (960, 3381, 91710)
    assert ds.info["timed"]


def test_named_datasets_from_shared_data(shared_data):
    if not (shared_data / "s3rec" / "LastFM.txt.gz").exists():
        pytest.skip("LastFM not in shared data")
    ds = load_dataset("lastfm", data_dir=str(shared_data))
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (1090, 3646, 52551)
    # S3-Rec ids are 1..n in first-appearance order already, so the remapping is the identity
    assert ds.item_tokens[:3] == ["1", "2", "3"]


def test_ml100k_by_name(shared_data):
    if not (shared_data / "ml-100k" / "u.data.gz").exists():
        pytest.skip("ml-100k not in shared data")
    ds = load_dataset("ml-100k", data_dir=str(shared_data))
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100_000)
    assert ds.info["dropped_users"] == 0


def test_a_cache_entry_is_readable_as_the_umask_allows(monkeypatch, tmp_path, tiny_interactions):
    """Entries were written 0600 (mkstemp), so a cache shared between users was unusable to the others."""
    old = os.umask(0o022)
    try:
        entry = own_cache(monkeypatch, tmp_path, tiny_interactions)
    finally:
        os.umask(old)
    assert oct(entry.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no temporary file left
