"""``missing``: the attacked modalities are absent at test time (METHODS.md §12).

Input-level drop fills the modality in *model-input space*: ``zero`` (the paper / BalanceBenchmark
padding), ``mean`` (the per-feature mean of the clean batch is not used — the caller passes the
dataset mean through ``fill_values``) or ``noise`` (Gaussian with the given std). The feature-level
variant (encoder output zeroed) is a model switch, see ``MultiModalNet.dropped_features``.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from . import ATTACKS
from .base import Attack

FILLS = ("zero", "mean", "noise")


class Missing(Attack):
    name = "missing"
    norm_bounded = False

    def __init__(self, specs, *, seed: int = 0, fill: str = "zero", fill_values: Mapping[str, Tensor] | None = None,
                 noise_std: float = 1.0) -> None:
        super().__init__(specs, seed=seed)
        if fill not in FILLS:
            raise ValueError(f"missing: unknown fill {fill!r}; valid: {', '.join(FILLS)}")
        if fill == "mean" and not fill_values:
            raise ValueError("missing: fill='mean' needs fill_values (the dataset mean of each modality)")
        self.fill = fill
        self.fill_values = dict(fill_values or {})
        self.noise_std = float(noise_std)

    def describe(self) -> str:
        return f"missing(fill={self.fill})"

    def perturb(self, model, batch, labels, threat, eps, *, targets=None):
        out = {}
        for m in threat.modalities:
            x = batch[m]
            if self.fill == "zero":
                out[m] = torch.zeros_like(x)
            elif self.fill == "mean":
                out[m] = self.fill_values[m].to(x).expand_as(x).clone()
            else:
                out[m] = self.noise_std * torch.randn(x.shape, dtype=x.dtype, device=x.device)
        return out


@ATTACKS.register("missing")
def _missing(specs, *, seed: int = 0, **options) -> Missing:
    return Missing(specs, seed=seed, **options)
