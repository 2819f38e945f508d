"""PMR: prototypical modal rebalance (Fan et al., CVPR 2023; docs/methods.md §6, official code).

Class prototypes of each modality's features give a classifier −‖φ^(m)(x) − p_k^(m)‖ that does
not depend on the fusion head; the modality it scores lower is the under-trained one, and PMR
adds that modality's prototypical CE to speed it up. The paper's entropy regulariser is not in
the official code and is not implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..contracts import Batch
from ..models import MultiModalNet
from . import DEFENSES
from .base import Defense, TrainContext

PROTOTYPES = "pmr_prototypes"  # key in ctx.state, so prototypes are saved with the resume checkpoint
BATCH_SHARE = 10  # prototypes use the first ⌊n_batches / 10⌋ shuffled batches, as the reference


def _two_modalities(model: MultiModalNet) -> tuple[str, str]:
    if len(model.modalities) != 2:
        raise ValueError(
            f"PMR needs exactly two modalities, got {len(model.modalities)}: {', '.join(model.modalities)}"
        )
    return model.modalities[0], model.modalities[1]


def prototype_logits(features: Tensor, prototypes: Tensor) -> Tensor:
    """−d_ik = −‖φ(x_i) − p_k‖₂."""
    return -torch.cdist(features.float(), prototypes.to(features.device, torch.float32))


def prototype_score(logits: Tensor, labels: Tensor) -> Tensor:
    """s = Σ_i softmax(−d_i)_{y_i}, summed over the batch (a 0-d tensor: no host sync)."""
    return F.softmax(logits.detach(), dim=1).gather(1, labels[:, None]).sum()


@DEFENSES.register("pmr")
class PMR(Defense):
    """CE(h, y) + α·CE(−d^(m), y) for the modality m with the lower prototype score."""

    name = "pmr"
    head = "concat"

    @dataclass
    class Config:
        alpha: float = 1.0  # weight of the prototypical CE
        momentum_coef: float = 0.2  # μ in p ← (1−μ) p_new + μ p_old
        modulation_start: int = 0  # first epoch with the prototypical term, 0-based
        modulation_end: int = 100  # last such epoch, inclusive

    def on_epoch_start(self, model: MultiModalNet, ctx: TrainContext) -> None:
        """Recompute prototypes before every epoch (= after the previous one, as the reference)."""
        _two_modalities(model)
        ctx.state[PROTOTYPES] = self.update_prototypes(model, ctx)

    def update_prototypes(self, model: MultiModalNet, ctx: TrainContext) -> dict[str, Tensor]:
        """Class means of eval-mode features over the first ⌊n_batches/10⌋ (≥ 1) shuffled batches.

        The reference passes the index of the epoch just finished (ctx.epoch − 1, and 0 before
        training) and applies the EMA only when it is > 0, so the first two computations are plain
        means. A class absent from the selected batches keeps its old prototype (zeros at first).
        """
        train, bs = ctx.dataset.train, ctx.train.batch_size
        take = max(1, math.ceil(len(train) / bs) // BATCH_SHARE)
        k = ctx.dataset.num_classes
        sums: dict[str, Tensor] = {}
        counts = torch.zeros(k, device=ctx.device)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for i, (batch, labels) in enumerate(
                train.batches(bs, shuffle=True, generator=ctx.generator, device=ctx.device)
            ):
                if i == take:
                    break
                for m, f in model.encode(batch).items():
                    sums.setdefault(m, torch.zeros(k, f.shape[1], device=ctx.device)).index_add_(0, labels, f.float())
                counts.index_add_(0, labels, torch.ones_like(labels, dtype=counts.dtype))
        model.train(was_training)
        old = {m: p.to(ctx.device) for m, p in ctx.state.get(PROTOTYPES, {}).items()}
        seen = (counts > 0)[:, None]
        finished_epoch = max(ctx.epoch - 1, 0)
        mu = self.config.momentum_coef
        prototypes = {}
        for m, total in sums.items():
            previous = old.get(m, torch.zeros_like(total))
            new = total / counts.clamp_min(1)[:, None]
            if finished_epoch > 0:
                new = (1 - mu) * new + mu * previous
            prototypes[m] = torch.where(seen, new, previous)
        return prototypes

    def loss(self, model: MultiModalNet, batch: Batch, labels: Tensor, ctx: TrainContext) -> Tensor:
        out = model(batch)
        loss = F.cross_entropy(out.logits.float(), labels)
        if not self.config.modulation_start <= ctx.epoch <= self.config.modulation_end:
            return loss
        first, second = _two_modalities(model)
        prototypes = ctx.state[PROTOTYPES]
        logits = {m: prototype_logits(out.features[m], prototypes[m]) for m in (first, second)}
        ratio = prototype_score(logits[second], labels) / prototype_score(logits[first], labels)
        # ratio > 1: the second modality dominates, help the first; ratio < 1: help the second;
        # a tie adds nothing. Selected by 0/1 weights rather than `if`, so the step never waits
        # on the GPU; the unselected term contributes exactly zero value and gradient.
        help_first = (ratio > 1).float()
        help_second = (ratio < 1).float()
        return loss + self.config.alpha * (
            help_first * F.cross_entropy(logits[first], labels) + help_second * F.cross_entropy(logits[second], labels)
        )
