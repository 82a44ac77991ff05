"""Interaction data: readers, per-user sequences, leave-one-out split, named datasets."""
from compress.data.dataset import SequenceDataset, build_dataset
from compress.data.loading import load_dataset
from compress.data.readers import FORMATS, Interactions, ReadOptions, read_interactions
from compress.data.registry import DATASETS

__all__ = ["SequenceDataset", "build_dataset", "load_dataset", "FORMATS", "Interactions", "ReadOptions",
           "read_interactions", "DATASETS"]
