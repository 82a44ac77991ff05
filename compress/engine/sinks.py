"""Metrics sinks: every epoch's row (losses, τ, p and q, validation metrics, throughput) kept where
other tools read it, a CSV file and, when asked, TensorBoard.

The CSV is the run's history and nothing else: it is rewritten whole (atomically) after each epoch
from the rows so far, and a resumed run starts from the rows its checkpoint holds
(``Reporter.restored``), so a row written after the last checkpoint by a run that was then killed is
replaced, never duplicated. TensorBoard events of epochs after the checkpoint are purged the same way
(``SummaryWriter(purge_step=...)``). Only rank 0 of a distributed run writes.
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
from typing import Any, Dict, List, Optional

from compress.engine.progress import Reporter
from compress.errors import ConfigError
from compress.files import write_text
from compress.runtime import distributed

TENSORBOARD_MISSING = "`tensorboard` needs the tensorboard package: pip install tensorboard"


def flat_row(row: Dict[str, Any]) -> Dict[str, Any]:
    """An epoch row with list values spread over numbered columns (``p`` → ``p0``, ``p1``, …)."""
    out: Dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, (list, tuple)):
            out.update({f"{key}{i}": v for i, v in enumerate(value)})
        else:
            out[key] = value
    return out


def csv_text(rows: List[Dict[str, Any]]) -> str:
    """The rows as CSV: a header of every column in order of first appearance, one line per epoch."""
    flat = [flat_row(r) for r in rows]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def summary_writer() -> type:
    """``torch.utils.tensorboard.SummaryWriter``, or a ConfigError naming the package to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(TENSORBOARD_MISSING) from None
    return SummaryWriter


def check_dir(path: str, what: str) -> None:
    """A directory ``what`` writes into that can be written: created if missing, refused when it is a
    file or not writable, so that a bad path fails before training rather than after the first epoch."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{what} needs a directory, but {existing} is a file; choose another path")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} directory {path} cannot be written: {exc.strerror}") from None


class MetricsSink(Reporter):
    """Writes each epoch's row to ``csv`` (a file path) and, with ``tensorboard`` (a log directory), as
    scalars at step = epoch. Compose it with a live view: ``Reporters(RichReporter(), MetricsSink(...))``."""

    def __init__(self, csv: Optional[str] = None, tensorboard: Optional[str] = None) -> None:
        self.csv, self.tensorboard = csv, tensorboard
        self.writer_class = summary_writer() if tensorboard else None  # a missing package fails now
        if distributed.is_main():
            if tensorboard:
                check_dir(tensorboard, "`tensorboard`")
            if csv:
                check_dir(os.path.dirname(os.path.abspath(csv)), "the metrics CSV")
        self.rows: List[Dict[str, Any]] = []
        self.writer = None

    def restored(self, history: List[Dict]) -> None:
        self.rows = list(history)
        self._write_csv()

    def epoch_end(self, row: Dict, improved: bool) -> None:
        self.rows.append(row)
        self._write_csv()
        if self.writer_class is not None and distributed.is_main():
            self._write_events(row)

    def _write_csv(self) -> None:
        if self.csv and distributed.is_main():
            write_text(self.csv, csv_text(self.rows))

    def _write_events(self, row: Dict) -> None:
        step = row["epoch"]
        if self.writer is None:  # hides what an earlier or killed run logged from this epoch on
            self.writer = self.writer_class(self.tensorboard, purge_step=step)
        for key, value in flat_row(row).items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key.replace("valid_", "valid/", 1), value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> "MetricsSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
