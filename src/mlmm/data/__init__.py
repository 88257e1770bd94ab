"""Data layer: specs, the Batch contract, datasets, preprocessing, splits, bundled data."""

from .adapter import TorchDatasetAdapter, adapt_dataset
from .base import MultimodalDataset, stratified_split
from .batch import Batch, collate, make_batch, validate_batch
from .feature_cache import FeatureCache
from .frozen_features import frozen_features
from .memmap import MemmapDataset, open_memmap_dataset, save_memmap_dataset, write_synthetic_memmap
from .passes import RunningMoments, SplitPasses
from .preprocess import Standardizer
from .registry import DATASETS, dataset_infos, load_dataset
from .rows import RowDataset
from .spec import DatasetSpec, ModalitySpec, TaskSpec
from .splits import make_splits
from .tables import TableDataset, open_data_dir, open_table_dataset

__all__ = [
    "DATASETS", "Batch", "DatasetSpec", "FeatureCache", "MemmapDataset", "ModalitySpec", "MultimodalDataset",
    "RowDataset", "RunningMoments", "SplitPasses", "Standardizer", "TableDataset", "TaskSpec", "TorchDatasetAdapter",
    "adapt_dataset", "collate",
    "dataset_infos", "frozen_features", "load_dataset", "make_batch", "make_splits", "open_data_dir",
    "open_memmap_dataset", "open_table_dataset", "save_memmap_dataset", "stratified_split", "validate_batch",
    "write_synthetic_memmap",
]
