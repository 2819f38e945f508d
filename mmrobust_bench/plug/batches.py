"""The user's batches: dicts, tuples in a declared ``order`` or one tensor, taken apart into the suite's dict batch
(and put back together in the user's format), checked, and moved to the model's device and dtype.

Inputs are checked before any work: every modality a torch tensor (a numpy array is refused with the
``torch.from_numpy`` fix), all with one batch size of at least one sample, labels one class index per sample
within the model's logits. Floating-point inputs of another dtype than the model's (float64 from numpy into a
float32 model) are cast to the model's floating dtype, that of its first floating parameter or buffer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..bench.train import select_device
from ..contracts import Batch
from .declare import WrappedModel

# Keys under which a dict batch carries its labels, tried in this order when ``label_key`` is not given.
LABEL_KEYS = ("label", "labels", "y", "target", "targets")
LABEL = "label"  # the label's place in a declared tuple ``order``


@dataclass
class Split:
    """A user batch taken apart: the modalities (suite format), the labels, and how to put it back."""

    inputs: Batch
    labels: Tensor | None
    rebuild: Callable[[Batch], Any]


def split_batch(
    wrapped: WrappedModel, batch: Any, order: Sequence[str] | None = None, label_key: str | None = None
) -> Split:
    """``batch`` taken apart, its modalities checked (:func:`samples_in`)."""
    split = _take_apart(wrapped, batch, order, label_key)
    samples_in(split.inputs)
    return split


def samples_in(inputs: Mapping[str, Any]) -> int:
    """The number of samples of the modalities ``inputs``, after checking they are tensors of one common, non-zero
    batch size (a numpy array or a string reaches no ``.to``; an empty batch no attack loop)."""
    for m, x in inputs.items():
        if not isinstance(x, Tensor):
            fix = (
                "torch.from_numpy(x), or a DataLoader, which converts arrays"
                if isinstance(x, np.ndarray)
                else "a (batch, *shape) tensor of numbers"
            )
            raise TypeError(f"modality {m!r} is a {type(x).__name__}, not a torch tensor; pass {fix}")
        if x.dim() == 0:
            raise ValueError(f"modality {m!r} is a 0-d tensor; batches are (batch, *shape) tensors")
    sizes = {m: int(x.shape[0]) for m, x in inputs.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{m}: {n}" for m, n in sizes.items())
        raise ValueError(
            f"the modalities have different batch sizes ({listed}); give every modality one entry per "
            f"sample (the same first dimension)"
        )
    n = next(iter(sizes.values()))
    if n == 0:
        raise ValueError(
            "the batch holds no samples (its first dimension is 0); leave empty batches out of the loader "
            "or pass at least one sample"
        )
    return n


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype inputs are cast to: that of the model's first floating parameter or buffer (None: none)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def as_model_dtype(x: Tensor, dtype: torch.dtype | None) -> Tensor:
    """``x`` in the model's floating ``dtype`` when it is a floating tensor of another one, else ``x`` itself."""
    return x.to(dtype) if dtype is not None and x.is_floating_point() and x.dtype != dtype else x


def _take_apart(
    wrapped: WrappedModel, batch: Any, order: Sequence[str] | None = None, label_key: str | None = None
) -> Split:
    names = wrapped.names
    if isinstance(batch, Mapping):
        missing = [m for m in names if m not in batch]
        if missing:
            raise ValueError(
                f"the batch has no modality {', '.join(missing)}; its keys are "
                f"{', '.join(map(str, batch))} and the declared modalities {', '.join(names)}"
            )
        keys = [label_key] if label_key else [k for k in LABEL_KEYS if k in batch]
        if label_key and label_key not in batch:
            raise ValueError(f"label_key={label_key!r}: the batch has keys {', '.join(map(str, batch))}")
        labels = batch[keys[0]] if keys else None

        def rebuild(adv: Batch) -> Any:
            out = dict(batch)
            out.update(adv)
            return out

        return Split({m: batch[m] for m in names}, labels, rebuild)
    if isinstance(batch, Tensor):
        if len(names) != 1:
            raise ValueError(
                f"a single tensor was given but {len(names)} modalities are declared "
                f"({', '.join(names)}); pass a dict or a tuple in the declared order"
            )
        return Split({names[0]: batch}, None, lambda adv: adv[names[0]])
    if isinstance(batch, (tuple, list)):
        seq = list(batch)
        if order is None:
            if len(seq) not in (len(names), len(names) + 1):
                raise ValueError(
                    f"the batch is a {type(batch).__name__} of {len(seq)} but {len(names)} modalities "
                    f"are declared ({', '.join(names)}); declare order=(..., '{LABEL}') for its layout"
                )
            order = list(names) + ([LABEL] if len(seq) == len(names) + 1 else [])
        order = list(order)
        if len(order) != len(seq):
            raise ValueError(f"order={tuple(order)} names {len(order)} entries but the batch has {len(seq)}")
        unknown = [k for k in order if k not in names and k != LABEL]
        if unknown or any(m not in order for m in names):
            raise ValueError(
                f"order={tuple(order)} must name every modality ({', '.join(names)}) once and "
                f"'{LABEL}' for the labels; unknown: {', '.join(unknown) or 'none'}"
            )
        where = {k: i for i, k in enumerate(order)}
        labels = seq[where[LABEL]] if LABEL in where else None
        kind = type(batch)

        def rebuild_seq(adv: Batch) -> Any:
            out = list(seq)
            for m, x in adv.items():
                out[where[m]] = x
            return kind(out) if kind in (tuple, list) else tuple(out)

        return Split({m: seq[where[m]] for m in names}, labels, rebuild_seq)
    raise TypeError(f"a batch must be a dict, a tuple/list or a tensor, got {type(batch).__name__}")


def device_batch(
    wrapped: WrappedModel, raw: Any, order: Sequence[str] | None, label_key: str | None, dev: torch.device
) -> tuple[Split, dict[str, Tensor]]:
    """One loader batch split into its modalities, moved to ``dev`` (floating inputs in the model's dtype) and
    checked against the declared shapes."""
    split = split_batch(wrapped, raw, order, label_key)
    dtype = model_dtype(wrapped)
    batch = {m: as_model_dtype(x.to(dev), dtype) for m, x in split.inputs.items()}
    wrapped.resolve(batch)
    return split, batch


def labels_of(split: Split, labels: Any) -> Tensor:
    """The batch's labels (``labels`` when given, else those found in the batch) as checked class indices."""
    y = labels if labels is not None else split.labels
    if y is None:
        raise ValueError(
            f"no labels: pass labels=..., put them in the batch under one of {', '.join(LABEL_KEYS)} "
            f"(or label_key=), or declare their place with order=(..., '{LABEL}')"
        )
    return class_indices(y, samples_in(split.inputs), "labels")


def class_indices(value: Any, n: int, what: str) -> Tensor:
    """``value`` (labels or targets) as a 1-D integer tensor of ``n`` class indices >= 0, or one clear error."""
    try:
        y = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"{what} must be class indices (a 1-D integer tensor, array or list), got {type(value).__name__}"
        ) from None
    if y.dim() != 1 or y.dtype.is_floating_point or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{what} must be a 1-D tensor of class indices, got {y.dtype} {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{y.shape[0]} {what} for a batch of {n} samples; give one per sample")
    if int(y.min()) < 0:
        raise ValueError(f"{what} must be class indices >= 0, got {int(y.min())}")
    return y


def check_classes(y: Tensor, classes: int, what: str = "labels") -> None:
    """Class indices ``y`` within the ``classes`` logits the model gives (cross-entropy would fail on an index)."""
    top = int(y.max())
    if top >= classes:
        raise ValueError(
            f"{what} hold class {top} but the model gives {classes} logits per sample (classes 0 to "
            f"{classes - 1}); fix the {what} or the model's number of outputs"
        )


def num_classes(wrapped: WrappedModel, inputs: Mapping[str, Tensor]) -> int:
    """The width of the model's logits: as its last forward gave it, else from one forward of ``inputs`` in eval
    mode (buffers, mode and gradients untouched; the whole batch, as a model may hold per-batch state)."""
    if wrapped.classes is None:
        with restored_modes(wrapped), torch.no_grad():
            wrapped(inputs)
    assert wrapped.classes is not None  # every forward sets it
    return wrapped.classes


def batch_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Where batches go: ``device`` when given (checked: CUDA asked for on a machine without it is one clear
    error, not torch's driver message), else the model's (:func:`model_device`). The model itself is not moved."""
    return select_device(device) if device is not None else model_device(model)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter or buffer lives (the CPU for a model without any): batches go there."""
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def restored_modes(model: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode and give the user's model back in the mode it came in, module by module."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, flag in modes:
            module.training = flag


__all__ = [
    "LABEL_KEYS",
    "LABEL",
    "Split",
    "split_batch",
    "samples_in",
    "model_dtype",
    "as_model_dtype",
    "device_batch",
    "labels_of",
    "class_indices",
    "check_classes",
    "num_classes",
    "model_device",
    "restored_modes",
]
