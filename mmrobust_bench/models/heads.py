"""Fusion heads on top of per-modality features.

``ConcatHead`` is JT's late fusion h = W[φ^(v); φ^(a)] + b (uni-modal scores use the bias/2
convention of OGM/PMR). ``CRMTHead`` is CRMT's fusion layer (docs/methods.md §10.1), vectorised and
always computed in fp32, even under autocast. Its default normalisation is the paper's orthogonal
one (W̃^(m) W̃^(m)ᵀ = I, ``own_groups="full"``); the reference code's per-row normalisation
(zero-mean unit-norm rows that are *not* mutually orthogonal) is ``own_groups="per_class_unit_rows"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..hints import did_you_mean


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
    """OWN with one group: (Z Zᵀ)^{-1/2} Z for the row-centred Z, so W̃ W̃ᵀ = I (needs K < D: centring
    removes one dimension)."""
    if w.shape[0] >= w.shape[1]:
        raise ValueError(
            f"the orthogonal CRMT head (own_groups='full') needs K < feature dim, got K={w.shape[0]}, "
            f"D={w.shape[1]}; raise feature_dim or use own_groups=per_class_unit_rows"
        )
    centred = w - w.mean(dim=1, keepdim=True)
    gram = (centred @ centred.t()).double()  # K × K: float64 keeps W̃W̃ᵀ = I to fp32 precision
    evals, evecs = torch.linalg.eigh(gram)
    inv_sqrt = evecs @ torch.diag_embed(evals.clamp_min(eps).rsqrt()) @ evecs.t()
    return (inv_sqrt @ centred.double()).to(w.dtype)


# "full": the paper's orthogonal head (W̃W̃ᵀ = I, the default); "per_class_unit_rows": the reference code's
# OWN with one group per row, i.e. centred unit-norm rows with non-zero off-diagonal Gram entries.
OWN_MODES = ("full", "per_class_unit_rows")
DEFAULT_OWN_GROUPS = "full"
# Old spellings still accepted (committed configurations use them); mapped to the name of what they do.
LEGACY_OWN_GROUPS = {"per_class": "per_class_unit_rows"}


def canonical_own_groups(name: str) -> str:
    """The canonical ``own_groups`` name; a legacy spelling is mapped (with a DeprecationWarning), an
    unknown one is an error listing the valid names."""
    if name in OWN_MODES:
        return name
    if name in LEGACY_OWN_GROUPS:
        new = LEGACY_OWN_GROUPS[name]
        warnings.warn(
            f"own_groups={name!r} is deprecated: it names the reference code's per-class unit rows, "
            f"which are not orthogonal; use own_groups={new!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        return new
    hint = did_you_mean(name, list(OWN_MODES) + list(LEGACY_OWN_GROUPS))
    raise ValueError(f"own_groups must be one of {', '.join(OWN_MODES)}, got {name!r}{hint}")


class CRMTHead(nn.Module):
    """h_k = Σ_m a_k^(m) z_k^(m) + b_k with z^(m) = W̃^(m) φ^(m) and W̃^(m) normalised per block.

    ``own_groups="full"`` (default) gives the paper's orthonormal rows, W̃^(m) W̃^(m)ᵀ = I;
    ``"per_class_unit_rows"`` reproduces the reference code (centred unit-norm rows, not mutually
    orthogonal; the legacy name ``"per_class"`` is accepted). The integration weights a^(m) start at
    0.1 as in the reference.
    """

    def __init__(
        self, names: Sequence[str], feature_dims: Sequence[int], num_classes: int, own_groups: str = DEFAULT_OWN_GROUPS
    ) -> None:
        super().__init__()
        own_groups = canonical_own_groups(own_groups)
        if own_groups == "full":
            for d in feature_dims:
                if num_classes >= d:
                    raise ValueError(
                        f"the orthogonal CRMT head (own_groups='full') needs K < feature dim, got "
                        f"K={num_classes}, D={d}; raise feature_dim or use "
                        "own_groups=per_class_unit_rows"
                    )
        self.names = tuple(names)
        self.dims = tuple(feature_dims)
        self.own_groups = own_groups
        linear = nn.Linear(sum(self.dims), num_classes)
        self.weight = linear.weight
        self.bias = linear.bias
        self.integration = nn.ParameterDict({m: nn.Parameter(torch.full((num_classes,), 0.1)) for m in self.names})

    def normalised_blocks(self) -> dict[str, Tensor]:
        normalise = centred_unit_rows if self.own_groups == "per_class_unit_rows" else orthonormal_rows
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
