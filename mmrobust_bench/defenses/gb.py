"""GB: online Gradient Blending (Wang, Tran, Feiszli, CVPR 2020; docs/methods.md §4).

The concat model gets one extra uni-modal head g^(m) = Linear(D, K) per modality, trained with
L = Σ_m w_m CE(g^(m)(φ^(m)), y) + w_fused CE(h, y); only h is used at test time and under attack.
Every ``super_epoch`` epochs the weights are re-estimated from the overfitting-to-generalisation
ratio: copies of the current model (each uni-modal "model" is its encoder and extra head, the fused
one the full network) train for ``super_epoch`` epochs, and w_k ∝ G_k / O_k² on mean losses. The
automatic ``super_epoch`` (-1, the default) is a third of the schedule, so the blend is re-estimated at least
three times on any schedule of three or more epochs (a fixed length as long as the schedule would estimate it
once, from the untrained model). The validation losses come from a held-out V′ (``holdout_fraction`` of
train, fixed by ``holdout_seed``) that neither the main loop nor the estimation trains on.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.base import InMemoryDataset, TensorSplit
from ..models import MultiModalNet
from . import DEFENSES
from .base import Defense, TrainConfig, TrainContext, lr_factor, make_optimizer

log = logging.getLogger(__name__)

FUSED = "fused"  # the weight key of the fused logits h; the other keys are modality names
MIN_OVERFIT_SQUARED = 1e-8
WEIGHT_FLOOR = 1e-3
STATE_KEY = "gb_weights"
AUTO = -1  # super_epoch's automatic value: a third of the schedule (super_epoch_length)


class Losses(NamedTuple):
    """Mean train loss L^T and mean held-out loss L^V of one model at one checkpoint."""

    train: float
    val: float


def blend_weights(losses_before: Mapping[str, Losses], losses_after: Mapping[str, Losses]) -> dict[str, float]:
    """w_k ∝ G_k / O_k² with G = L^V_N − L^V_{N+n}, O = (L^V − L^T)_{N+n} − (L^V − L^T)_N, Σ w = 1.

    O² is floored at 1e-8; a model whose held-out loss did not improve (G ≤ 0) gets the weight floor
    1e-3 and the others share the rest. If no model improved, the weights are uniform.
    """
    ratios: dict[str, float] = {}
    for k, before in losses_before.items():
        after = losses_after[k]
        gain = before.val - after.val
        overfit = (after.val - after.train) - (before.val - before.train)
        if gain > 0:
            ratios[k] = gain / max(overfit * overfit, MIN_OVERFIT_SQUARED)
    if not ratios:
        return {k: 1.0 / len(losses_before) for k in losses_before}
    share = 1.0 - WEIGHT_FLOOR * (len(losses_before) - len(ratios))
    total = sum(ratios.values())
    return {k: share * ratios[k] / total if k in ratios else WEIGHT_FLOOR for k in losses_before}


def super_epoch_length(super_epoch: int, epochs: int) -> int:
    """The epochs between two estimates (and each estimate's training length): ``super_epoch``, or for the
    automatic value max(1, epochs // 3), so that a schedule of E >= 3 epochs gets ceil(E / (E // 3)) >= 3
    estimates (the first at epoch 0, on the untrained model) and a shorter one an estimate every epoch."""
    return max(1, epochs // 3) if super_epoch == AUTO else super_epoch


def holdout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(fit, held-out) sample indices: a seeded random ``fraction`` of n (at least one) is held out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, round(fraction * n))
    return order[held:].sort().values, order[:held].sort().values


def attach_aux_heads(model: MultiModalNet, num_classes: int) -> MultiModalNet:
    """Add g^(m) = Linear(D_m, K) as ``model.aux_heads`` so that checkpoints hold them."""
    dims = dict(zip(model.head.names, model.head.dims))
    model.aux_heads = nn.ModuleDict({m: nn.Linear(dims[m], num_classes) for m in model.modalities})
    return model


def component_loss(model: MultiModalNet, component: str, batch: Mapping[str, Tensor], labels: Tensor) -> Tensor:
    """CE of one blended model: g^(m) on its own encoder only, or the fused logits h."""
    if component == FUSED:
        return F.cross_entropy(model(batch).logits.float(), labels)
    features = model.encoders[component](batch[component])
    return F.cross_entropy(model.aux_heads[component](features).float(), labels)


def component_parameters(model: MultiModalNet, component: str) -> Iterator[nn.Parameter]:
    """What each blended model trains: its encoder and extra head, or the full network for h."""
    if component == FUSED:
        yield from model.encoders.parameters()
        yield from model.head.parameters()
    else:
        yield from model.encoders[component].parameters()
        yield from model.aux_heads[component].parameters()


@DEFENSES.register("gb")
class GradientBlending(Defense):
    """GB: online Gradient Blending, per-modality heads weighted by generalisation over overfitting."""

    name = "gb"
    head = "concat"

    @dataclass
    class Config:
        # re-estimate the weights every this many epochs, training copies as long; -1 (automatic):
        # max(1, epochs // 3), so estimates at epochs 0, s, 2s, ... happen at least 3 times on any schedule of
        # >= 3 epochs (synthav's 6 epochs: 0, 2, 4; avdigits' 10: 0, 3, 6, 9)
        super_epoch: int = AUTO
        holdout_fraction: float = 0.1  # V′, held out from training for the validation losses
        holdout_seed: int = 0

        def __post_init__(self) -> None:
            if self.super_epoch < 1 and self.super_epoch != AUTO:
                raise ValueError(
                    f"super_epoch must be >= 1 (or {AUTO}: automatic, max(1, epochs // 3)), got {self.super_epoch}"
                )
            if not 0.0 < self.holdout_fraction < 1.0:
                raise ValueError(f"holdout_fraction must lie in (0, 1), got {self.holdout_fraction}")

    def __init__(self, config: GradientBlending.Config | None = None) -> None:
        super().__init__(config)
        self._splits: tuple[TensorSplit, TensorSplit, TensorSplit] | None = None  # (source, fit, held out)

    def build_model(self, dataset: InMemoryDataset, train: TrainConfig) -> MultiModalNet:
        return attach_aux_heads(super().build_model(dataset, train), dataset.num_classes)

    def components(self, model: MultiModalNet) -> tuple[str, ...]:
        return tuple(model.modalities) + (FUSED,)

    def weights(self, model: MultiModalNet, ctx: TrainContext) -> dict[str, float]:
        """The current blend (uniform before the first estimate)."""
        uniform = {k: 1.0 / len(self.components(model)) for k in self.components(model)}
        return ctx.state.get(STATE_KEY, uniform)

    def loss(self, model: MultiModalNet, batch, labels: Tensor, ctx: TrainContext) -> Tensor:
        out = model(batch)
        weights = self.weights(model, ctx)
        total = weights[FUSED] * F.cross_entropy(out.logits.float(), labels)
        for m in model.modalities:
            total = total + weights[m] * F.cross_entropy(model.aux_heads[m](out.features[m]).float(), labels)
        return total

    def split(self, train: TensorSplit) -> tuple[TensorSplit, TensorSplit]:
        """(fit, V′): the seeded partition of the training split, computed once per split."""
        if self._splits is None or self._splits[0] is not train:
            fit_idx, held_idx = holdout_split(len(train), self.config.holdout_fraction, self.config.holdout_seed)
            self._splits = (train, train.subset(fit_idx), train.subset(held_idx))
        return self._splits[1], self._splits[2]

    def training_split(self, train: TensorSplit, ctx: TrainContext) -> TensorSplit:
        """The shared loop trains on fit only: V′ stays unseen, so the overfitting O measured on it is honest."""
        return self.split(train)[0]

    def on_epoch_start(self, model: MultiModalNet, ctx: TrainContext) -> None:
        fit, held = self.split(ctx.dataset.train)
        if ctx.epoch % self.super_epoch(ctx) == 0:
            ctx.state[STATE_KEY] = self.estimate(model, fit, held, ctx)
            log.info(
                "gb epoch %d weights: %s", ctx.epoch, ", ".join(f"{k}={w:.3f}" for k, w in ctx.state[STATE_KEY].items())
            )

    def super_epoch(self, ctx: TrainContext) -> int:
        """``super_epoch`` on this schedule (the automatic value resolved: :func:`super_epoch_length`)."""
        return super_epoch_length(self.config.super_epoch, ctx.train.epochs)

    def estimate(
        self, model: MultiModalNet, fit: TensorSplit, held: TensorSplit, ctx: TrainContext
    ) -> dict[str, float]:
        """Train a copy per blended model for ``super_epoch`` epochs on fit; compare losses before/after."""
        cfg = ctx.train
        lr = cfg.lr * lr_factor(cfg, ctx.epoch)  # the main loop's lr in this epoch
        before, after = {}, {}
        for k in self.components(model):
            trial = copy.deepcopy(model)
            before[k] = self.measure(trial, k, fit, held, ctx)
            opt = make_optimizer(list(component_parameters(trial, k)), cfg, lr)
            for _ in range(self.super_epoch(ctx)):
                trial.train()
                for batch, labels in fit.batches(
                    cfg.batch_size, shuffle=True, generator=ctx.generator, device=ctx.device
                ):
                    loss = component_loss(trial, k, batch, labels)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            after[k] = self.measure(trial, k, fit, held, ctx)
        return blend_weights(before, after)

    def measure(
        self, model: MultiModalNet, component: str, fit: TensorSplit, held: TensorSplit, ctx: TrainContext
    ) -> Losses:
        """Mean per-sample losses (eval mode) on the fit split and on V′."""
        model.eval()

        def mean_loss(split: TensorSplit) -> float:
            total = 0.0
            with torch.no_grad():
                for batch, labels in split.batches(ctx.train.batch_size, device=ctx.device):
                    total += float(component_loss(model, component, batch, labels)) * labels.shape[0]
            return total / len(split)

        return Losses(train=mean_loss(fit), val=mean_loss(held))
