"""A function replayed at fixed shapes: on CUDA one CUDA graph per input shape, so that a call costs
one graph launch instead of one launch per kernel. At batch 1 a small model is bound by those
launches, not by its FLOPs: without graphs a 6x smaller slice runs barely faster than the dense model.

The function must be free of host synchronisation and data-dependent shapes (``predict`` of every
built-in model is). Each new input shape is captured once (a few warm-up calls on a side stream,
then the capture), later calls copy their input into the captured buffer and replay. Elsewhere
(CPU) the function is called as it is: there is no launch overhead to remove.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch

WARMUP = 3


class CudaGraphs:
    """How a shape is captured on CUDA (``torch.cuda.graph``); tests stand in another."""

    def capture(self, fn: Callable[[torch.Tensor], torch.Tensor],
                static_in: torch.Tensor) -> Tuple[torch.Tensor, Callable[[], None]]:
        """(the output buffer, replay) of ``fn`` captured on ``static_in``."""
        side = torch.cuda.Stream(static_in.device)
        side.wait_stream(torch.cuda.current_stream(static_in.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP):  # lazy initialisation (cuBLAS handles, autotuning) outside the graph
                fn(static_in)
        torch.cuda.current_stream(static_in.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = fn(static_in)
        return static_out, graph.replay


class Replayed:
    """``fn`` (tensor -> tensor, no gradient) replayed per input shape on CUDA, called as is elsewhere."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                 graphs: Optional[CudaGraphs] = None) -> None:
        self.fn, self.device = fn, torch.device(device)
        self.graphs = graphs or (CudaGraphs() if self.device.type == "cuda" else None)
        self.captured: Dict[Tuple, Tuple[torch.Tensor, torch.Tensor, Callable[[], None]]] = {}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.graphs is None:
            return self.fn(x)
        key = (tuple(x.shape), x.dtype)
        if key not in self.captured:
            static_in = x.clone()
            static_out, replay = self.graphs.capture(self.fn, static_in)
            self.captured[key] = (static_in, static_out, replay)
        static_in, static_out, replay = self.captured[key]
        static_in.copy_(x)
        replay()
        return static_out.clone()  # the buffer is overwritten by the next replay
