"""What a run is about to do, as a plain dict for ``Reporter.header``: the data (and in which order
its histories run), the device and precision, the model with its parameters and FLOPs, and for a
search every candidate with its cost, the budget and λ. Shown before the first step, so a wrong
dataset, device or search space is seen in seconds, not after the last epoch."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import torch

from compress.arch import ArchSpec
from compress.data.dataset import SequenceDataset
from compress.engine.config import TrainConfig
from compress.engine.progress import depth_labels
from compress.measure.flops import model_flops, params_count
from compress.nas.config import SearchConfig
from compress.nas.search import budget_flops
from compress.nas.supernet import Supernet
from compress.runtime import distributed
from compress.store.card import decision_epoch


def dataset_info(ds: SequenceDataset) -> Dict[str, Any]:
    """Name, sizes, and ``timed``: True when histories run by timestamp, False in file order."""
    stats = ds.stats()
    return {"name": ds.name, "users": stats["users"], "items": stats["items"], "interactions": stats["interactions"],
            "timed": stats.get("timed"), "dropped_users": stats.get("dropped_users", 0)}


def device_text(device: Union[str, torch.device]) -> str:
    """``cpu``, ``cuda:0 (NVIDIA H200)``, with the process count of a distributed run."""
    device = torch.device(device)
    text = str(device)
    if device.type == "cuda":
        text += f" ({torch.cuda.get_device_name(device)})"
    if distributed.world_size() > 1:
        text += f" × {distributed.world_size()} processes"
    return text


def space_rows(supernet: Supernet, reference: str = "input") -> List[Dict[str, Any]]:
    """Every candidate of the search space (whatever choices it spans): label, FLOPs, share of the
    ``reference`` model's FLOPs, parameters."""
    ref = supernet.reference_flops(reference)
    return [{"label": c["label"], "flops": c["flops"], "share": c["flops"] / ref, "params": c["params"]}
            for c in supernet.candidates()]


def choice_labels(supernet: Supernet) -> Dict[str, Dict[str, Any]]:
    """Each controller's choices as the live view names them, keyed as an epoch row keys its weights."""
    return {"p": {"name": "width, α", "labels": [f"{w.hidden}/{w.inner}" for w in supernet.widths]},
            "q": {"name": "exit depth, β", "labels": depth_labels(supernet.depths)},
            "r": {"name": "attention", "labels": list(supernet.kinds)},
            "s": {"name": "gate depth", "labels": [f"L_d={g}" for g in supernet.gate_depths]}}


def base_header(title: str, ds: SequenceDataset, device, precision: str, model: Dict[str, Any],
                epochs: int, batch_size: int, patience: int) -> Dict[str, Any]:
    return {"title": title, "dataset": dataset_info(ds), "device": device_text(device), "precision": precision,
            "model": model, "epochs": epochs, "batch_size": batch_size, "patience": patience}


def train_header(title: str, ds: SequenceDataset, model: torch.nn.Module, device, cfg: TrainConfig) -> Dict[str, Any]:
    """The header of training a dense model (``train``, ``retrain``)."""
    info = {"backbone": model.backbone_name, "label": model.arch.label(), "params": params_count(model),
            "flops": model_flops(model)["total"], "seq_len": model.max_len}
    return base_header(title, ds, device, cfg.precision, info, cfg.epochs, cfg.batch_size, cfg.patience)


def search_header(ds: SequenceDataset, supernet: Supernet, device, cfg: SearchConfig) -> Dict[str, Any]:
    """The header of a search: the model that was wrapped, every candidate, the budget and λ."""
    arch = supernet.input_arch
    with torch.device("meta"):  # shapes only
        params = params_count(supernet.backbone.rebuilt(arch))
    info = {"backbone": supernet.backbone.backbone_name, "label": arch.label(), "params": params,
            "flops": supernet.input_flops, "seq_len": supernet.max_len}
    rows = space_rows(supernet, cfg.flops_reference)
    header = base_header(f"searching {len(rows)} candidates of {info['backbone']} {arch.label()}", ds, device,
                         cfg.precision, info, cfg.epochs, cfg.batch_size, cfg.patience)
    budget = budget_flops(cfg.max_flops, supernet, cfg.flops_reference)
    header["search"] = {"candidates": rows, "choices": choice_labels(supernet), "reference": cfg.flops_reference,
                        "tradeoff": cfg.tradeoff, "penalty": cfg.penalty, "decide": cfg.decide,
                        "budget": None if budget is None else {"given": str(cfg.max_flops), "flops": budget}}
    return header


def recorded_label(card: Dict[str, Any], row: Dict[str, Any]) -> str:
    """The decision of a search card's history row as ``ArchSpec.label()`` reads it; rows written before
    rows carried their label give (width index, depth), read against the card's widths."""
    if "decision_label" in row:
        return row["decision_label"]
    width, depth = card["widths"][row["decision"][0]], row["decision"][1]
    return ArchSpec.from_dict(card["decision"]["arch"]).narrowed(width["hidden"], width["inner"], depth).label()


def decided_at(card: Dict[str, Any]) -> str:
    """Which epoch a search card's decision is of, as ``compress inspect`` prints it."""
    epoch, best = decision_epoch(card), card["best_epoch"]
    return f"best epoch {best}" if epoch == best else f"decided at the last epoch, {epoch} (best epoch {best})"


RETRAIN_FROM = {"supernet": "with the supernet's weights", "scratch": "from fresh weights",
                "init": "from the warm start's weights"}


def retrain_title(model: torch.nn.Module, start: str, cfg: Optional[TrainConfig] = None) -> str:
    """How the retraining stage announces itself: the decision it retrains, from which weights
    (``start``: supernet, scratch or init), and what it distils from."""
    distil = f", distilling from the warm start (w={cfg.distill:g}, T={cfg.distill_temperature:g})" \
        if cfg is not None and cfg.distill > 0 else ""
    return f"retraining the decision {model.arch.label()} {RETRAIN_FROM[start]}{distil}"
