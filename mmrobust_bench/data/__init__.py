"""Datasets: each publishes its modality specs; the registry maps ids to builders."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..registry import Registry
from .base import InMemoryDataset, MultiModalDataset, TensorSplit

DatasetBuilder = Callable[..., MultiModalDataset]

DATASETS: Registry[DatasetBuilder] = Registry(
    "dataset", "mmrobust_bench.datasets", builtin_package="mmrobust_bench.data"
)


def build_dataset(name: str, *, cache_dir: Path | None = None, **options: Any) -> MultiModalDataset:
    """Build (or load from cache) the dataset registered as ``name``."""
    return DATASETS.get(name)(cache_dir=cache_dir, **options)


__all__ = ["DATASETS", "build_dataset", "InMemoryDataset", "MultiModalDataset", "TensorSplit"]
