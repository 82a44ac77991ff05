"""compress: DNS-Rec neural architecture search that makes sequential recommenders smaller and faster."""
__version__ = "0.1.0"

from compress.adapters import Adapter, DeclaredAdapter, get_adapter, list_adapters, register_adapter
from compress.arch import ArchSpec
from compress.artifacts import load
from compress.backbones import get_backbone, list_backbones, register_backbone
from compress.data import SequenceDataset, load_dataset
from compress.errors import CheckpointError, CompressError, ConfigError, DataError, SearchError
from compress.evaluation import evaluate
from compress.flops import analytic_flops, measured_flops
from compress.nas.search import SearchConfig, SearchResult, search
from compress.nas.space import SearchSpace
from compress.nas.supernet import Supernet
from compress.nas.wrap import load_supernet, save_supernet, wrap
from compress.reorder import channel_importance, reorder
from compress.training import TrainConfig, fit

__all__ = ["Adapter", "DeclaredAdapter", "channel_importance", "reorder", "get_adapter", "list_adapters", "register_adapter", "ArchSpec", "load", "get_backbone",
           "list_backbones", "register_backbone", "SequenceDataset", "load_dataset", "CheckpointError",
           "CompressError", "ConfigError", "DataError", "SearchError", "evaluate", "analytic_flops",
           "measured_flops", "SearchConfig", "SearchResult", "search", "SearchSpace", "Supernet", "load_supernet",
           "save_supernet", "wrap", "TrainConfig", "fit", "__version__"]
