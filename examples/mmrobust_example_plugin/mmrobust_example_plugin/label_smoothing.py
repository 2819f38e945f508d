"""JT with label-smoothed cross-entropy: the fused logits are trained towards (1 − s)·onehot + s/K.

A plugin defense is a :class:`~mmrobust_bench.defenses.base.Defense` subclass with a ``Config``
dataclass of hyperparameters (``--set smoothing=0.2`` overrides them) and a ``loss``; it is not
registered with the built-in decorator, the entry point in pyproject.toml is its registration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from mmrobust_bench.contracts import Batch
from mmrobust_bench.defenses.base import Defense, TrainContext
from mmrobust_bench.models import MultiModalNet


class LabelSmoothingJT(Defense):
    name = "label_smoothing_jt"
    head = "concat"

    @dataclass
    class Config:
        smoothing: float = 0.1  # s: probability mass spread uniformly over all K classes

        def __post_init__(self) -> None:
            if not 0.0 <= self.smoothing < 1.0:
                raise ValueError(f"smoothing must lie in [0, 1), got {self.smoothing}")

    def loss(self, model: MultiModalNet, batch: Batch, labels: Tensor, ctx: TrainContext) -> Tensor:
        return F.cross_entropy(model(batch).logits.float(), labels, label_smoothing=self.config.smoothing)
