"""Datasets: each publishes its modality specs; the registry maps ids to builders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Registry

if TYPE_CHECKING:
    from .base import InMemoryDataset, MultiModalDataset, TensorSplit

# Nothing here imports torch: the CLI builds its parsers from this package (``DATASETS_PREPARED``) and the
# settings checks read the registry, and ``mmrobust-bench --help`` must not pay for torch. The base classes
# load on first use.
DatasetBuilder = Callable[..., "MultiModalDataset"]

# The datasets whose layout ``mmrobust-bench prepare`` builds from raw media (``data.prepare``).
DATASETS_PREPARED = ("ks", "vggsound", "ucf101")

DATASETS: Registry[DatasetBuilder] = Registry(
    "dataset", "mmrobust_bench.datasets", builtin_package="mmrobust_bench.data"
)


def build_dataset(name: str, *, cache_dir: Path | None = None, **options: Any) -> MultiModalDataset:
    """Build (or load from cache) the dataset registered as ``name``."""
    return DATASETS.get(name)(cache_dir=cache_dir, **options)


def __getattr__(name: str) -> Any:
    if name in ("InMemoryDataset", "MultiModalDataset", "TensorSplit"):
        # here: the package itself stays free of torch (the CLI's parsers read it)
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DATASETS", "DATASETS_PREPARED", "build_dataset", "InMemoryDataset", "MultiModalDataset", "TensorSplit"]
