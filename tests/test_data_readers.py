"""Readers: every supported format from small files, auto-detection, gzip, bad inputs, real slices."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

import compress
from compress.data.readers import ReadOptions, detect_format, read_interactions
from compress.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def rows(inter) -> list:
    return list(zip(inter.user_tokens().tolist(), inter.item_tokens().tolist(), inter.order.tolist()))


# ---------------------------------------------------------------- formats


def test_atomic_inter_typed_header(tmp_path):
    p = write(tmp_path / "x.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                    "1\t10\t5\t300\n2\t20\t3\t100\n1\t30\t4\t200\n")
    assert detect_format(str(p)) == "atomic"
    inter = read_interactions(str(p))
    assert rows(inter) == [("1", "10", 300.0), ("2", "20", 100.0), ("1", "30", 200.0)]
    assert inter.timed


def test_atomic_needs_typed_header(tmp_path):
    p = write(tmp_path / "x.inter", "user_id\titem_id\n1\t2\n")
    with pytest.raises(DataError, match="typed header"):
        read_interactions(str(p))


def test_movielens_ratings_dat(tmp_path):
    p = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n")
    assert detect_format(str(p)) == "ml-dat"
    inter = read_interactions(str(p))
    assert rows(inter) == [("1", "1193", 978300760.0), ("1", "661", 978302109.0), ("2", "1357", 978298709.0)]
    assert inter.timed


def test_movielens_udata_tab_no_header(tmp_path):
    p = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    assert detect_format(str(p)) == "udata"
    inter = read_interactions(str(p))
    assert rows(inter) == [("196", "242", 881250949.0), ("186", "302", 891717742.0)]


def test_csv_named_columns_by_flag(tmp_path):
    # names the readers do not know, textual ids: the header is found from the requested names
    p = write(tmp_path / "events.csv", "when,visitor,product,price\n"
                                       "30,A7,B00X,9.5\n10,A8,B00Y,1.0\n20,A7,B00Z,2.0\n")
    opts = ReadOptions(user_col="visitor", item_col="product", time_col="when")
    inter = read_interactions(str(p), opts)
    assert rows(inter) == [("A7", "B00X", 30.0), ("A8", "B00Y", 10.0), ("A7", "B00Z", 20.0)]
    assert inter.timed


def test_csv_known_header_names_need_no_flags(tmp_path):
    p = write(tmp_path / "r.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n")
    inter = read_interactions(str(p))
    assert rows(inter) == [("1", "31", 1260759144.0), ("1", "1029", 1260759179.0)]


def test_csv_without_time_column_keeps_file_order(tmp_path):
    p = write(tmp_path / "r.csv", "user,item\n1,5\n1,3\n2,5\n")
    inter = read_interactions(str(p))
    assert not inter.timed
    assert inter.order.tolist() == [0.0, 1.0, 2.0]


def test_headerless_positional_columns(tmp_path):
    # time, item, user: every column chosen by position
    p = write(tmp_path / "raw.txt", "300,7,u1\n100,8,u2\n200,9,u1\n")
    inter = read_interactions(str(p), ReadOptions(user_col="2", item_col="1", time_col="0"))
    assert rows(inter) == [("u1", "7", 300.0), ("u2", "8", 100.0), ("u1", "9", 200.0)]


def test_headerless_positional_never_guesses_time_from_the_user_or_item_column(tmp_path):
    # 3 columns: the default time guess (column 2) is the item column here, which must not be used
    p = write(tmp_path / "raw.txt", "5,1,20\n3,1,10\n")
    inter = read_interactions(str(p), ReadOptions(user_col="1", item_col="2"))
    assert rows(inter) == [("1", "20", 0.0), ("1", "10", 1.0)]
    assert not inter.timed


def test_headerless_default_columns(tmp_path):
    p = write(tmp_path / "checkins.txt", "0\t11\t1287411463.0\n0\t12\t1287330123.0\n")
    inter = read_interactions(str(p))
    assert rows(inter) == [("0", "11", 1287411463.0), ("0", "12", 1287330123.0)]
    inter = read_interactions(str(p), ReadOptions(time_col="none"))
    assert not inter.timed and inter.order.tolist() == [0.0, 1.0]


def test_sequence_file(tmp_path):
    p = write(tmp_path / "seq.txt", "1 5 6 7 8 9\n2 3 4 5 6 7 8\n3 9 8 7 6 5 4 3\n")
    assert detect_format(str(p)) == "sequence"
    inter = read_interactions(str(p))
    assert inter.user_tokens().tolist() == ["1"] * 5 + ["2"] * 6 + ["3"] * 7
    assert inter.item_tokens().tolist()[:5] == ["5", "6", "7", "8", "9"]
    assert not inter.timed
    assert np.all(np.diff(inter.order) > 0)  # file order


def test_sequence_file_user_on_two_lines_concatenates(tmp_path):
    from compress.data.dataset import build_dataset

    p = write(tmp_path / "seq.txt", "1 a b c\n2 x y z w\n1 d e\n")
    ds = build_dataset(read_interactions(str(p), ReadOptions(format="sequence")))
    assert [ds.item_tokens[i - 1] for i in ds.sequence(0)] == ["a", "b", "c", "d", "e"]


def test_gzip_is_transparent(tmp_path):
    text = "1::1193::5::978300760\n1::661::3::978302109\n"
    plain = write(tmp_path / "ratings.dat", text)
    gz = tmp_path / "ratings.dat.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    assert detect_format(str(gz)) == "ml-dat"
    assert rows(read_interactions(str(gz))) == rows(read_interactions(str(plain)))
    # gzip is recognised by its magic bytes, not only by the name
    disguised = tmp_path / "ratings_copy.dat"
    disguised.write_bytes(gzip.compress(text.encode()))
    assert rows(read_interactions(str(disguised))) == rows(read_interactions(str(plain)))


@pytest.mark.parametrize("name,text,fmt", [
    ("a.inter", "user_id:token\titem_id:token\n1\t2\n", "atomic"),
    ("ratings.dat", "1::2::5::9\n", "ml-dat"),
    ("u.data", "1\t2\t5\t9\n", "udata"),
    ("seq.txt", "1 2 3 4 5 6\n2 3 4\n", "sequence"),
    ("r.csv", "user_id,item_id\n1,2\n", "delimited"),
    ("r.tsv", "1\t2\t5\t9\n", "delimited"),
])
def test_format_detection(tmp_path, name, text, fmt):
    assert detect_format(str(write(tmp_path / name, text))) == fmt


# ---------------------------------------------------------------- bad inputs


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_interactions(str(tmp_path / "nope.csv"))


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="directory"):
        read_interactions(str(tmp_path))


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path, text):
    with pytest.raises(DataError, match="empty"):
        read_interactions(str(write(tmp_path / "e.csv", text)))


def test_header_without_rows(tmp_path):
    with pytest.raises(DataError, match="no rows"):
        read_interactions(str(write(tmp_path / "h.csv", "user_id,item_id,timestamp\n")))


def test_wrong_delimiter(tmp_path):
    p = write(tmp_path / "r.csv", "1,2,5,9\n3,4,5,9\n")
    with pytest.raises(DataError, match="one column"):
        read_interactions(str(p), ReadOptions(sep="\t"))
    with pytest.raises(DataError, match=r"r\.csv:1: expected at least 4 fields.*`sep`"):
        read_interactions(str(p), ReadOptions(format="ml-dat"))


def test_ragged_rows_name_the_line(tmp_path):
    p = write(tmp_path / "r.csv", "user_id,item_id,timestamp\n1,2,3\n4,5\n")
    with pytest.raises(DataError, match=r"r\.csv:3: expected at least 3 fields"):
        read_interactions(str(p))


@pytest.mark.parametrize("opts,match", [
    (ReadOptions(user_col="visitor"), "no user column named 'visitor'; columns are 'user_id, item_id'"),
    (ReadOptions(item_col="7"), "item column 7 does not exist"),
])
def test_wrong_columns(tmp_path, opts, match):
    p = write(tmp_path / "r.csv", "user_id,item_id\n1,2\n")
    with pytest.raises(DataError, match=match):
        read_interactions(str(p), opts)


def test_column_name_for_headerless_file(tmp_path):
    p = write(tmp_path / "r.csv", "1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="no header"):
        read_interactions(str(p), ReadOptions(user_col="visitor"))


def test_unknown_header_names(tmp_path):
    p = write(tmp_path / "r.csv", "who,what\n1,2\n")
    with pytest.raises(DataError, match="`user_col`/`item_col`"):
        read_interactions(str(p))


def test_non_numeric_timestamp(tmp_path):
    p = write(tmp_path / "r.csv", "user_id,item_id,timestamp\n1,2,100\n1,3,2020-01-02\n")
    with pytest.raises(DataError, match="non-numeric timestamp '2020-01-02'"):
        read_interactions(str(p))


@pytest.mark.parametrize("name, text, where", [
    ("e.tsv", "user_id\titem_id\ttimestamp\nu0\t1\t0\nu0\t\t1\nu0\t3\t2\n", "e.tsv:3: empty item id"),
    ("e.csv", "user_id,item_id,timestamp\nu0,1,0\nu0,2,1\nu0,,2\n", "e.csv:4: empty item id"),
    ("e.csv", "user_id,item_id,timestamp\nu0,1,0\n,2,1\nu0,,2\n", "e.csv:3: empty user id"),  # the first
    ("e.csv", "user_id,item_id,timestamp\nu0,1,0\nu0,   ,1\n", "e.csv:3: empty item id"),  # blank: stripped
    ("e.csv", "u0,1,0\nu0,,1\n", "e.csv:2: empty item id"),  # no header
    ("u.data", "1\t\t5\t100\n", "u.data:1: empty item id"),
])
def test_empty_ids_name_the_line(tmp_path, name, text, where):
    with pytest.raises(DataError, match="holds nothing or only spaces.*; fill it in or drop the row") as err:
        read_interactions(str(write(tmp_path / name, text)))
    assert where in str(err.value)


@pytest.mark.parametrize("text, where", [("u0,1,2,,3\n", "s.txt:1: empty item id"),
                                         ("u0,1,2,3\n  ,4,5,6\n", "s.txt:2: empty user id")])
def test_empty_ids_in_sequences_with_a_delimiter(tmp_path, text, where):
    with pytest.raises(DataError, match=where):
        read_interactions(str(write(tmp_path / "s.txt", text)), ReadOptions(format="sequence", sep=","))


def test_sequence_fields_are_stripped_as_columns_are(tmp_path):
    p = write(tmp_path / "s.txt", "u0, 1, 2 ,3\n")
    assert rows(read_interactions(str(p), ReadOptions(format="sequence", sep=","))) == [
        ("u0", "1", 0.0), ("u0", "2", 1.0), ("u0", "3", 2.0)]


def test_unknown_format(tmp_path):
    p = write(tmp_path / "r.csv", "user_id,item_id\n1,2\n")
    with pytest.raises(DataError, match="unknown format 'parquet'"):
        read_interactions(str(p), ReadOptions(format="parquet"))


def test_truncated_gzip(tmp_path):
    blob = gzip.compress(b"1\t2\t3\t4\n" * 50_000)
    p = tmp_path / "u.data.gz"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_interactions(str(p))


# ---------------------------------------------------------------- real data slices


def test_real_ml100k_udata(shared_data):
    path = shared_data / "ml-100k" / "u.data.gz"
    if not path.exists():
        pytest.skip("ml-100k not in shared data")
    inter = read_interactions(str(path))
    assert len(inter) == 100_000
    assert len(np.unique(inter.users)) == 943
    assert len(np.unique(inter.items)) == 1682
    assert inter.timed and inter.order.min() > 8e8


def test_real_lastfm_sequences(shared_data):
    path = shared_data / "s3rec" / "LastFM.txt.gz"
    if not path.exists():
        pytest.skip("LastFM not in shared data")
    assert detect_format(str(path)) == "sequence"
    inter = read_interactions(str(path))
    assert len(inter) == 52_551
    assert len(np.unique(inter.users)) == 1090
    assert len(np.unique(inter.items)) == 3646


def test_quoted_csv_fields_are_read_as_csv_quotes_them(tmp_path):
    """pandas' to_csv quotes a field that holds the delimiter ("item, 3") or every field (QUOTE_ALL); those
    files once failed on a "non-numeric timestamp" or loaded ids with their quotes."""
    rows = ["user_id,item_id,timestamp"] + [f'u{u},{q},{1000 + j}' for u in range(4)
                                            for j, q in enumerate(['"item, 0"', "i1", '"say ""hi"""', "i3"])]
    (tmp_path / "q.csv").write_text("\n".join(rows) + "\n")
    ds = compress.load_dataset(str(tmp_path / "q.csv"), use_cache=False)
    assert ds.item_tokens == ["item, 0", "i1", 'say "hi"', "i3"] and ds.n_users == 4
    quoted = ['"user_id","item_id","timestamp"'] + [f'"u{u}","i{j}","{1000 + j}"' for u in range(4) for j in range(4)]
    (tmp_path / "all.csv").write_text("\n".join(quoted) + "\n")
    assert compress.load_dataset(str(tmp_path / "all.csv"), use_cache=False).item_tokens == ["i0", "i1", "i2", "i3"]


@pytest.mark.parametrize("item, line", [('"', 3), ('"a"b', 3), ('"a', 2)])
def test_unbalanced_quotes_are_refused_at_their_line(tmp_path, item, line):
    """A field that opens a quote and does not close it ran into the next fields (a lone " took the
    timestamp with it: "expected 3 fields, got 2") or lost its quotes ("a"b read as ab): a changed id
    without a word. Such a line is now named, with the quoting rule."""
    rows = ["user_id\titem_id\ttimestamp", "u\ti1\t1", "u\ti2\t2", "u\ti3\t3"]
    rows[line - 1] = f"u\t{item}\t{line}"
    (tmp_path / "q.tsv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=rf"q.tsv:{line}: unbalanced double quotes in .*written \"\"; fix the quoting"):
        compress.load_dataset(str(tmp_path / "q.tsv"), use_cache=False)


def test_a_file_of_blank_lines_ends_early(tmp_path, monkeypatch):
    """A 300 MB gzip of newlines once read for a minute before it was called empty: a run of blank lines no
    data file holds ends the read where it is found."""
    from compress.data import readers

    monkeypatch.setattr(readers, "MAX_BLANK", 1000)
    path = tmp_path / "blank.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n" * 5000)
    with pytest.raises(DataError, match="blank.tsv.gz:1000 ends a run of 1,000 blank lines; is it a data file"):
        compress.load_dataset(str(path), use_cache=False)
    (tmp_path / "spaced.tsv").write_text("user_id\titem_id\ttimestamp\n" + "\n" * 999 + "u1\ti1\t1\nu1\ti2\t2\n"
                                         "u1\ti3\t3\n")
    assert compress.load_dataset(str(tmp_path / "spaced.tsv"), use_cache=False).n_items == 3


def test_nanosecond_timestamps_keep_their_order(tmp_path):
    """Times past 2**53 (pandas' datetime64[ns] as int64) once read as float64, which merges neighbours
    256 ns apart into ties that file order then broke: D, C, B, A by time loaded as A, B, C, D."""
    base = 1_600_000_000_000_000_000
    rows = [("u1", "A", base + 3), ("u1", "B", base + 2), ("u1", "C", base + 1), ("u1", "D", base),
            ("u2", "A", base), ("u2", "B", base + 1), ("u2", "C", base + 2)]
    path = tmp_path / "ns.csv"
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    ds = compress.load_dataset(str(path), use_cache=False)
    first = [ds.item_tokens[i - 1] for i in ds.items[ds.offsets[0]:ds.offsets[1]]]
    assert first == ["D", "C", "B", "A"]
    mixed = tmp_path / "mixed.csv"  # a fraction anywhere: float times, as before
    mixed.write_text("user_id,item_id,timestamp\nu1,A,2.5\nu1,B,1\nu1,C,3\nu1,D,0.5\nu2,A,1\nu2,B,2\nu2,C,3\n")
    ds = compress.load_dataset(str(mixed), use_cache=False)
    assert [ds.item_tokens[i - 1] for i in ds.items[ds.offsets[0]:ds.offsets[1]]] == ["D", "B", "A", "C"]
