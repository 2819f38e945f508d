"""Multi-modal mixup shared by ``mixup`` and ``crmt_mix`` (docs/methods.md §8, §10.3).

One λ ~ Beta(α, α) and one permutation π per batch, applied to every modality alike, so that
the mixed sample stays a coherent audio-visual pair. Both are drawn from the training
generator (not numpy's or torch's global RNG), so a run is reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..contracts import Batch

_SEED_HIGH = 2**63 - 1


@dataclass(frozen=True)
class Mix:
    """One batch's mixing: x̃ = λ x + (1 − λ) x_π, targets y (weight λ) and y_π (weight 1 − λ)."""

    lam: float
    perm: Tensor

    def inputs(self, batch: Batch) -> Batch:
        return {m: self.lam * x + (1 - self.lam) * x[self.perm] for m, x in batch.items()}

    def partner_labels(self, labels: Tensor) -> Tensor:
        return labels[self.perm]

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """λ·CE(h, y) + (1 − λ)·CE(h, y_π)."""
        return self.lam * F.cross_entropy(logits, labels) + (1 - self.lam) * F.cross_entropy(
            logits, self.partner_labels(labels)
        )


def draw_mix(batch_size: int, alpha: float, generator: torch.Generator, device: torch.device | str = "cpu") -> Mix:
    """Draw λ ~ Beta(α, α) (λ = 1, no mixing, for α ≤ 0, as the reference) and a permutation.

    torch has no seeded Beta sampler, so λ comes from a numpy Generator seeded by one draw from
    ``generator``; the permutation is drawn from ``generator`` directly.
    """
    seed = int(torch.randint(_SEED_HIGH, (1,), generator=generator).item())
    lam = float(np.random.default_rng(seed).beta(alpha, alpha)) if alpha > 0 else 1.0
    perm = torch.randperm(batch_size, generator=generator)
    if torch.device(device).type == "cuda":  # pinned + non-blocking: a pageable copy would wait for the GPU queue
        perm = perm.pin_memory().to(device, non_blocking=True)
    return Mix(lam, perm.to(device))
