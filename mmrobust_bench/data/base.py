"""Dataset contract: modality specs, class count, and batched access to train/test splits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..config import check_known
from ..contracts import Batch, ModalitySpec


@dataclass
class TensorSplit:
    """A split held in memory: one tensor per modality plus labels, all on the CPU."""

    inputs: Batch
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: Tensor) -> TensorSplit:
        return TensorSplit({m: x[index] for m, x in self.inputs.items()}, self.labels[index])

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[Batch, Tensor]]:
        """Yield (batch, labels) on ``device``; shuffling draws only from ``generator``.

        ``shard=(rank, world)`` yields rank's part of every batch (``shard_slice``), possibly empty: the
        ranks of a distributed job together see exactly the batches of one process.
        """
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = shard_slice(order[start : start + batch_size], shard)
            yield (
                {m: x[idx].to(device, non_blocking=True) for m, x in self.inputs.items()},
                self.labels[idx].to(device, non_blocking=True),
            )


def leading_count(n: int, size: int) -> int:
    """How many samples "the first ``n``" of ``size`` means: ``n`` when ``0 < n < size``, else all of them (a
    non-positive ``n`` is the configs' "no cap")."""
    return n if 0 < n < size else size


def leading(split: Any, n: int) -> Any:
    """The first ``n`` samples of a split (:func:`leading_count`): one rule for every cap on test samples, so a
    sweep's recorded certificate settings, the certified subset and an attack block's subset never drift apart."""
    count = leading_count(n, len(split))
    return split if count == len(split) else split.subset(torch.arange(count))


def check_finite(split: TensorSplit, where: str) -> None:
    """Refuse NaN or inf in a split's floating-point inputs (one clear error naming ``where``, the modality and
    the samples): a model trained or evaluated on them gives NaN, read as class 0 by an argmax."""
    for m, x in split.inputs.items():
        if not x.is_floating_point() or x.numel() == 0:
            continue
        bad = torch.nonzero(~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)).flatten()
        if bad.numel():
            first = ", ".join(str(int(i)) for i in bad[:3]) + (", ..." if bad.numel() > 3 else "")
            raise ValueError(
                f"{where}: modality {m!r} holds NaN or inf values in {bad.numel()} of {x.shape[0]} "
                f"samples (samples {first}); fix the files it was built from (e.g. silent or damaged "
                f"recordings) and rebuild it"
            )


def shard_slice(index: Tensor, shard: tuple[int, int] | None) -> Tensor:
    """Rank r's contiguous part of one global batch's indices (parts differ in size by at most one)."""
    if shard is None:
        return index
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard (rank, world) must have 0 <= rank < world, got {shard}")
    return torch.tensor_split(index, world)[rank]


@runtime_checkable
class Split(Protocol):
    """A dataset split as the suite reads it: held in memory (:class:`TensorSplit`) or streamed from disk
    (``ClipSplit``); anything else handed to the evaluation loops is an iterable of (batch, labels) pairs."""

    def __len__(self) -> int: ...

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[Batch, Tensor]]: ...


class MultiModalDataset(Protocol):
    """What training, attacks and reports need to know about a dataset."""

    name: str
    specs: tuple[ModalitySpec, ...]
    num_classes: int
    train: TensorSplit
    test: TensorSplit


@dataclass
class InMemoryDataset:
    """A dataset whose splits fit in memory (synthav; small fixtures)."""

    name: str
    specs: tuple[ModalitySpec, ...]
    num_classes: int
    train: TensorSplit
    test: TensorSplit
    class_names: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    # Recommended training-schedule overrides for this dataset (epochs, lr, batch size, ...).
    train_defaults: dict[str, Any] = field(default_factory=dict)
    # Encoder id per modality; registered in models.encoders.
    encoders: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split_name in ("train", "test"):  # once, where every in-memory dataset is put together
            split = getattr(self, split_name)
            if isinstance(split, TensorSplit):
                check_finite(split, f"dataset {self.name}, {split_name} split")

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)


def modality_names(specs: Sequence[ModalitySpec]) -> tuple[str, ...]:
    return tuple(s.name for s in specs)


# Refuse dataset options outside the valid ones with "did you mean" (``--dataset-set`` typos); dataset
# builders and plugins call it by this name.
check_options = check_known
