"""Recipes: YAML files of run options (torchtune style, the command that runs each in its header).

Precedence: the options' defaults (the command's own where it has one) < recipe < command-line
flags < ``--set key=value``. Keys and values are those of ``compress.app.options``; RecBole's names
(``hidden_size``, ``learning_rate``, ...) are accepted for ours. Unknown keys are an error, so a typo
never silently does nothing.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional

import yaml

from compress.app.options import BY_KEY, canonical, check_keys, defaults
from compress.errors import ConfigError

MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of options, not a data file


def load_recipe(path: Optional[str]) -> Dict[str, Any]:
    """The options a recipe file sets, checked."""
    if path is None:
        return {}
    if not os.path.exists(path):
        raise ConfigError(f"recipe {path} not found (give a YAML file)")
    if not os.path.isfile(path):
        raise ConfigError(f"recipe {path} is not a regular file (give a YAML file)")
    if os.path.getsize(path) > MAX_RECIPE_BYTES:
        raise ConfigError(f"recipe {path} is larger than 1 MB; a recipe is a short YAML mapping of options")
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
    out = {}
    for key, value in data.items():
        key = canonical(key)
        out[key] = BY_KEY[key].parse(value, f"{key} in recipe {path}")
    return out


def parse_sets(sets: Iterable[str]) -> Dict[str, Any]:
    """``--set key=value`` pairs, the value read as YAML (``[0, 0.5]``, ``true``, ``50%``)."""
    out = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = canonical(key.strip().replace("-", "_"))
        check_keys([key], "--set")
        parsed = _parse_yaml(value, f"--set {key}: cannot parse {value!r} (quote strings, write lists as [1, 2])")
        out[key] = BY_KEY[key].parse(parsed, f"--set {key}")
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


def resolve_options(command: str, recipe: Optional[str] = None, flags: Optional[Dict[str, Any]] = None,
                    sets: Iterable[str] = ()) -> Dict[str, Any]:
    """Every option of ``command``: defaults < recipe < the flags given (not None) < ``--set``.
    Flag values may be strings (from the command line) or typed values (from Python)."""
    opts = defaults(command)
    opts.update(load_recipe(recipe))
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = sorted(map(str, set(given) - set(BY_KEY)))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in the options; see `compress {command} --help`")
    opts.update({k: BY_KEY[k].parse(v, BY_KEY[k].flag(command)) for k, v in given.items()})
    opts.update(parse_sets(sets))
    return opts
