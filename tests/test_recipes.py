"""Recipes: defaults < recipe < flags < --set, strict keys and types, RecBole's names as aliases."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from typer.main import get_command

from compress.app.options import BY_KEY, build, defaults
from compress.app.recipes import load_recipe, parse_sets, resolve_options
from compress.arch import ArchSpec
from compress.errors import ConfigError
from compress.nas.space import SearchSpace

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture
def recipe(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / "r.yaml"
        path.write_text(text)
        return str(path)
    return write


def test_defaults_alone():
    assert resolve_options("train") == defaults("train")
    assert resolve_options("train", None, {"epochs": None, "lr": None}) == defaults("train")  # None: not given
    search = resolve_options("search")
    assert (search["attention"], search["gate_layers"], search["heads"]) == (None, None, 4)  # the search's own:
    assert (search["attention_choices"], search["gate_choices"]) == (["softmax", "linear"], [0, 1, 2])  # searched


def test_precedence(recipe):
    path = recipe("# compress train --recipe r.yaml\nepochs: 3\nhidden: 32\nlr: 0.01\nbackbone: sasrec\n")
    opts = resolve_options("train", path, {"hidden": "48", "lr": 0.005, "seed": None}, ["lr=0.002"])
    assert opts["epochs"] == 3  # recipe over default
    assert opts["hidden"] == 48  # flag over recipe (a command-line string, parsed)
    assert opts["lr"] == 0.002  # --set over flag over recipe
    assert opts["seed"] == defaults("train")["seed"]  # untouched default
    assert opts["inner"] == defaults("train")["inner"]


def test_later_set_wins():
    assert parse_sets(["epochs=2", "epochs=5"]) == {"epochs": 5}


@pytest.mark.parametrize("text,match", [
    ("epochz: 3\n", "unknown key.*epochz.*known keys: .*epochs"),
    ("epochs: many\n", "epochs in recipe .* expects a whole number, got 'many'"),
    ("epochs: 2.5\n", "epochs in recipe .* expects a whole number"),
    ("epochs: true\n", "epochs in recipe .* expects a whole number, got True"),
    ("epochs: 0\n", "epochs in recipe .* must be >= 1, got 0"),
    ("hidden: [64, 32]\n", "hidden in recipe .* expects a whole number"),
    ("lr: fast\n", "lr in recipe .* expects a number"),
    ("lr: .nan\n", "lr in recipe .* must be a finite number"),
    ("lr: false\n", "lr in recipe .* expects a number"),
    ("dropout: 5\n", r"dropout in recipe .* must be in \[0, 0.99\], got 5"),
    ("attention: quadratic\n", "attention in recipe .*: 'quadratic' is not one of softmax, linear"),
    ("backbone: 5\n", "backbone in recipe .* expects a string"),
    ("- epochs\n- 3\n", "must be a mapping"),
    ("epochs: [\n", "not valid YAML"),
])
def test_bad_recipes(recipe, text, match):
    with pytest.raises(ConfigError, match=match):
        load_recipe(recipe(text))


def test_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="recipe .*nope.yaml not found"):
        resolve_options("train", str(tmp_path / "nope.yaml"))


def test_empty_recipe_is_no_change(recipe):
    assert resolve_options("train", recipe("# nothing yet\n")) == defaults("train")


def test_value_coercion(recipe):
    opts = load_recipe(recipe("lr: 1e-3\ndropout: 0\nuser_col: 0\ndata: 123\nseq_len: '20'\n"))
    assert opts == {"lr": 0.001, "dropout": 0.0, "user_col": "0", "data": "123", "seq_len": 20}
    assert isinstance(opts["dropout"], float)


def test_recbole_names_are_aliases(recipe):
    """A RecBole config's keys read as ours; a backbone name in any case."""
    opts = load_recipe(recipe("hidden_size: 32\ninner_size: 64\nn_layers: 3\nn_heads: 4\nMAX_ITEM_LIST_LENGTH: 30\n"
                              "learning_rate: 0.002\ntrain_batch_size: 64\nstopping_step: 5\nbackbone: SASRec\n"))
    assert opts == {"hidden": 32, "inner": 64, "layers": 3, "heads": 4, "seq_len": 30, "lr": 0.002,
                    "batch_size": 64, "patience": 5, "backbone": "sasrec"}
    assert parse_sets(["hidden_size=16"]) == {"hidden": 16}


def test_sets():
    assert parse_sets(["batch-size=8", "time_col=none", "user_col=2", "lr=1e-4", "data="]) == {
        "batch_size": 8, "time_col": "none", "user_col": "2", "lr": 1e-4, "data": None}


@pytest.mark.parametrize("item,match", [
    ("epochs", "--set expects key=value"),
    ("epochz=3", "unknown key.*epochz in --set"),
    ("epochs=three", "--set epochs expects a whole number"),
    ("layers=yes", "--set layers expects a whole number, got True"),
    ("arch_lr=nan", "--set arch_lr must be a finite number"),
    ("weight_decay=-5", r"--set weight_decay must be in \[0, 1\], got -5"),
    ("seed=1180591620717411303424", "--set seed must be in"),
])
def test_bad_sets(item, match):
    with pytest.raises(ConfigError, match=match):
        resolve_options("train", None, {}, [item])


@pytest.mark.parametrize("flags,match", [
    ({"heads": 1.5}, "--heads expects a whole number"),
    ({"seq_len": "0"}, "--seq-len must be in"),
    ({"dropout": "5"}, "--dropout must be in"),
    ({"batch_size": "-3"}, "--batch-size must be >= 1"),
    ({"device": "tpu"}, "--device: 'tpu' is not a device"),
])
def test_flags_are_checked_too(flags, match):
    with pytest.raises(ConfigError, match=match):
        resolve_options("train", None, flags)


@pytest.mark.parametrize("flags,match", [
    ({"tradeoff": "nan"}, "--tradeoff must be a finite number"),
    ({"tradeoff": "inf"}, "--tradeoff must be a finite number"),
    ({"max_flops": "nan"}, "--max-flops is neither a percentage like 50% nor a finite number"),
    ({"max_flops": "-5%"}, "--max-flops must be a positive number"),
    ({"epochs": "0"}, "--retrain-epochs must be >= 1, got 0"),
    ({"hidden_ratios": "0,1.5"}, r"--hidden-ratios must be in \[0, 0.99\]"),
])
def test_search_flags_are_checked_before_any_data(flags, match):
    with pytest.raises(ConfigError, match=match):
        resolve_options("search", None, flags)


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_resolve_and_name_their_command(path):
    """Every recipe in recipes/ loads strictly, shows the command that runs it, and its search space
    gives valid candidate widths (heads that divide them, nothing empty)."""
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(f"--recipe recipes/{path.name}" in line and "compress " in line for line in header)
    opts = resolve_options("search", str(path))
    widths = build(SearchSpace, opts).widths(build(ArchSpec, opts, attention="softmax", gate_layers=0))
    assert widths[0].hidden == opts["hidden"] and widths[0].inner == opts["inner"]
    assert all(w.hidden > 0 and w.inner > 0 for w in widths)


def header_commands(path: Path) -> list:
    """The `compress ...` command lines a recipe's header shows (a trailing backslash continues one)."""
    text = "\n".join(line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#"))
    return [shlex.split(line) for line in text.replace("\\\n", " ").splitlines() if line.startswith("compress ")]


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_headers_parse_and_say_where_named_data_lives(path, monkeypatch):
    """Every command a recipe's header shows parses as the command line would parse it, and one that runs
    on a named dataset passes --data-dir: offline, a dataset found nowhere is an error, not a download."""
    monkeypatch.chdir(RECIPES.parent)  # the headers' paths are relative to the repository
    commands = get_command(__import__("cli").app).commands
    shown = header_commands(path)
    assert shown
    for _, name, *args in shown:
        params = commands[name].make_context(name, list(args)).params
        opts = resolve_options(name, params["recipe"], {k: v for k, v in params.items() if k in BY_KEY},
                               params["set_"])
        assert opts["data"] is None or opts["data_dir"], (path.name, name)
