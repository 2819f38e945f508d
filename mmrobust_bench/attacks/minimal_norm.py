"""``fmn_l2``: a native minimal-norm ℓ2 attack (FMN-style, Pintor et al. 2021, with DeepFool's choice of class).

It looks for the smallest joint ℓ2 perturbation of the attacked modalities that changes the fused
prediction, inside every modality's valid box. Run once, its per-sample norms give the whole
robust-accuracy-vs-ε curve (``bench.evaluate.minimal_norm_curve``): a sample is robust at ε exactly
when its minimal norm exceeds ε.

Each of ``steps`` iterations, with γ and α annealed by a cosine from their initial to final values:

1. at x + δ compute, for the ``candidates`` most likely other classes j, the margin z_y − z_j and its
   gradient; the linearised distance to class j's boundary is (z_y − z_j)/‖∇(z_y − z_j)‖ and the
   class with the smallest one is the target of this step (DeepFool's rule: on a linear model it is
   the exact nearest boundary, where FMN's largest-logit class can be a farther one);
2. keep x + δ as the best adversarial if it is misclassified with a smaller ‖δ‖ than before;
3. adapt the radius r: shrink to min(r (1 − γ), best norm) while adversarial, grow by (1 + γ) once an
   adversarial has been found but the iterate is not, and before that jump to (1 + γ) times ‖δ‖ plus
   the linearised distance to the boundary (the overshoot crosses a boundary that the linearisation
   hits exactly);
4. step along the normalised negative margin gradient by α r, project onto the ball of radius r and
   clamp into the valid boxes (clamping towards a box that contains the clean point never increases ‖δ‖).

Steps are scale-free (proportional to r), so the same defaults serve any input scale. Samples
already misclassified keep δ = 0; samples for which no adversarial was found return the last
iterate (the base class projects it onto the threat ball). Unlike FGM/PGD the search does not
depend on ε, so a per-sample ε vector only sets the final projection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..contracts import Batch, ModalitySpec, ThreatModel, input_gradients_of, joint_l2_norm
from . import ATTACKS
from .base import Attack
from .view import clamp_to_box


def _rows(v: Tensor, like: Tensor) -> Tensor:
    """A per-sample vector shaped to broadcast over ``like`` (B, ...)."""
    return v.view((-1,) + (1,) * (like.dim() - 1))


class MinimalNormL2(Attack):
    """FMN-style minimal-norm ℓ2 attack over the jointly attacked modalities (see the module docstring)."""

    name = "fmn_l2"
    per_sample_eps = True
    minimal_norm = True

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        *,
        seed: int = 0,
        steps: int = 100,
        gamma: float = 0.05,
        gamma_final: float = 0.001,
        alpha: float = 1.0,
        alpha_final: float = 0.01,
        candidates: int = 9,
    ) -> None:
        super().__init__(specs, seed=seed)
        if steps < 1 or candidates < 1:
            raise ValueError("fmn_l2 needs steps >= 1 and candidates >= 1")
        if not (0 < gamma_final <= gamma < 1) or not (0 < alpha_final <= alpha):
            raise ValueError("fmn_l2 needs 0 < gamma_final <= gamma < 1 and 0 < alpha_final <= alpha")
        self.steps = int(steps)
        self.gamma, self.gamma_final = float(gamma), float(gamma_final)
        self.alpha, self.alpha_final = float(alpha), float(alpha_final)
        self.candidates = int(candidates)

    def describe(self) -> str:
        return f"{self.name}(steps={self.steps}, candidates={self.candidates})"

    def validate(self, threat: ThreatModel) -> None:
        super().validate(threat)
        if threat.targeted:
            raise ValueError("fmn_l2 is untargeted")
        if not threat.joint and len(threat.modalities) > 1:
            raise ValueError("fmn_l2 measures one joint ℓ2 norm; use a joint threat or attack one modality at a time")

    def _margins(
        self, model: nn.Module, batch: Batch, delta: dict[str, Tensor], labels: Tensor, mods: Sequence[str]
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Logits at x + δ, the nearest linearised boundary's margin, distance and margin gradient."""
        inputs = dict(batch)
        for m in mods:
            inputs[m] = clamp_to_box(self.specs[m], batch[m] + delta[m])  # torch.clamp: full gradient on a bound
        logits = model(inputs).logits.float()
        k = logits.shape[1]
        true = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.scatter(1, labels[:, None], -math.inf)
        top = others.topk(min(self.candidates, k - 1), dim=1).indices
        best_dist = torch.full_like(true, math.inf)
        best_margin = torch.zeros_like(true)
        best_grad = {m: torch.zeros_like(delta[m]) for m in mods}
        for c in range(top.shape[1]):
            margin = true - logits.gather(1, top[:, c : c + 1]).squeeze(1)
            grads = input_gradients_of(margin.sum(), [delta[m] for m in mods], retain_graph=c + 1 < top.shape[1])
            grad = dict(zip(mods, grads))
            dist = margin.detach() / joint_l2_norm(grad, mods).clamp_min(1e-12)
            closer = dist < best_dist
            best_dist = torch.where(closer, dist, best_dist)
            best_margin = torch.where(closer, margin.detach(), best_margin)
            for m in mods:
                best_grad[m] = torch.where(_rows(closer, grad[m]), grad[m], best_grad[m])
        return logits.detach(), best_margin, best_dist, best_grad

    def perturb(
        self,
        model: nn.Module,
        batch: Batch,
        labels: Tensor,
        threat: ThreatModel,
        eps: Tensor,
        *,
        targets: Tensor | None = None,
    ) -> Batch:
        mods = threat.modalities
        n = labels.shape[0]
        delta = {m: torch.zeros_like(batch[m], dtype=torch.promote_types(batch[m].dtype, torch.float32)) for m in mods}
        best = {m: batch[m].clone() for m in mods}
        best_norm = torch.full((n,), math.inf, device=labels.device)
        found = torch.zeros(n, dtype=torch.bool, device=labels.device)
        radius = torch.full((n,), math.inf, device=labels.device)
        for i in range(self.steps):
            cosine = (1 + math.cos(math.pi * i / self.steps)) / 2
            gamma = self.gamma_final + (self.gamma - self.gamma_final) * cosine
            alpha = self.alpha_final + (self.alpha - self.alpha_final) * cosine
            for m in mods:
                delta[m].requires_grad_(True)
            logits, _margin, dist, grad = self._margins(model, batch, delta, labels, mods)
            delta = {m: d.detach() for m, d in delta.items()}
            norm = joint_l2_norm(delta, mods)
            adversarial = logits.argmax(1) != labels
            better = adversarial & (norm < best_norm)
            best_norm = torch.where(better, norm, best_norm)
            for m in mods:
                best[m] = torch.where(
                    _rows(better, best[m]), self.specs[m].clamp(batch[m] + delta[m]).to(best[m].dtype), best[m]
                )
            found |= adversarial
            radius = torch.where(
                adversarial,
                torch.minimum(radius * (1 - gamma), best_norm),
                torch.where(found, radius * (1 + gamma), (norm + dist.clamp_min(0)) * (1 + gamma)),
            )
            step = joint_l2_norm(grad, mods).clamp_min(1e-12)
            for m in mods:
                delta[m] = delta[m] - _rows(alpha * radius / step, grad[m]).to(grad[m].dtype) * grad[m]
            scale = torch.clamp(radius / joint_l2_norm(delta, mods).clamp_min(1e-12), max=1.0)
            for m in mods:
                moved = batch[m] + delta[m] * _rows(scale, delta[m]).to(delta[m].dtype)
                delta[m] = self.specs[m].clamp(moved) - batch[m]
        last = {m: self.specs[m].clamp(batch[m] + delta[m]) for m in mods}
        return {m: torch.where(_rows(found, best[m]), best[m], last[m].to(best[m].dtype)) for m in mods}


@ATTACKS.register("fmn_l2")
def _fmn_l2(specs: Sequence[ModalitySpec], *, seed: int = 0, **options: Any) -> MinimalNormL2:
    return MinimalNormL2(specs, seed=seed, **options)
