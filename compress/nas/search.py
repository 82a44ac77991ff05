"""Bilevel search (DNS-Rec §2.6): weights on training batches, the controllers every f steps on
validation batches (paper, Eq. 14) or on the current training batch (official code), under the
dynamic resource constraint

    L = CE + λ · L_RC,   L_RC = (L_t / L) · Σ p_k q_l r_a s_g FLOPs(k, l, a, g) / FLOPs(reference)

where FLOPs(k, l, a, g) is the analytic inference cost of width k exiting after layer l with
attention kind a and gates of depth g (embedding, l layers and the scoring head), normalised by a
reference so λ means the same on every dataset: the dense input model by default, or the full
supernet (the paper). L_t is the depth of the current hard choice argmax β, refreshed every f steps.
With a hard budget B the penalty may instead pull to the budget, L_RC = |E[FLOPs]/B − 1| with E
over the controllers' softmax(logits/τ) (``penalty: budget``): the search settles at the budget
rather than under it, and the decision is its own argmax instead of a rescue, from the tails of a
distribution collapsed onto an infeasible candidate, by the hard budget.
The paper searches α (width) and β (depth) only; here the attention kind and the gates' depth are
controllers too, so the penalty can drop what they cost. The decision is the joint argmax of the
controllers at the best validation epoch, restricted to candidates within ``max_flops`` when a hard
budget is given; or at the last epoch (``decide: last``): validation accuracy of the supernet's soft
mixture rises while a pull to the budget is still under way, so its best epoch can stop the pull
partway, short of the budget it was given.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from compress.arch import ArchSpec
from compress.bounds import instance
from compress.data.batching import pad_right
from compress.data.dataset import SequenceDataset
from compress.engine.batches import TrainingBatches
from compress.engine.checkpoint import Checkpointer
from compress.engine.loop import Loop, Task, check_hooks
from compress.engine.losses import StepLoss
from compress.engine.precision import Precision
from compress.engine.progress import LogReporter, Reporter
from compress.engine.train import adam, adopt_vocabulary, shard_loss, weight_step
from compress.errors import ConfigError
from compress.measure.evaluation import EVAL_SEED, eval_set, score_set
from compress.nas.config import PROXYLESS_EXPONENT, SearchConfig, read_budget
from compress.nas.supernet import Supernet
from compress.nn.modes import kept_modes
from compress.runtime import distributed
from compress.runtime.devices import as_device, resolve_device


def budget_flops(max_flops: Optional[Union[float, str]], supernet: Supernet,
                 reference: str = "input") -> Optional[float]:
    """Absolute FLOPs budget from "50%" (of the ``reference`` model: the dense input model or the full
    supernet) or a number; checked for feasibility."""
    if max_flops is None:
        return None
    full = supernet.reference_flops(reference)
    number, percent = read_budget(max_flops)
    budget = full * number / 100 if percent else number
    smallest = float(supernet.flops.min())
    if budget < smallest:
        index = [int(i) for i in torch.unravel_index(supernet.flops.argmin(), supernet.flops.shape)]
        raise ConfigError(f"`max_flops` {max_flops} ({budget:,.0f} FLOPs) is below the smallest candidate, "
                          f"{supernet.arch_for(*index).label()} at {smallest:,.0f} FLOPs ({100 * smallest / full:.1f}% "
                          f"of the {reference} model); give at least that")
    return budget


def budget_gap(flops: torch.Tensor, budget: float) -> torch.Tensor:
    """L_RC of ``penalty: budget``: the expected FLOPs' relative distance from the budget, on either side
    (TuNAS's absolute reward, Bender et al. 2020): a one-sided excess lets the controllers' momentum
    carry them far under the budget, and nothing brings them back once τ has frozen them."""
    return (flops / budget - 1.0).abs()


def resource_loss(ce: Optional[torch.Tensor], l_rc: torch.Tensor, flops: Optional[torch.Tensor], ref_flops: float,
                  cfg: SearchConfig) -> Optional[torch.Tensor]:
    """The α/β objective from this rank's CE share (None when its share is empty): CE + λ·L_RC, or
    ProxylessNAS's CE · (log F / log F_ref)^0.6 on the expected FLOPs F (``flops``, which only this
    form reads). Every rank adds the same L_RC, so its share is 1/world: the gradient summed over the
    ranks counts it once."""
    if cfg.penalty == "proxyless":
        return None if ce is None else ce * proxyless_factor(flops, ref_flops)
    l_rc = cfg.tradeoff * l_rc / distributed.world_size()
    return l_rc if ce is None else ce + l_rc


def proxyless_factor(flops: torch.Tensor, ref_flops: float) -> torch.Tensor:
    """ProxylessNAS's resource factor (log F / log F_ref)^0.6, which multiplies the CE."""
    return (torch.log(flops) / math.log(ref_flops)) ** PROXYLESS_EXPONENT


# what each penalty form's per-epoch figure is (the search card's "penalty", the progress line's label)
PENALTY_TERMS = {"dnsrec": "L_RC", "budget": "gap", "proxyless": "factor"}


def decide(supernet: Supernet, budget: Optional[float]) -> Dict:
    """The joint argmax of the controllers (width, depth, attention kind, gate depth), restricted to
    candidates within ``budget`` when one is given."""
    logs = [F.log_softmax(c.logits.detach().double().cpu(), 0) for c in supernet.controllers]
    score = logs[0][:, None, None, None] + logs[1][None, :, None, None] + logs[2][None, None, :, None] + \
        logs[3][None, None, None, :]  # (K, L', A, G) joint log-preference
    free = tuple(c.choice() for c in supernet.controllers)
    if budget is not None:
        score = score.masked_fill(supernet.flops.cpu() > budget, float("-inf"))
    choice = tuple(int(i) for i in torch.unravel_index(score.argmax(), score.shape))
    note = None
    if choice != free:
        note = (f"the budget moved the decision from {supernet.arch_for(*free).label()} "
                f"({supernet.flops_of(*free):.3g} FLOPs) to the best feasible candidate")
    k, l, a, g = choice
    return {"width": k, "depth": l, "attention": a, "gates": g, "label": supernet.arch_for(*choice).label(),
            "flops": supernet.flops_of(*choice), "note": note}


def searched(supernet: Supernet) -> Dict[str, bool]:
    """Which choices the search made (True) and which the space fixed (a single choice)."""
    names = ("width", "depth", "attention", "gate_layers")
    return {name: c.logits.numel() > 1 for name, c in zip(names, supernet.controllers)}


def decision_index(decision: Dict) -> tuple:
    """(k, l, a, g) of a decision; a decision saved before attention and gates were searched names
    neither (its supernet fixes them)."""
    return decision["width"], decision["depth"], decision.get("attention"), decision.get("gates")


@dataclass
class SearchResult:
    supernet: Supernet
    decision: Dict
    arch: ArchSpec
    best_epoch: int  # of the best validation
    decision_epoch: int  # whose controllers decided and whose state the supernet holds (``decide``)
    history: List[Dict] = field(default_factory=list)
    config: Optional[SearchConfig] = None
    seconds: float = 0.0

    def slice(self, supernet: Optional[Supernet] = None) -> torch.nn.Module:
        """The decided dense model with the leading weight slices of ``supernet``: by default the
        searched one's (weight transfer, paper §2.7); or the model searched from, wrapped again as it
        was (``compress.wrap(model, space, ..., reorder=...)``), to start the retraining from the weights
        it was trained to (prune, then fine-tune: ``compress retrain --from-init``)."""
        if supernet is None:
            return self.supernet.slice(*decision_index(self.decision))
        instance("the supernet to slice from", supernet, Supernet,
                 "the model searched from, wrapped again: compress.wrap(model, space)")
        if supernet.space != self.supernet.space or supernet.input_arch != self.supernet.input_arch:
            raise ConfigError("the supernet to slice the decision from was not wrapped as the searched one was: "
                              "its search space or input model differs; wrap the model searched from with the "
                              "same space")
        return supernet.slice(*decision_index(self.decision))

    def export(self, path: str, dataset: SequenceDataset, model: Optional[torch.nn.Module] = None,
               overwrite: bool = False, fmt: str = "safetensors") -> torch.nn.Module:
        """Write a MODEL_DIR for ``model`` (default: the sliced decision, e.g. after retraining it
        pass the retrained one) in ``fmt`` (safetensors, torchscript or onnx, as ``compress export``),
        its card with the decision, the budget and the cost of the model the search started from, and
        return the dense model."""
        from compress.store.export import reference_cost, save_model_dir, trained_on

        instance("dataset", dataset, SequenceDataset, "the data the model was trained on, from compress.load_dataset")
        model = model if model is not None else self.slice()
        self._check_decided(model)
        vocabulary, stats = trained_on(model, None, dataset)
        search = {"decision": self.decision, "best_epoch": self.best_epoch, "decision_epoch": self.decision_epoch,
                  "budget": self.budget()}
        card = {"kind": "api", "search": search,
                "input": reference_cost(self.supernet.backbone, self.supernet.input_arch)}  # what it was compressed from
        save_model_dir(model, path, fmt, overwrite, card=card,
                       adapter=self.supernet.adapter, vocabulary=vocabulary, dataset_stats=stats)
        return model

    def _check_decided(self, model: torch.nn.Module) -> None:
        """Refuse a model other than the decision: its card would record its own shape and FLOPs under the
        search's decision. Another gate depth is the decision retrained with other gates (``regated``)."""
        arch = getattr(model, "arch", None)
        if not isinstance(arch, ArchSpec):
            return  # not a compress model at all: save_model_dir names what it takes
        differs = [f"{f.name} {getattr(arch, f.name)} (decided: {getattr(self.arch, f.name)})" for f in fields(arch)
                   if f.name != "gate_layers" and getattr(arch, f.name) != getattr(self.arch, f.name)]
        if differs:
            raise ConfigError(f"the model exported is not the search's decision {self.arch.label()}: its "
                              f"{', '.join(differs)}; export result.slice() or that model retrained (any gate depth)")

    def budget(self) -> Dict[str, Any]:
        """The hard budget the decision kept to (``flops`` None without one) and what it refers to."""
        sn, cfg = self.supernet, self.config or SearchConfig()
        return {"max_flops": cfg.max_flops, "reference": cfg.flops_reference,
                "reference_flops": sn.reference_flops(cfg.flops_reference),
                "flops": budget_flops(cfg.max_flops, sn, cfg.flops_reference)}

    def card(self) -> Dict:
        sn = self.supernet
        return {"decision": {**self.decision, "arch": self.arch.to_dict()}, "best_epoch": self.best_epoch,
                "decision_epoch": self.decision_epoch, "seconds": self.seconds,
                "options": asdict(self.config) if self.config else None,
                "widths": [w._asdict() for w in sn.widths], "attention": list(sn.kinds),
                "gate_layers": list(sn.gate_depths), "depths": list(sn.depths),
                "head_pruning": sn.space.head_pruning, "searched": searched(sn),
                "candidates": sn.candidates(),
                "full_flops": sn.reference_flops("supernet"), "input_flops": sn.input_flops,
                "input_arch": sn.input_arch.to_dict(),
                "budget": self.budget(), "tau": [row["tau"] for row in self.history], "history": self.history}


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
        supernet.recompute = cfg.recompute
        self.budget = budget_flops(cfg.max_flops, supernet, cfg.flops_reference)
        self.batches = TrainingBatches(supernet, dataset, cfg.batch_size, cfg.seed, device)
        self.w_opt = adam(supernet.weight_parameters(), cfg.lr, 0.0, device)
        self.a_opt = adam(supernet.architecture_parameters(), cfg.arch_lr, 0.0, device)
        self.step_loss = StepLoss(cfg.loss, cfg.negatives, cfg.seed, dataset)
        self.amp = Precision(cfg.precision, torch.device(device))
        self.arch_data = ValidBatches(dataset, supernet.max_len, cfg.batch_size, cfg.seed + 1, device)
        self.valid = eval_set(dataset, "valid", "full", supernet.max_len, EVAL_SEED, device)
        self.schedule = cfg.schedule()
        self.full_flops = supernet.reference_flops(cfg.flops_reference)  # what L_RC is a share of
        self.ref_flops = self.budget or self.full_flops
        self.epoch = 1
        self.forward = torch.compile(supernet) if cfg.compile else supernet
        self.arch_steps, self.epoch_arch_steps = 0, 0
        self.decision: Optional[Dict] = None  # of the epoch just validated
        self.best_decision: Optional[Dict] = None
        self.noise: Optional[torch.Tensor] = None

    def begin_epoch(self, epoch: int, done: int = 0) -> None:
        sn = self.model
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        # per step: the weight step's choices and the controllers' step's, one uniform per choice
        sizes = sum(c.logits.numel() for c in sn.controllers)
        self.noise = torch.rand(len(self.batches), 2, sizes, generator=gen).to(self.device)
        self.epoch = epoch
        if not done:  # a resume mid-epoch keeps the restored count, as the loop keeps the penalty's sum
            self.epoch_arch_steps = 0

    def sample(self, tau: float, index: int, which: int) -> Tuple[torch.Tensor, ...]:
        """p (K,), q (L,), r (A,), s (G,): this step's soft selection (``which`` 0: weight step, 1: the
        controllers' step)."""
        sn, cfg = self.model, self.cfg
        u = self.noise[index, which]
        out, at_ = [], 0
        for c in sn.controllers:
            n = c.logits.numel()
            out.append(c.sample(tau, cfg.selection, uniforms=u[at_:at_ + n]))
            at_ += n
        return tuple(out)

    def step(self, step: int, index: int, items: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        sn = self.model
        tau = sn.tau = self.schedule(step, self.epoch)
        choice = tuple(w.detach() for w in self.sample(tau, index, 0))
        ce = weight_step(sn, lambda x: self.forward(x, *choice), self.w_opt, self.amp, self.step_loss, items,
                         targets, step)
        stats = {} if ce is None else {"loss": ce}
        if step % self.cfg.arch_every == 0:
            stats["penalty"] = self.arch_step(*self.sample(tau, index, 1), items, targets, step)
            self.arch_steps += 1
            self.epoch_arch_steps += 1  # counted, not derived: the global step makes an epoch's share vary
        return stats

    def arch_step(self, p: torch.Tensor, q: torch.Tensor, r: torch.Tensor, s: torch.Tensor, items: torch.Tensor,
                  targets: torch.Tensor, step: int) -> torch.Tensor:
        """One Adam step of the controllers on CE (a validation batch, paper Eq. 14, or this training
        batch) plus the resource penalty; returns the penalty L_RC (a device scalar). The weights do
        not move."""
        sn, cfg = self.model, self.cfg
        # the depth of the current hard choice, on the device (take: a 0-d tensor index would read it on the host)
        l_t = sn.exit_depths.take(sn.beta.logits.detach().argmax())
        if cfg.arch_batches == "valid":
            a_items, a_tgt = self.arch_data[self.arch_steps]
            part = distributed.shard(len(a_items))
            a_ce = None if part.start == part.stop else F.cross_entropy(
                sn.predict(a_items[part], p, q, r, s), a_tgt[part]) * \
                distributed.share(part.stop - part.start, len(a_items))
        else:
            a_ce = shard_loss(self.step_loss, sn, lambda x: sn(x, p, q, r, s), items, targets, step)
        sampled = None  # this step's sample's expected FLOPs, which the paper and proxyless forms use
        if cfg.penalty == "budget":  # on the controllers' expectation (softmax of logits/τ), not this step's
            # Gumbel sample: the mean excess of noisy samples would hold the search under the budget by their spread
            tempered = (c.sample(sn.tau, "softmax") for c in sn.controllers)
            penalty = budget_gap(sn.expected_flops(*tempered, reference=cfg.flops_reference) * self.full_flops,
                                 self.ref_flops)
        else:
            share = sn.expected_flops(p, q, r, s, cfg.flops_reference)  # E[FLOPs] / FLOPs(reference)
            penalty, sampled = (l_t / sn.full.layers) * share, share * self.full_flops
        self.a_opt.zero_grad(set_to_none=True)
        arch_loss = resource_loss(a_ce, penalty, sampled, self.ref_flops, cfg)
        if arch_loss is not None:
            arch_loss.backward()
        self.w_opt.zero_grad(set_to_none=True)  # α/β steps never move the weights
        distributed.sum_gradients(sn.architecture_parameters())
        self.a_opt.step()
        if cfg.penalty == "proxyless":  # the figure this form optimises: the factor on the CE, not L_RC
            return proxyless_factor(sampled, self.ref_flops).detach()
        return penalty.detach()

    def validate(self) -> Dict[str, float]:
        return score_set(self.model, self.valid, self.cfg.k)

    def record(self, sums: Dict[str, float]) -> Dict[str, Any]:
        sn = self.model
        self.decision = decide(sn, self.budget)
        logits = [c.logits.detach().cpu() for c in sn.controllers]
        soft = [torch.softmax(x / sn.tau, 0) for x in logits]
        return {"penalty": sums.get("penalty", 0.0) / max(1, self.epoch_arch_steps),
                "penalty_term": PENALTY_TERMS[self.cfg.penalty], "tau": sn.tau,
                "alpha": logits[0].tolist(), "beta": logits[1].tolist(), "attention_logits": logits[2].tolist(),
                "gate_logits": logits[3].tolist(), "p": soft[0].tolist(), "q": soft[1].tolist(),
                "r": soft[2].tolist(), "s": soft[3].tolist(),
                "exp_flops": float(sn.expected_flops(*soft, reference=self.cfg.flops_reference)),
                "decision": [self.decision["width"], sn.depths[self.decision["depth"]]],
                "decision_label": self.decision["label"], "decision_flops": self.decision["flops"]}

    def improved(self, epoch: int) -> None:
        self.best_decision = self.decision

    def state_dict(self) -> Dict[str, Any]:
        return {"w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "scaler": self.amp.scaler.state_dict(), "arch_steps": self.arch_steps,
                "epoch_arch_steps": self.epoch_arch_steps, "best_decision": self.best_decision,
                "tau": self.model.tau}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """The saved state, τ included: a checkpoint taken at an epoch's last step resumes with no step
        left to set τ, and that epoch was recorded and validated at the fresh supernet's τ = 1 (checkpoints
        written before τ was saved keep that)."""
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.amp.scaler.load_state_dict(state["scaler"])
        self.arch_steps, self.epoch_arch_steps = state["arch_steps"], state["epoch_arch_steps"]
        self.best_decision = state["best_decision"]
        self.model.tau = state.get("tau", self.model.tau)


def search(supernet: Supernet, dataset: SequenceDataset, cfg: Optional[SearchConfig] = None,
           device: Union[None, str, torch.device] = None, reporter: Optional[Reporter] = None,
           checkpoint: Optional[Checkpointer] = None) -> SearchResult:
    """Run the bilevel search; on return ``supernet`` holds the state of the epoch that decided: the best
    validation epoch, or the last one (``cfg.decide``), in the mode (train or eval) it came in.
    With a ``checkpoint`` the search saves after every epoch (and every ``checkpoint.every`` steps) and
    resumes a saved state exactly (weights, α/β, optimisers, τ step, RNG, data position)."""
    cfg = SearchConfig() if cfg is None else cfg
    instance("the model searched", supernet, Supernet, "wrap it first: compress.wrap(model)")
    instance("cfg", cfg, SearchConfig, "e.g. compress.SearchConfig(tradeoff=0.1)")
    check_hooks(reporter, checkpoint)
    adopt_vocabulary(supernet.backbone, dataset)
    device = as_device(device, resolve_device("auto"))
    reporter = reporter or LogReporter()
    torch.manual_seed(cfg.seed + distributed.rank())
    with kept_modes(supernet):
        task = SearchTask(supernet, dataset, cfg, device)
        reporter.begin({"widths": [w._asdict() for w in supernet.widths], "depths": list(supernet.depths)})
        loop = Loop(task, cfg.epochs, cfg.patience, f"ndcg@{cfg.k}", cfg.max_minutes, reporter, checkpoint,
                    cfg.decide)
        result = loop.run()
    last = cfg.decide == "last"
    epoch = len(result.history) if last else max(result.best_epoch, 1)
    supernet.tau = result.history[epoch - 1]["tau"]  # predict() mixes as the deciding epoch validated
    decision = decide(supernet, task.budget) if last else task.best_decision  # the controllers the loop left
    arch = supernet.arch_for(*decision_index(decision))
    return SearchResult(supernet, decision, arch, result.best_epoch, epoch, result.history, cfg, result.seconds)
