"""One definition per option: the schema (compress/app/options.py) walked against the configurations
it fills, the command line built from it and the recipes, so that any drift fails here; and the
command line's help, which shows every default and loads no torch."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import MISSING, fields

import pytest
from clihelp import REPO, invoke
from typer.main import get_command

import compress
from compress.app.options import BY_KEY, CONFIGS, OPTIONS, build, defaults, options_for
from compress.app.recipes import resolve_options
from compress.bounds import MAX_SEED
from compress.errors import ConfigError

COMMANDS = ("train", "search", "retrain", "evaluate", "bench", "recommend")


def field_default(cls, name):
    f = next(f for f in fields(cls) if f.name == name)
    value = f.default if f.default is not MISSING else f.default_factory()
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("cls_name", sorted(CONFIGS))
def test_every_configuration_field_is_one_option(cls_name):
    """Each field of each configuration is filled by exactly one option (by keyword), whose default is
    the field's own."""
    cls = CONFIGS[cls_name]
    for f in fields(cls):
        feeding = [o for o in OPTIONS if f"{cls_name}.{f.name}" in o.feeds]
        assert len(feeding) == 1, (cls_name, f.name, [o.key for o in feeding])
        assert feeding[0].base_default == field_default(cls, f.name), (cls_name, f.name)


def test_an_option_feeding_several_fields_has_one_default_for_all():
    for o in OPTIONS:
        values = {json.dumps(field_default(CONFIGS[t.split(".")[0]], t.split(".")[1])) for t in o.feeds}
        assert len(values) <= 1, (o.key, values)


# what a configuration needs besides a field at its bound: hidden divisible by heads, tau_start >= tau_min (either
# at its bound), and as many hidden as inner ratios
COMPANIONS = {"ArchSpec": {"heads": 1}, "SearchConfig": {"tau_start": 100.0, "tau_min": 1e-4},
              "SearchSpace": {"coupled": False}}


def bound_cases() -> list:
    """(option, fed field, value, whether the option takes it): every numeric option's bounds, and the values
    just past them."""
    cases = []
    for o in OPTIONS:
        if o.kind not in ("int", "float", "ints", "floats"):
            continue

        def past(bound):  # the next whole number, or a float a relative 1e-9 beyond
            return 1 if o.kind in ("int", "ints") else 1e-9 * max(1.0, abs(bound))

        values = [(o.low, True), (o.high, True), (o.above, False)]
        values += [(o.low - past(o.low), False)] if o.low is not None else []
        values += [(o.high + past(o.high), False)] if o.high is not None else []
        cases += [pytest.param(o, target, value, inside, id=f"{target}={value}")
                  for target in sorted(o.feeds) for value, inside in values if value is not None]
    return cases


@pytest.mark.parametrize("option, target, value, inside", bound_cases())
def test_the_configurations_take_what_the_command_line_takes(option, target, value, inside):
    """One range per value: Python configurations refuse what the command line refuses, and take its bounds."""
    cls_name, name = target.split(".")
    listed = option.kind in ("ints", "floats")
    kwargs = {**COMPANIONS.get(cls_name, {}), name: (value,) if listed else value}
    if inside:
        option.parse([value] if listed else value, option.key)
        CONFIGS[cls_name](**kwargs)
        return
    with pytest.raises(ConfigError):
        option.parse([value] if listed else value, option.key)
    with pytest.raises(ConfigError):
        CONFIGS[cls_name](**kwargs)


@pytest.mark.parametrize("value", [-1, MAX_SEED + 1, 2 ** 70])
def test_a_seed_out_of_range_is_refused_in_the_command_lines_words(value):
    with pytest.raises(ConfigError) as cli:
        BY_KEY["seed"].parse(str(value), "seed")
    for make in (compress.TrainConfig, compress.SearchConfig):
        with pytest.raises(ConfigError) as api:
            make(seed=value)
        assert str(api.value) == str(cli.value) == f"seed must be in [0, {MAX_SEED}], got {value}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_default_passes_its_own_checks(command):
    for o in options_for(command):
        value = o.default_for(command)
        if value is not None:
            assert o.parse(value, o.key) == value, o.key


@pytest.mark.parametrize("command", COMMANDS)
def test_the_command_line_has_every_option_of_its_command_with_its_default(command):
    click = get_command(__import__("cli").app).commands[command]
    flags = {opt for p in click.params for opt in p.opts}
    shown = {p.name: p.show_default for p in click.params}
    for o in options_for(command):
        assert o.flag(command) in flags, (command, o.key)
        assert shown[o.key] not in (None, False, True), (command, o.key)  # the real default, as text
    assert not {p.name for p in click.params if p.name in {o.key for o in OPTIONS}} - \
        {o.key for o in options_for(command)}  # and no option the schema does not give it


@pytest.mark.parametrize("command", COMMANDS)
def test_help_groups_the_options_as_the_readme_says(command):
    """--help lists the schema's options under Data, Model, Training, Search and Evaluation (the README's
    words), and a command that reads a saved model shows what it takes under Evaluation."""
    click = get_command(__import__("cli").app).commands[command]
    panels = {p.name: p.rich_help_panel for p in click.params if p.name in BY_KEY}
    assert set(panels.values()) <= {"Data", "Model", "Training", "Search", "Evaluation"}, panels
    if command in ("evaluate", "bench", "recommend"):
        assert set(panels.values()) - {"Data"} == {"Evaluation"}, panels
    for key in ("eval_seed", "k", "eval_batch_size"):
        assert panels.get(key, "Evaluation") == "Evaluation", (command, key)


def test_configurations_built_from_the_defaults_are_the_library_defaults():
    """The CLI, the recipes and the Python API start from the same settings."""
    train, search = defaults("train"), defaults("search")
    assert build(compress.TrainConfig, train) == compress.TrainConfig()
    assert build(compress.SearchConfig, search) == compress.SearchConfig()
    assert build(compress.SearchSpace, search) == compress.SearchSpace()
    assert build(compress.ArchSpec, train) == compress.ArchSpec()
    assert resolve_options("train") == train


def test_the_command_line_and_the_api_report_the_same_metrics(artifacts):
    """One model, one protocol: `compress evaluate` and `compress.evaluate` agree (the negatives' seed
    is one default, not two)."""
    result = invoke("evaluate", artifacts["model"], "--protocol", "pop100", "--json")
    assert result.exit_code == 0, result.stderr
    cli_metrics = json.loads(result.stdout)["metrics"]
    model = compress.load(artifacts["model"])
    from compress.app.rundirs import dataset_from_options
    from compress.store.artifacts import load_config

    data = dataset_from_options(load_config(str(artifacts["model"]))["data"])
    api_metrics = compress.evaluate(model, data, "test", "pop100")
    cli_metrics.pop("eval_seconds"), api_metrics.pop("eval_seconds")
    assert cli_metrics == api_metrics


def test_help_loads_no_torch(subprocess_env):
    code = "import sys, cli\ntry:\n    cli.app(['search', '--help'])\nexcept SystemExit:\n    pass\n" \
           "assert 'torch' not in sys.modules, 'torch was imported for --help'\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--search-epochs" in done.stdout and "[default: (10)]" in done.stdout.replace("\n", " ") or \
        "(10)" in done.stdout


def test_version(subprocess_env):
    done = subprocess.run([sys.executable, "-m", "compress", "--version"], cwd=REPO, env=subprocess_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"compress {compress.__version__}"
