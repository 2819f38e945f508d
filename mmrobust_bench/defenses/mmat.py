"""MMAT: multi-modal adversarial training (Li et al., ICASSP 2022; docs/methods.md §7).

No official training code exists, so MMAT is JT trained only on joint adversarial examples from
exactly CRMT-AT's generator (§10.4): the two AT variants then differ only by CRMT itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..contracts import Batch
from ..models import MultiModalNet
from . import DEFENSES
from .adversarial import joint_normalised_ascent
from .base import Defense, TrainContext


@DEFENSES.register("mmat")
class MultiModalAdversarialTraining(Defense):
    """CE on x_adv = Gen(x, y) only, no clean term; the model stays in train mode while attacking."""

    name = "mmat"
    head = "concat"

    @dataclass
    class Config:
        at_eps: float = 0.1  # joint-ℓ2 size of the ascent; step size ε/steps
        at_steps: int = 5

    def loss(self, model: MultiModalNet, batch: Batch, labels: Tensor, ctx: TrainContext) -> Tensor:
        adv = joint_normalised_ascent(model, batch, labels, eps=self.config.at_eps, steps=self.config.at_steps)
        return F.cross_entropy(model(adv).logits.float(), labels)
