"""Property-based tests of the data readers: every input ends in a correct load or a one-line
``CompressError``, never another exception and never a hang.

Structured files (every format, gzip or not) are checked against a reference implementation of
the documented semantics: users with fewer than 3 interactions dropped, each user's rows in
non-decreasing time order with ties kept in file order (file order alone for untimed formats),
items numbered 1..n_items by first appearance (0 = padding). Random bytes, random text, cut gzip
streams and random read options only have to end cleanly, and a load must satisfy the invariants.

Every example writes its own file in its own temporary directory and loads it through the dataset
cache (``COMPRESS_CACHE_DIR``, per test session): the cache key hashes the file's bytes and the
options, so examples cannot see each other's entries; a second load (from the cache) must equal
the first.
"""
from __future__ import annotations

import gzip
import math
import os
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import compress
from compress.data import FORMATS, ReadOptions
from compress.errors import CompressError, DataError

MIN = 3  # compress.data.dataset.MIN_INTERACTIONS
# A fixed, fast run in the suite; COMPRESS_FUZZ_EXAMPLES=5000 runs a long randomised hunt instead.
DEEP = int(os.environ.get("COMPRESS_FUZZ_EXAMPLES", 0))
FUZZ = settings(max_examples=DEEP or 60, deadline=3000, derandomize=not DEEP, database=None,
                suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- helpers


def write(content: bytes, name: str, gz: bool = False) -> Tuple[tempfile.TemporaryDirectory, str]:
    tmp = tempfile.TemporaryDirectory(prefix="fuzz-readers-")
    path = os.path.join(tmp.name, name + (".gz" if gz else ""))
    with open(path, "wb") as fh:
        fh.write(gzip.compress(content, mtime=0) if gz else content)
    return tmp, path


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and "\r" not in msg, f"multi-line or empty message: {msg!r}"
    return msg


def outcome(path: str, options: Optional[ReadOptions] = None, note=event, **kwargs):
    """The loaded dataset (invariants checked, and the cached copy equal to it), or None after a
    one-line CompressError. Any other exception fails the test. ``note`` records which (hypothesis
    events: see them with --hypothesis-show-statistics)."""
    try:
        ds = compress.load_dataset(path, options=options, **kwargs)
    except CompressError as exc:
        note(f"{type(exc).__name__}: {one_line(exc).replace(path, 'PATH')[:60]}")
        return None
    note("loaded")
    check_invariants(ds)
    again = compress.load_dataset(path, options=options, **kwargs)  # from the cache
    assert_same(ds, again)
    fresh = compress.load_dataset(path, options=options, use_cache=False, **kwargs)
    assert_same(ds, fresh)
    return ds


def assert_same(a, b) -> None:
    assert np.array_equal(a.items, b.items) and np.array_equal(a.offsets, b.offsets)
    assert list(a.item_tokens) == list(b.item_tokens) and list(a.user_tokens) == list(b.user_tokens)


def check_invariants(ds, min_len: int = MIN) -> None:
    items, offsets = np.asarray(ds.items), np.asarray(ds.offsets)
    assert items.dtype == np.int64 and offsets.dtype == np.int64
    assert ds.n_users >= 1 and ds.n_items >= 1
    assert offsets[0] == 0 and offsets[-1] == len(items) == ds.n_interactions
    lengths = np.diff(offsets)
    assert (lengths >= min_len).all()
    assert items.min() >= 1 and items.max() == ds.n_items  # 0 is padding, never an item
    # items numbered by first appearance: every index used, first occurrences in increasing order
    _, first = np.unique(items, return_index=True)
    assert len(first) == ds.n_items and (np.diff(first) > 0).all()
    assert len(set(ds.item_tokens)) == ds.n_items and len(set(ds.user_tokens)) == ds.n_users
    assert all(isinstance(t, str) for t in ds.item_tokens + ds.user_tokens)
    assert sum(len(s) for s in ds.train_sequences()) == ds.n_interactions - 2 * ds.n_users
    histories, targets = ds.eval_pairs("test")
    assert len(histories) == len(targets) == ds.n_users


def reference(rows: Sequence[Tuple[str, str, Optional[str]]]):
    """(user tokens, per-user item-token sequences) the documented semantics give, or None when a
    timestamp is not a finite number (a DataError is expected)."""
    keys = []
    for pos, (_, _, t) in enumerate(rows):
        if t is None:
            keys.append((0.0, pos))
            continue
        value = float(t)
        if not math.isfinite(value):
            return None
        keys.append((value, pos))
    order: dict = {}
    for pos, (u, _, _) in enumerate(rows):
        order.setdefault(u, []).append(pos)
    users, seqs = [], []
    for u, positions in order.items():  # users by first appearance
        if len(positions) >= MIN:
            users.append(u)
            seqs.append([rows[p][1] for p in sorted(positions, key=lambda p: keys[p])])
    return users, seqs


def decoded(ds) -> Tuple[List[str], List[List[str]]]:
    return list(ds.user_tokens), [[ds.item_tokens[i - 1] for i in s] for s in ds.sequences()]


# ---------------------------------------------------------------- strategies

# Raw id text: any printable non-space character (unicode ids included) except the field delimiters.
ID_CHARS = st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                         blacklist_characters=",;|:\t\ufeff").filter(lambda c: not c.isspace())
TEXT_IDS = st.text(ID_CHARS, min_size=1, max_size=6)
HUGE = 10 ** 30  # far beyond int64
NUM_IDS = st.one_of(st.integers(0, 12), st.integers(-HUGE, HUGE)).map(str)
TIMES = st.one_of(
    st.integers(0, 5), st.integers(0, 5), st.integers(0, 5),  # many ties
    st.integers(-10 ** 20, 10 ** 20),  # negative, and beyond int64 / float precision
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1e-400", "-0", "1_000", " 7", "1e3"]),
).map(lambda t: repr(t) if isinstance(t, float) else str(t))
NON_FINITE = st.sampled_from(["nan", "inf", "-inf", "1e400", "-1e999", "NaN"])


def pools(ids: st.SearchStrategy, size: int = 6):
    """A few users and items reused across rows: duplicates, ties and short users are common."""
    return st.lists(ids, min_size=1, max_size=size, unique=True)


@st.composite
def table(draw, ids: st.SearchStrategy, times: Optional[st.SearchStrategy] = TIMES, max_rows: int = 40):
    users, items = draw(pools(ids, 5)), draw(pools(ids, 8))
    n = draw(st.integers(0, max_rows))
    return [(draw(st.sampled_from(users)), draw(st.sampled_from(items)),
             None if times is None else draw(times)) for _ in range(n)]


# ---------------------------------------------------------------- structured files vs the reference


def csv_field(text: str, sep: str) -> str:
    """``text`` as pandas' ``to_csv`` writes it: quoted, its quotes doubled, when it holds a double quote
    (where the delimiter is one character: the readers split on "::" as it is)."""
    return '"' + text.replace('"', '""') + '"' if '"' in text and len(sep) == 1 else text


def render(rows, fmt: str, sep: str, header: bool, rating: bool, crlf: bool) -> Tuple[bytes, str, str]:
    """(file bytes, file name, format to ask for) of ``rows`` in ``fmt``."""
    nl = "\r\n" if crlf else "\n"
    timed = rows and rows[0][2] is not None
    if fmt == "sequence":  # one line per row (a user continued on later lines)
        return nl.join(f"{u} {i}" for u, i, _ in rows).encode(), "seq.txt", "sequence"
    if fmt in ("ml-dat", "udata", "atomic"):
        sep = {"ml-dat": "::", "udata": "\t", "atomic": "\t"}[fmt]
        lines = [sep.join(csv_field(f, sep) for f in (u, i, "4", t)) for u, i, t in rows]
        if fmt == "atomic":
            lines.insert(0, "user_id:token\titem_id:token\trating:float\ttimestamp:float")
        name = {"ml-dat": "ratings.dat", "udata": "u.data", "atomic": "x.inter"}[fmt]
        return nl.join(lines).encode(), name, fmt
    cols = [lambda r: r[0], lambda r: r[1]] + ([lambda r: "4"] if rating else []) + \
           ([lambda r: r[2]] if timed else [])
    lines = [sep.join(csv_field(c(r), sep) for c in cols) for r in rows]
    if header:
        names = ["user_id", "item_id"] + (["rating"] if rating else []) + (["timestamp"] if timed else [])
        lines.insert(0, sep.join(names))
    return nl.join(lines).encode(), "data.csv", "delimited"


@st.composite
def structured(draw):
    fmt = draw(st.sampled_from(["delimited", "delimited", "sequence", "ml-dat", "udata", "atomic"]))
    header = fmt == "delimited" and draw(st.booleans())
    # headerless delimited files need numeric ids (a textual first row above numeric rows is a header)
    ids = TEXT_IDS if header or fmt in ("ml-dat", "udata", "atomic", "sequence") else NUM_IDS
    timed = fmt in ("ml-dat", "udata", "atomic") or (fmt == "delimited" and draw(st.booleans()))
    rows = draw(table(ids, TIMES if timed else None))
    if timed and rows and draw(st.sampled_from([False] * 4 + [True])):  # one file in five
        at = draw(st.integers(0, len(rows) - 1))
        rows[at] = (rows[at][0], rows[at][1], draw(NON_FINITE))
    sep = draw(st.sampled_from(["\t", ",", ";", "|"] + ([" "] if not header else [])))
    rating = draw(st.booleans())
    return rows, fmt, sep, header, rating


@FUZZ
@given(structured(), st.booleans(), st.booleans(), st.booleans())
@example(([("u1", "a", "3"), ("u1", "b", "1"), ("u1", "c", "1"), ("u2", "a", "0")], "delimited", ",", True, False),
         False, False, False).via("ties stable, a short user dropped")
@example(([("1", "10", "5"), ("1", "10", "5"), ("1", "10", "5")], "delimited", "\t", False, True),
         False, True, False).via("duplicate rows, one user, one item")
@example(([("1", "2", "nan"), ("1", "3", "1"), ("1", "4", "2")], "delimited", ",", False, False),
         False, False, False).via("NaN timestamp")
@example(([("1", "2", "1e400"), ("1", "3", "1"), ("1", "4", "2")], "udata", "\t", False, False),
         True, False, False).via("infinite timestamp")
@example(([("9" * 40, "-" + "9" * 30, "1"), ("9" * 40, "7", "2"), ("9" * 40, "8", "3")], "delimited", "\t",
          False, False), False, False, True).via("ids beyond int64")
@example(([("ユーザー", "項目", "1"), ("ユーザー", "é", "1"), ("ユーザー", "𝔁", "0")], "delimited", ",", True, False),
         False, True, True).via("unicode ids, BOM")
@example(([("u", "a", "1"), ("u", "b", "2"), ("v", "a", "3"), ("v", "b", "4")], "delimited", ",", True, False),
         False, False, False).via("every user has fewer than 3 interactions")
@example(([("0", "0", "0"), ("0", "0", "0"), ("0", '"', "0")], "delimited", "\t", True, False),
         False, False, False).via("a quote as an id, written as pandas quotes it")
@example(([], "delimited", ",", True, False), False, False, False).via("header only")
@example(([], "sequence", " ", False, False), False, False, False).via("empty file")
def test_structured_files_load_as_documented(case, gz, crlf, bom):
    rows, fmt, sep, header, rating = case
    content, name, asked = render(rows, fmt, sep, header, rating, crlf)
    if bom:
        content = "\ufeff".encode() + content
    tmp, path = write(content, name, gz)
    with tmp:
        want = reference(rows)
        for option in ("auto", asked):
            if option == "auto" and fmt == "sequence":
                continue  # a one-pair-per-line sequence file is indistinguishable from a 2-column table
            ds = outcome(path, ReadOptions(format=option))
            if not rows:
                assert ds is None  # empty or header-only: a DataError
            elif want is None:
                assert ds is None  # a non-finite timestamp is refused, never sorted silently
            elif not want[0]:
                assert ds is None  # nobody has 3 interactions
            elif len({item for seq in want[1] for item in seq}) < 2:
                assert ds is None  # one item: nothing to rank a target against
            else:
                assert ds is not None, f"{option}: expected a load"
                assert decoded(ds) == want


def test_non_finite_timestamp_is_named(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("user_id,item_id,timestamp\n1,2,5\n1,3,nan\n1,4,7\n")
    try:
        compress.load_dataset(str(p))
    except DataError as exc:
        assert "'nan'" in one_line(exc) and "timestamp" in str(exc)
    else:
        raise AssertionError("a NaN timestamp was accepted")


# ---------------------------------------------------------------- anything at all: clean end


NAMES = ["x.txt", "x.csv", "x.tsv", "x.inter", "u.data", "ratings.dat", "x"]


@FUZZ
@given(st.binary(max_size=600), st.sampled_from(NAMES), st.booleans(), st.sampled_from(FORMATS))
@example(b"", "x.csv", False, "auto")
@example(b"\x1f\x8b\x08\x00garbage", "x.csv", False, "auto")
@example(b"1\t2\t3\n\x00\x00\x00\x00\n", "x.tsv", False, "auto")
@example(b"\xff\xfe1\x002\x00", "x.csv", False, "delimited")
def test_random_bytes(content, name, gz, fmt):
    tmp, path = write(content, name, gz)
    with tmp:
        outcome(path, ReadOptions(format=fmt))


# Text from the characters the parsers care about, so the fuzzer gets past format detection.
GRAMMAR = st.lists(st.sampled_from(list("0123456789-.e,;|:\t \n\rabnif") + ["::", "\n", "nan", "inf", "user_id",
                                                                        "item_id", "timestamp", ":token", "é",
                                                                        "\x00", "\ufeff"]),
                   max_size=200).map("".join)


@FUZZ
@given(GRAMMAR, st.sampled_from(NAMES), st.booleans(), st.sampled_from(FORMATS), st.sampled_from([0, 0, 2, 3]))
@example("1 2 3 4 5\n1 2\n", "x.txt", False, "auto", 0)
@example("1,2,3\n1;2;3\n1|2|3\n1\t2\t3\n", "x.csv", False, "auto", 0).via("mixed delimiters")
@example("1,2,3\n1,3,2\n1,4,1\n1\t5\t0\n", "x.csv", False, "auto", 0).via("a row with another delimiter")
@example("user_id,item_id,timestamp\n", "x.csv", False, "auto", 0).via("header only")
@example("user_id:token\titem_id:token\n", "x.inter", True, "auto", 0).via("typed header only")
def test_random_text(text, name, gz, fmt, kcore):
    tmp, path = write(text.encode("utf-8", "surrogatepass"), name, gz)
    with tmp:
        outcome(path, ReadOptions(format=fmt), kcore=kcore)


COLS = st.one_of(st.none(), st.sampled_from(["0", "1", "2", "3", "9", "none", "None", "user_id", "item_id",
                                             "timestamp", "rating", "nope", "²", "١", "", " "]))
SEPS = st.one_of(st.none(), st.sampled_from([",", "\t", ";", "|", "::", " ", "x", "1", ""]))


@FUZZ
@given(COLS, COLS, COLS, SEPS, st.sampled_from(FORMATS + ("nope",)), st.booleans())
@example("²", None, None, None, "delimited", False).via("a non-ASCII digit column")
@example(None, None, None, "", "delimited", False).via("an empty separator")
def test_random_read_options(user_col, item_col, time_col, sep, fmt, header):
    lines = ["user_id,item_id,rating,timestamp"] if header else []
    lines += [f"{u},{i},4,{t}" for u, i, t in [(1, 10, 3), (1, 11, 2), (1, 12, 1), (2, 10, 1), (2, 13, 2),
                                               (2, 11, 3), (3, 12, 0)]]
    try:
        options = ReadOptions(fmt, user_col, item_col, time_col, sep)
    except DataError as exc:  # one column named twice: refused before any file is read
        one_line(exc)
        return
    tmp, path = write("\n".join(lines).encode(), "x.csv")
    with tmp:
        outcome(path, options)


# ---------------------------------------------------------------- truncated gzip


GOOD = "\n".join(f"{u}\t{i}\t{t}" for u in range(1, 9) for t, i in enumerate(range(u, u + 12))).encode()
GOOD_GZ = gzip.compress(GOOD, mtime=0)


@FUZZ
@given(st.integers(0, len(GOOD_GZ) - 1))
@example(0)
@example(1)
@example(10)
@example(len(GOOD_GZ) - 1)
@example(len(GOOD_GZ) - 8).via("the whole deflate stream, no trailer")
def test_truncated_gzip(cut):
    tmp, path = write(GOOD_GZ[:cut], "x.tsv.gz")
    with tmp:
        try:
            compress.load_dataset(path)
        except DataError as exc:
            one_line(exc)
        else:
            raise AssertionError(f"a gzip stream cut at {cut} of {len(GOOD_GZ)} bytes loaded")


def test_whole_gzip_loads():
    tmp, path = write(GOOD, "x.tsv", gz=True)
    with tmp:
        ds = outcome(path, note=print)
        assert ds is not None and ds.n_users == 8 and ds.n_interactions == 8 * 12


@FUZZ
@given(st.integers(0, len(GOOD_GZ) - 1), st.integers(0, 255))
def test_corrupt_gzip_byte(pos, value):
    """One byte changed anywhere in the stream: a CRC or stream error, or (rarely, in the header's
    free fields) the same data."""
    data = bytearray(GOOD_GZ)
    data[pos] = value
    tmp, path = write(bytes(data), "x.tsv.gz")
    with tmp:
        outcome(path)
