"""Classification data: the typed interface, the registry of real data sets, and user data loaders."""

from safetransfer.data.base import ClassificationData, Split
from safetransfer.data.registry import DATASETS, DatasetSpec, list_datasets, load_data

__all__ = ["Split", "ClassificationData", "load_data", "DATASETS", "DatasetSpec", "list_datasets"]
