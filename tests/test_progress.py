"""What a run shows while it goes: the header before training, the epoch bar (steps, ETA, validation),
the decision as a label, progress through `logging` from Python, metrics.csv in every run directory
(continued, never repeated, by a resumed run) and TensorBoard on request."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import error_line, invoke, root_logging_kept
from crash import Crash, CrashAt
from rich.console import Console

import compress
from compress.app.jobs import train_run
from compress.app.orientation import recorded_label
from compress.app.recipes import resolve_options
from compress.engine.progress import Reporter, RichReporter, human
from compress.engine.sinks import flat_row
from compress.measure.flops import model_flops, params_count

MODEL = ["--hidden", "16", "--inner", "32", "--heads", "2", "--seq-len", "10", "--device", "cpu"]
TRAIN = ["train", *MODEL, "--layers", "1", "--epochs", "2", "--batch-size", "64"]
SEARCH = ["search", *MODEL, "--layers", "2", "--search-epochs", "2", "--retrain-epochs", "1", "--search-batch-size",
          "64", "--retrain-batch-size", "64", "--hidden-ratios", "0,0.5", "--inner-ratios", "0,0.5",
          "--max-flops", "50%"]


@contextlib.contextmanager
def wide():
    """The CLI's consoles at 160 columns, so that no line the tests read is wrapped."""
    import cli

    widths = [(c, c._width) for c in (cli.out_console, cli.err_console)]
    for c, _ in widths:
        c.width = 160
    try:
        yield
    finally:
        for c, width in widths:
            c._width = width


def run(*args):
    with wide(), root_logging_kept():
        return invoke(*args)


def finished_run(tmp_path_factory, name: str, command: tuple, data: str):
    """(run directory, stderr) of ``command`` on ``data``, which must succeed."""
    out = tmp_path_factory.mktemp(name) / "run"
    result = run(*command, "--data", data, "--out", out)
    assert result.exit_code == 0, result.stderr
    return out, result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data_file):
    return finished_run(tmp_path_factory, "progress-train", TRAIN, tiny_data_file)


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_data_file):
    return finished_run(tmp_path_factory, "progress-search", SEARCH, tiny_data_file)


def read_csv(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def same_rows(path: Path, history: list) -> None:
    """metrics.csv holds the history: one row per epoch, the same columns and values."""
    rows = read_csv(path)
    assert len(rows) == len(history)
    for row, record in zip(rows, history):
        flat = flat_row(record)
        assert list(row) == list(flat)
        assert row == {k: v if isinstance(v, str) else str(v) for k, v in flat.items()}


def test_train_header(trained):
    out, stderr = trained
    model = compress.load(str(out))
    stats = json.loads((out / "config.json").read_text())["dataset"]
    head = stderr.split("epoch ")[0]  # printed before the first epoch
    assert "training sasrec 16/32 × 1 layer" in head
    assert f"tiny: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions, " \
           "ordered by timestamp" in head
    assert "cpu, fp32" in head
    assert f"{params_count(model):,} params, {human(model_flops(model)['total'])} FLOPs per history of 10" in head
    assert "up to 2 of batch 64" in head


def test_search_header_lists_every_candidate(searched):
    out, stderr = searched
    card = json.loads((out / "search_card.json").read_text())
    head = re.split(r"^epoch +1/", stderr, flags=re.M)[0]
    assert "decision  at the best validation epoch" in head
    assert f"searching {len(card['candidates'])} candidates of sasrec 16/32 × 2 layers" in head
    budget = card["budget"]
    assert "λ 0.1" in head and f"50% of the input model: {human(budget['flops'])} FLOPs" in head
    lines = head.splitlines()
    for c in card["candidates"]:  # candidate, FLOPs, share of the input model's, params, within budget
        share = f"{100 * c['flops'] / budget['reference_flops']:.1f}%"
        line = next(line for line in lines if line.strip().startswith(c["label"] + "  "))
        assert line.split()[-5:] == [*human(c["flops"]).split(), share, f"{c['params']:,}",
                                     "yes" if c["flops"] <= budget["flops"] else "no"]


def test_decisions_and_stages_read_as_labels(searched):
    out, stderr = searched
    card = json.loads((out / "search_card.json").read_text())
    for row in card["history"]:
        assert f"decision {row['decision_label']} (" in stderr
    decided = compress.ArchSpec.from_dict(card["decision"]["arch"]).label()
    assert f"retraining the decision {decided} with the supernet's weights" in stderr
    shown = run("inspect", out).stdout
    assert f"decision: {decided}" in shown and "[" not in shown.split("search history")[1].split("metrics")[0]


def test_recorded_label_of_a_card_without_labels():
    card = {"widths": [{"hidden": 16, "inner": 32}, {"hidden": 8, "inner": 16}],
            "decision": {"arch": {"hidden": 8, "inner": 16, "heads": 1, "layers": 1, "attention": "linear"}}}
    assert recorded_label(card, {"decision": [0, 2]}) == "16/32 × 2 layers, linear attention"


def test_epoch_bar_shows_steps_eta_and_validation():
    sink = io.StringIO()
    reporter = RichReporter(Console(file=sink, force_terminal=True, width=140, color_system=None))
    reporter.epoch_start(1, 3, 5)
    reporter.step(2.5, 128, steps=2)
    reporter.progress.refresh()
    assert "epoch 1/3" in sink.getvalue() and "2/5" in sink.getvalue() and "ETA" in sink.getvalue()
    reporter.validating(40)
    assert "validating on 40 users…" in sink.getvalue()
    reporter.close()


def tiny_model(data):
    arch = compress.ArchSpec(hidden=16, inner=32, heads=2, layers=2)
    return compress.get_backbone("sasrec")(arch, data.n_items, 10)


def test_the_api_logs_progress(tiny_data_file, caplog):
    data = compress.load_dataset(str(tiny_data_file))
    caplog.set_level(logging.INFO, logger="compress")
    compress.fit(tiny_model(data), data, compress.TrainConfig(epochs=2, batch_size=64), "cpu")
    lines = [r.getMessage() for r in caplog.records if r.name == "compress.engine.progress"]
    assert [line[:12] for line in lines] == ["epoch   1/2 ", "epoch   2/2 "] and "ndcg@10" in lines[0]
    caplog.clear()
    supernet = compress.wrap(tiny_model(data), space=compress.SearchSpace((0.0, 0.5), (0.0, 0.5)),
                             attention="softmax", gate_layers=0)
    compress.search(supernet, data, compress.SearchConfig(epochs=1, batch_size=64), "cpu")
    [line] = [r.getMessage() for r in caplog.records if r.name == "compress.engine.progress"]
    assert re.search(r"epoch   1/1  CE .* τ 1\.0000 .* decision (16/32|8/16) × [12] layers? \(", line), line
    assert re.search(r"  p \d\.\d\d \d\.\d\d  q \d\.\d\d \d\.\d\d$", line), line


def test_the_api_prints_nothing_unless_logging_is_configured(tiny_data_file, subprocess_env):
    script = ("import compress; d = compress.load_dataset(%r); m = compress.get_backbone('sasrec')("
              "compress.ArchSpec(hidden=8, inner=16, heads=1, layers=1), d.n_items, 10); "
              "compress.fit(m, d, compress.TrainConfig(epochs=1, batch_size=64), 'cpu')" % str(tiny_data_file))
    done = subprocess.run([sys.executable, "-c", script], env=subprocess_env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr


def test_metrics_csv_is_the_history(trained, searched):
    out, _ = trained
    same_rows(out / "metrics.csv", json.loads((out / "metrics.json").read_text())["history"])
    out, _ = searched
    history = json.loads((out / "search_card.json").read_text())["history"]
    same_rows(out / "metrics.csv", history)
    assert {"p0", "p1", "q0", "q1", "tau", "valid_ndcg@10", "decision_label"} <= set(read_csv(out / "metrics.csv")[0])
    same_rows(out / "retrained" / "metrics.csv", json.loads((out / "retrained" / "metrics.json").read_text())["history"])


class CsvAtStart(Reporter):
    """Reads the live metrics.csv when the resumed run starts its first epoch."""

    def __init__(self, path: str) -> None:
        self.path, self.epochs = path, None

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if self.epochs is None:
            self.epochs = [row["epoch"] for row in read_csv(Path(self.path))]


def test_resume_continues_the_csv(tiny_data_file, tmp_path):
    out = tmp_path / "run"
    opts = resolve_options("train", None, {"data": str(tiny_data_file), "epochs": 3, "hidden": 16, "inner": 32,
                                           "heads": 2, "layers": 1, "seq_len": 10, "batch_size": 64, "device": "cpu"})
    with pytest.raises(Crash):
        train_run(opts, str(out), reporter=CrashAt(2))  # one step per epoch: dies in epoch 2, checkpoint of epoch 1
    live = tmp_path / "run.partial" / "metrics.csv"
    assert [row["epoch"] for row in read_csv(live)] == ["1"]
    with open(live, "a") as fh:  # a row written after the last checkpoint by a run killed before the next one
        fh.write("2,9.9" + "," * (len(read_csv(live)[0]) - 2) + "\n")
    probe = CsvAtStart(str(live))
    train_run(opts, str(out), reporter=probe, resume=True)
    assert probe.epochs == ["1"]  # rewritten from the checkpoint's history, the stray row gone
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    same_rows(out / "metrics.csv", history)


def test_tensorboard_without_the_package(tiny_data_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    result = run(*TRAIN, "--data", tiny_data_file, "--out", tmp_path / "run", "--tensorboard", tmp_path / "tb")
    assert error_line(result) == "error: --tensorboard needs the tensorboard package: pip install tensorboard"
    assert "epoch" not in result.stderr and os.listdir(tmp_path) == []


def read_only_dir(tmp_path: Path) -> str:
    if os.geteuid() == 0:  # permission bits do not stop root; sysfs refuses new files to everyone
        return "/sys/compress-tensorboard"
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    return str(path / "tb")


@pytest.mark.parametrize("where", ["a file", "inside a file", "read-only", "inside the run"])
def test_bad_tensorboard_paths(tiny_data_file, tmp_path, where):
    (tmp_path / "file").write_text("not a directory")
    path = {"a file": str(tmp_path / "file"), "inside a file": str(tmp_path / "file" / "tb"),
            "read-only": read_only_dir(tmp_path), "inside the run": str(tmp_path / "run" / "tb")}[where]
    result = run(*TRAIN, "--data", tiny_data_file, "--out", tmp_path / "run", "--tensorboard", path)
    assert error_line(result).startswith("error: --tensorboard ")
    assert "epoch" not in result.stderr and set(os.listdir(tmp_path)) <= {"file", "ro"}


def test_tensorboard_events(tiny_data_file, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run(*TRAIN, "--data", tiny_data_file, "--out", tmp_path / "run", "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 0, result.stderr
    events = EventAccumulator(str(tmp_path / "tb" / "run" / "train"))
    events.Reload()
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [(e.step, round(e.value, 5)) for e in events.Scalars("loss")] == \
        [(r["epoch"], round(r["loss"], 5)) for r in history]
    assert [e.step for e in events.Scalars("valid/ndcg@10")] == [1, 2]


def test_the_readme_excerpt_block_is_replaced_in_place(tmp_path):
    from compress.suite.blocks import replace_block

    md = tmp_path / "README.md"
    md.write_text("intro\n<!-- excerpt:progress -->\nold\n<!-- /excerpt:progress -->\n<!-- suite:cpu -->\nt\n")
    assert replace_block(str(md), "progress", "new", kind="excerpt")
    assert md.read_text() == "intro\n<!-- excerpt:progress -->\nnew\n<!-- /excerpt:progress -->\n<!-- suite:cpu -->\nt\n"
