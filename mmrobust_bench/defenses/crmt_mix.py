"""CRMT-Mix: CRMT whose step 1 trains on mixed pairs with a mixed margin (docs/methods.md §10.3).

The intended margin (paper/README) is L1_mix = mean log Σ_m N^(m)/D^(m) with
N^(m) = Σ_{k∉{y_A, y_B}} e^{z_k^(m)} and D^(m) = e^{λ z_{y_A}^(m) + (1−λ) z_{y_B}^(m)}; it is computed
as one logsumexp so large logits cannot overflow. The reference code subtracts the *logits* in
the numerator instead; ``mix_margin="official"`` reproduces it exactly. Steps 2 and τ are CRMT's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..contracts import Batch, batch_size
from ..models import MultiModalNet
from . import DEFENSES
from .base import TrainContext
from .crmt import MARGIN_FLOOR, CRMTBase
from .mixing import draw_mix

MIX_MARGINS = ("intended", "official")


def intended_mix_margin(unimodal: dict[str, Tensor], y_a: Tensor, y_b: Tensor, lam: float) -> Tensor:
    """mean_i LSE over m and k∉{y_A, y_B} of z_k^(m) − λ z_{y_A}^(m) − (1−λ) z_{y_B}^(m).

    A row with no class outside {y_A, y_B} (K = 2 and y_A ≠ y_B) has an empty sum, log 0 = −∞;
    such rows get the constant log 1e-5 of CRMT's L1 floor instead, so the loss and its
    gradient stay finite.
    """
    any_z = next(iter(unimodal.values()))
    targets = torch.zeros_like(any_z, dtype=torch.bool).scatter(1, y_a[:, None], True).scatter(1, y_b[:, None], True)
    terms = []
    for z in unimodal.values():
        z = z.float()
        anchor = lam * z.gather(1, y_a[:, None]) + (1 - lam) * z.gather(1, y_b[:, None])
        terms.append((z - anchor).masked_fill(targets, float("-inf")))
    empty = targets.all(dim=1, keepdim=True)
    floor = torch.where(empty, math.log(MARGIN_FLOOR), float("-inf"))
    return torch.logsumexp(torch.cat(terms + [floor], dim=1), dim=1).mean()


def official_mix_margin(unimodal: dict[str, Tensor], y_a: Tensor, y_b: Tensor, lam: float) -> Tensor:
    """The reference code verbatim: mean log Σ_m N^(m) e^{−(λ z_{y_A} + (1−λ) z_{y_B})} with the numerator
    N^(m) = Σ_k e^{z_k} − z_{y_A} − [y_A≠y_B] z_{y_B}.

    It subtracts logits rather than their exponentials, has no floor, and overflows or gives NaN
    for large logits; kept only for exact reproduction.
    """
    different = (y_a != y_b).to(torch.float32)
    total = 0.0
    for z in unimodal.values():
        z = z.float()
        z_a = z.gather(1, y_a[:, None]).squeeze(1)
        z_b = z.gather(1, y_b[:, None]).squeeze(1)
        numerator = torch.exp(z).sum(1) - z_a - z_b * different
        total = total + numerator * torch.exp(-(lam * z_a + (1 - lam) * z_b))
    return torch.log(total).mean()


@DEFENSES.register("crmt_mix")
class CRMTMix(CRMTBase):
    """CRMT-Mix: step 1 is mixup CE + ρ·L1_mix on the mixed inputs; then τ and step 2 as CRMT."""

    name = "crmt_mix"

    @dataclass
    class Config(CRMTBase.Config):
        mix_alpha: float = 1.0  # λ ~ Beta(α, α), one λ per batch
        mix_margin: str = "intended"  # "official" subtracts logits in the numerator, as the reference

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.mix_margin not in MIX_MARGINS:
                raise ValueError(f"mix_margin must be one of {', '.join(MIX_MARGINS)}, got {self.mix_margin!r}")

    def loss(self, model: MultiModalNet, batch: Batch, labels: Tensor, ctx: TrainContext) -> Tensor:
        mix = draw_mix(batch_size(batch), self.config.mix_alpha, ctx.generator, labels.device)
        out = model(mix.inputs(batch))
        margin = intended_mix_margin if self.config.mix_margin == "intended" else official_mix_margin
        l1 = margin(out.unimodal, labels, mix.partner_labels(labels), mix.lam)
        return mix.cross_entropy(out.logits.float(), labels) + self.config.rho * l1
