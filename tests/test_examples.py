"""Every example runs as written (with its smallest documented settings)."""
import os
import subprocess
import sys
from pathlib import Path

import compress

REPO = Path(__file__).resolve().parents[1]


def test_compress_trained_sasrec_example(tmp_path):
    out = tmp_path / "model"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "compress_trained_sasrec.py"), "--out", str(out),
                           "--epochs", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "decision: ArchSpec(" in proc.stdout
    model = compress.load(str(out))
    assert model.arch.hidden in (16, 32)  # a candidate of the example's search space
    recs = model.recommend([["0", "1"]], k=3)[0]
    assert len(recs) == 3 and all(isinstance(item, str) for item, _ in recs)
