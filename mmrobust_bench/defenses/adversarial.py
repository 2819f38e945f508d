"""The training-time adversarial example generator of CRMT-AT and MMAT (docs/methods.md §10.4).

Kept separate from the evaluation attacks on purpose: it runs with the model in *train* mode (BN
statistics update, as in the reference), uses an element-wise ±2ε box (never active) and no pixel
clamp — a training recipe, not a threat model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..contracts import Batch, input_gradients_of


def joint_normalised_ascent(
    model: nn.Module, batch: Batch, labels: Tensor, *, eps: float = 0.1, steps: int = 5, step_size: float | None = None
) -> Batch:
    """5 steps of size ε/5 along ∇CE normalised jointly over all modalities, clipped to ±2ε."""
    alpha = eps / steps if step_size is None else step_size
    adv = {m: x.detach().clone() for m, x in batch.items()}
    for _ in range(steps):
        inputs = {m: x.requires_grad_(True) for m, x in adv.items()}
        loss = F.cross_entropy(model(inputs).logits.float(), labels)
        grads = input_gradients_of(loss, list(inputs.values()))
        norm = torch.sqrt(sum(g.float().flatten(1).pow(2).sum(1) for g in grads) + 1e-6)
        with torch.no_grad():
            for (m, x), g in zip(inputs.items(), grads):
                moved = x + alpha * g / norm.view((-1,) + (1,) * (g.dim() - 1)).to(g.dtype)
                adv[m] = batch[m] + torch.clamp(moved - batch[m], -2 * eps, 2 * eps)
    return {m: x.detach() for m, x in adv.items()}
