"""The one training loop, shared by dense training (``compress.engine.train``) and the architecture
search (``compress.nas.search``): epochs of steps, validation and early stopping on it, wall-clock
budgets, checkpoints and exact resume, progress, divergence, and when the host reads from the device.

A ``Task`` says what one step does and what an epoch records; the loop does the rest.

Host reads. On an accelerator every ``.item()`` makes the host wait for the device, which then idles
while the host queues the next kernels. Steps therefore return their statistics as device tensors,
which the loop sums on the device and reads at *sync points*: about every ``SYNC_SECONDS``, at the
end of an epoch, before a checkpoint and when a stop is asked for. On the CPU a read costs nothing,
so every step is a sync point (progress and a divergence are seen at once). Divergence: a non-finite
loss at any step, or non-finite weights at the end of an epoch, ends the run with an error naming
the epoch; the best weights so far are restored and no checkpoint holding non-finite state is written.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from compress.bounds import instance
from compress.engine.batches import TrainingBatches
from compress.engine.checkpoint import Checkpointer, rng_state, set_rng_state
from compress.engine.config import KEEPS
from compress.engine.progress import NullReporter, Reporter
from compress.errors import CheckpointError, ConfigError, SearchError
from compress.measure.evaluation import EvalSet
from compress.nn.modes import evaluating
from compress.runtime import distributed

SYNC_SECONDS = 0.5
STATE_FORMAT = 2  # of the checkpointed loop state; 1 had no "format" key


class Task:
    """What a loop trains: ``model``, its ``batches``, and the hooks below."""

    model: nn.Module
    batches: TrainingBatches
    valid: EvalSet  # the validation split, on the device

    def begin_epoch(self, epoch: int, done: int = 0) -> None:
        """Per-epoch preparation (e.g. drawing the epoch's noise on the host, once). ``done``: the batches
        of the epoch already taken before a resume; the counters ``record`` divides by start over at 0 only,
        as the loop's sums do."""

    def step(self, step: int, index: int, items: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One optimisation step on batch ``index`` (global step ``step``). Returns device scalars the
        loop sums over the epoch: ``loss``, this process's share of the batch's mean loss (absent when
        its share is empty), and any statistic of the task's own."""
        raise NotImplementedError

    def validate(self) -> Dict[str, float]:
        raise NotImplementedError

    def record(self, sums: Dict[str, float]) -> Dict[str, Any]:
        """The task's fields of the epoch's history row, from the epoch's sums of ``step``'s statistics."""
        return {}

    def improved(self, epoch: int) -> None:
        """The epoch just recorded is the best so far."""

    def state_dict(self) -> Dict[str, Any]:
        """Everything but the model a resumed run needs (optimisers, scaler, counters)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass

    def diverged(self, message: str, best_state: Dict[str, torch.Tensor], history: List[Dict]) -> Exception:
        return SearchError(message, best_state, history)


@dataclass
class LoopResult:
    best_epoch: int
    best_valid: Dict[str, float]
    history: List[Dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> Dict:
        return asdict(self)


class Loop:
    """Runs ``task`` for up to ``epochs`` epochs, stopping ``patience`` epochs after the best value of
    validation ``metric`` or when ``max_minutes`` are spent; with a ``checkpoint`` it saves after every
    epoch (and every ``checkpoint.every`` steps) and resumes a saved state batch for batch. On return the
    model holds the state of the best validation epoch, or with ``keep="last"`` that of the last epoch
    (a search that decides there); a diverged run keeps the best either way."""

    def __init__(self, task: Task, epochs: int, patience: int, metric: str, max_minutes: Optional[float] = None,
                 reporter: Optional[Reporter] = None, checkpoint: Optional[Checkpointer] = None,
                 keep: str = "best") -> None:
        if keep not in KEEPS:
            raise ValueError(f"keep must be best or last, got {keep!r}")
        self.task, self.epochs, self.patience, self.metric = task, epochs, patience, metric
        self.max_minutes, self.checkpoint, self.keep = max_minutes, checkpoint, keep
        self.reporter = reporter or NullReporter()
        self.free_reads = task.batches.device.type == "cpu"  # the host is the device: read every step
        self.step, self.best, self.best_epoch = 0, -1.0, 0  # metrics lie in [0, 1]: any epoch improves on -1
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.history: List[Dict] = []
        self.sums: Dict[str, float] = {}
        self.pending = _Pending()
        self.stopped = False

    def run(self) -> LoopResult:
        """The epochs, in float32 but for the weight steps' own autocast (``precision``): an autocast region
        the caller opened around ``fit`` or ``search`` would otherwise reach the α/β steps and validation."""
        first_epoch, done = self._restore()
        start = time.perf_counter()
        with torch.autocast(self.task.batches.device.type, enabled=False):
            for epoch in range(first_epoch, self.epochs + 1):
                late = self._train_epoch(epoch, done, start)
                done = 0
                stop = self._end_epoch(epoch) or late or self._over_budget(start)
                self.stopped = stop
                self._save(epoch + 1, 0)
                if stop:
                    break
        return self._finish(start)

    # --- one epoch -------------------------------------------------------------------------------------

    def _train_epoch(self, epoch: int, done: int, start: float) -> bool:
        """Steps of ``epoch`` from batch ``done`` on; True when the wall-clock budget ran out in it."""
        task = self.task
        task.model.train()
        steps = len(task.batches)
        self.reporter.epoch_start(epoch, self.epochs, steps)
        if not done:
            self.sums = {"loss": 0.0, "seen": 0, "train_seconds": 0.0}
        task.begin_epoch(epoch, done)
        t0 = self.last_sync = time.perf_counter()
        late = False
        for i, items, targets in task.batches.epoch(epoch, done):
            self.pending.add(task.step(self.step, i, items, targets), len(items))
            self.step += 1
            due = self.checkpoint is not None and self.checkpoint.every > 0 and self.step % self.checkpoint.every == 0
            want = self.free_reads or due or i == steps - 1 or time.perf_counter() - self.last_sync >= SYNC_SECONDS
            stop = self.checkpoint is not None and self.checkpoint.stop_requested
            want, stop, late = (v > 0 for v in distributed.sum_floats(want, stop, _past(start, self.max_minutes)))
            if want or stop or late:
                self._sync(epoch)
            if self.checkpoint is not None and (due or stop):
                self.checkpoint.stopping = stop
                self._save(epoch, i + 1, t0)  # raises Interrupted when stopping
            if late:
                break  # the budget is spent: validate this partial epoch and stop
        self.sums["train_seconds"] += time.perf_counter() - t0
        return late

    def _sync(self, epoch: int) -> None:
        """Read the steps' statistics since the last sync point (one host read), check them, report."""
        values, rows, steps = self.pending.read()
        loss, bad = distributed.sum_floats(values.pop("loss", 0.0), values.pop("bad", 0.0))
        if bad:
            first, last = self.step - steps, self.step - 1  # 0-based steps since the last sync point
            where = f"at step {last}" if first == last else f"in steps {first}-{last}"
            raise self._diverged(f"loss became non-finite {where} (epoch {epoch})")
        self.sums["loss"] += loss
        self.sums["seen"] += rows
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.last_sync = time.perf_counter()
        self.reporter.step(loss / max(rows, 1), rows, steps)

    def _end_epoch(self, epoch: int) -> bool:
        """Validate, record the epoch, keep the best state; True when patience has run out."""
        task = self.task
        if not _finite_weights(task.model):
            raise self._diverged(f"the weights became non-finite in epoch {epoch}")
        if not _finite_scores(task.model, task.valid.histories[:64]):
            raise self._diverged(f"the model's scores are not finite after epoch {epoch}")
        self.reporter.validating(len(task.valid))
        valid = task.validate()
        seen, seconds = self.sums["seen"], self.sums["train_seconds"]
        extra = {k: v for k, v in self.sums.items() if k not in ("loss", "seen", "train_seconds")}
        row = {"epoch": epoch, "loss": self.sums["loss"] / max(seen, 1), **task.record(extra),
               "seqs_per_s": seen / max(seconds, 1e-9), "train_seconds": seconds,
               **{f"valid_{m}": v for m, v in valid.items()}}
        self.history.append(row)
        improved = valid[self.metric] > self.best  # NaN never improves
        if improved:
            self.best, self.best_epoch = valid[self.metric], epoch
            self.best_state = copy.deepcopy(task.model.state_dict())
            task.improved(epoch)
        self.reporter.epoch_end(row, improved)
        return epoch - self.best_epoch >= self.patience

    # --- state -----------------------------------------------------------------------------------------

    def _state(self, epoch: int, batch: int, seconds: float) -> Dict[str, Any]:
        sums = {**self.sums, "train_seconds": self.sums.get("train_seconds", 0.0) + seconds}
        return {"format": STATE_FORMAT, "epoch": epoch, "batch": batch, "stopped": self.stopped, "step": self.step,
                "model": self.task.model.state_dict(), "task": self.task.state_dict(), "best": self.best,
                "best_epoch": self.best_epoch, "best_state": self.best_state, "history": self.history,
                "sums": sums, "rng": rng_state(self.task.batches.device)}

    def _save(self, epoch: int, batch: int, t0: Optional[float] = None) -> None:
        if self.checkpoint is not None:
            self.checkpoint.save(self._state(epoch, batch, 0.0 if t0 is None else time.perf_counter() - t0))

    def _restore(self) -> Tuple[int, int]:
        """(first epoch, batches of it done) after loading a saved state; (1, 0) for a fresh run."""
        self.best_state = copy.deepcopy(self.task.model.state_dict())  # what a run that never improves keeps
        saved = self.checkpoint.load() if self.checkpoint is not None else None
        if not saved:
            return 1, 0
        if saved.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{self.checkpoint.directory} was written by an earlier version of compress; "
                                  "finish it with that version, or start over (overwrite)")
        self.task.model.load_state_dict(saved["model"])
        self.task.load_state_dict(saved["task"])
        self.step, self.best, self.best_epoch = saved["step"], saved["best"], saved["best_epoch"]
        self.best_state, self.history, self.sums = saved["best_state"], saved["history"], saved["sums"]
        self.stopped = saved["stopped"]
        # nothing draws from the global RNG before the next step: dropout continues
        set_rng_state(saved["rng"], self.task.batches.device)
        self.reporter.restored(self.history)
        if self.stopped:
            return self.epochs + 1, 0  # the saved run had already stopped: only restore its best weights
        return saved["epoch"], saved["batch"]

    def _finish(self, start: float) -> LoopResult:
        if self.keep == "best":
            self.task.model.load_state_dict(self.best_state)
        best_row = self.history[self.best_epoch - 1] if self.best_epoch else {}
        best_valid = {m[len("valid_"):]: v for m, v in best_row.items() if m.startswith("valid_")}
        return LoopResult(self.best_epoch, best_valid, self.history, time.perf_counter() - start)

    def _diverged(self, message: str) -> Exception:
        """The task's error for a diverged run, with the best weights put back into the model."""
        kept = f"the weights of epoch {self.best_epoch} are kept" if self.best_epoch else \
            "no epoch finished; the initial weights are kept"
        self.task.model.load_state_dict(self.best_state)
        return self.task.diverged(f"{message}; {kept}; lower the learning rate (`lr`)", self.best_state, self.history)

    def _over_budget(self, start: float) -> bool:
        return distributed.sum_floats(_past(start, self.max_minutes))[0] > 0


class _Pending:
    """Statistics of the steps since the last sync point, summed on the device."""

    def __init__(self) -> None:
        self.values: Dict[str, torch.Tensor] = {}
        self.rows = self.steps = 0

    def add(self, stats: Dict[str, torch.Tensor], rows: int) -> None:
        """One step's statistics; its ``loss`` (the batch mean) is summed weighted by the batch's rows."""
        for name, value in stats.items():
            value = value.detach().float() * (rows if name == "loss" else 1)
            self.values[name] = value if name not in self.values else self.values[name] + value
        self.rows += rows
        self.steps += 1

    def read(self) -> Tuple[Dict[str, float], int, int]:
        """({name: sum}, rows, steps) since the last read, in one host read; then empty. ``bad`` is 1
        when a step's loss was not finite (a NaN or inf stays in the sum)."""
        if "loss" in self.values:
            self.values["bad"] = (~torch.isfinite(self.values["loss"])).float()
        names = list(self.values)
        numbers = torch.stack([self.values[n] for n in names]).cpu().tolist() if names else []
        out = (dict(zip(names, numbers)), self.rows, self.steps)
        self.values, self.rows, self.steps = {}, 0, 0
        return out


def _past(start: float, max_minutes: Optional[float]) -> bool:
    return max_minutes is not None and time.perf_counter() - start > 60.0 * max_minutes


@torch.no_grad()
def _finite_scores(model: nn.Module, histories: torch.Tensor) -> bool:
    """Whether the model scores these histories (a few users) with finite numbers (one host read):
    finite but huge weights can still overflow every score."""
    with evaluating(model):
        scores = model.predict(histories)[:, 1:]  # column 0 is padding, -inf by design
    return bool(torch.isfinite(scores).all())


def _finite_weights(model: nn.Module) -> bool:
    """Whether every weight is finite (one host read)."""
    checks = [torch.isfinite(p.detach()).all() for p in model.parameters()]
    return bool(torch.stack(checks).all()) if checks else True


def check_hooks(reporter: Optional[Reporter], checkpoint: Optional[Checkpointer]) -> None:
    """What ``fit`` and ``search`` are given to report to and to checkpoint into, checked before any work."""
    if reporter is not None:
        instance("reporter", reporter, Reporter, "e.g. compress.RichReporter(), or None to log")
    if checkpoint is not None:
        instance("checkpoint", checkpoint, Checkpointer, "e.g. Checkpointer(directory) from compress.engine.checkpoint")


def check_finite_weights(model: nn.Module, what: str = "the model") -> None:
    """Refuse a model that starts out with NaN or inf weights (one host read when it does not): training
    or searching it would only stop at its first step with a divergence blamed on the learning rate."""
    if _finite_weights(model):
        return
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    raise ConfigError(f"{what} holds NaN or inf in {bad[0]}{more}; start from finite weights: a fresh model, or "
                      "an earlier checkpoint of this one")
