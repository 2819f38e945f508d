"""``missing``: the attacked modalities are absent at test time (docs/methods.md §12), for any number of modalities.

``level="input"`` (default) fills each missing modality in *model-input space*: ``zero`` (the paper /
BalanceBenchmark padding), ``mean`` (the dataset mean of the modality, passed by the caller through
``fill_values``; ``bench.api.run`` passes the train-split per-feature mean) or ``noise`` (Gaussian with
std ``noise_std``, drawn from the attack's seeded generator).

``level="feature"`` zeroes the modality's encoder output instead. That is a switch of the model, not
of its input: the attack returns the input unchanged and names the modalities to drop through
:meth:`Missing.dropped_features`; the evaluation (``bench.evaluate``) sets the model's
``dropped_features`` (see ``MultiModalNet``) while it measures, and restores it afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..contracts import NORMS, Batch, ModalitySpec, ThreatModel
from . import ATTACKS
from .base import Attack

FILLS = ("zero", "mean", "noise")
LEVELS = ("input", "feature")


class Missing(Attack):
    """The attacked modalities are absent at test time: filled with zeros, the mean or noise."""

    name = "missing"
    norm_bounded = False
    norms = NORMS  # no budget, so every threat norm is accepted (ε is ignored)

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        *,
        seed: int = 0,
        fill: str = "zero",
        fill_values: Mapping[str, Tensor] | None = None,
        noise_std: float = 1.0,
        level: str = "input",
    ) -> None:
        super().__init__(specs, seed=seed)
        if fill not in FILLS:
            raise ValueError(f"missing: unknown fill {fill!r}; valid: {', '.join(FILLS)}")
        if level not in LEVELS:
            raise ValueError(f"missing: unknown level {level!r}; valid: {', '.join(LEVELS)}")
        if level == "feature" and fill != "zero":
            raise ValueError("missing: level='feature' zeroes the encoder output; fill applies to level='input' only")
        self.fill = fill
        self.level = level
        self.fill_values = dict(fill_values or {})
        self.noise_std = float(noise_std)

    def describe(self) -> str:
        if self.level == "feature":
            return "missing(level=feature)"
        if self.fill == "noise":
            return f"missing(fill=noise, noise_std={self.noise_std:g})"
        return f"missing(fill={self.fill})"

    def validate(self, threat: ThreatModel) -> None:
        super().validate(threat)
        absent = [m for m in threat.modalities if self.fill == "mean" and m not in self.fill_values]
        if absent:
            raise ValueError(
                f"missing: fill='mean' needs fill_values (the dataset mean) for modality {', '.join(absent)}"
            )

    def dropped_features(self, threat: ThreatModel) -> frozenset[str]:
        """The modalities whose encoder output the evaluation must zero (none for input-level drops)."""
        return frozenset(threat.modalities) if self.level == "feature" else frozenset()

    def perturb(
        self,
        model: nn.Module,
        batch: Batch,
        labels: Tensor,
        threat: ThreatModel,
        eps: Tensor,
        *,
        targets: Tensor | None = None,
    ) -> Batch:
        out = {}
        for m in threat.modalities:
            x = batch[m]
            if self.level == "feature":
                out[m] = x
            elif self.fill == "zero":
                out[m] = torch.zeros_like(x)
            elif self.fill == "mean":
                out[m] = self.fill_values[m].to(x).expand_as(x).clone()
            else:
                out[m] = self.noise_std * torch.randn(x.shape, dtype=x.dtype, device=x.device)
        return out


@ATTACKS.register("missing")
def _missing(specs: Sequence[ModalitySpec], *, seed: int = 0, **options: Any) -> Missing:
    return Missing(specs, seed=seed, **options)
