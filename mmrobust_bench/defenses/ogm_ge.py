"""OGM-GE and plain OGM: on-the-fly gradient modulation (Peng et al., CVPR 2022; docs/methods.md §5).

The modality whose uni-modal scores dominate the batch gets its encoder's conv gradients scaled
down by k = 1 − tanh(α ρ), so the weaker modality can catch up; OGM-GE adds Gaussian noise of the
gradient's own scale to both encoders to restore generalisation. Coefficients come from the
forward pass of :meth:`loss` and are applied in :meth:`after_backward`; nothing is kept across steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..contracts import Batch
from ..models import MultiModalNet
from . import DEFENSES
from .base import Defense, TrainContext

log = logging.getLogger(__name__)

_SEED_HIGH = 2**63 - 1


def modulation_coefficients(unimodal: dict[str, Tensor], labels: Tensor, alpha: float) -> dict[str, Tensor]:
    """k_m per modality: 1 − tanh(α ρ) for the dominant one, 1 for the other (two modalities).

    s_m = Σ_i softmax(h^(m)(x_i))_{y_i} and ρ = s_first / s_second. As the reference, the first
    modality is modulated when ρ > 1, otherwise the second with 1/ρ (so a tie modulates the second).
    The k are 0-d fp32 tensors on the scores' device, chosen with ``torch.where``: no host sync
    in the training step.
    """
    if len(unimodal) != 2:
        raise ValueError(f"OGM needs exactly two modalities, got {len(unimodal)}: {', '.join(unimodal)}")
    (first, z_first), (second, z_second) = unimodal.items()
    s_first, s_second = (
        F.softmax(z.detach().float(), dim=1).gather(1, labels[:, None]).sum() for z in (z_first, z_second)
    )
    ratio = s_first / s_second
    first_leads = ratio > 1
    one = torch.ones_like(ratio)
    return {
        first: torch.where(first_leads, 1.0 - torch.tanh(alpha * ratio), one),
        second: torch.where(first_leads, one, 1.0 - torch.tanh(alpha / ratio)),
    }


def conv_weights(model: MultiModalNet, modality: str) -> list[Tensor]:
    """The 4-D (conv) weights of one encoder, in ``named_parameters`` order; BN, biases excluded."""
    return [p for _, p in model.encoders[modality].named_parameters() if p.dim() == 4]


@DEFENSES.register("ogm_ge")
class OGMGE(Defense):
    """OGM-GE: g ← k_m·g + N(0, std(g)²) on every conv weight of both encoders, inside the window."""

    name = "ogm_ge"
    head = "concat"
    noise: ClassVar[bool] = True

    @dataclass
    class Config:
        alpha: float = 0.1  # README default for VGGSound (0.8 for CREMA-D)
        modulation_start: int = 0  # first modulated epoch, 0-based
        modulation_end: int = 50  # last modulated epoch, inclusive

    def __init__(self, config: Any | None = None) -> None:
        super().__init__(config)
        self._coefficients: dict[str, float] | None = None
        self._warned: set[str] = set()

    def in_window(self, epoch: int) -> bool:
        return self.config.modulation_start <= epoch <= self.config.modulation_end

    def loss(self, model: MultiModalNet, batch: Batch, labels: Tensor, ctx: TrainContext) -> Tensor:
        out = model(batch)
        self._coefficients = (
            modulation_coefficients(out.unimodal, labels, self.config.alpha) if self.in_window(ctx.epoch) else None
        )
        return F.cross_entropy(out.logits.float(), labels)

    def after_backward(self, model: MultiModalNet, ctx: TrainContext) -> None:
        coefficients, self._coefficients = self._coefficients, None
        if coefficients is None:
            return
        noise_gen = self.noise_generator(ctx, next(model.parameters()).device) if self.noise else None
        for m, k in coefficients.items():
            weights = conv_weights(model, m)
            if not weights and m not in self._warned:
                self._warned.add(m)
                log.warning("OGM: encoder %r has no 4-D conv weights; its gradients are not modulated", m)
            for p in weights:
                if p.grad is None:
                    continue
                if noise_gen is None:
                    p.grad.mul_(k)
                else:
                    std = p.grad.std() + 1e-8  # of the unmodulated gradient, as the reference
                    noise = torch.empty_like(p.grad).normal_(generator=noise_gen).mul_(std)
                    p.grad.mul_(k).add_(noise)

    @staticmethod
    def noise_generator(ctx: TrainContext, device: torch.device) -> torch.Generator:
        """A generator on the model's device, seeded by one draw from the training generator.

        One draw per modulated step; noise is then drawn parameter by parameter, encoders in
        modality order, conv weights in ``named_parameters`` order. The training generator is
        saved with every resume checkpoint, so the noise is reproducible across interruptions.
        """
        seed = int(torch.randint(_SEED_HIGH, (1,), generator=ctx.generator).item())
        return torch.Generator(device=device).manual_seed(seed)


@DEFENSES.register("ogm")
class OGM(OGMGE):
    """Plain OGM: g ← k_m·g, no noise."""

    name = "ogm"
    noise = False
