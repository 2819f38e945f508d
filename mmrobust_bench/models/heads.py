"""Fusion heads on top of per-modality features.

``ConcatHead`` is JT's late fusion h = W[φ^(v); φ^(a)] + b (uni-modal scores use the bias/2
convention of OGM/PMR). ``CRMTHead`` is CRMT's orthogonal fusion layer (METHODS.md §10.1),
vectorised and always computed in fp32, even under autocast.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class ConcatHead(nn.Module):
    def __init__(self, names: Sequence[str], feature_dims: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.names = tuple(names)
        self.dims = tuple(feature_dims)
        self.fc = nn.Linear(sum(self.dims), num_classes)

    def blocks(self) -> dict[str, Tensor]:
        """The per-modality weight blocks W^(m) (K × D_m)."""
        return dict(zip(self.names, self.fc.weight.split(self.dims, dim=1)))

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        fused = torch.cat([features[m] for m in self.names], dim=1)
        logits = self.fc(fused)
        share = self.fc.bias / len(self.names)
        unimodal = {m: features[m] @ w.t() + share for m, w in self.blocks().items()}
        return logits, unimodal


def centred_unit_rows(w: Tensor, eps: float = 1e-8) -> Tensor:
    """OWN with one group per row: (w_k − mean(w_k)) / ‖w_k − mean(w_k)‖₂ (the reference behaviour)."""
    centred = w - w.mean(dim=1, keepdim=True)
    return centred / (centred.pow(2).sum(dim=1, keepdim=True) + eps).sqrt()


def orthonormal_rows(w: Tensor, eps: float = 1e-6) -> Tensor:
    """OWN with one group: (Z Zᵀ)^{-1/2} Z for the row-centred Z, so W̃ W̃ᵀ = I (needs K ≤ D)."""
    if w.shape[0] > w.shape[1]:
        raise ValueError(f"full orthogonalisation needs K <= feature dim, got K={w.shape[0]}, D={w.shape[1]}")
    centred = w - w.mean(dim=1, keepdim=True)
    gram = centred @ centred.t()
    evals, evecs = torch.linalg.eigh(gram + eps * torch.eye(gram.shape[0], device=w.device, dtype=w.dtype))
    inv_sqrt = evecs @ torch.diag_embed(evals.clamp_min(eps).rsqrt()) @ evecs.t()
    return inv_sqrt @ centred


OWN_MODES = ("per_class", "full")


class CRMTHead(nn.Module):
    """h_k = Σ_m a_k^(m) z_k^(m) + b_k with z^(m) = W̃^(m) φ^(m) and W̃^(m) normalised per block.

    ``own_groups="per_class"`` reproduces the reference (centred unit-norm rows); ``"full"`` gives
    the paper's orthonormal rows. The integration weights a^(m) start at 0.1 as in the reference.
    """

    def __init__(self, names: Sequence[str], feature_dims: Sequence[int], num_classes: int,
                 own_groups: str = "per_class") -> None:
        super().__init__()
        if own_groups not in OWN_MODES:
            raise ValueError(f"own_groups must be one of {', '.join(OWN_MODES)}, got {own_groups!r}")
        self.names = tuple(names)
        self.dims = tuple(feature_dims)
        self.own_groups = own_groups
        linear = nn.Linear(sum(self.dims), num_classes)
        self.weight = linear.weight
        self.bias = linear.bias
        self.integration = nn.ParameterDict({m: nn.Parameter(torch.full((num_classes,), 0.1)) for m in self.names})

    def normalised_blocks(self) -> dict[str, Tensor]:
        normalise = centred_unit_rows if self.own_groups == "per_class" else orthonormal_rows
        with torch.autocast(device_type=self.weight.device.type, enabled=False):
            blocks = self.weight.float().split(self.dims, dim=1)
            return {m: normalise(w) for m, w in zip(self.names, blocks)}

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.autocast(device_type=self.weight.device.type, enabled=False):
            unimodal = {m: features[m].float() @ w.t() for m, w in self.normalised_blocks().items()}
            logits = self.bias.float() + sum(self.integration[m].float() * unimodal[m] for m in self.names)
        return logits, unimodal

    def integration_parameters(self) -> list[nn.Parameter]:
        return [self.integration[m] for m in self.names]
