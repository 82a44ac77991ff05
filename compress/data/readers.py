"""Readers for the interaction formats the field uses.

Every reader returns :class:`Interactions`: raw user and item tokens (strings, as RecBole treats
ids) and an ordering key per row (a timestamp, or the position in the file when the format has no
time). Files ending in ``.gz`` are read transparently.
"""
from __future__ import annotations

import csv
import gzip
import io
import math
import os
import stat
import zlib
from array import array
from dataclasses import dataclass
from typing import Iterator, NoReturn, Optional, Sequence

import numpy as np

from compress.errors import DataError

FORMATS = ("auto", "atomic", "ml-dat", "udata", "delimited", "sequence")

USER_NAMES = ("user_id", "userid", "user", "uid", "users", "visitorid")
ITEM_NAMES = ("item_id", "itemid", "item", "iid", "movie_id", "movieid", "poi_id", "poi", "product_id", "venue_id")
TIME_NAMES = ("timestamp", "time", "ts", "unix_time", "datetime", "date")


@dataclass
class Interactions:
    """Raw rows: ``users[i]`` interacted with ``items[i]`` at ordering key ``order[i]``. The readers
    store ids as int32 codes into ``user_vocab``/``item_vocab`` (numbered by first appearance), 4 bytes
    a row; without a vocabulary, ``users``/``items`` hold the tokens themselves."""

    users: np.ndarray  # (R,) str tokens, or int32 codes into user_vocab
    items: np.ndarray  # (R,) str tokens, or int32 codes into item_vocab
    order: np.ndarray  # (R,) int64 or float64: timestamp, or file position when ``timed`` is False
    timed: bool
    source: str
    user_vocab: Optional[np.ndarray] = None  # (U,) str
    item_vocab: Optional[np.ndarray] = None  # (I,) str

    def __len__(self) -> int:
        return len(self.users)

    def user_tokens(self) -> np.ndarray:
        return self.users if self.user_vocab is None else self.user_vocab[self.users]

    def item_tokens(self) -> np.ndarray:
        return self.items if self.item_vocab is None else self.item_vocab[self.items]


@dataclass
class ReadOptions:
    """How to read a file: ``format`` one of :data:`FORMATS`; columns by header name or, for a
    headerless file, by 0-based position (``"2"``); ``sep`` None means detect."""

    format: str = "auto"
    user_col: Optional[str] = None
    item_col: Optional[str] = None
    time_col: Optional[str] = None
    sep: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("user_col", "item_col", "time_col", "sep"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                what = "a delimiter such as ','" if name == "sep" else "a column name, or a 0-based position like '2'"
                raise DataError(f"`{name}` must be a string, {what}; got {value!r}")
        named = [c for c in (self.user_col, self.item_col, self.time_col) if c is not None]
        if len(set(named)) != len(named):
            raise DataError(f"`user_col`, `item_col` and `time_col` must name different columns, got "
                            f"{', '.join(named)}")


class TokenColumn:
    """An id column read row by row. Each row costs a 4-byte code into the distinct tokens seen so
    far, not a Python string (about 60 bytes): a file of 10M rows is held in about 40 MB a column."""

    def __init__(self) -> None:
        self.codes = array("i")
        self.index: dict = {}

    def add(self, token: str) -> None:
        self.codes.append(self.index.setdefault(token, len(self.index)))

    def __len__(self) -> int:
        return len(self.codes)

    def interactions(self, items: "TokenColumn", order: np.ndarray, timed: bool, source: str) -> Interactions:
        """These users with ``items`` as coded Interactions."""
        return Interactions(self.codes_array(), items.codes_array(), order, timed, source, self.vocab(), items.vocab())

    def first_empty(self) -> Optional[int]:
        """The row of the first empty id, or None. One dict look-up while there is none, not a check a
        row: the readers strip ids, so a blank one (a doubled delimiter, spaces) is the token ''."""
        code = self.index.get("")
        return None if code is None else int(np.argmax(self.codes_array() == code))

    def codes_array(self) -> np.ndarray:
        return np.frombuffer(self.codes, dtype=np.int32)  # (rows,)

    def vocab(self) -> np.ndarray:
        """(distinct,) the tokens by first appearance, as Python strings: each costs its own length, not
        the longest token's (a fixed-width array of one 200,000-character id among thousands is GBs)."""
        out = np.empty(len(self.index), dtype=object)
        out[:] = list(self.index)
        return out


MAX_LINE = 1 << 20  # characters; no interaction row is this long: a longer one is not a data file
MAX_BLANK = 1 << 20  # consecutive blank lines; no data file holds this many


def open_text(path: str) -> io.TextIOBase:
    """Open a text file, transparently gunzipping ``*.gz`` (checked by magic bytes too). Only regular
    files: a file is read more than once (format detection, then rows), which a pipe cannot do, and
    a device such as /dev/zero never ends."""
    if not os.path.exists(path):
        raise DataError(f"data file not found: {path} (give an existing file, directory or dataset name)")
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory, expected a file")
    if not os.path.isfile(path):
        kind = "a pipe" if stat.S_ISFIFO(os.stat(path).st_mode) else "not a regular file"
        raise DataError(f"{path} is {kind}; data must be a regular file (it is read more than once): save it "
                        "to a file first")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace")
    return open(path, "r", encoding="utf-8-sig", errors="replace")  # -sig: drop a leading BOM (Excel)


def _lines(path: str) -> Iterator[str]:
    """The non-blank lines of ``path``, stripped. A run of MAX_BLANK blank lines is refused: no data file
    holds one, and reading on through gigabytes of them would take minutes to end in "empty"."""
    fh = open_text(path)
    blank = 0
    try:
        for lineno, line in enumerate(iter(lambda: fh.readline(MAX_LINE + 1), ""), 1):
            if len(line) > MAX_LINE:
                raise DataError(f"{path}:{lineno} is longer than {MAX_LINE:,} characters; is it a data file?")
            if "\x00" in line:
                raise DataError(f"{path}:{lineno} contains NUL bytes; is it a binary file? give a text or gzip file")
            line = line.strip()
            if line:
                blank = 0
                yield line
            elif (blank := blank + 1) >= MAX_BLANK:
                raise DataError(f"{path}:{lineno} ends a run of {MAX_BLANK:,} blank lines; is it a data file?")
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is corrupt or truncated ({exc}); re-download or re-compress it") from None
    finally:
        fh.close()


def _peek(path: str, n: int = 5) -> list:
    out = []
    for line in _lines(path):
        out.append(line)
        if len(out) == n:
            break
    if not out:
        raise DataError(f"{path} is empty: expected interaction rows")
    return out


def _detect_sep(line: str) -> Optional[str]:
    for sep in ("::", "\t", ",", ";", "|"):
        if sep in line:
            return sep
    return None  # whitespace


def _split(line: str, sep: Optional[str], where: str) -> list:
    """The fields of ``line`` (at ``where``, for errors). A delimited line with a double quote is read as
    CSV quotes it (as pandas writes and reads it, and RecBole with it): ``"item, 3"`` is one field, ``""``
    inside it a quote. Quoting that does not close (``"a`` alone, ``"a"b``) is refused: read leniently,
    it ran into the next fields or dropped the quotes, so the row's ids came out changed."""
    if sep is None:
        return line.split()
    if '"' in line and len(sep) == 1:
        try:
            return next(csv.reader([line], delimiter=sep, strict=True))
        except csv.Error:
            raise DataError(f"{where}: unbalanced double quotes in {_quote(line)}; a field that starts with \" "
                            "ends with one, a quote inside it is written \"\"; fix the quoting or give `sep`") from None
    return line.split(sep)


def _quote(text: str, limit: int = 40) -> str:
    """File content in a message: short, and printable (no terminal control characters)."""
    text = text if len(text) <= limit else text[:limit] + "…"
    return repr("".join(c if c.isprintable() else "?" for c in text))


def _is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def detect_format(path: str) -> str:
    """Guess the format from the file name, then from the first lines."""
    name = os.path.basename(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".inter"):
        return "atomic"
    head = _peek(path)
    if name == "u.data":
        return "udata"
    if "::" in head[0]:
        return "ml-dat"
    sep = _detect_sep(head[0])
    if sep is None:
        counts = {len(line.split()) for line in head}
        first = head[0].split()
        if all(_is_number(t) for t in first) and (len(counts) > 1 or len(first) > 4):
            return "sequence"
    return "delimited"


def read_interactions(path: str, options: Optional[ReadOptions] = None) -> Interactions:
    """Read ``path`` in the given (or detected) format."""
    options = options or ReadOptions()
    if options.format not in FORMATS:
        raise DataError(f"unknown format {options.format!r}; choose one of {', '.join(FORMATS)}")
    if options.sep == "":
        raise DataError("the field delimiter (`sep`) is empty; give a character such as ',' or leave it out to detect")
    fmt = detect_format(path) if options.format == "auto" else options.format
    if fmt == "sequence":
        return _read_sequence(path, options.sep)
    if fmt == "ml-dat":
        return _read_columns(path, "::", header=None, cols=(0, 1, 3))
    if fmt == "udata":
        return _read_columns(path, "\t", header=None, cols=(0, 1, 3))
    if fmt == "atomic":
        return _read_atomic(path, options)
    return _read_delimited(path, options)


def _read_sequence(path: str, sep: Optional[str]) -> Interactions:
    users, items = TokenColumn(), TokenColumn()
    for lineno, line in enumerate(_lines(path), 1):
        toks = _split(line, sep, f"{path}:{lineno}")
        if sep is not None and (" " in line or "\t" in line):  # strip fields as the column readers do
            toks = [t.strip() for t in toks]
        if len(toks) < 2:
            raise DataError(f"{path}:{lineno}: a sequence line needs 'user item1 item2 ...', got {_quote(line)}")
        if "" in toks:  # only with a given `sep`: split() on whitespace never yields an empty field
            _refuse_empty(path, lineno, "user" if toks[0] == "" else "item", sep)
        for tok in toks[1:]:
            users.add(toks[0])
            items.add(tok)
    if not len(users):
        raise DataError(f"{path} is empty: expected interaction rows")
    # the key is the position in the whole file, so a user continued on a later line is appended
    # after the earlier line instead of interleaved with it
    return users.interactions(items, np.arange(len(users), dtype=np.float64), False, path)


def _resolve_col(spec: Optional[str], header: Optional[list], candidates: tuple, what: str, path: str,
                 ncols: int) -> Optional[int]:
    if spec is not None:
        if spec.isdecimal():  # not isdigit: '²' is a digit that int() refuses
            idx = int(spec)
            if idx >= ncols:
                raise DataError(f"{path}: {what} column {idx} does not exist (the file has {ncols} columns)")
            return idx
        if header is None:
            raise DataError(f"{path} has no header: give the {what} column by position (e.g. 0), not {spec!r}")
        names = [h.split(":")[0].lower() for h in header]
        if spec.lower() not in names:
            raise DataError(f"{path}: no {what} column named {spec!r}; columns are {_quote(', '.join(header), 200)}")
        return names.index(spec.lower())
    if header is None:
        return None
    names = [h.split(":")[0].lower() for h in header]
    for cand in candidates:
        if cand in names:
            return names.index(cand)
    return None


def _read_atomic(path: str, options: ReadOptions) -> Interactions:
    head = _peek(path, 1)[0]
    header = head.split("\t")
    if not all(":" in h for h in header):
        raise DataError(f"{path}: a RecBole .inter file needs a typed header like 'user_id:token\\titem_id:token'")
    return _read_delimited(path, ReadOptions("delimited", options.user_col, options.item_col, options.time_col, "\t"))


def _read_delimited(path: str, options: ReadOptions) -> Interactions:
    head = _peek(path)
    sep = options.sep if options.sep is not None else _detect_sep(head[0])
    first = _split(head[0], sep, path)
    named = [c for c in (options.user_col, options.item_col, options.time_col)
             if c and not c.isdecimal() and c.lower() != "none"]
    header = first if _looks_like_header(first, head[1:], sep, path, named) else None
    ncols = len(first)
    if ncols < 2:
        raise DataError(f"{path}: found one column with delimiter {sep or 'whitespace'!r}; "
                        "give `sep` or `data_format` (expected user and item columns)")
    u = _resolve_col(options.user_col, header, USER_NAMES, "user", path, ncols)
    i = _resolve_col(options.item_col, header, ITEM_NAMES, "item", path, ncols)
    no_time = (options.time_col or "").lower() == "none"
    t = None if no_time else _resolve_col(options.time_col, header, TIME_NAMES, "timestamp", path, ncols)
    if header is None:
        u = 0 if u is None else u
        i = 1 if i is None else i
        if t is None and not no_time:
            t = 3 if ncols >= 4 else (2 if ncols == 3 else None)
            if t in (u, i):  # the guess assumes user, item first; never read ids as times
                t = None
    elif u is None or i is None:
        raise DataError(f"{path}: cannot find user/item columns in header {header}; "
                        "name them with `user_col`/`item_col`")
    if u == i or t in (u, i):
        role = "user and item" if u == i else "the timestamp and " + ("user" if t == u else "item")
        column = header[i if u == i else t] if header else str(i if u == i else t)
        raise DataError(f"{path}: {role} would both be read from column {column!r}; name different columns with "
                        "`user_col`, `item_col` and `time_col`")
    return _read_columns(path, sep, header=header, cols=(u, i, t))


def _looks_like_header(first: list, rest: list, sep: Optional[str], path: str, named: Sequence[str] = ()) -> bool:
    """A header names known columns or the columns asked for by name (``named``; with textual ids
    that is the only sign), is typed (``name:token``), or is text above numeric rows."""
    names = {t.split(":")[0].lower() for t in first}
    wanted = {n.lower() for n in named}
    if any(":" in t for t in first) or names & (set(USER_NAMES + ITEM_NAMES + TIME_NAMES) | wanted):
        return True
    textual = not all(_is_number(t) for t in first[:2])
    return textual and bool(rest) and all(_is_number(t) for t in _split(rest[0], sep, path)[:2])


def _read_columns(path: str, sep: Optional[str], header: Optional[list], cols: tuple) -> Interactions:
    u, i, t = cols
    need = max(c for c in cols if c is not None) + 1
    users, items, times = TokenColumn(), TokenColumn(), array("q")  # whole-number times kept exact, as int64
    lines = _lines(path)
    if header is not None:
        next(lines)
    for lineno, line in enumerate(lines, 2 if header is not None else 1):
        toks = _split(line, sep, f"{path}:{lineno}")
        if len(toks) < need:
            raise DataError(f"{path}:{lineno}: expected at least {need} fields separated by "
                            f"{sep or 'whitespace'!r}, got {len(toks)}; check the delimiter (`sep`) or `data_format`")
        users.add(toks[u].strip())
        items.add(toks[i].strip())
        if t is not None:
            try:
                times = _append_time(times, toks[t])
            except ValueError:
                if lineno == 1 and not any(map(_is_number, toks)):
                    raise DataError(f"{path}: the first line looks like a header of unknown column names "
                                    f"({_quote(', '.join(toks))}); name the columns with `user_col`, `item_col` and "
                                    "`time_col` (or `time_col` none), or, for one user's items per line, give "
                                    "`data_format` sequence") from None
                raise DataError(f"{path}:{lineno}: non-numeric timestamp {_quote(toks[t])} in column {t}; "
                                "convert it to unix seconds or pick another `time_col`") from None
            if not math.isfinite(times[-1]):  # NaN would sort nowhere in particular, inf after every real time
                raise DataError(f"{path}:{lineno}: timestamp {_quote(toks[t])} in column {t} is not a finite number; "
                                "fix or drop the row, or pick another `time_col`")
    if not len(users):
        raise DataError(f"{path} has a header but no rows")
    empty = [(row, what) for row, what in ((users.first_empty(), "user"), (items.first_empty(), "item"))
             if row is not None]
    if empty:
        row, what = min(empty)
        _refuse_empty(path, row + (2 if header is not None else 1), what, sep)
    order = np.arange(len(users), dtype=np.float64) if t is None else \
        np.frombuffer(times, dtype=np.int64 if times.typecode == "q" else np.float64)
    return users.interactions(items, order, t is not None, path)


def _append_time(times: array, token: str) -> array:
    """``times`` with ``token`` appended: as an int64 while every time is a whole number (nanosecond
    timestamps exceed 2**53, past which float64 merges neighbours into ties and file order would decide),
    as float64 from the first that is not (or does not fit). Raises ValueError for a non-number."""
    if times.typecode == "q":
        try:
            times.append(int(token))
            return times
        except (ValueError, OverflowError):
            times = array("d", times)
    times.append(float(token))
    return times


def _refuse_empty(path: str, lineno: int, what: str, sep: Optional[str]) -> NoReturn:
    """An empty or blank id would load as an item (or user) named '' and fail far away (in a
    vocabulary, a model's export), so the row is refused where it is."""
    raise DataError(f"{path}:{lineno}: empty {what} id (its field, delimited by {sep or 'whitespace'!r}, holds "
                    "nothing or only spaces); fill it in or drop the row")
