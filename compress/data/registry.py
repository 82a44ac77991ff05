"""Named datasets: where to find them on disk, how to read them, and where to download them.

A name resolves, in order, under ``--data-dir``, ``$COMPRESS_DATA_DIR`` and the download cache
(``~/.cache/compress/datasets``), looking in ``<dir>/<name>/`` then ``<dir>/``. MovieLens can be
downloaded from GroupLens (checked against the published MD5); it is never shipped with the package.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from typing import Dict, Optional, Tuple

from compress.data.readers import ReadOptions
from compress.errors import DataError

DEFAULT = "default"


@dataclass(frozen=True)
class NamedDataset:
    files: Tuple[str, ...]  # candidate file names, first found wins
    options: Dict[str, ReadOptions] = field(default_factory=dict)  # per file name; default: auto
    url: Optional[str] = None
    md5: Optional[str] = None
    member: Optional[str] = None  # file inside the downloaded zip
    citation: str = ""


NO_TIME = ReadOptions(format="delimited", user_col="0", item_col="1", time_col="none")

DATASETS: Dict[str, NamedDataset] = {
    "ml-1m": NamedDataset(("ratings.dat", "ratings.dat.gz", "ml-1m_seq.tsv.gz", "ml-1m_seq.tsv"),
                          url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                          md5="c4d9eecfca2ab87c1945afe126590906", member="ml-1m/ratings.dat",
                          citation="Harper & Konstan, The MovieLens Datasets, TiiS 2015"),
    "ml-100k": NamedDataset(("u.data", "u.data.gz"),
                            url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                            md5="0e33842e24a9c977be4e0107933c0723", member="ml-100k/u.data",
                            citation="Harper & Konstan, The MovieLens Datasets, TiiS 2015"),
    "beauty": NamedDataset(("Beauty.txt.gz", "Beauty.txt"), citation="McAuley et al., SIGIR 2015 (S3-Rec split)"),
    "toys": NamedDataset(("Toys_and_Games.txt.gz", "Toys_and_Games.txt"),
                         citation="McAuley et al., SIGIR 2015 (S3-Rec split)"),
    "lastfm": NamedDataset(("LastFM.txt.gz", "LastFM.txt"), citation="HetRec 2011 (S3-Rec split)"),
    "gowalla": NamedDataset(("gowalla_lbsn_toy1000_checkins.txt.gz",),
                            options={"gowalla_lbsn_toy1000_checkins.txt.gz":
                                     ReadOptions("delimited", "0", "1", "2", "\t")},
                            citation="Cho, Myers & Leskovec, KDD 2011"),
    "douban-book": NamedDataset(("douban_book_ratings.dat.gz",), options={"douban_book_ratings.dat.gz": NO_TIME},
                                citation="Zhu et al., GA-DTCDR, IJCAI 2020 (no timestamps: file order)"),
    "douban-music": NamedDataset(("douban_music_ratings.dat.gz",),
                                 options={"douban_music_ratings.dat.gz": NO_TIME},
                                 citation="Zhu et al., GA-DTCDR, IJCAI 2020 (no timestamps: file order)"),
}
SUBDIRS = {"beauty": "s3rec", "toys": "s3rec", "lastfm": "s3rec", "douban-book": "douban",
           "douban-music": "douban"}


def default_path() -> str:
    """The embedded Gowalla sample shipped inside the package."""
    return str(resources.files("compress.data").joinpath("default/gowalla_sample.tsv.gz"))


def cache_root() -> str:
    return os.environ.get("COMPRESS_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "compress"))


def search_dirs(data_dir: Optional[str]) -> list:
    dirs = [d for d in (data_dir, os.environ.get("COMPRESS_DATA_DIR")) if d]
    return dirs + [os.path.join(cache_root(), "datasets")]


def resolve(name: str, data_dir: Optional[str] = None, download: bool = True) -> Tuple[str, ReadOptions]:
    """Path and read options of a named dataset, downloading it when allowed and possible."""
    if name == DEFAULT:
        return default_path(), ReadOptions()
    spec = DATASETS[name]
    for root in search_dirs(data_dir):
        for sub in (name, SUBDIRS.get(name, name), ""):
            for fname in spec.files:
                path = os.path.join(root, sub, fname)
                if os.path.isfile(path):
                    return path, spec.options.get(fname, ReadOptions())
    if spec.url and download:
        return _download(name, spec), ReadOptions()
    where = ", ".join(search_dirs(data_dir))
    raise DataError(f"dataset {name!r} not found under {where}; put one of {', '.join(spec.files)} "
                    f"there or pass `data_dir`")


def _download(name: str, spec: NamedDataset) -> str:
    """Fetch ``spec`` into the cache; a cache that cannot be written is a DataError naming the fix."""
    target_dir = os.path.join(cache_root(), "datasets", name)
    try:
        os.makedirs(target_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target_dir) as tmp:
            return _fetch(name, spec, tmp, os.path.join(target_dir, os.path.basename(spec.member)))
    except OSError as exc:
        raise DataError(f"dataset {name!r} cannot be saved under {target_dir} ({exc.strerror or exc}); set "
                        "COMPRESS_CACHE_DIR to a writable directory, or download it by hand and pass `data_dir`"
                        ) from None


def _fetch(name: str, spec: NamedDataset, tmp: str, target: str) -> str:
    """Download ``spec``'s archive into ``tmp``, check its MD5, and move its member to ``target``."""
    archive = os.path.join(tmp, "archive.zip")
    try:
        with urllib.request.urlopen(spec.url, timeout=60) as resp, open(archive, "wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        raise DataError(f"dataset {name!r} is not on disk and downloading {spec.url} failed ({exc}); "
                        "download it by hand and pass `data_dir`") from None
    with open(archive, "rb") as fh:
        digest = hashlib.md5(fh.read()).hexdigest()
    if digest != spec.md5:
        raise DataError(f"download of {name!r} has MD5 {digest}, expected {spec.md5}; try again")
    with zipfile.ZipFile(archive) as zf:
        zf.extract(spec.member, tmp)
    os.replace(os.path.join(tmp, spec.member), target)
    return target
