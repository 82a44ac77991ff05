"""The `compress train` / `compress evaluate` commands, in-process (CliRunner) and as subprocesses."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import error_line, invoke, listing
from safetensors.torch import load_file, save_file

TINY = ["--epochs", "1", "--hidden", "16", "--inner", "32", "--layers", "1", "--heads", "1", "--seq-len", "20",
        "--batch-size", "64", "--device", "cpu"]
RUN_FILES = {"config.json", "model.safetensors", "items.json", "metrics.json", "metrics.csv", "train.log"}


@pytest.fixture(scope="module")
def run_dir(tiny_data_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = invoke("train", "--data", tiny_data_file, *TINY, "--out", out)
    assert result.exit_code == 0, result.stderr + result.stdout
    assert f"saved to {out}" in result.stdout.replace("\n", "")
    return out


def test_train_writes_a_run_dir(run_dir, tiny_data_file):
    assert set(listing(run_dir)) == RUN_FILES
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["kind"] == "train"
    assert cfg["model"]["backbone"] == "sasrec" and cfg["model"]["max_len"] == 20
    assert cfg["model"]["arch"]["hidden"] == 16 and cfg["model"]["arch"]["inner"] == 32
    assert cfg["model"]["arch"]["layers"] == 1 and cfg["model"]["arch"]["heads"] == 1
    assert cfg["data"]["data"] == str(tiny_data_file)
    assert cfg["dataset"]["users"] == 40 and cfg["options"]["epochs"] == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1 and len(metrics["history"]) == 1
    assert set(metrics["metrics"]) == {"valid/full", "valid/pop100", "test/full", "test/pop100"}
    for vals in metrics["metrics"].values():
        assert 0.0 <= vals["ndcg@10"] <= vals["recall@10"] <= 1.0
    log = (run_dir / "train.log").read_text().splitlines()
    assert len(log) == 1 and log[0].startswith("epoch=1 loss=") and "valid_ndcg@10=" in log[0]
    assert len(load_file(str(run_dir / "model.safetensors"))) > 0


def test_evaluate_json(run_dir):
    result = invoke("evaluate", run_dir, "--json")
    assert result.exit_code == 0, result.stderr
    obj = json.loads(result.stdout)
    assert (obj["protocol"], obj["split"], obj["k"]) == ("full", "test", 10)
    assert set(obj["metrics"]) >= {"recall@10", "mrr@10", "ndcg@10"}
    assert obj["model"]["backbone"] == "sasrec" and obj["model"]["params"] > 0
    # the same model and protocol as train's own test/full evaluation
    train_metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]["test/full"]
    assert obj["metrics"]["ndcg@10"] == pytest.approx(train_metrics["ndcg@10"])


@pytest.mark.parametrize("protocol", ["pop100", "uni100"])
def test_evaluate_sampled_protocols(run_dir, protocol):
    result = invoke("evaluate", run_dir, "--protocol", protocol, "--split", "valid", "--k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    obj = json.loads(result.stdout)
    assert (obj["protocol"], obj["split"], obj["k"]) == (protocol, "valid", 5)
    assert set(obj["metrics"]) >= {"recall@5", "mrr@5", "ndcg@5"}
    again = json.loads(invoke("evaluate", run_dir, "--protocol", protocol, "--split", "valid", "--k", "5",
                              "--json").stdout)
    assert again["metrics"]["ndcg@5"] == obj["metrics"]["ndcg@5"]  # seeded negatives


def test_evaluate_table(run_dir):
    result = invoke("evaluate", run_dir)
    assert result.exit_code == 0, result.stderr
    assert "test/full" in result.stdout and "ndcg@10" in result.stdout


def test_overwrite_refused_then_allowed(run_dir, tiny_data_file):
    before = {f: (run_dir / f).stat().st_mtime_ns for f in RUN_FILES}
    line = error_line(invoke("train", "--data", tiny_data_file, *TINY, "--out", run_dir))
    assert line == f"error: output directory {run_dir} already exists; pass --overwrite or choose another --out"
    assert {f: (run_dir / f).stat().st_mtime_ns for f in RUN_FILES} == before


@pytest.mark.parametrize("command", ["train", "search"])
def test_overwrite_keeps_a_recipe_kept_in_the_output(tiny_data_file, tmp_path, run_dir, command):
    """A recipe inside --out is an input like --data: --overwrite would have deleted it with the run."""
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    (out / "recipe.yaml").write_text("epochs: 1\n")
    line = error_line(invoke(command, "--data", tiny_data_file, "--recipe", out / "recipe.yaml", "--out", out,
                             "--overwrite"))
    assert f"holds or lies inside the input {out / 'recipe.yaml'}" in line
    assert (out / "recipe.yaml").read_text() == "epochs: 1\n"


def test_an_allocation_torch_cannot_make_is_one_line(tiny_data_file, monkeypatch):
    """torch's allocators raise RuntimeErrors ("DefaultCPUAllocator: can't allocate memory"), not
    MemoryError; other RuntimeErrors stay tracebacks, since they are bugs."""
    from compress.app import jobs

    def refuse(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    monkeypatch.setattr(jobs, "new_backbone", refuse)
    line = error_line(invoke("train", "--data", tiny_data_file, *TINY))
    assert line == "error: out of memory; lower the batch size or the model size"
    assert "--layers must be in [1, 1024], got 1000000" in error_line(invoke("train", "--data", tiny_data_file, *TINY,
                                                                             "--layers", 1_000_000))


def test_success_lines_show_paths_without_terminal_control_characters(tiny_data_file, tmp_path, run_dir):
    """An --out holding escape sequences (a window title, a screen clear) or a newline is printed escaped
    by the lines that report success, as error lines already were."""
    out = tmp_path / "e\x1b]0;PWNED\x07\x1b[2J\nx"
    result = invoke("train", "--data", tiny_data_file, *TINY, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "saved to" in result.stdout
    assert "\\x1b]0;PWNED\\x07" in result.stdout.replace("\n", "")
    exported = invoke("export", out, "--out", tmp_path / "m\x1b[2J")
    assert exported.exit_code == 0 and "\x1b" not in exported.stdout
    assert "\\x1b[2J" in exported.stdout.replace("\n", "")  # the console wraps long lines
    evaluated = invoke("evaluate", out, "--data", tiny_data_file)
    assert evaluated.exit_code == 0 and "\x1b" not in evaluated.stdout


def test_evaluate_reproduces_the_recorded_metrics_with_data_given(tmp_path):
    """`evaluate RUN --data FILE` reads FILE as the run read it (here in file order: --time-col none) and
    draws the sampled negatives with the run's --eval-seed, as does the export's evaluate; it used to read
    FILE with the default options and seed, and print other metrics without a word."""
    rows = [(f"u{u}", f"i{(u * 7 + j * 3) % 30}", 9000 - 10 * j) for u in range(40) for j in range(8)]
    data = tmp_path / "order.csv"
    data.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    run = tmp_path / "run"
    result = invoke("train", "--data", data, *TINY, "--time-col", "none", "--eval-seed", 7, "--out", run, "--json")
    assert result.exit_code == 0, result.stderr
    recorded = json.loads(result.stdout)["metrics"]["test/pop100"]
    exported = invoke("export", run, "--out", tmp_path / "m")
    assert exported.exit_code == 0 and "with seed 7" in (tmp_path / "m" / "README.md").read_text()
    for path, extra in ((run, ["--data", data]), (run, []), (tmp_path / "m", ["--data", data])):
        got = invoke("evaluate", path, *extra, "--protocol", "pop100", "--json")
        assert got.exit_code == 0, got.stderr
        assert json.loads(got.stdout)["metrics"]["ndcg@10"] == recorded["ndcg@10"], (path, extra)
    other = json.loads(invoke("evaluate", run, "--protocol", "pop100", "--eval-seed", 8, "--json").stdout)
    assert other["metrics"]["ndcg@10"] != recorded["ndcg@10"]  # a seed given is the one used


def test_overwrite(tiny_data_file, tmp_path, run_dir):
    """--overwrite replaces a directory compress wrote, and nothing else: not a directory of the
    user's, not a file."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    line = error_line(invoke("train", "--data", tiny_data_file, *TINY, "--out", mine, "--overwrite"))
    assert "was not written by compress" in line and (mine / "notes.txt").read_text() == "the user's"
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in error_line(invoke("train", "--data", tiny_data_file, *TINY, "--out",
                                                      tmp_path / "file", "--overwrite"))
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    result = invoke("train", "--data", tiny_data_file, *TINY, "--out", out, "--overwrite", "--json")
    assert result.exit_code == 0, result.stderr
    assert set(listing(out)) == RUN_FILES
    assert json.loads(result.stdout)["out"] == str(out)
    assert sorted(os.listdir(tmp_path)) == ["file", "mine", "run"]


def test_recipe_and_set(tiny_data_file, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# compress train --recipe r.yaml\nhidden: 8\ninner: 16\nepochs: 3\nseq_len: 10\n")
    out = tmp_path / "run"
    result = invoke("train", "--data", tiny_data_file, "--recipe", recipe, "--hidden", "16", "--layers", "1",
                    "--heads", "1", "--set", "epochs=1", "--set", "batch-size=64", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["arch"]["hidden"] == 16  # flag over recipe
    assert cfg["model"]["arch"]["inner"] == 16 and cfg["model"]["max_len"] == 10  # recipe over defaults
    assert cfg["options"]["epochs"] == 1 and cfg["options"]["batch_size"] == 64  # --set over recipe


def test_a_recipe_serving_search_too_trains_without_its_search_options(tiny_data_file, tmp_path):
    """One recipe serves train and search: train neither applies its search options (``distill`` would
    reach TrainConfig and ask for a teacher) nor records them in config.json as if applied."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 1\nsearch_epochs: 99\ntradeoff: 5\ndistill: 0.5\nhidden_ratios: [0.0, 0.5]\n")
    out = tmp_path / "run"
    result = invoke("train", "--data", tiny_data_file, *TINY, "--recipe", recipe, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    options = json.loads((out / "config.json").read_text())["options"]
    assert options["epochs"] == 1
    assert not {"search_epochs", "tradeoff", "distill", "hidden_ratios"} & set(options), options


@pytest.mark.parametrize("item", ["tradeoff=5", "search_epochs=99"])
def test_set_of_a_search_option_is_refused_by_train(tmp_path, tiny_data_file, item):
    key = item.split("=")[0]
    line = bad_train(tmp_path, "--data", tiny_data_file, "--set", item)
    assert f"--set {key}: compress train does not take {key}" in line and "drop it" in line


def test_evaluate_from_another_directory_with_relative_data(tiny_data_file, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "events.tsv").write_text(tiny_data_file.read_text())
    monkeypatch.chdir(work)
    result = invoke("train", "--data", "events.tsv", *TINY, "--out", "run")
    assert result.exit_code == 0, result.stderr
    monkeypatch.chdir(tmp_path)
    result = invoke("evaluate", "work/run", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["dataset"] == str(work / "events.tsv")


# ---------------------------------------------------------------- bad inputs: exit 2, one line, nothing written


def bad_train(tmp_path, *args: str) -> str:
    out = tmp_path / "out" / "run"
    line = error_line(invoke("train", *args, *TINY, "--out", out))
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
    return line


def test_train_missing_data(tmp_path):
    line = bad_train(tmp_path, "--data", tmp_path / "nope.csv")
    assert "nope.csv" in line and "neither an existing path nor a known dataset" in line


def test_train_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert "is empty" in bad_train(tmp_path, "--data", tmp_path / "empty.csv")


def test_train_wrong_delimiter(tmp_path, tiny_data_file):
    assert "found one column" in bad_train(tmp_path, "--data", tiny_data_file, "--sep", ";")


def test_train_wrong_columns(tmp_path, tiny_data_file):
    line = bad_train(tmp_path, "--data", tiny_data_file, "--user-col", "visitor")
    assert "no user column named 'visitor'; columns are 'user_id, item_id, timestamp'" in line


def test_train_non_numeric_timestamps(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\n1,2,yesterday\n1,3,today\n1,4,today\n")
    assert "non-numeric timestamp 'yesterday'" in bad_train(tmp_path, "--data", bad)


def test_train_unknown_backbone(tmp_path, tiny_data_file):
    assert "unknown backbone 'nope'; available: " in bad_train(tmp_path, "--data", tiny_data_file,
                                                                 "--backbone", "nope")


def test_train_unknown_recipe_key(tmp_path, tiny_data_file):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("hiden: 32\n")
    assert "unknown key(s) hiden" in bad_train(tmp_path, "--data", tiny_data_file, "--recipe", recipe)
    assert "unknown key(s) hiden in --set" in bad_train(tmp_path, "--data", tiny_data_file, "--set", "hiden=3")


def test_train_wrong_type_recipe_value(tmp_path, tiny_data_file):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dropout: lots\n")
    assert "expects a number, got 'lots'" in bad_train(tmp_path, "--data", tiny_data_file,
                                                                       "--recipe", recipe)


def test_train_bad_architecture(tmp_path, tiny_data_file):
    line = bad_train(tmp_path, "--data", tiny_data_file, "--set", "heads=3")
    assert "not divisible into 3 heads" in line


def test_train_interrupted_writes_nothing(tmp_path, tiny_data_file, monkeypatch):
    import compress.app.jobs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compress.app.jobs, "fit", interrupted)
    out = tmp_path / "run"
    result = invoke("train", "--data", tiny_data_file, *TINY, "--out", out)
    assert result.exit_code == 130
    assert "nothing was written" in result.stderr
    assert not out.exists() and os.listdir(tmp_path) == []


def test_error_message_is_printed_verbatim(tmp_path):
    line = bad_train(tmp_path, "--data", tmp_path / "runs[bold]" / "x.csv")
    assert "runs[bold]" in line


@pytest.fixture
def run_copy(run_dir, tmp_path) -> Path:
    out = tmp_path / "copy"
    out.mkdir()
    for name in RUN_FILES:
        (out / name).write_bytes((run_dir / name).read_bytes())
    return out


def test_evaluate_corrupt_checkpoint(run_copy):
    (run_copy / "model.safetensors").write_bytes(b"\x00garbage" * 64)
    line = error_line(invoke("evaluate", run_copy))
    assert "model.safetensors is corrupt" in line


def test_evaluate_mismatched_checkpoint(run_copy):
    state = load_file(str(run_copy / "model.safetensors"))
    state["position_embedding.weight"] = state["position_embedding.weight"][:10].contiguous()
    save_file(state, str(run_copy / "model.safetensors"))
    line = error_line(invoke("evaluate", run_copy))
    assert "position_embedding.weight has shape (10, 16), config.json implies (20, 16)" in line


def test_evaluate_other_data(run_copy, tmp_path, tiny_data_file):
    """Data of other items is refused; the same interactions in another file order (which numbers the
    items otherwise) are read onto the model's numbering and give its metrics (they were refused)."""
    other = tmp_path / "other.csv"
    other.write_text("user_id,item_id\n" + "".join(f"1,{i}\n" for i in range(5)))
    line = error_line(invoke("evaluate", run_copy, "--data", other))
    assert "0 of its 5 items are among the model's" in line
    header, *rows = Path(tiny_data_file).read_text().splitlines()
    shuffled = tmp_path / ("shuffled" + Path(tiny_data_file).suffix)
    shuffled.write_text("\n".join([header, *reversed(rows)]) + "\n")
    first = json.loads(invoke("evaluate", run_copy, "--data", tiny_data_file, "--json").stdout)["metrics"]
    again = invoke("evaluate", run_copy, "--data", shuffled, "--json")
    assert again.exit_code == 0, again.stderr
    metrics = json.loads(again.stdout)["metrics"]
    assert {k: v for k, v in metrics.items() if "seconds" not in k} == \
        pytest.approx({k: v for k, v in first.items() if "seconds" not in k}, rel=1e-12)  # users in another order


def test_evaluate_bad_options(run_dir, tmp_path):
    assert "--protocol: 'pop50' is not one of" in error_line(invoke("evaluate", run_dir, "--protocol", "pop50"))
    assert "--split: 'train' is not one of" in error_line(invoke("evaluate", run_dir, "--split", "train"))
    line = error_line(invoke("evaluate", tmp_path / "nothing"))
    assert "nothing is not a directory with config.json" in line


# ---------------------------------------------------------------- as real processes


def test_python_m_compress_and_console_script(tiny_data_file, tmp_path, subprocess_env):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "compress", "train", "--data", str(tiny_data_file), *TINY,
                           "--out", str(out), "--json"],
                          capture_output=True, text=True, env=subprocess_env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["out"] == str(out)
    assert set(listing(out)) == RUN_FILES

    script = Path(sys.executable).parent / "compress"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "compress"]
    proc = subprocess.run([*cmd, "evaluate", str(out), "--protocol", "pop100", "--json"],
                          capture_output=True, text=True, env=subprocess_env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert (obj["protocol"], obj["split"], obj["k"]) == ("pop100", "test", 10)

    proc = subprocess.run([*cmd, "train", "--data", str(tmp_path / "missing.tsv"), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, env=subprocess_env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --data ")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("loss", ["uniform", "inbatch"])
def test_train_with_a_sampled_loss_learns(tmp_path, loss):
    result = invoke("train", *TINY, "--loss", loss, "--negatives", 20, "--epochs", 3, "--out", tmp_path / "r", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["valid/full"]["ndcg@10"] > 0.02  # random ranking: ~0.001


def test_train_with_an_unknown_loss_is_one_line(tmp_path):
    assert "--loss: 'bogus' is not one of" in error_line(invoke("train", *TINY, "--loss", "bogus", "--out", tmp_path / "r"))


def test_backbones_lists_every_registered_backbone_with_its_description():
    result = invoke("backbones")
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert {"sasrec", "bert4rec", "transformer"} <= set(lines)
    assert "cloze" in lines["bert4rec"] and "Causal" in lines["sasrec"]
