"""Multi-modal Mixup: JT on mixed audio-visual pairs (docs/methods.md §8)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..contracts import Batch, batch_size
from ..models import MultiModalNet
from . import DEFENSES
from .base import Defense, TrainContext
from .mixing import draw_mix


@DEFENSES.register("mixup")
class Mixup(Defense):
    """Concat head trained on λx + (1−λ)x_π (all modalities alike) with the mixed CE target."""

    name = "mixup"
    head = "concat"

    @dataclass
    class Config:
        alpha: float = 1.0  # λ ~ Beta(α, α), one λ per batch

    def loss(self, model: MultiModalNet, batch: Batch, labels: Tensor, ctx: TrainContext) -> Tensor:
        mix = draw_mix(batch_size(batch), self.config.alpha, ctx.generator, labels.device)
        return mix.cross_entropy(model(mix.inputs(batch)).logits.float(), labels)
