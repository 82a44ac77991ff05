"""One entry point from ``--data`` to a processed :class:`SequenceDataset`, with a cache.

The cache key is the SHA-256 of the source file plus every option that changes the result, so a
changed file or option never reuses stale arrays.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import asdict
from typing import Optional, Sequence

from compress.bounds import whole
from compress.data.dataset import MIN_INTERACTIONS, SequenceDataset, build_dataset
from compress.data.readers import ReadOptions, read_interactions
from compress.data.registry import DATASETS, DEFAULT, cache_root, resolve
from compress.errors import DataError

CACHE_VERSION = 2  # 2: tokens packed as UTF-8 bytes
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


def load_dataset(data: Optional[str] = None, data_dir: Optional[str] = None,
                 options: Optional[ReadOptions] = None, kcore: int = 0,
                 min_interactions: int = MIN_INTERACTIONS, use_cache: bool = True, numbering: str = "compress",
                 item_ids: Optional[Sequence[str]] = None, unknown_items: str = "drop") -> SequenceDataset:
    """Load ``data`` (a dataset name, file or directory; None = embedded default) as sequences.

    Items are numbered by ``numbering`` (``compress``, or ``recbole``: as RecBole numbers the same
    file), or, given a model's vocabulary ``item_ids`` (row i + 1 is ``item_ids[i]``), as that model
    numbers them, interactions with other items dropped or their items appended (``unknown_items``)."""
    kcore = whole("kcore", kcore, minimum=0)
    min_interactions = whole("min_interactions (leave-one-out needs a training item, a validation and a test "
                             "target)", min_interactions, minimum=MIN_INTERACTIONS)
    path, opts, name = resolve_source(data, data_dir, options)
    ds = _load(path, opts, name, kcore, min_interactions, use_cache, numbering)
    return ds if item_ids is None else ds.aligned(item_ids, unknown_items)


def _load(path: str, opts: ReadOptions, name: str, kcore: int, min_interactions: int, use_cache: bool,
          numbering: str) -> SequenceDataset:
    key = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "file": _file_hash(path), "opts": asdict(opts),
                                     "kcore": kcore, "min": min_interactions, "numbering": numbering},
                                    sort_keys=True).encode())
    cache_file = os.path.join(cache_root(), "processed", f"{name}-{key.hexdigest()[:16]}.npz")
    if use_cache and os.path.exists(cache_file):
        try:
            return SequenceDataset.load(cache_file)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            os.remove(cache_file)  # corrupt or truncated cache entry: rebuild below
    ds = build_dataset(read_interactions(path, opts), name, kcore, min_interactions, numbering)
    if use_cache:
        _write_cache(ds, cache_file)
    return ds


def _write_cache(ds: SequenceDataset, cache_file: str) -> None:
    os.makedirs(os.path.dirname(cache_file), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cache_file), suffix=".npz")
    os.close(fd)
    try:
        ds.save(tmp)
        os.replace(tmp, cache_file)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
