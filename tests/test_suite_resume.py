"""A suite stopped and run again: a cell interrupted while it retrains or before its first checkpoint
continues, and an interrupt or a bad flag ends `suite.py run` in one line in the suite's own words."""
from __future__ import annotations

from pathlib import Path

import pytest
from clihelp import benchmark_script
from crash import Crash, CrashAt

from compress.errors import Interrupted
from compress.suite import load_plan, methods, read_results, run_plan, runner

SUITE = """variants:
  sasrec: {method: dense, options: {attention: softmax, gate_layers: 0}}
  dnsrec: {method: dnsrec}
presets:
  tiny:
    seeds: [1]
    datasets: {tiny.tsv: {}}
    options: {seq_len: 20, hidden: 16, inner: 32, layers: 2, heads: 2, hidden_ratios: [0.0, 0.5],
              inner_ratios: [0.0, 0.5], epochs: 2, search_epochs: 1, batch_size: 16, search_batch_size: 16,
              patience: 2, checkpoint_every: 1}
    measure: {batches: [1], repeats: 1}
"""


@pytest.fixture
def suite(tmp_path, tiny_data_file, monkeypatch) -> Path:
    """The tiny preset, on the 40 users of the tiny TSV, named by a path relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.tsv").symlink_to(tiny_data_file)
    (tmp_path / "suite.yaml").write_text(SUITE)
    return tmp_path / "suite.yaml"


def _metrics(results: Path) -> dict:
    """Each record's metrics, less the time evaluation took."""
    return {r["variant"]: {split: {k: v for k, v in m.items() if k != "eval_seconds"}
                           for split, m in r["metrics"].items()} for r in read_results(str(results))}


def test_a_dnsrec_cell_interrupted_while_it_retrains_resumes_to_the_uninterrupted_result(suite, monkeypatch):
    """Before: the rerun gave the retraining its options again on resume, which it refuses ("drop --device,
    --from-scratch"), so the cell could never finish."""
    plan = load_plan(str(suite), "tiny", variants=["dnsrec"])
    straight = suite.parent / "straight.jsonl"
    assert run_plan(plan, str(straight), str(suite.parent / "straight_runs"), "cpu") == {"run": 1, "skipped": 0}

    def crashing(*args, **kwargs):  # the retraining dies at its 4th step (a checkpoint after every step)
        return dnsrec_run(*args, reporters=lambda stage: CrashAt(4) if stage == "retrain" else None, **kwargs)

    dnsrec_run, results, runs = methods.dnsrec_run, suite.parent / "results.jsonl", suite.parent / "runs"
    with monkeypatch.context() as patched, pytest.raises(Crash):
        patched.setattr(methods, "dnsrec_run", crashing)
        run_plan(plan, str(results), str(runs), "cpu")
    assert (runs / plan.cells[0].name / "retrained.partial" / "checkpoint").is_dir() and not results.exists()
    assert run_plan(plan, str(results), str(runs), "cpu") == {"run": 1, "skipped": 0}
    assert _metrics(results) == _metrics(straight)


def test_cells_killed_before_their_first_checkpoint_start_over(suite):
    """A process killed before a stage's first checkpoint leaves that stage's partial directory without one.
    Before: the rerun took it for a checkpoint and failed ("nothing to resume"), here for the dense training
    and for the search."""
    plan = load_plan(str(suite), "tiny")
    runs = suite.parent / "runs"
    for cell in plan.cells:
        (runs / f"{cell.name}.partial").mkdir(parents=True)
    assert run_plan(plan, str(suite.parent / "results.jsonl"), str(runs), "cpu") == {"run": 2, "skipped": 0}


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), Interrupted("interrupted; checkpoint written to x.partial; "
                                                                    "continue with `resume`")])
def test_an_interrupt_ends_the_run_in_one_line_saying_how_to_continue(suite, monkeypatch, capsys, stop):
    """Before: Ctrl-C in the Torch-Pruning fine-tune (no checkpoint: a raw KeyboardInterrupt) was a traceback, and
    in a checkpointed stage "error: interrupted; ... continue with `resume`" with exit code 2."""
    def stopped(*args):
        raise stop

    monkeypatch.setattr(runner, "run_cell", stopped)
    try:
        code = benchmark_script("suite").main(["run", "--suite", str(suite), "--preset", "tiny", "--out", "out"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped suite.py's main")
    assert code == 130
    assert capsys.readouterr().err == "interrupted; the finished cells are kept in out/results.jsonl: rerun " \
        "`suite.py run` with the same arguments to continue\n"


@pytest.mark.parametrize("args, message", [
    (["--device", "gpu"], "error: unknown `device` 'gpu'; choose auto, cpu, cuda or cuda:N"),
    (["--seeds", "1,-1"], "error: --seeds must be in [0, 2147483647], got -1"),  # was --seed, a flag it lacks
])
def test_a_bad_device_or_seed_is_refused_before_any_cell_runs(suite, monkeypatch, capsys, args, message):
    """Before: a bad --device failed only once a cell ran, and a bad seed was named `compress`'s --seed."""
    monkeypatch.setattr(runner, "run_cell", lambda *args: pytest.fail("a cell ran"))
    assert benchmark_script("suite").main(["run", "--suite", str(suite), "--preset", "tiny", "--out", "out",
                                           *args]) == 2
    assert capsys.readouterr().err.strip() == message and not Path("out").exists()
