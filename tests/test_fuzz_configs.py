"""Property-based tests of every configuration input: recipes (random YAML objects, random YAML
text, random bytes), ``--set`` strings and flags through ``resolve_options``; ``ArchSpec`` from
random dicts; and ``compress.load`` on a MODEL_DIR whose ``config.json``, ``items.json`` or
``model.safetensors`` was tampered with. Each must end in a correct result or a ``CompressError``
with a one-line message: never another exception, never a huge allocation or a hang.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from typing import Any, List

import numpy as np
import pytest
import yaml
from conftest import synthetic_rows
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import compress
from compress.app.options import BY_KEY, OPTIONS, defaults
from compress.app.recipes import load_recipe, parse_sets, resolve_options
from compress.arch import ATTENTION_KINDS, GATE_PLACEMENTS, ArchSpec
from compress.data.dataset import build_dataset
from compress.data.readers import Interactions
from compress.errors import CompressError, ConfigError
from compress.layout import CONFIG, ITEMS, WEIGHTS
from compress.store.export import save_model_dir

# A fixed, fast run in the suite; COMPRESS_FUZZ_EXAMPLES=5000 runs a long randomised hunt instead.
DEEP = int(os.environ.get("COMPRESS_FUZZ_EXAMPLES", 0))
FUZZ = settings(max_examples=DEEP or 60, deadline=20_000, derandomize=not DEEP, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and "\r" not in msg, f"multi-line or empty message: {msg!r}"
    return msg


def clean(fn, *args, **kwargs):
    """fn's result, or None after a one-line CompressError; anything else fails the test."""
    try:
        out = fn(*args, **kwargs)
    except CompressError as exc:
        event(f"{type(exc).__name__}: {re.sub(r'/tmp/[^ ]*', 'PATH', one_line(exc))[:50]}")
        return None
    event("ok")
    return out


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 300),
                    st.floats(), st.text(max_size=8),
                    st.sampled_from(["yes", "no", "false", "True", "0", "1e3", "50%", "softmax", "linear",
                                     "gumbel", "code", "paper", "auto", "cpu", "64", " 8 ", "nan", "-1"]))
JSONISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) |
                       st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
RECIPE_KEYS = sorted(o.key for o in OPTIONS if o.recipe)
KEYS = st.one_of(st.sampled_from(RECIPE_KEYS), st.sampled_from(RECIPE_KEYS), st.text(max_size=8),
                 st.integers(), st.none(), st.booleans())
TYPES = {"int": int, "float": float, "str": str, "name": str, "choice": str, "budget": str, "device": str,
         "bool": bool}


# ---------------------------------------------------------------- resolved options


def check_options(opts) -> None:
    """Every recipe option present, each of its option's type (or None where it may be empty)."""
    assert set(RECIPE_KEYS) <= set(opts)
    for key, value in opts.items():
        opt = BY_KEY[key]
        if value is None:
            assert opt.nullable or opt.default_for("retrain") is None, (key, value)
        elif opt.kind in ("floats", "ints", "choices"):
            item = {"floats": float, "ints": int, "choices": str}[opt.kind]
            assert isinstance(value, list) and all(type(v) is item for v in value), (key, value)
        else:
            assert type(value) is TYPES[opt.kind], (key, value)  # bool is not int here, nor int bool


def write_recipe(content: bytes):
    tmp = tempfile.TemporaryDirectory(prefix="fuzz-recipe-")
    path = os.path.join(tmp.name, "r.yaml")
    with open(path, "wb") as fh:
        fh.write(content)
    return tmp, path


def good_value(key: str):
    """Values of the option's type inside its range."""
    opt = BY_KEY[key]
    low = opt.low if opt.low is not None else (opt.above + 1e-6 if opt.above is not None else -10 ** 6)
    high = opt.high if opt.high is not None else 10 ** 6
    if opt.kind == "floats":
        return st.lists(st.floats(0, 0.9), min_size=1, max_size=4)
    if opt.kind == "ints":
        return st.lists(st.integers(int(math.ceil(low)), int(min(high, 16))), min_size=1, max_size=3)
    if opt.kind == "choices":
        return st.lists(st.sampled_from(opt.choices), min_size=1, max_size=2)
    if opt.kind == "float":
        return st.floats(low, high) | st.integers(math.ceil(low), math.floor(high))
    if opt.kind == "int":
        return st.integers(int(math.ceil(low)), int(high))
    if opt.kind == "bool":
        return st.booleans()
    if opt.choices:
        return st.sampled_from(opt.choices)
    if opt.kind == "budget":
        return st.sampled_from(["50%", "1e6", "25.5%"])
    if opt.kind == "device":
        return st.sampled_from(["auto", "cpu", "cuda", "cuda:1"])
    if opt.kind == "name":
        return st.sampled_from(["sasrec", "bert4rec"])
    # a path, a column, ...; no control or line-break characters, which YAML itself folds (PyYAML
    # writes '\x85' and reads back ' ')
    return st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=8)


@st.composite
def good_recipes(draw):
    keys = draw(st.lists(st.sampled_from(RECIPE_KEYS), unique=True, max_size=8))
    return {k: draw(good_value(k)) for k in keys}


@st.composite
def recipes(draw):
    """Mostly known keys with well- or ill-typed values, sometimes an unknown key."""
    keys = draw(st.lists(st.sampled_from(RECIPE_KEYS), unique=True, max_size=6))
    out = {k: draw(st.one_of(good_value(k), JSONISH)) for k in keys}
    if draw(st.integers(0, 4)) == 0:
        out[draw(KEYS)] = draw(JSONISH)
    return out


@FUZZ
@given(recipes(), st.sampled_from(["train", "search"]))
@example({"coupled": False}, "train").via("a bool option")
@example({"coupled": "no"}, "train").via("a bool option as text")
@example({1: 2, "epochs": 3}, "train").via("a number as a key")
@example({None: 1}, "train").via("null as a key")
@example({"data": ["a", "b"]}, "train").via("a list where a path is expected")
@example({"user_col": {"x": 1}}, "train").via("a mapping where a column is expected")
@example({"epochs": None}, "train").via("null where a number is expected")
@example({"a\nb": 1}, "train").via("a multi-line key")
@example({"hidden_ratios": [0, True]}, "search").via("a bool in a list of numbers")
def test_random_recipe_objects(recipe, command):
    tmp, path = write_recipe(yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False).encode())
    with tmp:
        opts = clean(resolve_options, command, path, {}, [])
        if opts is not None:
            check_options(opts)


@FUZZ
@given(good_recipes())
def test_well_typed_recipes_are_taken_as_written(recipe):
    tmp, path = write_recipe(yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False).encode())
    with tmp:
        opts = resolve_options("train", path, {})
    check_options(opts)
    for key, value in recipe.items():
        kind = BY_KEY[key].kind
        item = {"floats": float, "ints": int, "choices": lambda v: v.strip().lower()}.get(kind)
        want = [item(v) for v in value] if isinstance(value, list) else float(value) if kind == "float" else \
            value.strip().lower() if kind in ("choice", "name", "device") else value.strip() if kind == "budget" \
            else value
        assert opts[key] == want, (key, value, opts[key])


YAML_TEXT = st.lists(st.sampled_from(["epochs", "hidden", "lr", "data", "coupled", "hidden_ratios", ": ", ":", "\n",
                                      "  ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "!!python/object ", "!!int ",
                                      "'", '"', "#", "|", ">", "%YAML 1.1\n", "!!float ", "!!timestamp ", "!!binary ",
                                      "!!set ", "---\n", "...", "~", "1", "0.5", "x", "\t", "@", "`", "\x00", "\ufeff",
                                      "é", "?"]),
                     max_size=40).map("".join)


@FUZZ
@given(YAML_TEXT)
@example("epochs: [\n")
@example("!!python/object/apply:os.system ['true']\n").via("no code execution: safe_load")
@example("0\n").via("a scalar recipe")
@example("[" * 5000 + "]" * 5000).via("deep nesting")
@example("!!int ").via("PyYAML's int constructor: IndexError")
@example("epochs: !!float x\n").via("PyYAML's float constructor: ValueError")
@example("epochs: !!timestamp 2020-13-45\n").via("PyYAML's timestamp constructor: ValueError")
@example("data: 2020-01-01\n").via("a date where a path is expected")
def test_random_recipe_text(text):
    tmp, path = write_recipe(text.encode("utf-8"))
    with tmp:
        recipe = clean(load_recipe, path)
        if recipe is not None:
            check_options({**defaults("train"), **recipe})


@FUZZ
@given(st.binary(max_size=200))
@example(b"\xff\xfe\x00")
@example(b"epochs: \xff\n").via("invalid UTF-8")
@example(b"\xef\xbb\xbfepochs: 3\n").via("UTF-8 BOM")
def test_random_recipe_bytes(content):
    tmp, path = write_recipe(content)
    with tmp:
        recipe = clean(load_recipe, path)
        if recipe is not None:
            check_options({**defaults("train"), **recipe})


SET_TEXT = st.one_of(
    st.text(max_size=20),
    st.tuples(st.sampled_from(RECIPE_KEYS + ["epochz", "search-epochs", " lr "]), YAML_TEXT)
    .map(lambda kv: f"{kv[0]}={kv[1]}"))


@FUZZ
@given(st.lists(SET_TEXT, max_size=4), st.dictionaries(st.sampled_from(RECIPE_KEYS + ["nope"]), SCALARS,
                                                        max_size=4))
@example(["epochs=["], {}).via("--set value that is not YAML")
@example(["epochs=!!int "], {}).via("--set value PyYAML's constructor fails on")
@example(["coupled=false"], {}).via("--set a bool")
@example([], {"nope": 3}).via("an unknown flag")
@example([], {"coupled": False}).via("a bool flag")
def test_random_sets_and_flags(sets, flags):
    opts = clean(resolve_options, "train", None, flags, sets)
    if opts is not None:
        check_options(opts)


def test_bool_options_parse_as_bools(tmp_path):
    path = tmp_path / "r.yaml"
    for text, want in [("coupled: false\n", False), ("coupled: 'no'\n", False), ("coupled: 'True'\n", True)]:
        path.write_text(text)
        assert resolve_options("search", str(path), {})["coupled"] is want
    assert parse_sets(["coupled=false"]) == {"coupled": False}
    with pytest.raises(ConfigError, match="expects true or false"):
        parse_sets(["coupled=maybe"])


# ---------------------------------------------------------------- ArchSpec


ARCH_KEYS = st.sampled_from(["hidden", "inner", "heads", "layers", "attention", "gate_layers", "gate_placement",
                             "head_dim"])
ARCH_VALUES = st.one_of(JSONISH, st.integers(-2, 70), st.sampled_from(ATTENTION_KINDS + GATE_PLACEMENTS),
                        st.sampled_from([np.int64(8), np.float64(8.0), 8.0, True]))


def check_arch(spec: ArchSpec, given_dict) -> None:
    for name in ("hidden", "inner", "heads", "layers", "gate_layers"):
        value = getattr(spec, name)
        assert type(value) is int and value >= (0 if name == "gate_layers" else 1), (name, value)
    assert spec.hidden % spec.heads == 0 and spec.head_dim * spec.heads == spec.hidden
    assert spec.attention in ATTENTION_KINDS and spec.gate_placement in GATE_PLACEMENTS
    assert ArchSpec.from_dict(spec.to_dict()) == spec
    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()
    for key, value in given_dict.items():
        assert getattr(spec, key) == value


@FUZZ
@given(st.one_of(st.dictionaries(ARCH_KEYS, ARCH_VALUES, max_size=8),
                 st.dictionaries(st.one_of(ARCH_KEYS, st.text(max_size=5), st.integers()), ARCH_VALUES, max_size=4),
                 JSONISH))
@example({"hidden": 1.5, "heads": 0.5}).via("floats that divide")
@example({"hidden": True, "heads": True}).via("bools are not sizes")
@example({"hidden": "64"}).via("a number as text")
@example({"gate_layers": "x"}).via("a string depth")
@example({1: 2, "x": 3}).via("non-string keys")
@example([["hidden", 8]]).via("not a mapping")
@example({"hidden": np.int64(16), "heads": 2}).via("numpy ints are ints")
def test_arch_from_random_dicts(d):
    spec = clean(ArchSpec.from_dict, d)
    if spec is not None:
        check_arch(spec, {k: v for k, v in d.items() if k != "head_dim"})


@FUZZ
@given(st.integers(1, 8), st.integers(1, 16), st.integers(1, 64), st.integers(1, 6), st.sampled_from(ATTENTION_KINDS),
       st.integers(0, 3), st.sampled_from(GATE_PLACEMENTS), st.booleans())
def test_valid_arch_dicts_load(heads, head_dim, inner, layers, attention, gate_layers, placement, with_head_dim):
    d = {"hidden": heads * head_dim, "inner": inner, "heads": heads, "layers": layers, "attention": attention,
         "gate_layers": gate_layers, "gate_placement": placement}
    if with_head_dim:
        d["head_dim"] = head_dim
    spec = ArchSpec.from_dict(d)
    check_arch(spec, {k: v for k, v in d.items() if k != "head_dim"})


# ---------------------------------------------------------------- a tampered MODEL_DIR


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny exported MODEL_DIR: config.json, model.safetensors, items.json, card.json."""
    rows = synthetic_rows(n_users=12, n_items=10, seed=3)
    inter = Interactions(np.array([f"u{u}" for u, _, _ in rows]), np.array([f"i{i}" for _, i, _ in rows]),
                         np.array([t for _, _, t in rows], dtype=np.float64), True, "synthetic")
    data = build_dataset(inter, name="synthetic")
    import torch

    torch.manual_seed(0)
    model = compress.get_backbone("sasrec")(ArchSpec(hidden=8, inner=16, heads=2, layers=2, attention="linear",
                                                     gate_layers=1), data.n_items, 6, 0.1)
    out = str(tmp_path_factory.mktemp("fuzz-model") / "model")
    save_model_dir(model, out, vocabulary=data.vocabulary(), dataset_stats=data.stats())
    return out


def paths(obj: Any, prefix=()) -> List[tuple]:
    """Every path (tuple of keys/indices) into a JSON tree, the root included."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, prefix + (k,))
    elif isinstance(obj, list) and len(obj) <= 8:
        for i, v in enumerate(obj):
            out += paths(v, prefix + (i,))
    return out


def set_path(obj: Any, path: tuple, value: Any, delete: bool = False) -> Any:
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


SIZES = st.sampled_from([0, -1, 1, 2, 3, 4, 6, 7, 8, 16, 10 ** 6, 10 ** 12, 2 ** 63, 2 ** 70, 1.0, 8.0, 0.5,
                         float("nan"), float("inf"), True, "8"])
TAMPER_VALUES = st.one_of(JSONISH, SIZES)


@st.composite
def tampering(draw, cfg):
    kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
    where = draw(st.sampled_from(paths(cfg)))
    return kind, where, draw(TAMPER_VALUES), draw(st.text(max_size=6))


def fresh_copy(model_dir: str):
    tmp = tempfile.TemporaryDirectory(prefix="fuzz-load-")
    out = os.path.join(tmp.name, "model")
    shutil.copytree(model_dir, out)
    return tmp, out


def read(path: str) -> Any:
    with open(path) as fh:
        return json.load(fh)


def dump(path: str, obj: Any) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh)


def check_loaded(model) -> None:
    """A loaded model serves: raw ids out, scores finite, within the catalogue."""
    ids = model.vocabulary.ids
    assert isinstance(ids, list) and len(ids) == model.n_items
    recs = compress.Recommender(model).recommend([[ids[0], ids[1]]], k=3, exclude_seen=True)
    assert len(recs) == 1 and len(recs[0]) <= 3
    assert all(i in ids and i not in (ids[0], ids[1]) and isinstance(s, float) for i, s in recs[0])


@settings(FUZZ, max_examples=DEEP or 100)
@given(st.data())
@example(None).via("untouched")
def test_tampered_config_json(model_dir, data):
    tmp, out = fresh_copy(model_dir)
    with tmp:
        if data is not None:
            cfg = read(os.path.join(out, CONFIG))
            kind, where, value, new_key = data.draw(tampering(cfg))
            if kind == "add":
                target = cfg
                for key in where:
                    target = target[key]
                if isinstance(target, dict):
                    target[new_key] = value
            else:
                cfg = set_path(cfg, where, value, delete=kind == "delete")
            dump(os.path.join(out, CONFIG), cfg)
        model = clean(compress.load, out)
        if model is not None:
            check_loaded(model)


def tamper_model(out: str, section: str, key: str, value: Any) -> None:
    cfg = read(os.path.join(out, CONFIG))
    target = cfg["model"] if section == "model" else cfg["model"][section]
    target[key] = value
    dump(os.path.join(out, CONFIG), cfg)


@pytest.mark.parametrize("section,key,value", [
    ("model", "n_items", 10 ** 12),  # an embedding of 10**12 rows: refused before any allocation
    ("model", "max_len", 10 ** 10),
    ("model", "n_items", 2 ** 70),
    ("arch", "layers", 10 ** 9),  # a billion layers: refused before building them
    ("arch", "gate_layers", 10 ** 6),  # gate MLPs a million layers deep, likewise
    ("arch", "inner", 10 ** 11),
    ("arch", "hidden", 2 ** 40),
    ("model", "n_items", -5),
    ("model", "dropout", 7),
    ("model", "layer_norm_eps", "x"),
    ("model", "backbone", ["sasrec"]),
    ("style", "activation", {"a": 1}),
    ("style", "mask_prob", float("nan")),
])
def test_tampered_sizes_fail_fast(model_dir, section, key, value):
    tmp, out = fresh_copy(model_dir)
    with tmp:
        tamper_model(out, section, key, value)
        with pytest.raises(CompressError) as info:
            compress.load(out)
        one_line(info.value)


@pytest.mark.parametrize("text", ["", "{", "[]", "null", "1" * 5000, "[" * 100000 + "]" * 100000,
                                  '{"model": NaN}', "\ufeff{}", '{"kind": "search"}', '{"kind": "supernet"}'])
def test_corrupt_config_text(model_dir, text):
    tmp, out = fresh_copy(model_dir)
    with tmp:
        with open(os.path.join(out, CONFIG), "w", encoding="utf-8") as fh:
            fh.write(text)
        with pytest.raises(CompressError) as info:
            compress.load(out)
        one_line(info.value)


@settings(FUZZ, max_examples=DEEP or 50)
@given(st.data())
def test_tampered_items_json(model_dir, data):
    tmp, out = fresh_copy(model_dir)
    with tmp:
        items = read(os.path.join(out, ITEMS))
        where = data.draw(st.sampled_from([(), ("item_ids",), ("popularity",), ("item_ids", 0), ("item_ids", 1),
                                           ("popularity", 1)]))
        items = set_path(items, where, data.draw(TAMPER_VALUES), delete=data.draw(st.booleans()))
        dump(os.path.join(out, ITEMS), items)
        model = clean(compress.load, out)
        if model is not None:
            check_loaded(model)
            assert len(set(model.vocabulary.ids)) == model.n_items


@FUZZ
@given(st.data())
def test_damaged_weights(model_dir, data):
    tmp, out = fresh_copy(model_dir)
    with tmp:
        path = os.path.join(out, WEIGHTS)
        with open(path, "rb") as fh:
            blob = bytearray(fh.read())
        header = int.from_bytes(blob[:8], "little") + 8
        how = data.draw(st.sampled_from(["cut", "flip-header", "flip-data", "delete", "append"]))
        if how == "cut":
            blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
        elif how == "flip-header":
            blob[data.draw(st.integers(0, header - 1))] ^= data.draw(st.integers(1, 255))
        elif how == "flip-data":
            blob[data.draw(st.integers(header, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
        elif how == "append":
            blob += data.draw(st.binary(min_size=1, max_size=16))
        if how == "delete":
            os.remove(path)
        else:
            with open(path, "wb") as fh:
                fh.write(bytes(blob))
        event(how)
        model = clean(compress.load, out)
        if model is not None:
            assert how == "flip-data" or how == "flip-header", how  # a cut or grown file never loads
            ids = model.vocabulary.ids
            try:  # changed weights still serve, with odd scores, unless a flipped bit made a score NaN or infinite
                recs = compress.Recommender(model).recommend([[ids[0]]], k=3)
            except compress.ConfigError as exc:
                assert "not finite" in str(exc)
                return
            assert len(recs[0]) <= 3 and all(isinstance(s, float) and math.isfinite(s) for _, s in recs[0])
