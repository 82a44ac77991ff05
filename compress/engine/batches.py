"""Training batches built where the model lives.

Every training window of a dataset (a few MB even for a million interactions) is moved to the device
once per run; an epoch's order, and the cloze masking draws, are drawn on the host from a generator
seeded by (seed, epoch) and moved once per epoch. Batches are then slices of device tensors: the host
never waits for the device to build one, and a resumed epoch, or one run on another device, sees
exactly the same batches.
"""
from __future__ import annotations

import math
from typing import Iterator, Tuple

import torch

from compress.backbones.objectives import training_batch, training_data
from compress.data.dataset import SequenceDataset
from compress.errors import ConfigError


class TrainingBatches:
    """The shuffled training batches of ``model`` on ``dataset``: ``epoch(e)`` yields (index, items,
    targets), each (B, N) on ``device``."""

    def __init__(self, model, dataset: SequenceDataset, batch_size: int, seed: int, device: torch.device) -> None:
        inputs, targets = training_data(model, dataset.train_sequences())  # (W, N) each
        if len(inputs) == 0:
            raise ConfigError("no training pairs: every user has fewer than 4 interactions")
        self.model, self.batch_size, self.seed, self.device = model, batch_size, seed, torch.device(device)
        self.inputs, self.targets = inputs.to(self.device), targets.to(self.device)

    @property
    def windows(self) -> int:
        return len(self.inputs)

    def __len__(self) -> int:
        """Steps per epoch."""
        return math.ceil(self.windows / self.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Tuple[int, torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` from batch ``skip`` on."""
        gen = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.windows, generator=gen).to(self.device)
        cloze = self.model.style.objective == "cloze"
        draws = torch.rand(self.inputs.shape, generator=gen).to(self.device) if cloze else None  # in epoch order
        for i, lo in enumerate(range(0, self.windows, self.batch_size)):
            if i < skip:
                continue
            idx = order[lo:lo + self.batch_size]
            items, targets = self.inputs[idx], self.targets[idx]  # (B, N)
            if cloze:
                items, targets = training_batch(self.model, items, targets, draws[lo:lo + self.batch_size])
            yield i, items, targets
