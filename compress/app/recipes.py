"""Recipes: YAML files of run options (torchtune style, the command that runs each in its header).

Precedence: built-in defaults < recipe < command-line flags < ``--set key=value``. Unknown keys are
an error, so a typo never silently does nothing.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional

import yaml

from compress.errors import ConfigError

# key -> default; the type of the default is the type a value must have (None: str or null).
DEFAULTS: Dict[str, Any] = {
    # data
    "data": None, "data_dir": None, "format": "auto", "user_col": None, "item_col": None, "time_col": None,
    "sep": None, "kcore": 0,
    # model
    "backbone": "sasrec", "hidden": 64, "inner": 256, "layers": 2, "heads": 2, "seq_len": 50,
    "dropout": 0.2, "attention": "softmax", "gate_layers": 0, "gate_placement": "code",
    # training
    "epochs": 50, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0, "patience": 10, "seed": 2024,
    "device": "auto", "k": 10, "max_minutes": None, "checkpoint_every": 0,
    "loss": "full", "negatives": 100, "precision": "fp32",
    # search (DNS-Rec)
    "search_epochs": 10, "search_batch_size": 256, "tradeoff": 0.1, "max_flops": None, "arch_every": 1,
    "arch_lr": 1e-2, "selection": "gumbel", "arch_batches": "valid", "hidden_ratios": [0.0, 0.25, 0.5],
    "inner_ratios": [0.0, 0.25, 0.5], "coupled": True, "round_to": 8, "tau_start": 1.0, "tau_rate": 5e-5,
    "tau_min": 0.01, "search_max_minutes": None, "init": None, "reorder": None, "penalty": "dnsrec",
}
# What a command changes: the search injects linear attention and gates, with heads narrow enough
# that every pruning ratio keeps whole heads.
COMMAND_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "train": {},
    "search": {"attention": "linear", "gate_layers": 2, "heads": 4},
}
FLOATS = {"dropout", "lr", "weight_decay", "arch_lr", "tradeoff", "tau_start", "tau_rate", "tau_min", "max_minutes",
          "search_max_minutes"}


BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _coerce(key: str, value: Any) -> Any:
    default = DEFAULTS[key]
    if value is None:
        if default is None:
            return None
        raise ConfigError(f"option {key!r} cannot be null; give a value or leave the key out for "
                          f"its default ({default!r})")
    if default is None and key not in FLOATS:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)  # a path, column, '50%' or a number
        raise ConfigError(f"option {key!r} expects a string or a number, got {value!r}")
    if isinstance(default, list):
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in value):
            return [float(v) for v in value]
        raise ConfigError(f"option {key!r} expects a list of numbers like [0.0, 0.5], got {value!r}")
    want = float if key in FLOATS else type(default)
    if want is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if want is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if want is bool and isinstance(value, bool):  # `coupled: false` (the check below refuses bools)
        return value
    if isinstance(value, str) and want is bool:  # bool('false') is True
        if value.strip().lower() in BOOLS:
            return BOOLS[value.strip().lower()]
    elif isinstance(value, str) and want is not str:
        try:
            return want(value)
        except ValueError:
            pass
    if isinstance(value, want) and not isinstance(value, bool):  # bool is an int: `epochs: yes` is a typo
        return value
    raise ConfigError(f"option {key!r} expects {want.__name__}, got {value!r}")


def check_keys(keys: Iterable[str], where: str) -> None:
    unknown = sorted(k if isinstance(k, str) and k.isidentifier() else repr(k)  # YAML keys may be numbers,
                     for k in set(keys) - set(DEFAULTS))  # null, empty or multi-line: quoted
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; known keys: {', '.join(sorted(DEFAULTS))}")


def load_recipe(path: Optional[str]) -> Dict[str, Any]:
    if path is None:
        return {}
    if not os.path.isfile(path):
        raise ConfigError(f"recipe {path} not found")
    try:
        with open(path, "rb") as fh:  # bytes: YAML detects the encoding and reports bad bytes as a YAMLError
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc.strerror}") from None
    data = _parse_yaml(text, f"recipe {path} is not valid YAML")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of option: value")
    check_keys(data, f"recipe {path}")
    return {k: _coerce(k, v) for k, v in data.items()}


def parse_sets(sets: Iterable[str]) -> Dict[str, Any]:
    out = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        check_keys([key], "--set")
        parsed = _parse_yaml(value, f"--set {key}: cannot parse {value!r} (quote strings, write lists as [1, 2])")
        out[key] = _coerce(key, parsed)
    return out


def _parse_yaml(text, problem: str) -> Any:
    """yaml.safe_load, every failure a one-line ConfigError starting with ``problem``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{problem}: {first}") from None
    except RecursionError:
        raise ConfigError(f"{problem}: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - PyYAML's scalar constructors raise bare errors ('!!int ' -> IndexError)
        raise ConfigError(f"{problem}: bad tagged value ({type(exc).__name__})") from None


def resolve_options(recipe: Optional[str], flags: Dict[str, Any], sets: Iterable[str] = (),
                    command: str = "train") -> Dict[str, Any]:
    """Merge defaults, the command's defaults, the recipe, explicitly given flags (not None) and ``--set``."""
    opts = {**DEFAULTS, **COMMAND_DEFAULTS[command]}
    opts.update(load_recipe(recipe))
    check_keys([k for k, v in flags.items() if v is not None], "the flags")
    opts.update({k: _coerce(k, v) for k, v in flags.items() if v is not None})
    opts.update(parse_sets(sets))
    return opts
