"""Progress reporting: a silent reporter for the API and a rich live bar for the CLI."""
from __future__ import annotations

import time
from typing import Dict, Optional

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter:
    """Hooks the training and search loops call; the base class does nothing."""

    def begin(self, info: Dict) -> None: ...

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, loss: float, n_seqs: int, steps: int = 1) -> None:
        """``steps`` steps of ``n_seqs`` sequences in all, with mean loss ``loss``, since the last call."""

    def epoch_end(self, row: Dict, improved: bool) -> None: ...

    def close(self) -> None: ...


NullReporter = Reporter


class RichReporter(Reporter):
    """Epoch bar with loss and sequences/s; one summary line per epoch with the validation metric."""

    def __init__(self, console: Optional[Console] = None, metric: str = "valid_ndcg@10") -> None:
        self.console = console or Console(stderr=True)
        self.metric = metric
        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f}"),
                                 TextColumn("{task.fields[rate]:.0f} seq/s"), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self.task = None

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if self.task is None:
            self.progress.start()
        else:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=steps, epoch=f"{epoch}/{epochs}", loss=0.0, rate=0.0)
        self.t0, self.seen = time.perf_counter(), 0

    def step(self, loss: float, n_seqs: int, steps: int = 1) -> None:
        self.seen += n_seqs
        rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, advance=steps, loss=loss, rate=rate)

    def epoch_end(self, row: Dict, improved: bool) -> None:
        extra = "".join(f"  {k} {v}" for k, v in row.items() if k in ("tau", "decision", "exp_flops"))
        self.progress.console.print(
            f"epoch {row['epoch']:>3}  loss {row['loss']:.4f}  {self.metric} {row.get(self.metric, float('nan')):.4f}"
            f"  {row['seqs_per_s']:.0f} seq/s{extra}{'  *' if improved else ''}")

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


def bars(weights, labels, width: int = 20) -> str:
    """One text bar per choice, e.g. ``64/256 ████████░░░░ 0.61``."""
    return "\n".join(f"    {lab:>10} {'█' * round(w * width)}{'░' * (width - round(w * width))} {w:.2f}"
                     for lab, w in zip(labels, weights))


class SearchReporter(RichReporter):
    """The training bar plus, per epoch, τ, the penalty, expected FLOPs, p (α) and q (β) as bars."""

    width_labels: list = []

    def begin(self, info: Dict) -> None:
        self.width_labels = [f"{w['hidden']}/{w['inner']}" for w in info["widths"]]

    def epoch_end(self, row: Dict, improved: bool) -> None:
        c = self.progress.console
        c.print(f"epoch {row['epoch']:>3}  CE {row['loss']:.4f}  L_RC {row['penalty']:.4f}  τ {row['tau']:.4f}  "
                f"E[FLOPs] {100 * row['exp_flops']:.1f}% of full  decision {row['decision']} "
                f"({row['decision_flops']:.3g} FLOPs)  {self.metric} {row[self.metric]:.4f}"
                f"  {row['seqs_per_s']:.0f} seq/s{'  *' if improved else ''}", highlight=False)
        c.print("  p (width, α)\n" + bars(row["p"], self.width_labels), highlight=False)
        c.print("  q (exit depth, β)\n" + bars(row["q"], [f"{i + 1} layers" for i in range(len(row["q"]))]),
                highlight=False)
