"""Bad arguments to the data entry points end in a typed one-line error that names the fix: the
`data` argument's type, boolean flags, model item ids that do not fit the data, and what
`pad_right` takes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from clihelp import error_line, invoke

import compress
from compress.errors import ConfigError, DataError


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    """Four users of 4 interactions over items 1..6: item "1" once for each, items "1" and "2" only
    for u0."""
    rows = {"u0": ["1", "2", "2", "2"], "u1": ["1", "3", "4", "5"], "u2": ["1", "4", "5", "6"],
            "u3": ["1", "6", "3", "4"]}
    path = tmp_path / "tiny.tsv"
    path.write_text("user_id\titem_id\ttimestamp\n" + "".join(
        f"{u}\t{i}\t{t}\n" for u, items in rows.items() for t, i in enumerate(items)))
    return path


# ---------------------------------------------------------------- item_ids that do not fit the data


@pytest.mark.parametrize("ids, matched", [(["a", "b", "c"], 0), (["1"], 1), (["1", "3"], 2)])
def test_item_ids_that_leave_no_user_are_refused(tsv, ids, matched):
    with pytest.raises(DataError) as err:
        compress.load_dataset(tsv, item_ids=ids, use_cache=False)
    msg = str(err.value)
    assert f"match {matched} of the data's 6 items" in msg and "no user with 3 or more" in msg
    assert "this data's ids" in msg and "\n" not in msg


def test_aligned_data_keeps_the_users_left_long_enough(tsv):
    ds = compress.load_dataset(tsv, item_ids=["1", "2"], use_cache=False)
    assert ds.user_tokens == ["u0"] and ds.info["dropped_users_after_alignment"] == 3
    assert [ds.item_tokens[i - 1] for i in ds.sequence(0)] == ["1", "2", "2", "2"]


def test_alignment_drops_users_below_the_min_interactions_asked_for(tsv):
    # u0 and u1 keep their 4 items, u2 and u3 3 of 4 (they have "6")
    ids = ["1", "2", "3", "4", "5"]
    assert compress.load_dataset(tsv, item_ids=ids, use_cache=False).n_users == 4
    ds = compress.load_dataset(tsv, item_ids=ids, min_interactions=4, use_cache=False)
    assert ds.user_tokens == ["u0", "u1"]


# ---------------------------------------------------------------- the data argument and flags


class FakeFrame:
    """Stands for a pandas DataFrame (pandas need not be installed): it has ``to_csv``."""

    def to_csv(self, *args, **kwargs) -> None:
        raise AssertionError("never called")


@pytest.mark.parametrize("data, words", [
    ([1, 2], "got list; write the interactions"),
    (123, "got int"),
    (b"tiny.tsv", "got bytes"),
    (FakeFrame(), "got FakeFrame; save it first, e.g. df.to_csv("),
])
def test_data_must_be_a_name_or_a_path(data, words):
    with pytest.raises(ConfigError, match="data must be a dataset name or a path") as err:
        compress.load_dataset(data)
    assert words in str(err.value)


def test_data_dir_must_be_a_path():
    with pytest.raises(ConfigError, match="data_dir must be a directory .* got int"):
        compress.load_dataset("ml-100k", data_dir=5)


def test_an_empty_path_is_not_the_default_dataset():
    """An unset variable passed as data loaded the embedded dataset, as if nothing had been asked for."""
    with pytest.raises(ConfigError, match="data is an empty string; give a dataset name or a path, or None"):
        compress.load_dataset("")
    with pytest.raises(ConfigError, match="data_dir is an empty string"):
        compress.load_dataset("ml-100k", data_dir="")


def test_a_pathlib_path_loads(tsv):
    assert compress.load_dataset(tsv, data_dir=tsv.parent, use_cache=False).n_users == 4


@pytest.mark.parametrize("flag", ["no", 1, None, np.bool_(False)])
def test_use_cache_must_be_a_bool(tsv, flag):
    with pytest.raises(ConfigError, match="use_cache must be a bool, got .*; True reuses"):
        compress.load_dataset(tsv, use_cache=flag)


# ---------------------------------------------------------------- pad_right


@pytest.mark.parametrize("seqs, words", [
    ([[1.5, 2.7]], "row 0 of pad_right's input, [1.5, 2.7], is not a 1-D sequence of whole item indices"),
    ([np.array([3]), np.array([0.5])], "row 1 of pad_right's input, [0.5]"),
    ([[float("nan")]], "row 0"),
    ([["a", "b"]], "['a', 'b']"),
    ([[True, False]], "[True, False]"),
    ([1, 2, 3], "row 0 of pad_right's input, 1,"),
    (["abc"], "'abc'"),
    ([[[1, 2], [3]]], "row 0 of pad_right's input, list,"),
    ([np.array([1]), np.array([[1, 2], [3, 4]])], "row 1"),
    ([np.array(3)], "row 0"),
    ((np.array([1, 2]) for _ in range(2)), "pad_right got a generator"),
    ("abc", "pad_right got a str"),
    (None, "pad_right got a NoneType"),
])
def test_pad_right_refuses_what_is_not_item_indices(seqs, words):
    with pytest.raises(ConfigError) as err:
        compress.pad_right(seqs, 3)
    msg = str(err.value)
    assert words in msg and "pad_right takes a list of 1-D integer sequences" in msg and "\n" not in msg


@pytest.mark.parametrize("seqs", [[[-1, 2]], [np.array([4, -2])], [np.array([2 ** 63 + 1], dtype=np.uint64)]])
def test_pad_right_refuses_negative_indices(seqs):
    with pytest.raises(ConfigError, match="row 0 of pad_right's input holds a negative item index"):
        compress.pad_right(seqs, 3)


@pytest.mark.parametrize("seqs", [
    [np.array([1, 2]), np.array([3, 4, 5, 6])],  # the internal callers' int64 arrays
    [np.array([1, 2], dtype=np.int32), np.array([3, 4, 5, 6], dtype=np.uint8)],
    [[1, 2], (3, 4, 5, 6)],
    [[1.0, 2.0], np.array([3.0, 4.0, 5.0, 6.0])],  # whole floats are indices
    [torch.tensor([1, 2]), torch.tensor([3, 4, 5, 6])],
])
def test_pad_right_takes_integer_sequences(seqs):
    assert compress.pad_right(seqs, 3).tolist() == [[1, 2, 0], [4, 5, 6]]


def test_pad_right_takes_empty_rows_and_batches():
    assert compress.pad_right([[], np.zeros(0, dtype=np.int64), [7]], 2).tolist() == [[0, 0], [0, 0], [7, 0]]
    assert compress.pad_right([], 4).shape == (0, 4)
    assert compress.pad_right(np.array([[1, 2], [3, 4]]), 3).tolist() == [[1, 2, 0], [3, 4, 0]]


# ---------------------------------------------------------------- empty ids, end to end


def test_an_empty_item_id_is_refused_at_load_time(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("user_id\titem_id\ttimestamp\n" + "".join(
        f"u{u}\t{'' if i == 2 else i}\t{i}\n" for u in range(3) for i in range(4)))
    with pytest.raises(DataError, match=r"e\.tsv:4: empty item id"):
        compress.load_dataset(path)


# ---------------------------------------------------------------- data too small to evaluate, end to end


@pytest.mark.parametrize("command", [["train", "--epochs", "1"], ["search", "--search-epochs", "1"]])
def test_runs_refuse_data_of_one_item_before_training(tmp_path, command):
    """Training used to run whole, fail at evaluation, and leave a RUN.partial every resume failed on."""
    path = tmp_path / "one.tsv"
    path.write_text("user_id\titem_id\ttimestamp\n" + "".join(f"u{u}\tA\t{t}\n" for u in range(4) for t in range(4)))
    out = tmp_path / "run"
    line = error_line(invoke(*command, "--data", path, "--out", out, "--device", "cpu"))
    assert f"{path}: 1 item(s) with interactions (4 users, 16 interactions)" in line
    assert "at least 2 distinct items" in line
    assert not out.exists() and not (tmp_path / "run.partial").exists()
