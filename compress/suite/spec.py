"""The experiment list: a YAML file of named variants and size presets, expanded into cells.

A cell is (dataset, variant, seed) with fully resolved run options. Its key hashes everything that
decides its result (dataset, method, seed, resolved options, the keys of the cells it builds on),
so a finished cell is recognised across runs and a changed setting makes a new cell. Options that
say where or how fast it runs (device, data directory, checkpoint frequency) are not part of it.

Option precedence, lowest first: the built-in search defaults, the dataset's recipe, the preset's
options, the dataset's options, the variant's options, then the dataset name and the seed. The name
decides the data. A ``data`` in the suite's options is refused: a named dataset would override it without
a word, and under ``default`` it would win, run under that name. So is a recipe's ``data`` under
``default``, the embedded sample; a named dataset overrides its recipe's, as recipes are shared (the
paper preset's Toys and LastFM take recipes/amazon.yaml, written for Beauty).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from compress.app.options import BY_KEY, options_for
from compress.app.recipes import _parse_yaml, resolve_options
from compress.data.registry import DATASETS
from compress.errors import ConfigError
from compress.suite.pruning import HEAD_MODES

METHODS = ("dense", "dnsrec", "uniform", "prune")
NEEDS = {"dense": (), "dnsrec": (), "uniform": ("reference",), "prune": ("reference", "base")}
# a dnsrec variant that only retrains differently reuses a search (reference); one with a base warm-starts
# its search from that dense variant's trained model, the model the pruning baseline starts from; one with a
# budget searches under a max_flops of that variant's model's analytic FLOPs (same dataset and seed)
OPTIONAL_NEEDS = {"dnsrec": ("reference", "base", "budget")}
# where, how often, how fast or in how much memory, not what
VOLATILE = ("device", "data_dir", "checkpoint_every", "compile", "eval_batch_size", "tensorboard", "recompute")
# Options added after the first suite runs: in a cell's identity only when set to another value than
# the one the cells recorded before ran with, so that those keep their keys; and options renamed
# since, under their first name. The search's own (SEARCH_LATER) are not in the identity of cells that
# do not search.
LATER = {"eval_seed": 2024, "from_scratch": False, "from_init": False, "distill": 0.0, "distill_temperature": 1.0,
         "item_numbering": "compress", "tau_schedule": "step", "flops_reference": "supernet",
         "attention_choices": ["softmax", "linear"], "gate_choices": [0, 1, 2], "decide": "best", "depth_choices": None,
         "head_pruning": "whole"}
SEARCH_LATER = ("tau_schedule", "flops_reference", "attention_choices", "gate_choices", "decide", "depth_choices",
                "head_pruning")
FIRST_NAMES = {"data_format": "format"}
DEFAULT_DATA = "default"
TOP_KEYS = {"variants", "presets"}
VARIANT_KEYS = {"method", "label", "options", "from_scratch", "retrain", "reference", "base", "budget", "heads"}
RETRAIN_KEYS = {o.key for o in options_for("retrain")}  # what a retraining stage may change
PRESET_KEYS = {"about", "seeds", "variants", "datasets", "options", "measure"}
DATASET_KEYS = {"recipe", "options"}
MEASURE_KEYS = {"batches", "repeats"}


@dataclass(frozen=True)
class Variant:
    name: str
    method: str
    label: str
    options: Dict[str, Any] = field(default_factory=dict)
    from_scratch: bool = False
    needs: Dict[str, str] = field(default_factory=dict)  # role ("reference", "base") -> variant name
    retrain: Dict[str, Any] = field(default_factory=dict)  # dnsrec: options of the retraining stage only
    heads: str = "keep"  # prune: attention loses per-head dimensions ("keep") or whole heads ("prune")


@dataclass(frozen=True)
class Cell:
    dataset: str
    variant: Variant
    seed: int
    options: Dict[str, Any]
    key: str
    needs: Dict[str, str]  # role -> key of the cell it builds on

    @property
    def name(self) -> str:
        return f"{self.variant.name}-{self.dataset}-s{self.seed}-{self.key}"


@dataclass(frozen=True)
class Plan:
    preset: str
    about: str
    cells: List[Cell]
    batches: List[int]
    repeats: int


def cell_key(dataset: str, method: str, seed: int, options: Dict[str, Any], from_scratch: bool,
             needs: Dict[str, str], retrain: Optional[Dict[str, Any]] = None, heads: str = "keep") -> str:
    """16 hex digits of SHA-256 over the cell's identity, as canonical JSON. Retraining options and
    whole-head pruning enter the identity only when a variant sets them, so the keys of every other
    cell stay what they were."""
    named = {FIRST_NAMES.get(k, k): v for k, v in sorted(options.items())
             if k not in VOLATILE and not (k in LATER and v == LATER[k])
             and not (k in SEARCH_LATER and method != "dnsrec")}
    ident = {"dataset": dataset, "method": method, "seed": seed, "from_scratch": from_scratch, "needs": needs,
             "options": named}
    if retrain:
        ident["retrain"] = dict(sorted(retrain.items()))
    if heads != "keep":
        ident["heads"] = heads
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _mapping(value: Any, where: str, keys: Optional[set] = None) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
    unknown = sorted(map(str, set(value) - keys)) if keys is not None else []
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; known keys: {', '.join(sorted(keys))}")
    return value


def _variant(name: str, raw: Any, path: str) -> Variant:
    raw = _mapping(raw, f"{path}: variant {name!r}", VARIANT_KEYS)
    method = raw.get("method")
    if method not in METHODS:
        raise ConfigError(f"{path}: variant {name!r} has unknown method {method!r}; choose one of {', '.join(METHODS)}")
    roles = NEEDS[method] + OPTIONAL_NEEDS.get(method, ())
    needs = {role: raw[role] for role in roles if role in raw}
    missing = [role for role in NEEDS[method] if role not in needs]
    if missing:
        raise ConfigError(f"{path}: variant {name!r} (method {method}) needs {' and '.join(missing)}: "
                          "the variant(s) it builds on")
    stray = [role for role in ("reference", "base", "budget") if role in raw and role not in roles]
    if stray:
        raise ConfigError(f"{path}: variant {name!r} (method {method}) takes no {', '.join(stray)}")
    if not isinstance(raw.get("from_scratch", False), bool):
        raise ConfigError(f"{path}: variant {name!r}: from_scratch must be true or false")
    if raw.get("from_scratch") and method != "dnsrec":
        raise ConfigError(f"{path}: variant {name!r}: from_scratch applies to dnsrec variants only")
    options = _mapping(raw.get("options"), f"{path}: variant {name!r} options")
    if "data" in options:
        raise ConfigError(f"{path}: variant {name!r} options set data: {options['data']!r}, but a preset's dataset "
                          "names decide the data; drop it, and name that data under the preset's datasets")
    retrain = _mapping(raw.get("retrain"), f"{path}: variant {name!r} retrain", RETRAIN_KEYS)
    if retrain and method != "dnsrec":
        raise ConfigError(f"{path}: variant {name!r}: retrain options apply to dnsrec variants only")
    if method == "dnsrec" and "reference" in needs and "base" in needs:
        raise ConfigError(f"{path}: variant {name!r} reuses the search of {needs['reference']!r}, so it cannot "
                          f"also warm-start a search from {needs['base']!r}; give one of reference and base")
    if "reference" in needs and "budget" in needs:
        raise ConfigError(f"{path}: variant {name!r} reuses the search of {needs['reference']!r}, which ran under "
                          f"its own budget; drop budget")
    if "budget" in needs and "max_flops" in (raw.get("options") or {}):
        raise ConfigError(f"{path}: variant {name!r} takes its max_flops from the FLOPs of {needs['budget']!r}; "
                          "drop options.max_flops")
    if "base" in needs and "init" in (raw.get("options") or {}):
        raise ConfigError(f"{path}: variant {name!r} warm-starts from its base {needs['base']!r}; drop options.init")
    if method == "dnsrec" and "reference" in needs and not (retrain or raw.get("from_scratch")):
        raise ConfigError(f"{path}: variant {name!r} reuses the search of {needs['reference']!r} but retrains "
                          "it the same way; give it retrain options or from_scratch")
    heads = raw.get("heads", "keep")
    if heads not in HEAD_MODES:
        raise ConfigError(f"{path}: variant {name!r}: heads must be one of {', '.join(HEAD_MODES)}, got {heads!r}")
    if "heads" in raw and method != "prune":
        raise ConfigError(f"{path}: variant {name!r}: heads applies to prune variants only")
    retrain = {k: BY_KEY[k].parse(v, f"{path}: variant {name!r} retrain {k}") for k, v in retrain.items()}
    return Variant(name, method, str(raw.get("label", name)), options, raw.get("from_scratch", False), needs,
                   retrain, heads)


def read_spec(path: str) -> Dict[str, Any]:
    """The parsed YAML file, its top level checked."""
    if not os.path.isfile(path):
        raise ConfigError(f"suite file {path} not found")
    with open(path, "rb") as fh:
        data = _parse_yaml(fh.read(), f"suite file {path} is not valid YAML")
    return _mapping(data, f"suite file {path}", TOP_KEYS)


def _with_needs(names: Sequence[str], variants: Dict[str, Variant], path: str) -> List[str]:
    """``names`` plus every variant they build on, each after what it needs (order otherwise kept)."""
    out: List[str] = []

    def visit(name: str, chain: tuple) -> None:
        if name in chain:
            raise ConfigError(f"{path}: variants build on each other in a cycle: {' -> '.join(chain + (name,))}")
        if name not in variants:
            raise ConfigError(f"{path}: unknown variant {name!r}; known: {', '.join(variants)}")
        for dep in variants[name].needs.values():
            visit(dep, chain + (name,))
        if name not in out:
            out.append(name)

    for name in names:
        visit(name, ())
    return out


def _same_search(v: Variant, ref: Variant, opts: Dict[str, Any], ref_opts: Dict[str, Any], path: str) -> None:
    """A dnsrec variant may reuse another's search only if that search is what it would run itself."""
    if ref.method != "dnsrec" or opts != ref_opts:
        raise ConfigError(f"{path}: variant {v.name!r} reuses the search of {ref.name!r}, which is not a DNS-Rec "
                          "search with the same options; drop `reference` to run its own")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ints(value: Any, where: str, minimum: Optional[int] = None) -> List[int]:
    if not isinstance(value, list) or not value or not all(_whole(v) for v in value) or \
            (minimum is not None and min(value) < minimum):
        least = "" if minimum is None else f" of at least {minimum}"
        raise ConfigError(f"{where} must be a non-empty list of integers{least}, got {value!r}")
    return value


def _measure(p: Dict[str, Any], where: str) -> Tuple[List[int], int]:
    """The batch sizes and repeats latency is measured at, checked before any cell runs: a bad one would
    otherwise fail (repeats 0) or record nonsense (latency at batch 0) only after a cell has trained."""
    measure = _mapping(p.get("measure"), f"{where} measure", MEASURE_KEYS)
    batches = _ints(measure.get("batches", [1, 256]), f"{where} measure.batches", minimum=1)
    repeats = measure.get("repeats", 20)
    if not _whole(repeats) or repeats < 1:
        raise ConfigError(f"{where} measure.repeats must be a whole number of at least 1, got {repeats!r}")
    return batches, repeats


def _chosen(values: Optional[Sequence[Any]], what: str) -> Optional[List[Any]]:
    """A selection of variants, seeds or datasets: None takes the preset's; an empty one (``--variants ,``)
    is refused rather than read as no selection, which would run the whole preset."""
    if values is None:
        return None
    if not list(values):
        raise ConfigError(f"the {what} selection names none (e.g. --{what} ','); name at least one, or leave "
                          f"--{what} out to take the preset's")
    return list(values)


def _check_dataset(name: str, where: str) -> None:
    """A preset's dataset is a registered name or an existing file, checked before any cell runs."""
    if name != DEFAULT_DATA and name not in DATASETS and not os.path.exists(name):
        raise ConfigError(f"{where}: unknown dataset {name!r}; name one of {', '.join([DEFAULT_DATA, *DATASETS])} "
                          "or an existing file")


def load_plan(path: str, preset: str, variants: Optional[Sequence[str]] = None,
              seeds: Optional[Sequence[int]] = None, datasets: Optional[Sequence[str]] = None) -> Plan:
    """The cells ``preset`` of the suite file at ``path`` runs, optionally narrowed to some variants
    (the ones they build on are added), seeds and datasets. Order: dataset, then seed, then variant,
    so that every seed's comparison completes before the next seed starts. Everything a cell could
    only find wrong once it runs (datasets, measurement settings, two variants that are one cell) is
    checked here, before any cell trains."""
    variants, seeds, datasets = _chosen(variants, "variants"), _chosen(seeds, "seeds"), _chosen(datasets, "datasets")
    spec = read_spec(path)
    presets = _mapping(spec.get("presets"), f"{path}: presets")
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; {path} defines {', '.join(presets) or 'none'}")
    where = f"{path}: preset {preset!r}"
    p = _mapping(presets[preset], where, PRESET_KEYS)
    raw_variants = _mapping(spec.get("variants"), f"{path}: variants")
    known = {name: _variant(name, raw, path) for name, raw in raw_variants.items()}
    names = _with_needs(variants or p.get("variants") or list(known), known, path)
    label = "--seeds" if seeds else f"{where} seeds"  # named as the user gave them, not as `compress --seed`
    seed_list = [BY_KEY["seed"].parse(s, label) for s in _ints(seeds or p.get("seeds", [2024]), label)]
    all_data = _mapping(p.get("datasets"), f"{where} datasets") or {DEFAULT_DATA: {}}
    for name in datasets or ():
        if name not in all_data:
            raise ConfigError(f"preset {preset!r} has no dataset {name!r}; it runs {', '.join(all_data)}")
    batches, repeats = _measure(p, where)
    cells: List[Cell] = []
    for data in (datasets or list(all_data)):
        _check_dataset(data, where)
        d = _mapping(all_data[data], f"{where} dataset {data!r}", DATASET_KEYS)
        recipe = d.get("recipe")
        if recipe is not None:
            recipe = os.path.join(os.path.dirname(os.path.abspath(path)), str(recipe))
        flags = {**_mapping(p.get("options"), f"{where} options"),
                 **_mapping(d.get("options"), f"{where} dataset {data!r} options")}
        if "data" in flags:
            raise ConfigError(f"{where} dataset {data!r}: the options set data: {flags['data']!r}, but the dataset's "
                              "name decides the data; drop it, and name that data as a dataset of the preset")
        for seed in seed_list:
            cells += _seed_cells(data, seed, recipe, flags, [known[name] for name in names], known, path)
    return Plan(preset, str(p.get("about", "")), cells, batches, repeats)


def _seed_cells(data: str, seed: int, recipe: Optional[str], flags: Dict[str, Any], chosen: List[Variant],
                known: Dict[str, Variant], path: str) -> List[Cell]:
    """The cells of ``chosen`` (each after what it builds on) on one dataset and seed. Two variants
    that resolve to one key are refused: the second would be taken for done and never run."""
    keys: Dict[str, str] = {}  # variant -> key
    owner: Dict[str, str] = {}  # key -> variant
    by_key: Dict[str, Dict[str, Any]] = {}
    cells = []
    for v in chosen:
        opts = resolve_options("search", recipe, {**flags, **v.options, "data": None if data == DEFAULT_DATA else data,
                                                  "seed": seed})
        if opts["data"] is not None and data == DEFAULT_DATA:  # the recipe's: a None given is no override
            raise ConfigError(f"{path}: dataset {DEFAULT_DATA!r} runs the embedded sample, but its recipe {recipe} "
                              f"sets data: {opts['data']!r}; name the dataset {opts['data']!r} to run on that data, "
                              "or give a recipe that sets no data")
        needs = {role: keys[dep] for role, dep in v.needs.items()}
        if v.method == "dnsrec" and "reference" in v.needs:
            _same_search(v, known[v.needs["reference"]], opts, by_key[needs["reference"]], path)
        key = cell_key(data, v.method, seed, opts, v.from_scratch, needs, v.retrain, v.heads)
        if key in owner:
            raise ConfigError(f"{path}: variants {owner[key]!r} and {v.name!r} resolve to the same cell on {data}, "
                              f"seed {seed} (key {key}), so {v.name!r} would never run; give it other options or "
                              "select one of them")
        keys[v.name], owner[key], by_key[key] = key, v.name, opts
        cells.append(Cell(data, v, seed, opts, key, needs))
    return cells
