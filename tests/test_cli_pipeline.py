"""The whole user journey as real processes: search (tiny recipe) → export → evaluate → recommend."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from clihelp import listing

REPO = Path(__file__).resolve().parents[1]


def compress_cmd() -> list:
    script = Path(sys.executable).parent / "compress"
    return [str(script)] if script.exists() else [sys.executable, "-m", "compress"]


def run(env, cwd, *args) -> dict:
    proc = subprocess.run([*compress_cmd(), *map(str, args), "--json"], capture_output=True, text=True, env=env,
                          cwd=str(cwd), timeout=300)
    assert proc.returncode == 0, (args, proc.stderr)
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def test_search_export_evaluate_recommend(tmp_path, subprocess_env):
    # relative paths, as a user types them; the recipe's own seq_len, one epoch of each stage
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.yaml").write_text((REPO / "recipes" / "tiny.yaml").read_text())
    searched = run(subprocess_env, tmp_path, "search", "--recipe", "recipes/tiny.yaml", "--set", "search_epochs=1",
                   "--retrain-epochs", "1", "--device", "cpu", "--out", "runs/tiny")
    run_dir = tmp_path / "runs" / "tiny"
    assert searched["out"] == "runs/tiny"
    assert set(listing(run_dir)) == {"config.json", "arch.json", "search_card.json", "metrics.csv", "supernet",
                                     "retrained"}
    assert set(listing(run_dir / "retrained")) == {"config.json", "model.safetensors", "items.json", "metrics.json",
                                                   "metrics.csv", "train.log"}
    arch = searched["decision"]["arch"]
    assert searched["retrain"]["arch"] == arch and searched["retrain"]["from_scratch"] is False

    exported = run(subprocess_env, tmp_path, "export", "runs/tiny", "--out", "models/tiny")
    model_dir = tmp_path / "models" / "tiny"
    assert set(listing(model_dir)) == {"config.json", "model.safetensors", "items.json", "card.json", "README.md"}
    assert exported["card"]["arch"] == arch

    # from another working directory: the MODEL_DIR alone says which data it was trained on
    evaluated = run(subprocess_env, REPO, "evaluate", model_dir, "--protocol", "full", "--json")
    retrained = json.loads((run_dir / "retrained" / "metrics.json").read_text())["metrics"]["test/full"]
    assert evaluated["model"]["arch"] == arch and evaluated["model"]["params"] == exported["card"]["params"]
    assert evaluated["metrics"]["ndcg@10"] == retrained["ndcg@10"]
    assert evaluated["metrics"]["recall@10"] == retrained["recall@10"]

    ids = json.loads((model_dir / "items.json").read_text())["item_ids"]
    history = ids[:3]
    recs = run(subprocess_env, tmp_path, "recommend", "models/tiny", "--history", ",".join(history), "--k", "5")
    assert len(recs) == 5 and all(r["item"] in ids and r["item"] not in history for r in recs)
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True)
