"""Typed errors. Every failure a user can cause raises one of these with a one-line message
that names the problem and the fix; the CLI turns them into exit code 2."""


class CompressError(Exception):
    """Base class for every error raised on bad input."""


class DataError(CompressError):
    """A dataset path, file or format that cannot be read as interactions."""


class ConfigError(CompressError):
    """A bad option, recipe key, search space or architecture."""


class CheckpointError(CompressError):
    """A missing, corrupt or mismatched artifact (config.json / model.safetensors)."""


class DivergedError(CompressError):
    """A training run's loss or weights became non-finite. ``last_good`` holds the state dict of the
    best epoch so far (or the initial state) and ``history`` the epochs so far."""

    def __init__(self, message: str, last_good=None, history=None) -> None:
        super().__init__(message)
        self.last_good, self.history = last_good, history or []


class SearchError(DivergedError):
    """The architecture search could not produce a decision: it diverged."""


class Interrupted(CompressError):
    """The run stopped on SIGINT or SIGTERM: after writing a checkpoint it can resume from, or, when the
    stop came after its last step, after publishing its complete output (the message says which)."""
