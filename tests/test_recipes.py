"""Recipes: defaults < recipe < flags < --set, strict keys and types, RecBole's names as aliases."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from compress.app.options import BY_KEY, build, defaults, options_for
from compress.app.recipes import load_recipe, parse_sets, resolve_options, retrain_overrides, taken_by
from compress.arch import ArchSpec
from compress.engine.config import TrainConfig
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


@pytest.mark.parametrize("text,match", [
    ("hidden: 16\ninner: 32\nhidden: 64\n", r"key 'hidden' is given twice \(lines 1 and 3\); keep one"),
    ("hidden_ratios: [0.0, 0.5]\nepochs: 2\nepochs: 2\n", r"key 'epochs' is given twice \(lines 2 and 3\)"),
    ("{lr: 0.1, lr: 0.2}\n", r"key 'lr' is given twice \(line 1\)"),
])
def test_a_key_given_twice_is_refused_naming_it_and_its_lines(recipe, text, match):
    """PyYAML keeps a repeated key's last value without a word: an appended line would silently win."""
    with pytest.raises(ConfigError, match=r"recipe .*r\.yaml is not valid YAML: " + match):
        load_recipe(recipe(text))


@pytest.mark.parametrize("text,match", [
    ("inner: 32\nhidden: 16\ninner_size: 256\n", "gives inner twice, as inner and as inner_size; keep one"),
    ("hidden_size: 64\nhidden: 16\n", "gives hidden twice, as hidden_size and as hidden; keep one"),
])
def test_one_option_under_two_names_is_refused_naming_both(recipe, text, match):
    with pytest.raises(ConfigError, match=match):
        load_recipe(recipe(text))


def test_yaml_merge_keys_still_work_and_a_merged_key_may_be_set_again(recipe):
    """``<<:`` brings a mapping's keys in; setting one of them again is YAML's override, not a repeat."""
    assert load_recipe(recipe("<<: {hidden: 16, inner: 32}\nhidden: 64\n")) == {"hidden": 64, "inner": 32}
    text = "<<: [{lr: 0.1}, {lr: 0.2, epochs: 3}]\nepochs: 4\n"
    assert load_recipe(recipe(text)) == yaml.safe_load(text) == {"lr": 0.2, "epochs": 4}  # PyYAML's merge order


SUITE_TEXT = """variants:
  sasrec: &dense {method: dense, label: "SASRec", options: {attention: softmax, gate_layers: 0}}
  linear:
    <<: *dense
    label: "SASRec + linear attention"
    options: {attention: linear, gate_layers: 0}
presets:
  smoke:
    seeds: [1]
    variants: [sasrec, linear]
    options: {seq_len: 20, hidden: 16, epochs: 1}
"""


def test_a_suite_file_defining_a_variant_twice_is_refused(tmp_path):
    """The suite file is read by the recipes' parser: a variant defined again is refused, not dropped."""
    from compress.suite.spec import load_plan, read_spec

    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_TEXT)
    plan = load_plan(str(path), "smoke")  # a merge (`<<: *dense`) with keys set again locally stays YAML's
    assert [(c.variant.name, c.options["attention"]) for c in plan.cells] == [("sasrec", "softmax"),
                                                                              ("linear", "linear")]
    path.write_text(SUITE_TEXT.replace("  linear:\n", "  sasrec:\n").replace("[sasrec, linear]", "[sasrec]"))
    with pytest.raises(ConfigError, match=r"suite file .* is not valid YAML: key 'sasrec' is given twice "
                                          r"\(lines 2 and 3\)"):
        read_spec(str(path))
    path.write_text(SUITE_TEXT + "    options: {seq_len: 20, hidden: 16, epochs: 2}\n")
    with pytest.raises(ConfigError, match=r"key 'options' is given twice \(lines 11 and 12\)"):
        load_plan(str(path), "smoke")


@pytest.mark.parametrize("command,item", [("train", "tradeoff=5"), ("train", "search-epochs=99"),
                                          ("train", "distill=0.5")])
def test_set_of_an_option_the_command_does_not_take_is_refused(command, item):
    """It would change nothing, yet be recorded in config.json as if applied."""
    key = item.split("=")[0].replace("-", "_")
    with pytest.raises(ConfigError, match=f"--set {key}: compress {command} does not take {key}, so it would "
                                          f"change nothing; drop it"):
        resolve_options(command, None, {}, [item])
    assert resolve_options("search", None, {}, [item])[key] == parse_sets([item])[key]  # search takes it


def test_a_run_takes_from_a_recipe_only_its_commands_options(recipe):
    """One recipe serves train and search: train leaves the search's keys out of what it runs and records
    (``distill`` would otherwise reach its TrainConfig and ask for a teacher)."""
    path = recipe("epochs: 3\nsearch_epochs: 2\ntradeoff: 5\ndistill: 0.5\n")
    opts = taken_by("train", resolve_options("train", path))
    assert opts["epochs"] == 3 and not {"search_epochs", "tradeoff", "distill"} & set(opts)
    assert set(opts) == {o.key for o in options_for("train")}
    assert build(TrainConfig, opts).distill == 0.0
    assert taken_by("search", resolve_options("search", path))["search_epochs"] == 2


def test_retrain_overrides_are_the_options_given_and_refuse_the_searchs(recipe):
    path = recipe("epochs: 1\nlr: 0.5\n")
    assert retrain_overrides("search", path, {"epochs": "3", "hidden": None}, ["from_scratch=true"]) == {
        "epochs": 3, "lr": 0.5, "from_scratch": True}  # no defaults: the run's saved options fill the rest
    assert retrain_overrides("retrain", None, {"gate_layers": "0", "lr": None}) == {"gate_layers": 0}
    with pytest.raises(ConfigError, match=r"cannot apply `hidden`, `tradeoff`: only a new search can change them"):
        retrain_overrides("search", recipe("hidden: 8\nepochs: 1\n"), {"tradeoff": "5"})
