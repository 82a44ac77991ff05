"""Recipes: defaults < recipe < flags < --set, strict keys and types."""
from __future__ import annotations

from pathlib import Path

import pytest

from compress.errors import ConfigError
from compress.app.recipes import DEFAULTS, load_recipe, parse_sets, resolve_options
from compress.app.jobs import arch_from_options, search_space

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture
def recipe(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / "r.yaml"
        path.write_text(text)
        return str(path)
    return write


def test_defaults_alone():
    assert resolve_options(None, {}) == DEFAULTS
    assert resolve_options(None, {"epochs": None, "lr": None}) == DEFAULTS  # flags not given are None


def test_precedence(recipe):
    path = recipe("# compress train --recipe r.yaml\nepochs: 3\nhidden: 32\nlr: 0.01\nbackbone: sasrec\n")
    opts = resolve_options(path, {"hidden": 48, "lr": 0.005, "seed": None}, ["lr=0.002"])
    assert opts["epochs"] == 3  # recipe over default
    assert opts["hidden"] == 48  # flag over recipe
    assert opts["lr"] == 0.002  # --set over flag over recipe
    assert opts["seed"] == DEFAULTS["seed"]  # untouched default
    assert opts["inner"] == DEFAULTS["inner"]


def test_later_set_wins():
    assert parse_sets(["epochs=2", "epochs=5"]) == {"epochs": 5}


@pytest.mark.parametrize("text,match", [
    ("epochz: 3\n", "unknown key.*epochz.*known keys: .*epochs"),
    ("epochs: many\n", "option 'epochs' expects int, got 'many'"),
    ("epochs: 2.5\n", "option 'epochs' expects int"),
    ("epochs: true\n", "option 'epochs' expects int, got True"),
    ("hidden: [64, 32]\n", "option 'hidden' expects int"),
    ("lr: fast\n", "option 'lr' expects float"),
    ("lr: false\n", "option 'lr' expects float"),
    ("backbone: 5\n", "option 'backbone' expects str"),
    ("- epochs\n- 3\n", "must be a mapping"),
    ("epochs: [\n", "not valid YAML"),
])
def test_bad_recipes(recipe, text, match):
    with pytest.raises(ConfigError, match=match):
        load_recipe(recipe(text))


def test_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="recipe .*nope.yaml not found"):
        resolve_options(str(tmp_path / "nope.yaml"), {})


def test_empty_recipe_is_no_change(recipe):
    assert resolve_options(recipe("# nothing yet\n"), {}) == DEFAULTS


def test_value_coercion(recipe):
    opts = load_recipe(recipe("lr: 1e-3\ndropout: 0\nuser_col: 0\ndata: 123\nseq_len: '20'\n"))
    assert opts == {"lr": 0.001, "dropout": 0.0, "user_col": "0", "data": "123", "seq_len": 20}
    assert isinstance(opts["dropout"], float)


def test_sets():
    assert parse_sets(["batch-size=8", "time_col=none", "user_col=2", "lr=1e-4", "data="]) == {
        "batch_size": 8, "time_col": "none", "user_col": "2", "lr": 1e-4, "data": None}


@pytest.mark.parametrize("item,match", [
    ("epochs", "--set expects key=value"),
    ("epochz=3", "unknown key.*epochz in --set"),
    ("epochs=three", "option 'epochs' expects int"),
    ("layers=yes", "option 'layers' expects int, got True"),
])
def test_bad_sets(item, match):
    with pytest.raises(ConfigError, match=match):
        resolve_options(None, {}, [item])


def test_flags_are_type_checked_too():
    with pytest.raises(ConfigError, match="option 'heads' expects int"):
        resolve_options(None, {"heads": 1.5})


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_resolve_and_name_their_command(path):
    """Every recipe in recipes/ loads strictly, shows the command that runs it, and its search space
    gives valid candidate widths (heads that divide them, nothing empty)."""
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(f"--recipe recipes/{path.name}" in line and "compress " in line for line in header)
    opts = resolve_options(str(path), {})
    widths = search_space(opts).widths(arch_from_options(opts))
    assert widths[0].hidden == opts["hidden"] and widths[0].inner == opts["inner"]
    assert all(w.hidden > 0 and w.inner > 0 for w in widths)
