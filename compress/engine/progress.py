"""Progress reporting. The loops call a ``Reporter``'s hooks; what a user sees depends on which one:

- ``LogReporter``: standard ``logging`` under ``compress.``, one INFO line per epoch. The library's
  default, so a script that calls ``logging.basicConfig(level=logging.INFO)`` sees progress and one
  that does not sees nothing.
- ``RichReporter`` / ``SearchReporter``: the command line's live view: a header of what is about to
  run, an epoch bar with steps and an ETA, one summary line per epoch (and p, q as bars for a search).
- ``Reporters``: several at once, e.g. the live view and a metrics sink (``compress.engine.sinks``).
"""
from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional, Sequence, Tuple

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from compress.bounds import instance
from compress.runtime import distributed

log = logging.getLogger(__name__)


class Reporter:
    """Hooks the training and search loops call; the base class does nothing."""

    def header(self, info: Dict) -> None:
        """What is about to run (``compress.app.orientation``): called once, before the loop."""

    def begin(self, info: Dict) -> None: ...

    def restored(self, history: List[Dict]) -> None:
        """A resumed run: the epochs its checkpoint already holds, before the first new step."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, loss: float, n_seqs: int, steps: int = 1) -> None:
        """``steps`` steps of ``n_seqs`` sequences in all, with mean loss ``loss``, since the last call."""

    def validating(self, users: int) -> None:
        """The epoch's steps are done; its validation on ``users`` users starts."""

    def epoch_end(self, row: Dict, improved: bool) -> None: ...

    def close(self) -> None: ...


NullReporter = Reporter


class Reporters(Reporter):
    """Several reporters as one, called in order (``None`` entries are skipped)."""

    def __init__(self, *many: Optional[Reporter]) -> None:
        self.many = [r for r in many if r is not None]
        for r in self.many:
            instance("each reporter", r, Reporter, "e.g. compress.RichReporter() or compress.MetricsSink(path)")

    def header(self, info: Dict) -> None:
        for r in self.many:
            r.header(info)

    def begin(self, info: Dict) -> None:
        for r in self.many:
            r.begin(info)

    def restored(self, history: List[Dict]) -> None:
        for r in self.many:
            r.restored(history)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        for r in self.many:
            r.epoch_start(epoch, epochs, steps)

    def step(self, loss: float, n_seqs: int, steps: int = 1) -> None:
        for r in self.many:
            r.step(loss, n_seqs, steps)

    def validating(self, users: int) -> None:
        for r in self.many:
            r.validating(users)

    def epoch_end(self, row: Dict, improved: bool) -> None:
        for r in self.many:
            r.epoch_end(row, improved)

    def close(self) -> None:
        for r in self.many:
            r.close()


# --- text shared by the live view and the log ------------------------------------------------------------

def human(x: float) -> str:
    """A count as people read it: ``1.23 M``, ``456 k``."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {suffix}"
    return f"{x:.3g}"


def header_rows(info: Dict) -> List[Tuple[str, str]]:
    """(name, text) lines of a header dict (``compress.app.orientation``)."""
    d, m = info["dataset"], info["model"]
    order = {True: ", ordered by timestamp", False: ", in file order"}.get(d.get("timed"), "")
    dropped = f" ({d['dropped_users']:,} users with < 3 interactions dropped)" if d.get("dropped_users") else ""
    rows = [("data", f"{d['name']}: {d['users']:,} users, {d['items']:,} items, "
                     f"{d['interactions']:,} interactions{order}{dropped}"),
            ("device", f"{info['device']}, {info['precision']}"),
            ("model", f"{m['backbone']} {m['label']}: {m['params']:,} params, {human(m['flops'])} FLOPs "
                      f"per history of {m['seq_len']}"),
            ("epochs", f"up to {info['epochs']} of batch {info['batch_size']}, "
                       f"stopping after {info['patience']} without a validation gain")]
    s = info.get("search")
    if s:
        budget = s["budget"]
        rows.append(("penalty", f"{s['penalty']} (λ unused)" if s["penalty"] == "proxyless"
                     else f"λ {s['tradeoff']:g} ({s['penalty']})"))
        given = f"{budget['given']} of the {s['reference']} model" if budget and budget["given"].endswith("%") \
            else "a hard limit"
        rows.append(("budget", f"{given}: {human(budget['flops'])} FLOPs" if budget else "none"))
        rows.append(("decision", "at the last epoch" if s.get("decide") == "last" else "at the best validation epoch"))
    return rows


def candidate_rows(info: Dict) -> List[Tuple[str, ...]]:
    """(candidate, FLOPs, % of the reference model's, params[, fits]) per candidate of a search header."""
    s = info["search"]
    budget = s["budget"]
    return [(c["label"], human(c["flops"]), f"{100 * c['share']:.1f}%", f"{c['params']:,}",
             *(("yes" if c["flops"] <= budget["flops"] else "no",) if budget else ())) for c in s["candidates"]]


def metric_name(row: Dict, preferred: Optional[str] = None) -> Optional[str]:
    """The validation metric an epoch row is read by: ``preferred``, else its NDCG@k."""
    if preferred in row:
        return preferred
    return next((k for k in row if k.startswith("valid_ndcg@")), None)


def epoch_line(row: Dict, epochs: int, improved: bool, metric: Optional[str] = None,
               reference: str = "reference", sep: str = "  ") -> str:
    """One epoch as one line: loss, validation metric, throughput, ``*`` when it improved; a search row
    adds its penalty and τ and, after ``sep``, the expected FLOPs (a share of the ``reference``
    model's) and the decision."""
    metric = metric_name(row, metric)
    valid = f"  {metric[len('valid_'):]} {row[metric]:.4f}" if metric else ""
    search = "tau" in row
    term = row.get("penalty_term", "L_RC")  # cards written before the term was recorded: the paper's form
    loss = f"CE {row['loss']:.4f}  {term} {row['penalty']:.4f}  τ {row['tau']:.4f}" if search \
        else f"loss {row['loss']:.4f}"
    line = f"epoch {row['epoch']:>3}/{epochs}  {loss}{valid}  {row['seqs_per_s']:,.0f} seq/s{'  *' if improved else ''}"
    if search:
        decision = row.get("decision_label", row.get("decision"))
        line += (f"{sep}E[FLOPs] {100 * row['exp_flops']:.1f}% of {reference}  decision {decision} "
                 f"({human(row['decision_flops'])} FLOPs)")
    return line


WEIGHTS = ("p", "q", "r", "s")  # a search row's soft choices: width (α), exit depth (β), attention, gate depth


def reference_text(info: Dict) -> str:
    """What a search's E[FLOPs] is a share of, from its header."""
    return info["search"]["reference"] if info.get("search") else "reference"


class LogReporter(Reporter):
    """Progress through ``logging`` (logger ``compress.engine.progress``): the header's lines and one
    INFO line per epoch; validation starts at DEBUG. In a distributed run rank 0 speaks for all."""

    def __init__(self, logger: Optional[logging.Logger] = None) -> None:
        self.log = logger or log
        if not distributed.is_main():
            self.log = logging.getLogger(f"{log.name}.rank{distributed.rank()}")
            self.log.disabled = True
        self.epochs, self.reference = 0, "reference"

    def header(self, info: Dict) -> None:
        self.reference = reference_text(info)
        self.log.info("%s", info["title"])
        for name, text in header_rows(info):
            self.log.info("  %s: %s", name, text)
        if info.get("search"):
            for row in candidate_rows(info):
                self.log.info("  candidate %s", "  ".join(row))

    def restored(self, history: List[Dict]) -> None:
        self.log.info("resuming after epoch %d", len(history))

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs = epochs

    def validating(self, users: int) -> None:
        self.log.debug("validating on %d users", users)

    def epoch_end(self, row: Dict, improved: bool) -> None:
        weights = "".join(f"  {key} " + " ".join(f"{v:.2f}" for v in row[key])
                          for key in WEIGHTS if len(row.get(key, ())) > 1)
        self.log.info("%s%s", epoch_line(row, self.epochs, improved, reference=self.reference), weights)


class RichReporter(Reporter):
    """The header as a compact table; an epoch bar with steps done, loss, sequences/s, elapsed time
    and ETA (it reads "validating on N users…" while validation runs); one summary line per epoch."""

    def __init__(self, console: Optional[Console] = None, metric: Optional[str] = None) -> None:
        self.console = console or Console(stderr=True)
        self.metric = metric  # default: the row's NDCG@k
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f}"),
                                 TextColumn("{task.fields[rate]:.0f} seq/s"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True)
        self.task = None
        self.epochs, self.reference = 0, "reference"

    def header(self, info: Dict) -> None:
        self.reference = reference_text(info)
        c = self.console
        c.print(Text(info["title"], style="bold"))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column()
        for name, text in header_rows(info):
            grid.add_row(name, Text(text))  # data names are paths: never read as markup
        c.print(grid, highlight=False)
        if info.get("search"):
            c.print(candidate_table(info), highlight=False)

    def restored(self, history: List[Dict]) -> None:
        self.console.print(f"resuming after epoch {len(history)}", highlight=False, markup=False)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if self.task is None:
            self.progress.start()
        else:
            self.progress.remove_task(self.task)
        self.epochs, self.label = epochs, f"epoch {epoch}/{epochs}"
        self.task = self.progress.add_task(self.label, total=steps, loss=0.0, rate=0.0)
        self.t0, self.seen = time.perf_counter(), 0

    def step(self, loss: float, n_seqs: int, steps: int = 1) -> None:
        self.seen += n_seqs
        rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, advance=steps, loss=loss, rate=rate)

    def validating(self, users: int) -> None:
        self.progress.update(self.task, description=f"{self.label} validating on {users:,} users…")
        self.progress.refresh()

    def epoch_end(self, row: Dict, improved: bool) -> None:
        self.progress.console.print(epoch_line(row, self.epochs, improved, self.metric, self.reference),
                                    highlight=False, markup=False)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


def candidate_table(info: Dict) -> Table:
    """The search space of a search header: every candidate with its FLOPs and parameters."""
    budget = info["search"]["budget"]
    table = Table(title="search space", box=box.SIMPLE_HEAD, show_edge=False, title_justify="left")
    reference = f"of {info['search']['reference']}"
    for name in ("candidate", "FLOPs", reference, "params") + (("within budget",) if budget else ()):
        table.add_column(name, justify="left" if name == "candidate" else "right")
    for row in candidate_rows(info):
        table.add_row(*(Text(cell) for cell in row))
    return table


def bars(weights: Sequence[float], labels: Sequence[str], width: int = 20) -> str:
    """One text bar per choice, e.g. ``64/256 ████████░░░░ 0.61``."""
    return "\n".join(f"    {lab:>10} {'█' * round(w * width)}{'░' * (width - round(w * width))} {w:.2f}"
                     for lab, w in zip(labels, weights))


class SearchReporter(RichReporter):
    """The training bar plus, per epoch, τ, the penalty, expected FLOPs and each searched choice's
    weights as bars: p (width, α), q (exit depth, β), and the attention kind and gate depth when searched."""

    choices: Dict[str, Dict] = {}  # row key -> {"name", "labels"}: from the header, else from begin()

    def header(self, info: Dict) -> None:
        super().header(info)
        if info.get("search"):
            self.choices = info["search"]["choices"]

    def begin(self, info: Dict) -> None:
        if not self.choices:
            self.choices = {"p": {"name": "width, α", "labels": [f"{w['hidden']}/{w['inner']}" for w in info["widths"]]},
                            "q": {"name": "exit depth, β", "labels": depth_labels(info["depths"])}}

    def epoch_end(self, row: Dict, improved: bool) -> None:
        c = self.progress.console
        c.print(epoch_line(row, self.epochs, improved, self.metric, self.reference, sep="\n  "), highlight=False,
                markup=False)
        for key, choice in self.choices.items():
            if len(row.get(key, ())) > 1:
                c.print(f"  {key} ({choice['name']})\n" + bars(row[key], choice["labels"]), highlight=False,
                        markup=False)


def depth_labels(depths: Sequence[int]) -> List[str]:
    """The exit depths β picks from, as its bars name them."""
    return [f"{n} layer{'s' if n > 1 else ''}" for n in depths]
