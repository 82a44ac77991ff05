"""``compress.wrap``: turn a backbone (trained or fresh) into a DNS-Rec supernet.

The supernet's shared block is the backbone at full size with the searched design injected
(linear attention and data-aware gates by default). Every weight the given model already has is
carried over (warm start); new parts (gates) keep their fresh initialisation.
"""
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import replace
from typing import Optional, Sequence, Union

import torch
from torch import nn

from compress.adapters import Adapter, adapter_class, get_adapter
from compress.adapters.builtin import BuiltinAdapter
from compress.arch import ArchSpec
from compress.bounds import instance
from compress.data.vocabulary import own_or_given
from compress.engine.loop import check_finite_weights
from compress.errors import CheckpointError, ConfigError
from compress.files import read_json, write_json
from compress.layout import CONFIG, ITEMS, WEIGHTS
from compress.nas.reorder import reorder as channel_reorder
from compress.nas.space import SearchSpace
from compress.nas.supernet import Supernet
from compress.runtime.devices import as_device
from compress.store.artifacts import build_checked, check_format, load_state, read_vocabulary, save_model


def wrap(model: nn.Module, adapter: Union[None, str, Adapter] = None, space: Optional[SearchSpace] = None,
         attention: Optional[str] = None, gate_layers: Optional[int] = None, gate_placement: str = "code",
         reorder: Optional[str] = None, reorder_batch=None, item_ids: Optional[Sequence[str]] = None) -> Supernet:
    """A supernet around ``model``: zero-mask width candidates from ``space``, its attention kinds and
    gate depths injected as searched choices. ``attention`` or ``gate_layers`` fix one (the paper's
    design: ``attention="linear", gate_layers=2``); ``wrap(model, attention="softmax", gate_layers=0)``
    searches widths and depth of the model as it is.

    ``item_ids`` names the raw item id of each of the model's item rows (row i + 1 is ``item_ids[i]``),
    for a model that does not carry its vocabulary (one trained elsewhere); the search, slices and
    exports then check data against it. Without them such a model takes the numbering of the data it
    meets (DESIGN §8: equal item counts prove nothing), which a warning says; a model that carries its
    vocabulary refuses item_ids that name its rows otherwise. More ids than rows add fresh rows for the
    extra items (data loaded with ``unknown_items="append"``), with a warning that counts them, since a
    model numbering its items from row 0 would look the same. ``reorder`` ("magnitude" or "taylor",
    Torch-Pruning's group criteria) first permutes hidden channels, heads (or each head's dimensions,
    where the space narrows heads) and FFN channels by importance, scores unchanged, so that the leading
    slices a narrower candidate keeps are the important ones; "taylor" needs ``reorder_batch=(items,
    targets)``. The user's ``model`` itself is never modified."""
    adapter = get_adapter(model, adapter)
    if space is not None:
        instance("space", space, SearchSpace, "e.g. compress.SearchSpace(hidden_ratios=(0.0, 0.5))")
    check_finite_weights(model)
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if frozen:  # the supernet is a new module: the user's flags do not carry over to its weights
        warnings.warn(f"{len(frozen)} parameter(s) of the model are frozen (requires_grad False, e.g. {frozen[0]}); "
                      "the search trains every weight of the supernet: freeze their counterparts there "
                      "(requires_grad_(False)) to keep them fixed, and its slices keep them frozen", stacklevel=2)
    model = adapter.convert(model)
    if item_ids is not None:
        vocabulary = own_or_given(model, item_ids, "item_ids")
        if len(vocabulary) < model.n_items:
            raise ConfigError(f"item_ids names {len(vocabulary):,} items but the model has {model.n_items:,} item "
                              "rows; give one id per row (row i + 1 is item_ids[i]), and more only for items "
                              "the data adds")
        if len(vocabulary) > model.n_items:
            fresh = len(vocabulary) - model.n_items
            warnings.warn(f"item_ids names {len(vocabulary):,} items, the model has {model.n_items:,} item rows "
                          f"(1..n, row 0 the padding): {fresh:,} fresh row(s) added for the last id(s) given, as for "
                          "items the data appended; if the model numbers its items from row 0, they are all one row "
                          "off: give it a padding row 0 first", stacklevel=2)
        model = model.with_items(len(vocabulary)) if len(vocabulary) != model.n_items else copy.copy(model)
        model.vocabulary = vocabulary
    elif model.vocabulary is None and not isinstance(adapter, BuiltinAdapter):
        warnings.warn(f"a model wrapped by the {adapter.name} adapter without item_ids: its item rows are taken "
                      "to be numbered as the data it meets numbers its items; if it was trained on another "
                      "numbering, give item_ids=[the raw item id of row 1, row 2, ...] so that data in another "
                      "numbering is mapped or refused", stacklevel=2)
    space = (space or SearchSpace()).fixing(attention, gate_layers)
    if reorder is not None:
        model = copy.deepcopy(model)  # convert() may return the user's own (built-in) model
        channel_reorder(model, reorder, reorder_batch, space.head_pruning)
    # gates as deep as the deepest choice, or as the model's own (whose weights are carried over)
    arch = replace(model.arch, attention=space.attention[0], gate_layers=max(*space.gate_layers, model.arch.gate_layers),
                   gate_placement=gate_placement)
    shared = model.rebuilt(arch)
    source = model.state_dict()
    own = shared.state_dict()
    with torch.no_grad():
        for name, t in source.items():
            if name not in own or own[name].shape != t.shape:
                raise CheckpointError(f"cannot carry weight {name} {tuple(t.shape)} into the supernet")
            own[name].copy_(t)
    return Supernet(shared, adapter, space, model.arch).train(model.training)  # in the mode the model was in


def save_supernet(supernet: Supernet, directory: str) -> None:
    """``config.json`` (backbone + adapter + space + what ``predict`` uses), ``model.safetensors``
    (weights, α, β) and, where the items are known, ``items.json``, so that a reloaded supernet still
    refuses data that numbers its items differently. τ and the selection are saved because ``predict``
    mixes with softmax(α/τ): without them a reloaded supernet would score differently from the one
    whose metrics the search card holds."""
    instance("the model saved", supernet, Supernet, "a dense model is written by compress.export")
    vocabulary = supernet.vocabulary
    saved = {"adapter": supernet.adapter.name, "adapter_config": supernet.adapter.to_dict(),
             "space": supernet.space.to_dict(), "input_arch": supernet.input_arch.to_dict(), "tau": supernet.tau,
             "eval_selection": supernet.eval_selection}
    try:
        os.makedirs(directory, exist_ok=True)
        save_model(supernet, directory, {"kind": "supernet", "items": ITEMS if vocabulary is not None else None,
                                         "supernet": saved}, supernet.backbone.config())
        if vocabulary is not None:
            write_json(os.path.join(directory, ITEMS), vocabulary.to_json())
    except OSError as exc:
        raise ConfigError(f"cannot write {directory}: {exc.strerror or exc}") from None


def load_supernet(directory: str, device: Union[str, torch.device] = "cpu") -> Supernet:
    """The supernet checkpoint in ``directory`` on ``device`` (what ``--device`` takes, "auto" too), in eval
    mode as ``compress.load`` gives a model."""
    device = as_device(device, torch.device("cpu"))
    cfg = read_json(os.path.join(directory, CONFIG))
    check_format(cfg, os.path.join(directory, CONFIG))
    if cfg.get("kind") != "supernet":
        raise CheckpointError(f"{directory} holds a {cfg.get('kind', 'unknown')!r} checkpoint, not a supernet")
    backbone = build_checked(cfg.get("model"), os.path.join(directory, WEIGHTS), prefix="backbone.")
    adapter = adapter_class(cfg["supernet"]["adapter"]).from_dict(cfg["supernet"].get("adapter_config", {}))
    saved = cfg["supernet"]
    input_arch = ArchSpec.from_dict(saved["input_arch"]) if "input_arch" in saved else None
    supernet = Supernet(backbone, adapter, SearchSpace.from_dict(saved["space"], backbone.arch), input_arch)
    load_state(supernet, os.path.join(directory, WEIGHTS))
    supernet.tau = float(cfg["supernet"].get("tau", supernet.tau))
    supernet.eval_selection = cfg["supernet"].get("eval_selection", supernet.eval_selection)
    backbone.vocabulary = read_vocabulary(directory, cfg, backbone.n_items)
    return supernet.to(device).eval()

