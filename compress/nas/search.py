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

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F

from compress.runtime import distributed
from compress.arch import ArchSpec
from compress.runtime.devices import resolve_device
from compress.data.batching import pad_right
from compress.engine.checkpoint import Checkpointer, resume_point, rng_state, set_rng_state
from compress.data.dataset import SequenceDataset
from compress.errors import ConfigError, SearchError
from compress.measure.evaluation import evaluate
from compress.backbones.objectives import training_data
from compress.nas.controllers import SELECTIONS, TemperatureSchedule
from compress.nas.supernet import Supernet
from compress.engine.progress import NullReporter, Reporter
from compress.engine.losses import StepLoss, check_loss
from compress.engine.precision import Precision, check_precision
from compress.engine.train import epoch_batches, over_budget, shard_loss, step_flags

ARCH_BATCHES = ("valid", "train")
PENALTIES = ("dnsrec", "proxyless")
PROXYLESS_EXPONENT = 0.6  # β of ProxylessNAS's CE · (log F / log F_ref)^β


@dataclass
class SearchConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3  # weights (paper Table 2)
    arch_lr: float = 1e-2  # α/β: Adam moves logits ≈ lr per step, so 1e-3 barely moves them in 10 epochs
    arch_every: int = 1  # f; one all-position batch holds ~B·N next-item pairs, about as many as 10 of the
    # paper's per-prefix batches, so f=1 here matches the paper's f=10 in α/β steps per training pair
    tradeoff: float = 0.1  # λ (paper); the official code uses 0.01
    selection: str = "gumbel"  # paper; "softmax" = the official code's tempered softmax without noise
    arch_batches: str = "valid"  # paper; "train" = the official code's current training batch
    tau_start: float = 1.0
    tau_rate: float = 5e-5
    tau_min: float = 0.01
    max_flops: Optional[Union[float, str]] = None  # "50%" of the full supernet, or absolute FLOPs
    patience: int = 10
    seed: int = 2024
    k: int = 10
    max_minutes: Optional[float] = None  # wall-clock budget: stop at the step that exceeds it, after validating
    loss: str = "full"  # the weight steps' loss: full softmax, or sampled "uniform" / "inbatch"
    negatives: int = 100
    precision: str = "fp32"  # autocast of the weight steps: fp32, bf16 or fp16 (CUDA); α/β steps stay fp32
    penalty: str = "dnsrec"  # CE + λ·L_RC (paper), or "proxyless": CE · (log F / log F_ref)^0.6, F_ref the
    # hard budget when one is given, else the full supernet; λ is unused there (ProxylessNAS, Cai et al. 2019)

    def __post_init__(self) -> None:
        check_loss(self.loss, self.negatives)
        check_precision(self.precision)
        if self.selection not in SELECTIONS:
            raise ConfigError(f"unknown selection {self.selection!r}; choose gumbel or softmax")
        if self.penalty not in PENALTIES:
            raise ConfigError(f"unknown penalty {self.penalty!r}; choose dnsrec or proxyless")
        if self.arch_batches not in ARCH_BATCHES:
            raise ConfigError(f"unknown arch_batches {self.arch_batches!r}; choose valid or train")
        for name in ("epochs", "batch_size", "arch_every", "patience", "k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.tradeoff < 0:
            raise ConfigError(f"tradeoff λ must be >= 0, got {self.tradeoff}")

    def schedule(self) -> TemperatureSchedule:
        return TemperatureSchedule(self.tau_start, self.tau_rate, self.tau_min)


def budget_flops(max_flops: Optional[Union[float, str]], supernet: Supernet) -> Optional[float]:
    """Absolute FLOPs budget from "50%" (of the full supernet) or a number; checked for feasibility."""
    if max_flops is None:
        return None
    full = supernet.flops_of(0, supernet.full.layers - 1)
    text = str(max_flops).strip()
    try:
        budget = full * float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(f"--max-flops {max_flops!r} is neither a percentage like 50% nor a number") from None
    smallest = float(supernet.flops.min())
    if budget < smallest:
        raise ConfigError(f"--max-flops {max_flops} ({budget:.3g} FLOPs) is below the smallest candidate "
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
               overwrite: bool = False) -> torch.nn.Module:
        """Write a MODEL_DIR for ``model`` (default: the sliced decision, e.g. after retraining it
        pass the retrained one) and return the dense model."""
        from compress.store.export import save_model_dir

        model = model if model is not None else self.slice()
        save_model_dir(model, dataset, path, overwrite=overwrite, card={"kind": "api", "search": {
            "decision": self.decision, "best_epoch": self.best_epoch}}, adapter=self.supernet.adapter)
        return model

    def card(self) -> Dict:
        sn = self.supernet
        return {"decision": {**self.decision, "arch": self.arch.to_dict()}, "best_epoch": self.best_epoch,
                "seconds": self.seconds, "options": asdict(self.config) if self.config else None,
                "widths": [w._asdict() for w in sn.widths], "candidates": sn.candidates(),
                "full_flops": sn.flops_of(0, sn.full.layers - 1), "history": self.history}


class ValidBatches:
    """Shuffled (history, validation target) batches for the architecture steps; batch ``i`` is a pure
    function of ``i`` (pass r of the data uses a permutation seeded by r), so a resumed search draws
    the batches an uninterrupted one would."""

    def __init__(self, dataset: SequenceDataset, max_len: int, batch_size: int, seed: int) -> None:
        histories, targets = dataset.eval_pairs("valid")
        self.items, self.targets = pad_right(histories, max_len), torch.from_numpy(targets)
        self.batch_size, self.seed = batch_size, seed
        self.per_pass = math.ceil(len(self.items) / batch_size)

    def __getitem__(self, i: int):
        r, j = divmod(i, self.per_pass)
        order = torch.randperm(len(self.items), generator=torch.Generator().manual_seed(self.seed + r))
        idx = order[j * self.batch_size:(j + 1) * self.batch_size]
        return self.items[idx], self.targets[idx]


def search(supernet: Supernet, dataset: SequenceDataset, cfg: Optional[SearchConfig] = None,
           device: Union[None, str, torch.device] = None, reporter: Optional[Reporter] = None,
           checkpoint: Optional[Checkpointer] = None) -> SearchResult:
    """Run the bilevel search; on return ``supernet`` holds the state of the best validation epoch.
    With a ``checkpoint`` the search saves after every epoch (and every ``checkpoint.every`` steps) and
    resumes a saved state exactly (weights, α/β, optimisers, τ step, RNG, data position)."""
    cfg = cfg or SearchConfig()
    device = resolve_device(device or "auto") if not isinstance(device, torch.device) else device
    reporter = reporter or NullReporter()
    torch.manual_seed(cfg.seed + distributed.rank())
    budget = budget_flops(cfg.max_flops, supernet)
    reporter.begin({"widths": [w._asdict() for w in supernet.widths], "layers": supernet.full.layers})
    supernet.to(device)
    inputs, targets = training_data(supernet, dataset.train_sequences())
    if len(inputs) == 0:
        raise ConfigError("no training pairs: every user has fewer than 4 interactions")
    w_opt = torch.optim.Adam(supernet.weight_parameters(), lr=cfg.lr)
    a_opt = torch.optim.Adam(supernet.architecture_parameters(), lr=cfg.arch_lr)
    noise = torch.Generator().manual_seed(cfg.seed)
    step_loss = StepLoss(cfg.loss, cfg.negatives, cfg.seed, dataset)
    amp = Precision(cfg.precision, device)
    arch_data = ValidBatches(dataset, supernet.max_len, cfg.batch_size, cfg.seed + 1)
    schedule, n_layers = cfg.schedule(), supernet.full.layers
    full_flops = supernet.flops_of(0, n_layers - 1)
    ref_flops = budget or full_flops
    key = f"ndcg@{cfg.k}"
    run = {"step": 0, "arch_steps_total": 0, "l_t": n_layers, "best": -1.0, "best_epoch": 0, "best_dec": None,
           "sums": {"ce": 0.0, "penalty": 0.0, "seen": 0, "arch_steps": 0}, "stopped": False}
    history: List[Dict] = []
    best_state = copy.deepcopy(supernet.state_dict())
    saved = checkpoint.load() if checkpoint else None
    if saved:
        supernet.load_state_dict(saved["supernet"])
        w_opt.load_state_dict(saved["w_opt"])
        a_opt.load_state_dict(saved["a_opt"])
        amp.scaler.load_state_dict(saved["scaler"])
        noise.set_state(saved["noise"])
        run, history, best_state = saved["run"], saved["history"], saved["best_state"]
        supernet.tau = schedule(max(run["step"] - 1, 0))
        set_rng_state(saved["rng"])  # nothing draws from the global RNG before the next step
    first_epoch, done = resume_point(saved)
    if run["stopped"]:
        first_epoch = cfg.epochs + 1
    sums = run["sums"]

    def state(epoch: int, batch: int) -> Dict:
        return {"epoch": epoch, "batch": batch, "supernet": supernet.state_dict(), "w_opt": w_opt.state_dict(),
                "a_opt": a_opt.state_dict(), "scaler": amp.scaler.state_dict(), "noise": noise.get_state(),
                "run": run, "history": history, "best_state": best_state, "rng": rng_state()}

    start = time.perf_counter()
    for epoch in range(first_epoch, cfg.epochs + 1):
        supernet.train()
        reporter.epoch_start(epoch, cfg.epochs, math.ceil(len(inputs) / cfg.batch_size))
        t0 = time.perf_counter()
        if not done:
            sums.update(ce=0.0, penalty=0.0, seen=0, arch_steps=0)
        gen = torch.Generator().manual_seed(cfg.seed + epoch)
        for i, items, tgt in epoch_batches(supernet, inputs, targets, cfg.batch_size, gen, device, done):
            step = run["step"]
            tau = supernet.tau = schedule(step)
            p = supernet.alpha.sample(tau, cfg.selection, noise).detach()
            q = supernet.beta.sample(tau, cfg.selection, noise).detach()
            with amp.autocast():
                ce, ce_sum = shard_loss(step_loss, supernet, lambda x: supernet(x, p, q), items, tgt, step)
            try:
                ce_sum, late = step_flags(ce, ce_sum, checkpoint, start, cfg.max_minutes)
            except SearchError as exc:
                raise SearchError(f"{exc} at step {step} (epoch {epoch}); lower --lr (the checkpoint of epoch "
                                  f"{run['best_epoch']} is kept)", best_state, history) from None
            amp.step(ce, w_opt)
            if step % cfg.arch_every == 0:
                run["l_t"] = supernet.beta.choice() + 1
                p = supernet.alpha.sample(tau, cfg.selection, noise)
                q = supernet.beta.sample(tau, cfg.selection, noise)
                if cfg.arch_batches == "valid":
                    a_items, a_tgt = arch_data[run["arch_steps_total"]]
                    part = distributed.shard(len(a_items))
                    a_ce = None if part.start == part.stop else F.cross_entropy(
                        supernet.predict(a_items[part].to(device), p, q), a_tgt[part].to(device)) * \
                        distributed.share(part.stop - part.start, len(a_items))
                else:
                    a_ce = shard_loss(step_loss, supernet, lambda x: supernet(x, p, q), items, tgt, step)[0]
                share = supernet.expected_flops(p, q)  # E[FLOPs] / FLOPs(full)
                penalty = (run["l_t"] / n_layers) * share
                a_opt.zero_grad(set_to_none=True)
                arch_loss = resource_loss(a_ce, penalty, share * full_flops, ref_flops, cfg)
                if arch_loss is not None:
                    arch_loss.backward()
                w_opt.zero_grad(set_to_none=True)  # α/β steps never move the weights
                distributed.sum_gradients(supernet.architecture_parameters())
                a_opt.step()
                sums["penalty"] += penalty.item()
                sums["arch_steps"] += 1  # counted, not derived: the global step makes an epoch's share vary
                run["arch_steps_total"] += 1
            sums["ce"] += ce_sum
            sums["seen"] += len(items)
            run["step"] += 1
            reporter.step(ce_sum / len(items), len(items))
            if checkpoint and checkpoint.due(run["step"]):
                checkpoint.save(state(epoch, i + 1))
            if late:
                break  # the budget is spent: validate this partial epoch and stop
        done = 0
        train_s = time.perf_counter() - t0
        valid = evaluate(supernet, dataset, "valid", "full", cfg.k, seed=cfg.seed, device=device)
        dec = decide(supernet, budget)
        p_soft, q_soft = (t.detach().cpu() for t in supernet.selection())
        row = {"epoch": epoch, "loss": sums["ce"] / sums["seen"], "penalty": sums["penalty"] / max(1, sums["arch_steps"]),
               "tau": supernet.tau, "alpha": supernet.alpha.logits.detach().cpu().tolist(),
               "beta": supernet.beta.logits.detach().cpu().tolist(), "p": p_soft.tolist(), "q": q_soft.tolist(),
               "exp_flops": float(supernet.expected_flops(p_soft, q_soft)),
               "decision": [dec["width"], dec["depth"] + 1], "decision_flops": dec["flops"],
               "seqs_per_s": sums["seen"] / train_s, "train_seconds": train_s,
               **{f"valid_{m}": v for m, v in valid.items()}}
        history.append(row)
        improved = valid[key] > run["best"]
        if improved:
            run.update(best=valid[key], best_epoch=epoch, best_dec=dec)
            best_state = copy.deepcopy(supernet.state_dict())
        reporter.epoch_end(row, improved)
        run["stopped"] = epoch - run["best_epoch"] >= cfg.patience or over_budget(start, cfg.max_minutes)
        if checkpoint:
            checkpoint.save(state(epoch + 1, 0))
        if run["stopped"]:
            break
    supernet.load_state_dict(best_state)
    best_dec = run["best_dec"]
    arch = supernet.arch_for(best_dec["width"], best_dec["depth"])
    return SearchResult(supernet, best_dec, arch, run["best_epoch"], history, cfg, time.perf_counter() - start)
