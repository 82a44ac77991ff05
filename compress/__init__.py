"""compress: DNS-Rec neural architecture search that makes sequential recommenders smaller and faster.

The public API below is imported on first use (PEP 562), so ``import compress`` and the command
line's ``--help`` do not pay for torch until a name that needs it is touched.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "Adapter": "compress.adapters", "DeclaredAdapter": "compress.adapters", "get_adapter": "compress.adapters",
    "list_adapters": "compress.adapters", "register_adapter": "compress.adapters",
    "ArchSpec": "compress.arch",
    "get_backbone": "compress.backbones", "list_backbones": "compress.backbones",
    "register_backbone": "compress.backbones",
    "SequenceDataset": "compress.data", "load_dataset": "compress.data",
    "CheckpointError": "compress.errors", "CompressError": "compress.errors", "ConfigError": "compress.errors",
    "DataError": "compress.errors", "DivergedError": "compress.errors", "SearchError": "compress.errors",
    "TrainConfig": "compress.engine.config", "fit": "compress.engine.train",
    "LogReporter": "compress.engine.progress", "Reporter": "compress.engine.progress",
    "Reporters": "compress.engine.progress", "RichReporter": "compress.engine.progress",
    "SearchReporter": "compress.engine.progress", "MetricsSink": "compress.engine.sinks",
    "evaluate": "compress.measure.evaluation", "split_metrics": "compress.measure.evaluation",
    "pad_right": "compress.data.batching", "training_windows": "compress.data.batching",
    "analytic_flops": "compress.measure.flops", "measured_flops": "compress.measure.flops",
    "SearchConfig": "compress.nas.config", "SearchResult": "compress.nas.search", "search": "compress.nas.search",
    "SearchSpace": "compress.nas.space", "Supernet": "compress.nas.supernet",
    "load_supernet": "compress.nas.wrap", "save_supernet": "compress.nas.wrap", "wrap": "compress.nas.wrap",
    "channel_importance": "compress.nas.reorder", "reorder": "compress.nas.reorder",
    "load": "compress.store.artifacts", "Recommender": "compress.store.serving",
    "PopularityFallback": "compress.store.serving", "export": "compress.store.export",
}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'compress' has no attribute {name!r}")


def __dir__():
    return __all__
