"""Resumable runs: atomic checkpoints of everything a training or search loop needs to continue
exactly where it stopped, without pickles.

A checkpoint is a directory with ``tensors.safetensors`` (model, optimisers, best weights, RNG
states) and ``state.json`` (counters, history, early-stopping state, and the nested structure of
the optimiser states with tensors replaced by references). It is written to a temporary directory
and renamed, so a run killed at any moment leaves either the previous or the new checkpoint, whole.

A run in progress keeps its checkpoint beside its output: ``RUN_DIR.partial/`` (the final RUN_DIR is
only created, atomically, when the run completes). Within ``with checkpointer:`` SIGINT asks the loop to
stop at the next step boundary, write a checkpoint and raise ``Interrupted``; so does SIGTERM (a
preemption, or ``torchrun`` passing a Ctrl-C on to its workers). A stop that comes after the last step
(in the final evaluation, or while the output is published within ``publishing``) lets the run finish,
then raises ``Interrupted`` saying the output is complete: it is never lost, and never leaves the output
beside a checkpoint that would resume it.

In a distributed run every rank calls ``save`` at the same step (the loops agree on stops); rank 0
writes, with every rank's RNG state, and each rank resumes with its own.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from typing import Any, Dict, Iterator, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from compress.bounds import whole
from compress.errors import CheckpointError, Interrupted
from compress.files import atomic_dir, first_line, read_json, recover, signals_deferred, write_json
from compress.layout import CHECKPOINT, LOCK, PARTIAL, RUN_META
from compress.runtime import distributed

TENSORS, STATE = "tensors.safetensors", "state.json"
REF = "__tensor__"


def flatten(obj: Any, prefix: str, tensors: Dict[str, torch.Tensor]) -> Any:
    """``obj`` with every tensor moved into ``tensors`` under a dotted key and replaced by a reference."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {REF: prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten(v, f"{prefix}.{i}", tensors)] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def unflatten(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and REF in obj:
        return tensors[obj[REF]]
    if isinstance(obj, dict) and "__dict__" in obj:  # keys keep their type (optimiser state uses int keys)
        return {k: unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


class Checkpointer:
    """Saves and restores a loop's state in ``directory``; ``every`` > 0 also saves every that many steps."""

    def __init__(self, directory: str, every: int = 0) -> None:
        self.directory, self.every = os.fspath(directory), whole("every", every, minimum=0)
        self.stop_requested = False  # set by the signal handler, at any moment
        self.stopping = False  # set by the loop from every rank's stop_requested, once per step
        self.complete = False  # set once the run's output is published and its partial directory removed
        self.meta: Optional[Dict[str, Any]] = None  # written with the first checkpoint: a run that fails
        # before it (bad data, a bad option) leaves nothing behind

    def exists(self) -> bool:
        path = os.path.join(self.directory, CHECKPOINT)
        recover(path)  # a kill between the two renames of a publish
        return os.path.exists(os.path.join(path, STATE))

    def due(self, step: int) -> bool:
        return self.stopping or (self.every > 0 and step % self.every == 0)

    def save(self, state: Dict[str, Any]) -> None:
        """Write ``state`` (rank 0), then raise ``Interrupted`` if a signal arrived on any rank. Every
        rank calls it at the same step, so agreeing on the stop here is one more collective."""
        self.stopping = distributed.sum_floats(self.stopping or self.stop_requested)[0] > 0
        if "rng" in state:
            state = {**state, "rng": distributed.gather_objects(state["rng"])}  # one per rank, in rank order
        if distributed.is_main():
            self.write(state)
        if self.stopping:
            distributed.barrier()  # the other ranks stop once rank 0's checkpoint is whole, not while it writes
            raise Interrupted(f"interrupted; checkpoint written to {self.directory}; continue with `resume`")

    def write(self, state: Dict[str, Any]) -> None:
        tensors: Dict[str, torch.Tensor] = {}
        flat = flatten(state, "s", tensors)
        try:
            if self.meta is not None and not os.path.exists(os.path.join(self.directory, RUN_META)):
                os.makedirs(self.directory, exist_ok=True)
                write_json(os.path.join(self.directory, RUN_META), self.meta)
            with atomic_dir(os.path.join(self.directory, CHECKPOINT), overwrite=True) as tmp:
                save_file(tensors, os.path.join(tmp, TENSORS))
                write_json(os.path.join(tmp, STATE), {"state": flat})
        except (OSError, SafetensorError) as exc:
            reason = getattr(exc, "strerror", None) or first_line(exc)
            if self._kept():
                then = "the last one written is kept: free space or fix permissions, then `resume`"
            else:
                then = "no checkpoint of this run was written, so it cannot be resumed: free space or fix " \
                       "permissions, then start it again"
            raise CheckpointError(f"cannot write a checkpoint in {self.directory} ({reason}); {then}") from None

    def _kept(self) -> bool:
        """Whether a checkpoint survives a failed write (the disk that refused the write may refuse more)."""
        try:
            return self.exists()
        except OSError:
            return False

    def load(self) -> Optional[Dict[str, Any]]:
        if not self.exists():
            return None
        path = os.path.join(self.directory, CHECKPOINT)
        try:
            tensors = load_file(os.path.join(path, TENSORS))
        except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
            raise CheckpointError(f"{path}/{TENSORS} cannot be read ({exc}); the checkpoint is corrupt") from None
        state = unflatten(read_json(os.path.join(path, STATE))["state"], tensors)
        if "rng" not in state:
            return state
        if isinstance(state["rng"], dict):  # written before checkpoints held one RNG state per rank
            state["rng"] = [state["rng"]]
        if len(state["rng"]) != distributed.world_size():
            raise CheckpointError(f"{path} was written by {len(state['rng'])} process(es); resume it with as many "
                                  f"(torchrun --nproc_per_node={len(state['rng'])}), not {distributed.world_size()}")
        return {**state, "rng": state["rng"][distributed.rank()]}

    def read_meta(self) -> Dict[str, Any]:
        return read_json(os.path.join(self.directory, RUN_META))

    def remove(self) -> None:
        """The run is complete: its partial directory goes."""
        if distributed.is_main():
            shutil.rmtree(self.directory, ignore_errors=True)
        self.complete = True

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        """The block publishes the run's output; then the partial directory goes. SIGINT and SIGTERM wait
        for both (``signals_deferred``), so a stop leaves either the output alone or the checkpoint alone,
        never the output beside a checkpoint whose ``resume`` would find it already there."""
        with signals_deferred():
            yield
            self.remove()

    def clear(self) -> None:
        """A fresh run: what an earlier run left goes, the lock of this one stays."""
        if distributed.is_main() and os.path.isdir(self.directory):
            for name in os.listdir(self.directory):
                if name != LOCK and not name.startswith(LOCK + "."):  # another run taking the lock: it finds ours
                    path = os.path.join(self.directory, name)
                    with contextlib.suppress(FileNotFoundError):
                        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    def __enter__(self) -> "Checkpointer":
        """Within ``with``: SIGINT (Ctrl-C) and SIGTERM set ``stop_requested`` instead of raising mid-step
        (in the main thread, the only one where handlers can be set)."""
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """A stop the loop could not act on (it came after the last step) is acted on now: ``Interrupted``
        saying what was done, rather than a stop that is lost or one that kills the process mid-publish."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if exc_type is None and self.stop_requested:
            raise Interrupted(self._stopped())

    def _stopped(self) -> str:
        """What a stop after the last step leaves: the finished output, or the checkpoint to resume from."""
        if self.complete:
            out = self.directory[:-len(PARTIAL)] if self.directory.endswith(PARTIAL) else self.directory
            return f"interrupted; the run had completed: {out} was written whole before the stop"
        if self._kept():
            return f"interrupted; checkpoint kept in {self.directory}; continue with `resume`"
        return "interrupted before the first checkpoint; nothing of this run was written"

    def _on_signal(self, signum, frame) -> None:
        if self.stop_requested and not self.complete:  # a second Ctrl-C: stop now (a complete run ends anyway)
            raise KeyboardInterrupt
        self.stop_requested = True


def rng_state(device: torch.device) -> Dict[str, torch.Tensor]:
    """The global RNG states a run on ``device`` draws from: the CPU's, and on CUDA its own GPU's alone. The
    states of every visible GPU once were saved, and a machine with fewer visible GPUs could not take them back."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)  # (bytes,) uint8
    return state


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    """Restore what ``rng_state`` saved, for a run on ``device``. A checkpoint written before it kept the run's
    GPU alone holds a list, one state per GPU visible then: the entry of the GPU this run uses is taken."""
    torch.set_rng_state(state["torch"])
    if device.type != "cuda" or "cuda" not in state:  # a CPU run draws from no GPU's generator
        return
    cuda = state["cuda"]
    if isinstance(cuda, list):
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= len(cuda):
            raise CheckpointError(f"this run uses GPU {index}, but its checkpoint (from an earlier compress) holds "
                                  f"the RNG states of {len(cuda)} GPU(s), those visible when it was written: resume "
                                  "with those GPUs visible (CUDA_VISIBLE_DEVICES) and the run's device")
        cuda = cuda[index]
    torch.cuda.set_rng_state(cuda, device)


def partial_dir(out: str) -> str:
    """Where a run writing ``out`` keeps its checkpoint until ``out`` is complete."""
    return os.path.abspath(out).rstrip(os.sep) + PARTIAL
