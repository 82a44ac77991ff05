"""Train/eval modes handed back as they came, also when the work in between fails.

A caller who put their model in eval mode and then calls ``predict`` after a fit, an evaluation or a FLOPs
count must not get dropout's random scores; nor must a failed evaluation leave a training model in eval mode.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

from torch import nn


@contextmanager
def kept_modes(*modules: Optional[nn.Module]) -> Iterator[None]:
    """Give ``modules`` back as they came: each one's train/eval mode and its parameters' requires_grad.
    Training switches the model to train mode and freezes a teacher; the caller gets both back."""
    kept = [(m, m.training, [p.requires_grad for p in m.parameters()]) for m in modules if m is not None]
    try:
        yield
    finally:
        for module, training, grads in kept:
            module.train(training)
            for param, grad in zip(module.parameters(), grads):
                param.requires_grad_(grad)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block, then in the mode it came in (requires_grad is untouched)."""
    training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(training)
