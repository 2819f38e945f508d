"""The paper's exact attacks (docs/methods.md §12): multi-modal FGM and ℓ2-PGD, and uni-modal variants;
plus ``pgd_linf``, a library-free ℓ∞ PGD reference (sign steps, per-sample ε, no random start).

The loss is CE on the fused logits with the true labels; the model stays in eval mode (set by the
caller); only bounded modalities (visual, flow) are clamped; audio never is. ε may be a per-sample
vector, so a whole radius sweep runs as one batched computation. ``precision="bf16"`` runs the
model's forward and backward under bf16 autocast (CUDA's fast path); inputs, gradients, norms,
steps and projections stay fp32, so only the model's arithmetic is rounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..contracts import Batch, ModalitySpec, ThreatModel, input_gradients_of, joint_l2_norm
from . import ATTACKS
from .base import Attack


def _expand(v: Tensor, like: Tensor) -> Tensor:
    return v.view((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision


def input_gradients(
    model: nn.Module,
    batch: Batch,
    labels: Tensor,
    modalities: Sequence[str],
    targets: Tensor | None = None,
    precision: str = "fp32",
) -> dict[str, Tensor]:
    """∇_{x^(m)} CE(h(x), y) for the attacked modalities (−CE towards ``targets`` if given); under
    ``precision="bf16"`` the model runs in bf16 autocast and the loss and gradients come back in fp32."""
    inputs = {m: (x.detach().requires_grad_(m in modalities)) for m, x in batch.items()}
    device_type = next(iter(inputs.values())).device.type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(inputs).logits
    logits = logits.float()
    if targets is None:
        loss = F.cross_entropy(logits, labels, reduction="sum")
    else:
        loss = -F.cross_entropy(logits, targets, reduction="sum")
    grads = input_gradients_of(loss, [inputs[m] for m in modalities])
    return {m: g.detach() for m, g in zip(modalities, grads)}


def normalised_step(grads: dict[str, Tensor], threat: ThreatModel, guard: float) -> dict[str, Tensor]:
    """Unit-ℓ2 direction: jointly normalised over the attacked modalities, or per modality."""
    if threat.joint:
        n = joint_l2_norm(grads, threat.modalities) + guard
        return {m: g / _expand(n, g) for m, g in grads.items()}
    return {m: g / _expand(g.float().flatten(1).norm(dim=1) + guard, g) for m, g in grads.items()}


class FGM(Attack):
    """x_adv^(m) = clamp(x^(m) + ε g^(m)/‖g‖), g = ∇CE; joint normalisation over attacked modalities."""

    name = "fgm"
    per_sample_eps = True

    def __init__(self, specs: Sequence[ModalitySpec], *, seed: int = 0, precision: str = "fp32") -> None:
        super().__init__(specs, seed=seed)
        self.precision = check_precision(precision)

    def describe(self) -> str:
        return self.name if self.precision == "fp32" else f"{self.name}(precision={self.precision})"

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
        grads = input_gradients(model, batch, labels, threat.modalities, targets, self.precision)
        step = normalised_step(grads, threat, guard=1e-13 if threat.joint else 1e-12)
        return {m: self.specs[m].clamp(batch[m] + _expand(eps, batch[m]) * step[m]) for m in threat.modalities}


class _IteratedAttack(Attack):
    """What the native PGDs share: ``steps`` iterations of ``step_ratio · ε``, checked once here, and the
    ``describe()`` string that result rows record (``pgd_l2(steps=4, step_ratio=0.3333)``)."""

    per_sample_eps = True

    def __init__(
        self, specs: Sequence[ModalitySpec], *, seed: int, steps: int, step_ratio: float, precision: str
    ) -> None:
        super().__init__(specs, seed=seed)
        if steps < 1 or step_ratio <= 0:
            raise ValueError(f"{self.name} needs steps >= 1 and step_ratio > 0")
        self.steps = int(steps)
        self.step_ratio = float(step_ratio)
        self.precision = check_precision(precision)

    def describe(self) -> str:
        extra = "" if self.precision == "fp32" else f", precision={self.precision}"
        return f"{self.name}(steps={self.steps}, step_ratio={self.step_ratio:.4g}{extra})"


class PGDL2(_IteratedAttack):
    """The paper's ℓ2-PGD: ``steps`` normalised steps of ε/3 (no random start, no clamp inside the
    step), joint projection onto the ε ball, then clamp of bounded modalities, per iteration."""

    name = "pgd_l2"

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        *,
        seed: int = 0,
        steps: int = 4,
        step_ratio: float = 1 / 3,
        precision: str = "fp32",
    ) -> None:
        super().__init__(specs, seed=seed, steps=steps, step_ratio=step_ratio, precision=precision)

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
        adv = dict(batch)
        guard = 1e-13 if threat.joint else 1e-12
        for _ in range(self.steps):
            grads = input_gradients(model, adv, labels, threat.modalities, targets, self.precision)
            step = normalised_step(grads, threat, guard)
            moved = {m: adv[m] + _expand(eps * self.step_ratio, adv[m]) * step[m] for m in threat.modalities}
            groups = [threat.modalities] if threat.joint else [(m,) for m in threat.modalities]
            for group in groups:
                delta = {m: moved[m] - batch[m] for m in group}
                scale = torch.clamp(eps / (joint_l2_norm(delta, group) + 1e-13), max=1.0)
                for m in group:
                    adv[m] = self.specs[m].clamp(batch[m] + delta[m] * _expand(scale, delta[m]))
        return {m: adv[m] for m in threat.modalities}


class PGDLinf(_IteratedAttack):
    """ℓ∞ PGD without a random start: ``steps`` sign steps of ``step_ratio · ε`` (per sample), each followed by
    projection onto the ℓ∞ ball (``clamp(δ, −ε, ε)``) and the valid box. A joint threat over several modalities
    is one ℓ∞ ball over their concatenation, which is the same per-coordinate bound; the gradient is of the
    joint loss. With ``steps · step_ratio ≥ 1`` a linear two-class model reaches the ball's corner
    ``x + ε sign(w_other − w_true)`` exactly (tests/test_norms.py)."""

    name = "pgd_linf"
    norms = ("linf",)

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        *,
        seed: int = 0,
        steps: int = 10,
        step_ratio: float = 0.25,
        precision: str = "fp32",
    ) -> None:
        super().__init__(specs, seed=seed, steps=steps, step_ratio=step_ratio, precision=precision)

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
        adv = dict(batch)
        for _ in range(self.steps):
            grads = input_gradients(model, adv, labels, threat.modalities, targets, self.precision)
            for m in threat.modalities:
                e = _expand(eps, batch[m])
                moved = adv[m] + e * self.step_ratio * grads[m].sign().to(batch[m].dtype)
                delta = torch.clamp(moved - batch[m], -e, e)
                box = self.specs[m].box(batch[m])
                x = batch[m] + delta
                adv[m] = x if box is None else torch.clamp(x, box[0], box[1])
        return {m: adv[m] for m in threat.modalities}


@ATTACKS.register("fgm")
def _fgm(specs: Sequence[ModalitySpec], *, seed: int = 0, precision: str = "fp32") -> FGM:
    return FGM(specs, seed=seed, precision=precision)


@ATTACKS.register("pgd_l2")
def _pgd_l2(
    specs: Sequence[ModalitySpec], *, seed: int = 0, steps: int = 4, step_ratio: float = 1 / 3, precision: str = "fp32"
) -> PGDL2:
    return PGDL2(specs, seed=seed, steps=steps, step_ratio=step_ratio, precision=precision)


@ATTACKS.register("pgd_linf")
def _pgd_linf(
    specs: Sequence[ModalitySpec], *, seed: int = 0, steps: int = 10, step_ratio: float = 0.25, precision: str = "fp32"
) -> PGDLinf:
    return PGDLinf(specs, seed=seed, steps=steps, step_ratio=step_ratio, precision=precision)
