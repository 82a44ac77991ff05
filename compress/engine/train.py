"""Dense training, the loop's first task: Adam, the next-item (or cloze) loss over every position, early
stopping on validation NDCG@k. ``weight_step`` is the step itself, shared with the search's weight steps."""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
from torch import nn

from compress.backbones.transformer import SequenceTransformer
from compress.bounds import instance
from compress.data.dataset import SequenceDataset
from compress.engine.batches import TrainingBatches
from compress.engine.checkpoint import Checkpointer
from compress.engine.config import TrainConfig
from compress.engine.loop import Loop, LoopResult, Task, check_finite_weights, check_hooks
from compress.engine.losses import Distillation, StepLoss
from compress.engine.precision import Precision
from compress.engine.progress import LogReporter, Reporter
from compress.errors import ConfigError, DivergedError
from compress.measure.evaluation import EVAL_SEED, check_model_and_data, eval_set, score_set
from compress.nn.modes import kept_modes
from compress.runtime import distributed
from compress.runtime.devices import as_device


def adam(params: Iterable[nn.Parameter], lr: float, weight_decay: float, device: torch.device) -> torch.optim.Adam:
    """Adam, fused into one kernel per step on CUDA."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=torch.device(device).type == "cuda")


def shard_loss(step_loss: StepLoss, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
               items: torch.Tensor, targets: torch.Tensor, step: int) -> Optional[torch.Tensor]:
    """This process's share of the batch's mean loss; summed over the processes of a distributed run
    (each takes its contiguous rows of the same global batch) it is the global mean. None when this
    process's share holds no row."""
    if distributed.world_size() == 1:
        return step_loss(model, forward(items), targets, step)
    part = distributed.shard(len(items))
    if part.start == part.stop:
        return None
    total = (targets > 0).sum()  # the global batch's targets, counted on the device
    return step_loss(model, forward(items[part]), targets[part], step, "sum") / total


def weight_step(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
                amp: Precision, step_loss: StepLoss, items: torch.Tensor, targets: torch.Tensor,
                step: int) -> Optional[torch.Tensor]:
    """One optimiser step of the weights on a batch (B, N): the loss under ``amp``'s autocast, its
    gradients summed over the processes, the update. Returns the loss (a device scalar), no host read."""
    with amp.autocast():
        loss = shard_loss(step_loss, model, forward, items, targets, step)
    amp.step(loss, optimizer)
    return loss


class DenseTask(Task):
    """Training one dense backbone with ``weight_step``."""

    def __init__(self, model: nn.Module, dataset: SequenceDataset, cfg: TrainConfig, device: torch.device,
                 teacher: Optional[nn.Module] = None) -> None:
        self.model, self.cfg = model.to(device), cfg
        self.batches = TrainingBatches(model, dataset, cfg.batch_size, cfg.seed, device)
        self.optimizer = adam(model.parameters(), cfg.lr, cfg.weight_decay, device)
        self.step_loss = StepLoss(cfg.loss, cfg.negatives, cfg.seed, dataset)
        self.amp = Precision(cfg.precision, torch.device(device))
        self.forward = torch.compile(model) if cfg.compile else model
        if teacher is not None:
            distilled = Distillation(self.step_loss, model, teacher.to(device), cfg.distill, cfg.distill_temperature)
            self.step_loss, self.forward = distilled, distilled.forward(self.forward)
        self.valid = eval_set(dataset, "valid", "full", model.max_len, EVAL_SEED, device)

    def step(self, step: int, index: int, items: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        loss = weight_step(self.model, self.forward, self.optimizer, self.amp, self.step_loss, items, targets, step)
        return {} if loss is None else {"loss": loss}

    def validate(self) -> Dict[str, float]:
        return score_set(self.model, self.valid, self.cfg.k, self.cfg.eval_batch_size)

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.amp.scaler.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.amp.scaler.load_state_dict(state["scaler"])

    def diverged(self, message: str, best_state: Dict[str, torch.Tensor], history: List[Dict]) -> Exception:
        return DivergedError(message, best_state, history)


def adopt_vocabulary(model: nn.Module, dataset: SequenceDataset) -> None:
    """A model meets its training data: the items must be numbered alike; a model that names no
    vocabulary yet takes the data's (training on it makes row i that item)."""
    check_model_and_data(model, dataset)
    if getattr(model, "vocabulary", None) is None:
        model.vocabulary = dataset.vocabulary()


def fit(model: nn.Module, dataset: SequenceDataset, cfg: Optional[TrainConfig] = None, device=None,
        reporter: Optional[Reporter] = None, checkpoint: Optional[Checkpointer] = None,
        teacher: Optional[nn.Module] = None) -> LoopResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch, in the mode
    (train or eval) it came in, and a ``teacher`` is given back as it came too. With a
    ``checkpoint``, state is saved after every epoch (and every ``checkpoint.every`` steps) and a
    saved state is resumed from, batch for batch, so a killed run ends as an uninterrupted one would.
    With ``cfg.distill`` > 0 the loss also pulls the model's scores towards the frozen ``teacher``'s
    (knowledge distillation: the dense model a smaller one was pruned or searched from)."""
    cfg = TrainConfig() if cfg is None else cfg
    instance("the model", model, SequenceTransformer, "fit trains a compress model (compress.get_backbone, "
             "result.slice() of a search, compress.load); a Supernet is trained by compress.search")
    instance("cfg", cfg, TrainConfig, "e.g. compress.TrainConfig(epochs=20)")
    check_hooks(reporter, checkpoint)
    if cfg.distill > 0 and teacher is None:
        raise ConfigError(f"distill {cfg.distill} needs a teacher: pass the dense model to distil from, or distill 0")
    if teacher is not None and cfg.distill == 0:
        raise ConfigError("a teacher was given with distill 0, so it would teach nothing: set distill > 0")
    check_finite_weights(model)
    if teacher is not None:
        instance("the teacher", teacher, SequenceTransformer, "the dense model to distil from")
        check_finite_weights(teacher, "the teacher")
    adopt_vocabulary(model, dataset)
    device = as_device(device, next(model.parameters()).device)
    torch.manual_seed(cfg.seed + distributed.rank())  # dropout differs per rank, as on different rows it should
    reporter = reporter or LogReporter()  # silent until the caller configures logging
    with kept_modes(model, teacher):
        task = DenseTask(model, dataset, cfg, device, teacher)
        return Loop(task, cfg.epochs, cfg.patience, f"ndcg@{cfg.k}", cfg.max_minutes, reporter, checkpoint).run()
