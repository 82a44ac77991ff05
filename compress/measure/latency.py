"""Inference cost measured on the real model: latency (median of repeats after warm-up; eager, and
on CUDA also replayed as CUDA graphs) and peak memory (parameters plus the largest set of tensors
alive at once during ``predict``)."""
from __future__ import annotations

import contextlib
import statistics
import time
import weakref
from typing import Dict, Iterable, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from compress.nn.modes import evaluating
from compress.runtime.devices import model_device
from compress.runtime.replay import Replayed


def _batch(model: torch.nn.Module, batch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(batch)
    items = torch.randint(1, model.n_items + 1, (batch, model.max_len), generator=gen)
    return items.to(model_device(model))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def latencies_ms(models: List[torch.nn.Module], batch: int, repeats: int = 30, warmup: int = 5,
                 graphs: bool = False) -> List[float]:
    """Median wall time of one ``predict`` on ``batch`` full-length histories, in milliseconds, for each
    model; with ``graphs``, replayed as a CUDA graph (``compress.runtime.replay``; the same call
    elsewhere). Repeats alternate between the models, so load from elsewhere on a shared machine hits
    all of them alike and their ratio stays meaningful."""
    with contextlib.ExitStack() as modes:
        inputs, calls = [], []
        for model in models:
            modes.enter_context(evaluating(model))
            inputs.append(_batch(model, batch))
            calls.append(Replayed(model.predict, inputs[-1].device) if graphs else model.predict)
            for _ in range(warmup):
                calls[-1](inputs[-1])
            _sync(inputs[-1].device)
        times: List[List[float]] = [[] for _ in models]
        for _ in range(repeats):
            for call, items, bucket in zip(calls, inputs, times):
                t0 = time.perf_counter()
                call(items)
                _sync(items.device)
                bucket.append(time.perf_counter() - t0)
    return [1000.0 * statistics.median(t) for t in times]


def latency_ms(model: torch.nn.Module, batch: int, repeats: int = 30, warmup: int = 5) -> float:
    return latencies_ms([model], batch, repeats, warmup)[0]


class _LiveBytes(TorchDispatchMode):
    """Tracks bytes of tensor storages created during the forward pass and frees them on release.
    Storages of ``existing`` tensors (weights, the input) are skipped: an op that returns a view of
    them (a slice, a transpose) shares their memory and allocates nothing."""

    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.seen = set()
        self.existing = {t.untyped_storage().data_ptr() for t in existing}

    def _release(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self.seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.seen and key not in self.existing:
                    self.seen.add(key)
                    self.live += storage.nbytes()
                    weakref.finalize(storage, self._release, key, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


@torch.no_grad()
def peak_memory_bytes(model: torch.nn.Module, batch: int) -> Dict[str, int]:
    """Parameters + peak activations of one ``predict`` on ``batch`` full-length histories. On CUDA the
    allocator's own peak is used; on CPU the storages created during the pass are tracked."""
    items = _batch(model, batch)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    with evaluating(model):
        if items.device.type == "cuda":
            torch.cuda.synchronize(items.device)
            torch.cuda.reset_peak_memory_stats(items.device)
            base = torch.cuda.memory_allocated(items.device)
            model.predict(items)
            torch.cuda.synchronize(items.device)
            activations = torch.cuda.max_memory_allocated(items.device) - base
        else:
            tracker = _LiveBytes([*model.parameters(), *model.buffers(), items])
            with tracker:
                model.predict(items)
            activations = tracker.peak
    return {"params": params, "activations": int(activations), "total": int(params + activations)}

