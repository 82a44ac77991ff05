"""A reporter that kills a training loop at a chosen step, for the resume tests."""
from __future__ import annotations

from compress.engine.progress import Reporter


class Crash(Exception):
    pass


class CrashAt(Reporter):
    """Raises ``Crash`` at training step ``at`` (counting from 1), like a process dying mid-epoch; in a
    distributed run every rank raises at the same step."""

    def __init__(self, at: int) -> None:
        self.at, self.steps = at, 0

    def step(self, loss: float, n: int, steps: int = 1) -> None:
        self.steps += steps
        if self.steps >= self.at:
            raise Crash


class StopAt(Reporter):
    """Asks ``checkpoint`` to stop at training step ``at``, as Ctrl-C does: the loop sees it at the next
    step, saves after that one and raises ``Interrupted`` (when that is an epoch's last step, the checkpoint
    holds the whole epoch, not yet recorded)."""

    def __init__(self, checkpoint, at: int) -> None:
        self.checkpoint, self.at, self.steps = checkpoint, at, 0

    def step(self, loss: float, n: int, steps: int = 1) -> None:
        self.steps += steps
        if self.steps >= self.at:
            self.checkpoint.stop_requested = True
