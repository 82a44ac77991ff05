"""Recipes: YAML files of run options (torchtune style, the command that runs each in its header).

Precedence: the options' defaults (the command's own where it has one) < recipe < command-line
flags < ``--set key=value``. Keys and values are those of ``compress.app.options``; RecBole's names
(``hidden_size``, ``learning_rate``, ...) are accepted for ours. Unknown keys are an error, so a typo
never silently does nothing, and so is a key given twice (or under two names), whose first value would
otherwise be dropped without a word. A recipe may hold options of another command, since one recipe
serves train and search (``taken_by`` leaves them out of a run); ``--set`` takes the command's own only.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional, Tuple

import yaml

from compress.app.options import BY_KEY, canonical, check_keys, defaults, options_for
from compress.errors import ConfigError

MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of options, not a data file
MERGE_TAG = "tag:yaml.org,2002:merge"


class RepeatedKey(yaml.YAMLError):
    """A mapping that gives one key twice; ``_parse_yaml`` words it as it words every YAML error."""


class StrictLoader(yaml.SafeLoader):
    """safe_load's loader, refusing a key given twice in one mapping: PyYAML keeps the last value without
    a word, so a line appended to a recipe (or a variant defined again in a suite file) would silently
    replace the first. The check runs on each mapping as composed, before construction folds merge keys
    (``<<: *base``) into it: a merged key set again locally is YAML's override, not a repeat."""

    def compose_mapping_node(self, anchor: Optional[str]) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: Dict[Tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == MERGE_TAG:
                continue
            line, first = key.start_mark.line + 1, seen.get((key.tag, key.value))
            if first is not None:
                where = f"line {line}" if first == line else f"lines {first} and {line}"
                raise RepeatedKey(f"key {key.value!r} is given twice ({where}); keep one")
            seen[(key.tag, key.value)] = line
        return node


def load_recipe(path: Optional[str]) -> Dict[str, Any]:
    """The options a recipe file sets, checked, under their own names."""
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
    out: Dict[str, Any] = {}
    named: Dict[str, str] = {}  # option -> the name the recipe gave it
    for name, value in data.items():
        key = canonical(name)
        if key in named:  # `inner` and RecBole's `inner_size`: which one was meant is anyone's guess
            raise ConfigError(f"recipe {path} gives {key} twice, as {named[key]} and as {name}; keep one")
        named[key] = name
        out[key] = BY_KEY[key].parse(value, f"{key} in recipe {path}")
    return out


def parse_sets(sets: Iterable[str], command: Optional[str] = None) -> Dict[str, Any]:
    """``--set key=value`` pairs, the value read as YAML (``[0, 0.5]``, ``true``, ``50%``). With
    ``command``, a key it does not take is refused: it would change nothing, yet be recorded as if
    applied (a recipe may hold such keys, as one recipe serves several commands; ``--set`` is typed
    for the one command it is given to)."""
    out = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = canonical(key.strip().replace("-", "_"))
        check_keys([key], "--set")
        parsed = _parse_yaml(value, f"--set {key}: cannot parse {value!r} (quote strings, write lists as [1, 2])")
        out[key] = BY_KEY[key].parse(parsed, f"--set {key}")
        if command is not None and command not in BY_KEY[key].commands:
            raise ConfigError(f"--set {key}: compress {command} does not take {key}, so it would change nothing; "
                              f"drop it (see `compress {command} --help`)")
    return out


def _parse_yaml(text, problem: str) -> Any:
    """A YAML document read as safe_load reads it, a key given twice refused (``StrictLoader``); every
    failure a one-line ConfigError starting with ``problem``."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{problem}: {first}") from None
    except RecursionError:
        raise ConfigError(f"{problem}: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - PyYAML's scalar constructors raise bare errors ('!!int ' -> IndexError)
        raise ConfigError(f"{problem}: bad tagged value ({type(exc).__name__})") from None


def given_options(command: str, recipe: Optional[str] = None, flags: Optional[Dict[str, Any]] = None,
                  sets: Iterable[str] = ()) -> Dict[str, Any]:
    """The options given to ``command``, parsed and checked: recipe < the flags given (not None) < ``--set``;
    no defaults, so that a stage that starts from a run's saved options (retraining) changes only these.
    Flag values may be strings (from the command line) or typed values (from Python)."""
    given = load_recipe(recipe)
    flagged = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = sorted(map(str, set(flagged) - set(BY_KEY)))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in the options; see `compress {command} --help`")
    given.update({k: BY_KEY[k].parse(v, BY_KEY[k].flag(command)) for k, v in flagged.items()})
    given.update(parse_sets(sets, command))
    return given


def resolve_options(command: str, recipe: Optional[str] = None, flags: Optional[Dict[str, Any]] = None,
                    sets: Iterable[str] = ()) -> Dict[str, Any]:
    """Every option of ``command``: defaults < recipe < the flags given (not None) < ``--set``.
    Flag values may be strings (from the command line) or typed values (from Python)."""
    return {**defaults(command), **given_options(command, recipe, flags, sets)}


def taken_by(command: str, opts: Dict[str, Any]) -> Dict[str, Any]:
    """``opts`` less the options ``command`` does not take: what a run of it applies and records. A
    recipe's values for another command (``search_epochs`` in a recipe that serves train and search)
    would otherwise reach the configurations that share a field (a dense training's ``distill``, which
    then asks for a teacher) and be recorded in config.json as if they had been applied."""
    taken = {o.key for o in options_for(command)}
    return {k: v for k, v in opts.items() if k in taken}


def retrain_overrides(command: str, recipe: Optional[str] = None, flags: Optional[Dict[str, Any]] = None,
                      sets: Iterable[str] = ()) -> Dict[str, Any]:
    """The options given to ``command`` as the retraining of a finished search takes them: `compress
    retrain`'s flags, or `compress search --stage retrain`'s recipe, flags and ``--set``. The retraining
    starts from the run's saved options, so one it cannot apply (the search's, the model's, the data's:
    the run has them) is refused rather than dropped, which would change nothing without a word."""
    given = given_options(command, recipe, flags, sets)
    taken = {o.key for o in options_for("retrain")}
    foreign = sorted(k for k in given if k not in taken)
    if foreign:
        them = "it" if len(foreign) == 1 else "them"
        raise ConfigError(f"retraining a finished search cannot apply {', '.join(f'`{k}`' for k in foreign)}: only a "
                          f"new search can change {them} (the run holds the options it was searched with); drop "
                          f"{them}, or search again")
    return given
