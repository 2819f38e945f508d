"""The data contracts every subpackage agrees on (docs/design.md §3).

Batches are dicts keyed by modality name; modalities are described by :class:`ModalitySpec`
(shape and valid box in *model-input space*); models return :class:`ModelOutput`; attacks are
parameterised by a :class:`ThreatModel`. Nothing else hard-codes shapes or normalisation.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .hints import did_you_mean

Batch = dict[str, Tensor]

ALL_MODALITIES = "all"
ANY_MODALITY = "any"  # the attacker's choice of modality, per sample (bench.threat_sets)
# The threat norms: ℓ2, ℓ∞, ℓ1 (radii in model-input units) and ℓ0 (a number of coordinates).
NORMS = ("l2", "linf", "l1", "l0")


@functools.lru_cache(maxsize=256)
def _box_tensors(
    lower: tuple[float, ...], upper: tuple[float, ...], ndim: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    view = (1, -1) + (1,) * (ndim - 1)
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for backward later
        return (
            torch.tensor(lower, dtype=dtype, device=device).view(view),
            torch.tensor(upper, dtype=dtype, device=device).view(view),
        )


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality: per-sample shape and its valid box in model-input space.

    ``lower``/``upper`` are per-channel bounds (channel = first axis of ``shape``) or ``None``
    for an unbounded modality (an audio spectrogram, as in the paper, is never clamped).
    """

    name: str
    shape: tuple[int, ...]
    lower: tuple[float, ...] | None = None
    upper: tuple[float, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if (self.lower is None) != (self.upper is None):
            raise ValueError(f"modality {self.name!r}: give both lower and upper bounds, or neither")
        if self.lower is not None and self.upper is not None:  # both or neither, checked above
            channels = self.shape[0]
            if len(self.lower) != channels or len(self.upper) != channels:
                raise ValueError(
                    f"modality {self.name!r}: need {channels} per-channel bounds, got "
                    f"{len(self.lower)} lower and {len(self.upper)} upper"
                )
            if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in (*self.lower, *self.upper)):
                raise ValueError(
                    f"modality {self.name!r}: box bounds must be finite numbers, got lower {self.lower} "
                    f"and upper {self.upper}; leave both None for an unbounded modality"
                )
            if any(lo >= hi for lo, hi in zip(self.lower, self.upper)):
                raise ValueError(f"modality {self.name!r}: every lower bound must be below its upper bound")

    @property
    def bounded(self) -> bool:
        return self.lower is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def box(self, like: Tensor) -> tuple[Tensor, Tensor] | None:
        """Lower/upper tensors broadcastable to a batch ``like`` (B, *shape), or None if unbounded.

        The tensors are cached per (bounds, dtype, device) and must not be modified: building them
        anew is a host-to-device copy, which on a GPU synchronises with the stream, and attacks
        clamp on every step.
        """
        if self.lower is None:
            return None
        return _box_tensors(self.lower, self.upper, len(self.shape), like.dtype, like.device)

    def clamp(self, x: Tensor) -> Tensor:
        """Project a batch onto the valid box (identity for unbounded modalities)."""
        box = self.box(x)
        if box is None:
            return x
        return torch.maximum(torch.minimum(x, box[1]), box[0])


@dataclass
class ModelOutput:
    """What every multi-modal model returns.

    ``logits``: fused scores (B, K) — the only thing attacks look at.
    ``unimodal[m]``: uni-modal scores (B, K) of modality m (bias/2 convention for a concat head,
    z^(m) = W̃^(m) φ^(m) for the CRMT head). ``features[m]``: pooled encoder features (B, D).
    """

    logits: Tensor
    unimodal: dict[str, Tensor] = field(default_factory=dict)
    features: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ThreatModel:
    """Which modalities an attacker perturbs and how much.

    ``eps`` is measured in model-input space, exactly as the paper's code, so numbers compare
    with ``paper_tables.csv``. ``norm`` is one of ``NORMS``: ``l2``, ``linf``, ``l1`` (radii in
    model-input units) or ``l0`` (``eps`` = the number of input coordinates that may change, rounded
    down). ``joint=True`` means one ball over the concatenation of all attacked modalities (the paper's
    multi-modal attack; for ℓ∞ that is the same per-coordinate bound as separate balls);
    ``joint=False`` gives every attacked modality its own ball of radius ``eps``.
    """

    modalities: tuple[str, ...]
    eps: float
    norm: str = "l2"
    joint: bool = True
    targeted: bool = False

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError("a threat model needs at least one attacked modality")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"attacked modalities repeat: {self.modalities}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}{did_you_mean(self.norm, NORMS)}; valid: {', '.join(NORMS)}")
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {self.eps!r}")

    @classmethod
    def parse(
        cls, modality: str | Sequence[str], eps: float, specs: Sequence[ModalitySpec], **kwargs: Any
    ) -> ThreatModel:
        """Build from user input: a modality name, a comma list, or ``all``; validated against specs."""
        ordered = parse_modalities(modality, [s.name for s in specs])
        return cls(modalities=ordered, eps=float(eps), **kwargs)

    def with_eps(self, eps: float) -> ThreatModel:
        return ThreatModel(self.modalities, float(eps), self.norm, self.joint, self.targeted)


def parse_modalities(modality: str | Sequence[str], names: Sequence[str]) -> tuple[str, ...]:
    """The attacked modalities named by user input (a name, a comma list, or ``all``), in ``names`` order;
    an unknown or empty choice is an error listing the valid names."""
    if isinstance(modality, str):
        chosen = list(names) if modality == ALL_MODALITIES else [m.strip() for m in modality.split(",") if m.strip()]
    else:
        chosen = list(modality)
    unknown = [m for m in chosen if m not in names]
    if unknown or not chosen:
        raise ValueError(
            f"unknown modality {', '.join(unknown) or repr(modality)}; valid: {', '.join(names)} or '{ALL_MODALITIES}'"
        )
    return tuple(n for n in names if n in chosen)


def check_modality_choice(modality: str | Sequence[str], names: Sequence[str]) -> None:
    """A user's modality choice: ``any`` (the attacker picks, per sample: ``bench.threat_sets``), or what
    :func:`parse_modalities` takes; an error names every valid choice, ``any`` included."""
    if modality == ANY_MODALITY:
        return
    try:
        parse_modalities(modality, names)
    except ValueError as exc:
        raise ValueError(f"{exc}, or '{ANY_MODALITY}' (per sample, the worst of each alone and all jointly)") from None


def spec_map(specs: Sequence[ModalitySpec]) -> dict[str, ModalitySpec]:
    return {s.name: s for s in specs}


def batch_size(batch: Mapping[str, Tensor]) -> int:
    return next(iter(batch.values())).shape[0]


def joint_l2_norm(delta: Mapping[str, Tensor], modalities: Sequence[str], dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-sample ℓ2 norm of the concatenation of ``delta[m]`` over ``modalities``, in ``dtype`` (fp32 unless a
    caller keeps float64 inputs in their own precision)."""
    total: Tensor | None = None
    for m in modalities:
        sq = delta[m].to(dtype).flatten(1).pow(2).sum(1)
        total = sq if total is None else total + sq
    if total is None:
        raise ValueError("joint_l2_norm needs at least one modality")
    return total.sqrt()


def input_gradients_of(loss: Tensor, inputs: Sequence[Tensor], *, retain_graph: bool = False) -> list[Tensor]:
    """∂loss/∂inputs, exactly zero for an input the loss does not depend on (a model that ignores or detaches a
    modality): an attack then cannot move that input, which the validity flags report, where autograd would
    raise an error and lose the run."""
    if not loss.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(loss, list(inputs), retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
