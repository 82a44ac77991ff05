"""Export a trained or retrained dense model as a self-contained MODEL_DIR.

MODEL_DIR = ``config.json`` (ArchSpec, backbone, N, item count) + ``model.safetensors`` (the
physically smaller tensors) + ``items.json`` (raw item id of every index, and item popularity for
cold histories) + ``card.json`` (decision, metrics, FLOPs predicted and measured, params, latency,
command, versions) + ``README.md`` (the card for people). Optional TorchScript (``model.pt``) and ONNX
(``model.onnx``) files, both at the fixed length N, are checked to give the same scores as the PyTorch
model before the directory appears. A wrapped Hugging Face or RecBole model also gets ``native/``: the
decision as the user's own class, with its own items.json and README.md so that it stands alone.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import numbers
import os
import warnings
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Union

import torch

from compress.adapters import Adapter
from compress.arch import ArchSpec
from compress.backbones.transformer import SequenceTransformer
from compress.bounds import instance
from compress.data.dataset import SequenceDataset
from compress.data.vocabulary import ItemVocabulary, as_vocabulary, check_same, own_or_given, vocabulary_of
from compress.errors import CheckpointError, ConfigError
from compress.files import atomic_dir, write_json, write_text
from compress.layout import CARD, ITEMS, MODEL_README, NATIVE
from compress.measure.flops import measured_flops, model_flops, params_count
from compress.measure.latency import latency_ms
from compress.store.artifacts import save_model
from compress.store.card import METRIC, render
from compress.store.provenance import command, versions

EXPORT_FORMATS = ("safetensors", "torchscript", "onnx")
PARITY_TOL = 1e-5  # relative to the largest score (at least 1): float32's rounding grows with the scores


class _Scorer(torch.nn.Module):
    """items (B, N) -> scores (B, n_items + 1): the one function exported graphs carry."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        # a new module is in training mode, and torch.onnx.export restores the exported module's mode
        # recursively afterwards: without this the model would come back with dropout on
        self.train(model.training)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.model.predict(items)


def _sample_items(model: torch.nn.Module, batch: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(1, model.n_items + 1, (batch, model.max_len), generator=gen)
    items[1, model.max_len // 2:] = 0  # one right-padded history
    return items


def _export_torchscript(model: torch.nn.Module, path: str) -> Tuple[float, float]:
    """Traced at the fixed length N (histories are always padded to N); any batch size works."""
    items = _sample_items(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice and constant-shape tracer notes
        traced = torch.jit.trace(_Scorer(model), items, check_trace=False)
        traced.save(path)
        reloaded = torch.jit.load(path)
        return _max_diff(model.predict(items), reloaded(items))


def _export_onnx(model: torch.nn.Module, path: str) -> Tuple[float, float]:
    """Traced at the fixed length N, any batch size: the chunked causal linear attention's shapes follow
    N, so a graph with a free length would be wrong at other lengths (histories are padded to N anyway).
    The exporter's notes (tracer warnings, opset remarks) are silenced: they concern code paths the
    parity check below covers. Both packages are needed: a file no check has run is not written."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"`format` onnx needs {' and '.join(missing)}, to write the file and to check it "
                          "against PyTorch: pip install onnx onnxruntime (the onnx extra)")
    items = _sample_items(model)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(_Scorer(model), (items,), path, input_names=["items"], output_names=["scores"],
                          dynamic_axes={"items": {0: "batch"}, "scores": {0: "batch"}}, dynamo=False)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"items": items.numpy()})[0])
    with torch.no_grad():
        return _max_diff(model.predict(items), got)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> Tuple[float, float]:
    """(max |a − b|, max |a|) over a's finite scores; inf where the two disagree on which are finite."""
    finite = torch.isfinite(a)
    if not torch.equal(finite, torch.isfinite(b)):
        return float("inf"), 1.0
    return float((a[finite] - b[finite]).abs().max()), float(a[finite].abs().max())


def save_model_dir(model: torch.nn.Module, out: str, fmt: str = "safetensors", overwrite: bool = False,
                   card: Optional[Dict[str, Any]] = None, data: Optional[Dict[str, Any]] = None,
                   adapter: Optional[Adapter] = None, vocabulary: Optional[ItemVocabulary] = None,
                   dataset_stats: Optional[Dict[str, Any]] = None, inputs: Iterable[Optional[str]] = ()) -> Dict[str, Any]:
    """Write MODEL_DIR ``out`` for a dense ``model`` (its own item vocabulary, or ``vocabulary``);
    returns its card. ``data`` and ``dataset_stats`` record what it was trained on; ``card["input"]``
    (``reference_cost``), when given, is the model it was compressed from. With the ``adapter``
    of a wrapped user model, MODEL_DIR/native/ also holds the model as the user's own class where that
    class can express it (Hugging Face: softmax attention, no gates). ``model`` itself is not changed."""
    instance("the model exported", model, SequenceTransformer, "export a dense model: result.slice() of a "
             "search, a model compress.fit trained, or compress.load(MODEL_DIR)")
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export `format` {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    vocabulary = vocabulary_of(model, vocabulary)
    # float32, as model.safetensors holds it (save_model): the TorchScript/ONNX files, their parity checks and the
    # card's cost then describe the model compress.load gives back, not a bfloat16 or float16 copy of it
    model = copy.deepcopy(model).cpu().float().eval()
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise CheckpointError("the model's weights are not finite (NaN or infinity): it diverged; export a model "
                              "that trained to the end")
    card = {**(card or {}), "arch": model.arch.to_dict(),
            "flops": {"analytic": model_flops(model),
                      "measured": measured_flops(model, model.max_len),
                      "unit": "FLOPs = 2 x multiply-adds, one sequence of length N"},
            "params": params_count(model), "latency_ms": {"cpu_batch_1": latency_ms(model, 1, repeats=20)},
            "model": {k: model.config()[k] for k in ("backbone", "n_items", "max_len")}, "format": fmt,
            "data": data, "dataset": dataset_stats, "command": command(), "versions": versions()}
    with atomic_dir(out, overwrite, inputs) as tmp:
        save_model(model, tmp, {"kind": "model", "data": data, "dataset": dataset_stats, "items": ITEMS,
                                "versions": versions()})
        write_json(os.path.join(tmp, ITEMS), vocabulary.to_json())
        if fmt == "torchscript":
            card["torchscript_max_abs_diff"] = _check(_export_torchscript(model, os.path.join(tmp, "model.pt")), fmt)
        elif fmt == "onnx":
            card["onnx_max_abs_diff"] = _check(_export_onnx(model, os.path.join(tmp, "model.onnx")), fmt)
        if adapter is not None and adapter.has_native:
            written = adapter.native(model, os.path.join(tmp, NATIVE))
            card["native"] = {"adapter": adapter.name, "path": NATIVE if written else None,
                              "note": None if written else "the user's model class cannot express this decision "
                                                           "(linear attention or gates); use MODEL_DIR itself"}
        write_json(os.path.join(tmp, CARD), card)
        write_text(os.path.join(tmp, MODEL_README), render(card))
        if card.get("native", {}).get("path"):  # native/ stands alone: its vocabulary and card beside it
            write_json(os.path.join(tmp, NATIVE, ITEMS), vocabulary.to_json())
            write_text(os.path.join(tmp, NATIVE, MODEL_README), render(card, native=True))
    return card


def _check(measured: Tuple[float, float], fmt: str) -> float:
    """The max |diff| of an exported file's scores, refused beyond PARITY_TOL of the largest score."""
    diff, scale = measured
    if not diff <= PARITY_TOL * max(1.0, scale):
        raise CheckpointError(f"the {fmt} export disagrees with the PyTorch model (max |diff| {diff:.3g}); "
                              "nothing was written")
    return diff



def reference_cost(model: torch.nn.Module, arch: Optional[ArchSpec] = None) -> Dict[str, Any]:
    """FLOPs (analytic) and parameters of ``model`` rebuilt at ``arch`` (default: its own), for the card's
    comparison with the model a decision was compressed from; counted on the meta device, so the full
    model costs no memory."""
    arch = arch or model.arch
    with torch.device("meta"):
        ref = model.rebuilt(arch)
    return {"arch": arch.to_dict(), "label": arch.label(), "flops": model_flops(ref), "params": params_count(ref)}


def export(model: torch.nn.Module, out: str, format: str = "safetensors",
           vocabulary: Union[None, ItemVocabulary, Sequence[str]] = None, overwrite: bool = False,
           dataset: Optional[SequenceDataset] = None, metrics: Optional[Dict[str, Any]] = None,
           baseline: Optional[torch.nn.Module] = None) -> Dict[str, Any]:
    """Write MODEL_DIR ``out`` for a dense ``model`` from Python, as ``compress export`` writes it from a
    run (``format``: safetensors, or also model.pt (torchscript) or model.onnx, checked against the
    model); returns the card.

    ``vocabulary``: the raw item id of every row (row i + 1 is ``vocabulary[i]``) when the model carries
    none; ``dataset``: the data it was trained on (it must number items as the model does; its item
    popularity serves empty histories and its statistics go into the card); ``metrics``: e.g.
    ``compress.split_metrics(model, dataset)``; ``baseline``: what it was compressed from, for the
    card's cost comparison: the ``Supernet`` (whose adapter also writes native/, the model as the
    wrapped class, where that class can hold it) or a dense compress model."""
    instance("overwrite", overwrite, bool, "True replaces an existing out, False refuses it")
    check_metrics(metrics)
    vocabulary, stats = trained_on(model, as_vocabulary(vocabulary), dataset)
    card: Dict[str, Any] = {"metrics": metrics or {}}
    adapter = None
    if baseline is not None:
        if not hasattr(baseline, "backbone") and not hasattr(baseline, "rebuilt"):
            raise ConfigError(f"`baseline` must be the Supernet or a dense compress model, got {type(baseline).__name__}")
        dense = getattr(baseline, "backbone", baseline)
        card["input"] = reference_cost(dense, getattr(baseline, "input_arch", None) or dense.arch)
        adapter = getattr(baseline, "adapter", None)
    return save_model_dir(model, out, format, overwrite, card, adapter=adapter, vocabulary=vocabulary,
                          dataset_stats=stats)


def trained_on(model: torch.nn.Module, vocabulary: Optional[ItemVocabulary],
               dataset: Optional[SequenceDataset]) -> Tuple[Optional[ItemVocabulary], Optional[Dict[str, Any]]]:
    """(the vocabulary to write, the card's statistics of ``dataset``) for an export of ``model`` trained
    on ``dataset``: the data's vocabulary (the same ids, with their popularity) once it numbers the items
    as the model (or ``vocabulary``) does; data of other items is refused, not written beside the model,
    and so is a ``vocabulary`` that names the rows of a model carrying its own otherwise."""
    vocabulary = own_or_given(model, vocabulary)
    if dataset is None:
        return vocabulary, None
    instance("dataset", dataset, SequenceDataset, "the data the model was trained on, from compress.load_dataset")
    data_vocabulary = dataset.vocabulary()
    check_same(vocabulary, data_vocabulary, "the model")
    return data_vocabulary, {"name": dataset.name, **dataset.stats()}


def check_metrics(metrics: Optional[Dict[str, Any]]) -> None:
    """Refuse metrics the card cannot show: they map a split (``test/full``) to {metric name: number}."""
    if metrics is None:
        return
    instance("metrics", metrics, dict, "e.g. compress.split_metrics(model, dataset)")
    for split, row in metrics.items():
        numbers_only = isinstance(row, dict) and all(isinstance(k, str) and isinstance(v, numbers.Real)
                                                     for k, v in row.items())
        if not isinstance(split, str) or not numbers_only:
            raise ConfigError(f"metrics must map each split to {{metric: number}}, as compress.split_metrics "
                              f"returns, got {row!r} for {split!r}")
        outside = [k for k, v in row.items() if METRIC.match(k) and not 0.0 <= v <= 1.0]
        if outside:  # recall, MRR and NDCG are shares: another value is a mistake the card would publish
            raise ConfigError(f"metric {outside[0]} of {split!r} is {row[outside[0]]!r}, outside [0, 1]; give the "
                              "metrics compress.split_metrics measured")
