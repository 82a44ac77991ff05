"""One entry point from ``--data`` to a processed :class:`SequenceDataset`, with a cache.

The cache key is the SHA-256 of the source file plus every option that changes the result, so a
changed file or option never reuses stale arrays.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from typing import Any, Optional, Sequence, Union

from compress.bounds import instance, whole
from compress.data.dataset import MIN_INTERACTIONS, SequenceDataset, build_dataset
from compress.data.readers import ReadOptions, read_interactions
from compress.data.registry import DATASETS, DEFAULT, cache_root, resolve
from compress.errors import ConfigError, DataError
from compress.files import staged

# 2: tokens packed as UTF-8 bytes; 3: empty ids refused, sequence fields stripped; 4: data of fewer than 2
# items refused (a version-3 entry may hold one); 5: whole-number timestamps ordered exactly (as int64);
# 6: quotes left open refused (a version-5 entry may hold the ids they changed)
CACHE_VERSION = 6
log = logging.getLogger(__name__)
_UNUSABLE: set = set()  # cache directories already warned about

DATA_SUFFIXES = (".inter", ".dat", ".data", ".tsv", ".csv", ".txt", ".gz")


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pick_file(directory: str) -> str:
    files = sorted(f for f in os.listdir(directory)
                   if f.lower().endswith(DATA_SUFFIXES) and not f.lower().startswith("readme"))
    inter = [f for f in files if ".inter" in f]
    if inter:
        return os.path.join(directory, inter[0])
    if len(files) == 1:
        return os.path.join(directory, files[0])
    if not files:
        raise DataError(f"no interaction file in directory {directory}")
    raise DataError(f"directory {directory} holds several data files ({', '.join(files[:5])}); pass one file")


def resolve_source(data: Optional[str], data_dir: Optional[str] = None,
                   options: Optional[ReadOptions] = None):
    """(path, read options, dataset name) for a named dataset, a file or a directory."""
    data = data or DEFAULT
    options = options or ReadOptions()
    if not isinstance(options, ReadOptions):
        raise DataError(f"options must be a ReadOptions, got {type(options).__name__}; "
                        "e.g. compress.data.readers.ReadOptions(sep=',')")
    if data == DEFAULT or data in DATASETS:
        path, named = resolve(data, data_dir)
        return path, (named if options == ReadOptions() else options), data
    if os.path.isdir(data):
        data = _pick_file(data)
    if not os.path.exists(data):
        known = ", ".join([DEFAULT, *DATASETS])
        raise DataError(f"`data` {data!r} is neither an existing path nor a known dataset ({known})")
    if not os.path.isfile(data):  # a pipe or a device: hashing it for the cache would never end
        raise DataError(f"{data} is not a regular file; data must be a regular file (it is read more than "
                        "once): save it to a file first")
    name = os.path.basename(data).split(".")[0]
    return data, options, name


def load_dataset(data: Union[str, os.PathLike, None] = None, data_dir: Union[str, os.PathLike, None] = None,
                 options: Optional[ReadOptions] = None, kcore: int = 0,
                 min_interactions: int = MIN_INTERACTIONS, use_cache: bool = True, numbering: str = "compress",
                 item_ids: Optional[Sequence[str]] = None, unknown_items: str = "drop") -> SequenceDataset:
    """Load ``data`` (a dataset name, or a file or directory as a str or pathlib.Path; None = the
    embedded default) as sequences.

    Items are numbered by ``numbering`` (``compress``, or ``recbole``: as RecBole numbers the same
    file), or, given a model's vocabulary ``item_ids`` (row i + 1 is ``item_ids[i]``), as that model
    numbers them, interactions with other items dropped or their items appended (``unknown_items``)."""
    data = _path_argument("data", data, "a dataset name or a path", "write the interactions (user, item, timestamp) "
                          "to a file and pass its path")
    data_dir = _path_argument("data_dir", data_dir, "a directory", "give the folder that holds the named datasets")
    kcore = whole("kcore", kcore, minimum=0)
    min_interactions = whole("min_interactions (leave-one-out needs a training item, a validation and a test "
                             "target)", min_interactions, minimum=MIN_INTERACTIONS)
    instance("use_cache", use_cache, bool, "True reuses the arrays processed before from the same file and "
             "options, False reads the file again")
    path, opts, name = resolve_source(data, data_dir, options)
    ds = _load(path, opts, name, kcore, min_interactions, use_cache, numbering)
    return ds if item_ids is None else ds.aligned(item_ids, unknown_items, min_interactions)


def _path_argument(name: str, value: Any, what: str, fix: str) -> Optional[str]:
    """``value`` (None, a str, or an os.PathLike such as pathlib.Path) as a str. Anything else is
    refused here, by what it is: a DataFrame or a list of rows would otherwise fail as an unhashable
    type or as a path that does not exist. An empty string (an unset variable) is refused too: it once
    loaded the embedded default dataset as if nothing had been asked for."""
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if path == "":
        raise ConfigError(f"{name} is an empty string; give {what}, or None for the default")
    if path is None or isinstance(path, str):
        return path
    if hasattr(value, "to_csv"):  # a pandas (or look-alike) DataFrame: pandas itself need not be installed
        fix = "save it first, e.g. df.to_csv('data.tsv', sep='\\t', index=False), and pass that path"
    raise ConfigError(f"{name} must be {what} (str or pathlib.Path), got {type(value).__name__}; {fix}")


def _load(path: str, opts: ReadOptions, name: str, kcore: int, min_interactions: int, use_cache: bool,
          numbering: str) -> SequenceDataset:
    key = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "file": _file_hash(path), "opts": asdict(opts),
                                     "kcore": kcore, "min": min_interactions, "numbering": numbering},
                                    sort_keys=True).encode())
    cache_file = os.path.join(cache_root(), "processed", f"{name}-{key.hexdigest()[:16]}.npz")
    ds = _read_cache(cache_file, path) if use_cache else None
    if ds is None:
        ds = build_dataset(read_interactions(path, opts), name, kcore, min_interactions, numbering)
        if use_cache:
            _write_cache(ds, cache_file)
    return ds


def _read_cache(cache_file: str, source: str) -> Optional[SequenceDataset]:
    """The cached dataset, or None to build it from ``source``: when there is no entry, when the cache
    cannot be read (warned once), or when the entry is corrupt (warned and removed; the build replaces
    it). A cache is a speed-up: its failures never stop a command."""
    if not os.path.isfile(cache_file):
        return None
    try:
        return SequenceDataset.load(cache_file)
    except DataError as exc:
        log.warning("corrupt cache entry: %s; rebuilding it from %s", exc, source)
        _remove(cache_file)
    except OSError as exc:
        _cache_unusable(os.path.dirname(cache_file), exc)
    return None


def _write_cache(ds: SequenceDataset, cache_file: str) -> None:
    """Save ``ds`` as ``cache_file`` through a temporary file and a rename, so that no reader ever
    sees half an entry. A cache that cannot be written is warned about once and left out."""
    directory = os.path.dirname(cache_file)
    try:
        os.makedirs(directory, exist_ok=True)
        with staged(cache_file) as tmp:  # created as the umask allows (mkstemp's 0600 hid a shared cache)
            ds.save(tmp)
    except OSError as exc:
        _cache_unusable(directory, exc)


def _cache_unusable(directory: str, exc: OSError) -> None:
    """Warn, once per directory and process, that the cache there cannot be used, and how to fix it."""
    if directory not in _UNUSABLE:
        _UNUSABLE.add(directory)
        log.warning("the processed-data cache %s cannot be used (%s); continuing without it: set "
                    "COMPRESS_CACHE_DIR to a writable directory", directory, exc.strerror or exc)


def _remove(path: str) -> None:
    """Delete ``path`` if it can be; a file left behind is only a cache file."""
    try:
        os.remove(path)
    except OSError:
        pass
