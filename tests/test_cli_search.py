"""`compress search`: the RUN_DIR it writes, its budget and option errors, in-process and as a subprocess."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clihelp import error_line, invoke, listing
from safetensors.torch import load_file

from compress.app.orientation import decided_at
from compress.arch import ArchSpec
from compress.measure.flops import analytic_flops
from compress.nas.wrap import load_supernet

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = str(REPO / "recipes" / "tiny.yaml")
SEARCH_FILES = {"arch.json", "search_card.json", "config.json", "metrics.csv", "supernet"}


def leftovers(parent: Path, name: str) -> list:
    """Anything the atomic writer would leave beside RUN_DIR: RUN_DIR itself or its hidden temp dirs."""
    return [p for p in os.listdir(parent) if p == name or p.startswith(f".{name}.")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """The recipe as its header says to run it, on the embedded default dataset (960 users)."""
    out = tmp_path_factory.mktemp("cli-search") / "run"
    result = invoke("search", "--recipe", TINY_RECIPE, "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.stderr + result.stdout
    squeezed = "".join(result.stdout.split())  # rich wraps long paths; compare without whitespace
    assert "decision:hidden" in squeezed and f"savedto{out}" in squeezed
    return out


def test_search_writes_a_run_dir(run_dir):
    assert set(listing(run_dir)) - {"retrained"} == SEARCH_FILES  # retrained/: the stage after the search
    assert set(listing(run_dir / "supernet")) == {"config.json", "model.safetensors", "items.json"}
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["kind"] == "search"
    assert cfg["options"]["seq_len"] == 20 and cfg["options"]["hidden"] == 16 and cfg["options"]["inner"] == 32
    assert cfg["options"]["attention"] == "linear" and cfg["options"]["gate_layers"] == 2
    assert cfg["options"]["search_epochs"] == 2 and cfg["options"]["hidden_ratios"] == [0.0, 0.5]
    assert cfg["dataset"]["users"] == 960
    sn_cfg = json.loads((run_dir / "supernet" / "config.json").read_text())
    assert sn_cfg["kind"] == "supernet" and sn_cfg["model"]["arch"]["hidden"] == 16
    assert len(load_file(str(run_dir / "supernet" / "model.safetensors"))) > 0


def test_search_card(run_dir):
    card = json.loads((run_dir / "search_card.json").read_text())
    assert card["slice_max_abs_diff"] <= 1e-5
    assert len(card["history"]) == 2 and 1 <= card["best_epoch"] <= 2
    for row in card["history"]:
        assert len(row["alpha"]) == 2 and len(row["beta"]) == 2
        assert 0 < row["tau"] <= 1 and row["penalty"] > 0
    assert card["choices"]["selection"] == "gumbel" and card["choices"]["arch_batches"] == "valid"
    assert card["choices"]["tradeoff"] == 0.1 and "L_RC" in card["choices"]["penalty"]
    assert card["seed"] == 2024 and card["versions"]["torch"] == torch.__version__
    decision = card["decision"]
    arch = ArchSpec.from_dict(decision["arch"])
    assert decision["flops_measured"] == analytic_flops(arch, 20, card["dataset"]["items"])["matmul"]
    assert decision["flops"] == analytic_flops(arch, 20, card["dataset"]["items"])["total"]
    assert decision["params"] > 0


def test_arch_json_round_trips(run_dir):
    raw = json.loads((run_dir / "arch.json").read_text())
    arch = ArchSpec.from_dict(raw)
    assert arch.to_dict() == raw
    card = json.loads((run_dir / "search_card.json").read_text())
    assert raw == card["decision"]["arch"]
    assert arch.head_dim == 8 and arch.hidden in (16, 8) and 1 <= arch.layers <= 2


def test_saved_supernet_is_the_best_epoch(run_dir):
    card = json.loads((run_dir / "search_card.json").read_text())
    best = card["history"][card["best_epoch"] - 1]
    sn = load_supernet(str(run_dir / "supernet"), "auto")  # what --device takes, "auto" too
    assert sn.alpha.logits.tolist() == pytest.approx(best["alpha"])
    assert sn.beta.logits.tolist() == pytest.approx(best["beta"])
    k, depth = card["decision"]["width"], card["decision"]["depth"]
    assert sn.slice(k, depth).arch.to_dict() == card["decision"]["arch"]


def test_decide_last_keeps_the_last_epochs_supernet_and_says_so(tmp_path):
    out = tmp_path / "last"
    result = invoke("search", "--recipe", TINY_RECIPE, "--device", "cpu", "--stage", "search", "--decide", "last",
                    "--out", out)
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "decision  at the last epoch" in result.stderr
    card = json.loads((out / "search_card.json").read_text())
    last = card["history"][-1]
    assert card["decision_epoch"] == last["epoch"] == 2 and card["options"]["decide"] == "last"
    assert "last epoch" in card["choices"]["decide"]
    assert card["decision"]["arch"] == json.loads((out / "arch.json").read_text())
    sn = load_supernet(str(out / "supernet"), "cpu")
    assert sn.alpha.logits.tolist() == pytest.approx(last["alpha"], abs=0)
    assert sn.slice(card["decision"]["width"], card["decision"]["depth"]).arch.to_dict() == card["decision"]["arch"]


def test_inspect_names_the_deciding_epoch():
    card = {"best_epoch": 3, "decision_epoch": 5}
    assert decided_at(card) == "decided at the last epoch, 5 (best epoch 3)"
    assert decided_at({"best_epoch": 3}) == decided_at({"best_epoch": 3, "decision_epoch": 3}) == "best epoch 3"


def test_max_flops_below_the_smallest_candidate_exits_2_and_writes_nothing(tmp_path, tiny_data_file):
    out = tmp_path / "nope"
    result = invoke("search", "--recipe", TINY_RECIPE, "--data", tiny_data_file, "--device", "cpu",
                    "--max-flops", "1", "--out", out)
    line = error_line(result)
    assert "--max-flops 1" in line and "smallest candidate" in line
    assert not out.exists() and leftovers(tmp_path, "nope") == []


@pytest.mark.parametrize("args, words", [
    (["--set", "no_such_key=1"], "unknown key(s) no_such_key"),
    (["--set", "tradeoff=lots"], "tradeoff"),
    (["--selection", "argmax"], "--selection: 'argmax' is not one of"),
    (["--penalty", "latency"], "--penalty: 'latency' is not one of"),
    (["--max-flops", "half"], "neither a percentage"),
    (["--penalty", "budget"], "penalty budget pulls the expected FLOPs to the max_flops budget (--max-flops)"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, tiny_data_file, args, words):
    out = tmp_path / "bad"
    result = invoke("search", "--recipe", TINY_RECIPE, "--data", tiny_data_file, "--device", "cpu", *args,
                    "--out", out)
    assert words in error_line(result)
    assert leftovers(tmp_path, "bad") == []


def test_search_as_a_subprocess(tmp_path, tiny_data_file, subprocess_env):
    out = tmp_path / "sub"
    cmd = [sys.executable, "-m", "compress", "search", "--recipe", TINY_RECIPE, "--data", str(tiny_data_file),
           "--search-epochs", "1", "--max-flops", "60%", "--stage", "search", "--device", "cpu", "--json",
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["out"] == str(out) and result["slice_max_abs_diff"] <= 1e-5
    assert set(listing(out)) == SEARCH_FILES
    card = json.loads((out / "search_card.json").read_text())
    assert card["decision"]["flops"] <= 0.6 * card["full_flops"]
    assert card["options"]["max_flops"] == "60%" and card["options"]["epochs"] == 1
    assert ArchSpec.from_dict(json.loads((out / "arch.json").read_text())).to_dict() == result["decision"]["arch"]


@pytest.fixture
def searched(run_dir, tmp_path) -> Path:
    """A copy of the finished tiny search (retrained with the recipe's 2 epochs, lr 0.001), to retrain again."""
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run"


def test_stage_retrain_takes_a_recipe_set_and_flags(searched, tmp_path):
    """Each way of giving a retraining option reaches the retraining, as `compress retrain` takes it."""
    recipe = tmp_path / "retrain.yaml"
    recipe.write_text("lr: 0.5\npatience: 3\nepochs: 2\n")
    result = invoke("search", "--stage", "retrain", "--out", searched, "--recipe", recipe, "--set", "epochs=1",
                    "--set", "from_scratch=true", "--retrain-batch-size", "64", "--overwrite", "--json")
    assert result.exit_code == 0, result.stderr + result.stdout
    cfg = json.loads((searched / "retrained" / "config.json").read_text())
    assert (cfg["options"]["lr"], cfg["options"]["patience"]) == (0.5, 3)  # the recipe's
    assert cfg["options"]["epochs"] == 1 and cfg["start"] == "scratch"  # --set's, over the recipe's epochs
    assert cfg["options"]["batch_size"] == 64  # the flag's
    assert len(json.loads((searched / "retrained" / "metrics.json").read_text())["history"]) == 1


@pytest.mark.parametrize("args, named", [
    (["--tradeoff", "5"], "--tradeoff"),
    (["--set", "search_epochs=3", "--retrain-epochs", "1"], "--search-epochs"),
    (["--recipe", TINY_RECIPE], "--attention, --heads, --hidden"),  # the search's recipe holds the search's
    (["--data", "ml-1m", "--seed", "3"], "--data, --seed"),
])
def test_stage_retrain_refuses_what_only_a_new_search_changes(searched, args, named):
    before = (searched / "retrained" / "model.safetensors").stat().st_mtime_ns
    line = error_line(invoke("search", "--stage", "retrain", "--out", searched, *args, "--overwrite"))
    assert f"retraining a finished search cannot apply {named}" in line and "only a new search can change" in line
    assert (searched / "retrained" / "model.safetensors").stat().st_mtime_ns == before


def test_stage_retrain_resumes_when_asked(searched):
    """--resume is the retraining's, not dropped: with no interrupted retraining there is nothing to resume."""
    assert "nothing to resume" in error_line(invoke("search", "--stage", "retrain", "--resume", searched,
                                                    "--overwrite"))
    assert "drop --retrain-epochs" in error_line(invoke("search", "--stage", "retrain", "--resume", searched,
                                                        "--retrain-epochs", "1"))
