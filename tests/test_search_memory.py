"""benchmarks/search_memory.py at toy size: every row measured in its own process, a soft step keeping
more activations than the one-hot step of the same supernet, and more candidates keeping more."""
import json

import pytest
from clihelp import benchmark_script


def test_the_soft_step_keeps_every_candidates_activations(tmp_path, capsys):
    script = benchmark_script("search_memory")
    out = tmp_path / "memory.json"
    script.main(["--batch", "4", "--seq-len", "8", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == list(script.SPACES) and "uncoupled" in capsys.readouterr().out
    dense, _, default, uncoupled, recomputed = rows.values()
    assert default["candidates"] == 18 and uncoupled["candidates"] == 90
    # softmax, no gates, full width: the dense model's activations, give or take a few scalars
    assert default["saved_one_hot"] == pytest.approx(dense["saved_soft"], rel=1e-3)
    assert dense["saved_soft"] < default["saved_soft"] < uncoupled["saved_soft"]
    assert all(r["peak_rss"] > 0 for r in rows.values())
    assert recomputed["candidates"] == 90 and recomputed["saved_soft"] is None
    assert uncoupled["soft_step_s"] > 0 and recomputed["soft_step_s"] > 0 and "soft_step_s" not in dense


def test_sizes_must_be_positive():
    with pytest.raises(SystemExit):
        benchmark_script("search_memory").main(["--batch", "0"])
