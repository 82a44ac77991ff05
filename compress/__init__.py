"""compress: DNS-Rec neural architecture search that makes sequential recommenders smaller and faster."""
__version__ = "0.1.0"

from compress.arch import ArchSpec
from compress.artifacts import load
from compress.backbones import get_backbone, list_backbones, register_backbone
from compress.data import SequenceDataset, load_dataset
from compress.errors import CheckpointError, CompressError, ConfigError, DataError, SearchError
from compress.evaluation import evaluate
from compress.training import TrainConfig, fit

__all__ = ["ArchSpec", "load", "get_backbone", "list_backbones", "register_backbone", "SequenceDataset",
           "load_dataset", "CompressError", "ConfigError", "DataError", "CheckpointError", "SearchError",
           "evaluate", "TrainConfig", "fit", "__version__"]
