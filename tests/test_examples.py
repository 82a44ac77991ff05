"""Every example runs as written (with its smallest documented settings)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import compress

REPO = Path(__file__).resolve().parents[1]


def run_example(name: str, out: Path, tmp_path: Path) -> str:
    """Run examples/``name`` from an unrelated directory with its smallest settings; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / name), "--out", str(out), "--epochs", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_compress_trained_sasrec_example(tmp_path):
    out = tmp_path / "model"
    assert "decision: ArchSpec(" in run_example("compress_trained_sasrec.py", out, tmp_path)
    model = compress.load(str(out))
    assert model.arch.hidden in (16, 32)  # a candidate of the example's search space
    recs = compress.Recommender(model).recommend([["0", "1"]], k=3)[0]
    assert len(recs) == 3 and all(isinstance(item, str) for item, _ in recs)


def test_compress_hf_bert_example(tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "model"
    stdout = run_example("compress_hf_bert.py", out, tmp_path)
    assert "adapter: hf-bert" in stdout
    smaller = transformers.BertModel.from_pretrained(str(out / "native"))
    assert smaller.config.hidden_size == compress.load(str(out)).arch.hidden <= 64


def test_wrap_declared_model_example(tmp_path):
    out = tmp_path / "model"
    stdout = run_example("wrap_declared_model.py", out, tmp_path)
    assert "decision: ArchSpec(" in stdout and "FLOPs per sequence; MyRecommender:" in stdout
    assert len(compress.Recommender.load(str(out)).recommend([["0"]], k=2)[0]) == 2
    card = json.loads((out / "card.json").read_text())  # compressed: the budget holds with the gates it kept
    assert card["params"] < card["input"]["params"]
    assert card["flops"]["analytic"]["matmul"] <= 0.6 * card["input"]["flops"]["matmul"]


def test_compress_hf_own_vocabulary_example(tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "model"
    stdout = run_example("compress_hf_own_vocabulary.py", out, tmp_path)
    assert "adapter: hf-gpt2" in stdout and "recommended: ['sku-" in stdout
    ids = json.loads((out / "items.json").read_text())["item_ids"]
    assert ids == sorted(ids) and ids[0].startswith("sku-")  # the user's numbering, not compress's
    assert json.loads((out / "native" / "items.json").read_text())["item_ids"] == ids
    card = json.loads((out / "card.json").read_text())
    assert card["params"] < card["input"]["params"] and card["command"] is None
    recs = compress.Recommender.load(str(out)).recommend([ids[:3]], k=4)[0]
    assert len(recs) == 4 and all(sku in ids for sku, _ in recs)
    smaller = transformers.GPT2Model.from_pretrained(str(out / "native"))
    assert smaller.config.n_embd == compress.load(str(out)).arch.hidden <= 32
