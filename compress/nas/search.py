"""Bilevel search (DNS-Rec §2.6): weights on training batches, α/β every f steps on validation
batches (paper, Eq. 14) or on the current training batch (official code), under the dynamic
resource constraint

    L = CE + λ · L_RC,   L_RC = (L_t / L) · Σ_l q_l Σ_k p_k FLOPs(k, l) / FLOPs(full)

where FLOPs(k, l) is the analytic inference cost of width k exiting after layer l (embedding,
l layers and the scoring head), normalised by the full supernet so λ means the same on every
dataset, and L_t is the depth of the current hard choice argmax β, refreshed every f steps.
The decision is (argmax α, argmax β) at the best validation epoch, restricted to candidates within
``max_flops`` when a hard budget is given.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn.functional as F

from compress.arch import ArchSpec
from compress.data.batching import pad_right
from compress.data.dataset import SequenceDataset
from compress.engine.batches import TrainingBatches
from compress.engine.checkpoint import Checkpointer
from compress.engine.loop import Loop, Task
from compress.engine.losses import StepLoss
from compress.engine.precision import Precision
from compress.engine.progress import NullReporter, Reporter
from compress.engine.train import adam, adopt_vocabulary, shard_loss, weight_step
from compress.errors import ConfigError
from compress.measure.evaluation import EVAL_SEED, eval_set, score_set
from compress.nas.config import PROXYLESS_EXPONENT, SearchConfig
from compress.nas.supernet import Supernet
from compress.runtime import distributed
from compress.runtime.devices import resolve_device


def budget_flops(max_flops: Optional[Union[float, str]], supernet: Supernet) -> Optional[float]:
    """Absolute FLOPs budget from "50%" (of the full supernet) or a number; checked for feasibility."""
    if max_flops is None:
        return None
    full = supernet.flops_of(0, supernet.full.layers - 1)
    text = str(max_flops).strip()
    try:
        budget = full * float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(f"`max_flops` {max_flops!r} is neither a percentage like 50% nor a number") from None
    smallest = float(supernet.flops.min())
    if budget < smallest:
        raise ConfigError(f"`max_flops` {max_flops} ({budget:.3g} FLOPs) is below the smallest candidate "
                          f"({smallest:.3g} FLOPs = {100 * smallest / full:.1f}% of the full model)")
    return budget


def resource_loss(ce: Optional[torch.Tensor], l_rc: torch.Tensor, flops: torch.Tensor, ref_flops: float,
                  cfg: SearchConfig) -> Optional[torch.Tensor]:
    """The α/β objective from this rank's CE share (None when its share is empty): CE + λ·L_RC, or
    ProxylessNAS's CE · (log F / log F_ref)^0.6 on the expected FLOPs F. Every rank adds the same
    L_RC, so its share is 1/world: the gradient summed over the ranks counts it once."""
    if cfg.penalty == "proxyless":
        return None if ce is None else ce * (torch.log(flops) / math.log(ref_flops)) ** PROXYLESS_EXPONENT
    l_rc = cfg.tradeoff * l_rc / distributed.world_size()
    return l_rc if ce is None else ce + l_rc


def decide(supernet: Supernet, budget: Optional[float]) -> Dict:
    """argmax α, argmax β, restricted to candidates within ``budget`` when one is given."""
    la = F.log_softmax(supernet.alpha.logits.detach().double().cpu(), 0)
    lb = F.log_softmax(supernet.beta.logits.detach().double().cpu(), 0)
    free = (supernet.alpha.choice(), supernet.beta.choice())
    score = la[:, None] + lb[None, :]  # (K, L) joint log-preference
    if budget is not None:
        score = score.masked_fill(supernet.flops.cpu() > budget, float("-inf"))
    flat = int(score.argmax())
    k, l = divmod(flat, supernet.full.layers)
    note = None
    if (k, l) != free:
        note = (f"the budget moved the decision from width {supernet.widths[free[0]]} x {free[1] + 1} layers "
                f"({supernet.flops_of(*free):.3g} FLOPs) to the best feasible candidate")
    return {"width": k, "depth": l, "flops": supernet.flops_of(k, l), "note": note}


@dataclass
class SearchResult:
    supernet: Supernet
    decision: Dict
    arch: ArchSpec
    best_epoch: int
    history: List[Dict] = field(default_factory=list)
    config: Optional[SearchConfig] = None
    seconds: float = 0.0

    def slice(self) -> torch.nn.Module:
        """The decided dense model with the supernet's leading weight slices."""
        return self.supernet.slice(self.decision["width"], self.decision["depth"])

    def export(self, path: str, dataset: SequenceDataset, model: Optional[torch.nn.Module] = None,
               overwrite: bool = False, fmt: str = "safetensors") -> torch.nn.Module:
        """Write a MODEL_DIR for ``model`` (default: the sliced decision, e.g. after retraining it
        pass the retrained one) in ``fmt`` (safetensors, torchscript or onnx, as ``compress export``)
        and return the dense model."""
        from compress.store.export import save_model_dir

        model = model if model is not None else self.slice()
        save_model_dir(model, path, fmt, overwrite, card={"kind": "api", "search": {
            "decision": self.decision, "best_epoch": self.best_epoch}}, adapter=self.supernet.adapter,
            vocabulary=model.vocabulary or dataset.vocabulary(), dataset_stats=dataset.stats())
        return model

    def card(self) -> Dict:
        sn = self.supernet
        return {"decision": {**self.decision, "arch": self.arch.to_dict()}, "best_epoch": self.best_epoch,
                "seconds": self.seconds, "options": asdict(self.config) if self.config else None,
                "widths": [w._asdict() for w in sn.widths], "candidates": sn.candidates(),
                "full_flops": sn.flops_of(0, sn.full.layers - 1), "history": self.history}


class ValidBatches:
    """Shuffled (history, validation target) batches for the architecture steps, on the device; batch
    ``i`` is a pure function of ``i`` (pass r over the users follows a permutation drawn on the host
    from a generator seeded by r, moved once per pass), so a resumed search draws the batches an
    uninterrupted one would."""

    def __init__(self, dataset: SequenceDataset, max_len: int, batch_size: int, seed: int, device) -> None:
        histories, targets = dataset.eval_pairs("valid")
        self.items, self.targets = pad_right(histories, max_len).to(device), torch.from_numpy(targets).to(device)
        self.batch_size, self.seed = batch_size, seed
        self.per_pass = math.ceil(len(self.items) / batch_size)
        self.order = (None, None)  # (pass, permutation on the device)

    def __getitem__(self, i: int):
        r, j = divmod(i, self.per_pass)
        if self.order[0] != r:
            perm = torch.randperm(len(self.items), generator=torch.Generator().manual_seed(self.seed + r))
            self.order = (r, perm.to(self.items.device))
        idx = self.order[1][j * self.batch_size:(j + 1) * self.batch_size]
        return self.items[idx], self.targets[idx]


class SearchTask(Task):
    """The bilevel search as a loop task: each step samples p, q and takes a weight step of the
    supernet; every ``arch_every`` steps it also takes an α/β step (``arch_step``). Gumbel noise is
    drawn on the host per epoch, from a generator seeded by (seed, epoch), and moved to the device once."""

    def __init__(self, supernet: Supernet, dataset: SequenceDataset, cfg: SearchConfig, device: torch.device) -> None:
        self.model, self.cfg, self.device = supernet.to(device), cfg, device
        self.budget = budget_flops(cfg.max_flops, supernet)
        self.batches = TrainingBatches(supernet, dataset, cfg.batch_size, cfg.seed, device)
        self.w_opt = adam(supernet.weight_parameters(), cfg.lr, 0.0, device)
        self.a_opt = adam(supernet.architecture_parameters(), cfg.arch_lr, 0.0, device)
        self.step_loss = StepLoss(cfg.loss, cfg.negatives, cfg.seed, dataset)
        self.amp = Precision(cfg.precision, torch.device(device))
        self.arch_data = ValidBatches(dataset, supernet.max_len, cfg.batch_size, cfg.seed + 1, device)
        self.valid = eval_set(dataset, "valid", "full", supernet.max_len, EVAL_SEED, device)
        self.schedule, self.full_flops = cfg.schedule(), supernet.flops_of(0, supernet.full.layers - 1)
        self.ref_flops = self.budget or self.full_flops
        self.forward = torch.compile(supernet) if cfg.compile else supernet
        self.arch_steps, self.epoch_arch_steps = 0, 0
        self.decision: Optional[Dict] = None  # of the epoch just validated
        self.best_decision: Optional[Dict] = None
        self.noise: Optional[torch.Tensor] = None

    def begin_epoch(self, epoch: int) -> None:
        sn = self.model
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        # per step: the weight step's p, q and the α/β step's p, q
        self.noise = torch.rand(len(self.batches), 2, len(sn.widths) + sn.full.layers, generator=gen).to(self.device)
        self.epoch_arch_steps = 0

    def sample(self, tau: float, index: int, which: int):
        """p (K,), q (L,): this step's soft selection (``which`` 0: weight step, 1: α/β step)."""
        sn, cfg = self.model, self.cfg
        u = self.noise[index, which]
        k = len(sn.widths)
        return sn.alpha.sample(tau, cfg.selection, uniforms=u[:k]), sn.beta.sample(tau, cfg.selection, uniforms=u[k:])

    def step(self, step: int, index: int, items: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        sn = self.model
        tau = sn.tau = self.schedule(step)
        p, q = (w.detach() for w in self.sample(tau, index, 0))
        ce = weight_step(sn, lambda x: self.forward(x, p, q), self.w_opt, self.amp, self.step_loss, items, targets,
                         step)
        stats = {} if ce is None else {"loss": ce}
        if step % self.cfg.arch_every == 0:
            stats["penalty"] = self.arch_step(*self.sample(tau, index, 1), items, targets, step)
            self.arch_steps += 1
            self.epoch_arch_steps += 1  # counted, not derived: the global step makes an epoch's share vary
        return stats

    def arch_step(self, p: torch.Tensor, q: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                  step: int) -> torch.Tensor:
        """One Adam step of α and β on CE (a validation batch, paper Eq. 14, or this training batch)
        plus the resource penalty; returns the penalty L_RC (a device scalar). The weights do not move."""
        sn, cfg = self.model, self.cfg
        l_t = sn.beta.logits.detach().argmax() + 1  # the depth of the current hard choice, on the device
        if cfg.arch_batches == "valid":
            a_items, a_tgt = self.arch_data[self.arch_steps]
            part = distributed.shard(len(a_items))
            a_ce = None if part.start == part.stop else F.cross_entropy(
                sn.predict(a_items[part], p, q), a_tgt[part]) * distributed.share(part.stop - part.start, len(a_items))
        else:
            a_ce = shard_loss(self.step_loss, sn, lambda x: sn(x, p, q), items, targets, step)
        share = sn.expected_flops(p, q)  # E[FLOPs] / FLOPs(full)
        penalty = (l_t / sn.full.layers) * share
        self.a_opt.zero_grad(set_to_none=True)
        arch_loss = resource_loss(a_ce, penalty, share * self.full_flops, self.ref_flops, cfg)
        if arch_loss is not None:
            arch_loss.backward()
        self.w_opt.zero_grad(set_to_none=True)  # α/β steps never move the weights
        distributed.sum_gradients(sn.architecture_parameters())
        self.a_opt.step()
        return penalty.detach()

    def validate(self) -> Dict[str, float]:
        return score_set(self.model, self.valid, self.cfg.k)

    def record(self, sums: Dict[str, float]) -> Dict[str, Any]:
        sn = self.model
        self.decision = decide(sn, self.budget)
        p_soft, q_soft = (torch.softmax(c.logits.detach().cpu() / sn.tau, 0) for c in (sn.alpha, sn.beta))
        return {"penalty": sums.get("penalty", 0.0) / max(1, self.epoch_arch_steps), "tau": sn.tau,
                "alpha": sn.alpha.logits.detach().cpu().tolist(), "beta": sn.beta.logits.detach().cpu().tolist(),
                "p": p_soft.tolist(), "q": q_soft.tolist(), "exp_flops": float(sn.expected_flops(p_soft, q_soft)),
                "decision": [self.decision["width"], self.decision["depth"] + 1],
                "decision_flops": self.decision["flops"]}

    def improved(self, epoch: int) -> None:
        self.best_decision = self.decision

    def state_dict(self) -> Dict[str, Any]:
        return {"w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "scaler": self.amp.scaler.state_dict(), "arch_steps": self.arch_steps,
                "epoch_arch_steps": self.epoch_arch_steps, "best_decision": self.best_decision}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.amp.scaler.load_state_dict(state["scaler"])
        self.arch_steps, self.epoch_arch_steps = state["arch_steps"], state["epoch_arch_steps"]
        self.best_decision = state["best_decision"]


def search(supernet: Supernet, dataset: SequenceDataset, cfg: Optional[SearchConfig] = None,
           device: Union[None, str, torch.device] = None, reporter: Optional[Reporter] = None,
           checkpoint: Optional[Checkpointer] = None) -> SearchResult:
    """Run the bilevel search; on return ``supernet`` holds the state of the best validation epoch.
    With a ``checkpoint`` the search saves after every epoch (and every ``checkpoint.every`` steps) and
    resumes a saved state exactly (weights, α/β, optimisers, τ step, RNG, data position)."""
    cfg = cfg or SearchConfig()
    adopt_vocabulary(supernet.backbone, dataset)
    device = resolve_device(device or "auto") if not isinstance(device, torch.device) else device
    reporter = reporter or NullReporter()
    torch.manual_seed(cfg.seed + distributed.rank())
    task = SearchTask(supernet, dataset, cfg, device)
    reporter.begin({"widths": [w._asdict() for w in supernet.widths], "layers": supernet.full.layers})
    loop = Loop(task, cfg.epochs, cfg.patience, f"ndcg@{cfg.k}", cfg.max_minutes, reporter, checkpoint)
    result = loop.run()
    supernet.tau = cfg.schedule()(max(loop.step - 1, 0))
    best = task.best_decision
    arch = supernet.arch_for(best["width"], best["depth"])
    return SearchResult(supernet, best, arch, result.best_epoch, result.history, cfg, result.seconds)
