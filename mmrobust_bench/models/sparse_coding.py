"""Sparse coding against a fixed dictionary: ISTA (the ExFMem reference) and FISTA (the default).

Both minimise ½‖D H − X‖_F² + λ‖H‖₁ for a dictionary D (d × N) and signals X (d × B), one code
column per signal, starting from H = 0. The iterations are plain tensor operations, so autograd
differentiates through the unrolled solver: this is what lets white-box attacks see ExFMem
(docs/methods.md §9); :func:`fista` says how its momentum is differentiated. The stopping rule is the
reference's: ‖H − H_prev‖_F over the whole batch matrix below ``tol``, or ``max_iter`` iterations.
Each iteration needs the gradient Dᵀ(D H − X) of the data term; ``form`` says how it is computed
(:data:`FORMS`): ``"residual"`` as written, two d × N products, or ``"gram"`` with DᵀD and DᵀX
precomputed, one N × N product. The first costs 2dN operations per signal against N², 8× fewer for the
64 × 1024 memories of synthav (about 4× faster end to end at batch 500 on one CPU thread,
``benchmarks/fista_forms.py``); the two agree up to float rounding, which 200 iterations amplify to ~1e-3
relative in input gradients, so a model keeps the form it was trained with (MSEFM's ``gradient_form``).
The test lives on the device (:class:`StoppingRule`), so an accelerator need not wait for the host
after every iteration: ``check_every`` sets how often the host reads it, without changing the codes.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

STEP_TOLERANCE = 1e-6  # relative slack so that α = 1/λ_max passes the check despite rounding
FORMS = ("residual", "gram")  # how an iteration computes Dᵀ(D H − X); see the module docstring

Solver = Callable[..., Tensor]


def soft_threshold(x: Tensor, threshold: float) -> Tensor:
    """S_t(x) = sign(x)·max(|x| − t, 0), the proximal map of t‖·‖₁."""
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0)


def max_eigenvalue(dictionary: Tensor) -> float:
    """λ_max(DᵀD) = σ_max(D)², computed in float64: the gradient's Lipschitz constant."""
    return float(torch.linalg.matrix_norm(dictionary.detach().double(), ord=2) ** 2)


def lipschitz_step(dictionary: Tensor) -> float:
    """The recommended step α = 1/λ_max(DᵀD); 0 for an all-zero dictionary (nothing to code)."""
    lam_max = max_eigenvalue(dictionary)
    return 1.0 / lam_max if lam_max > 0 else 0.0


def check_step(dictionary: Tensor, step: float) -> None:
    """Refuse α·λ_max(DᵀD) > 1, as the reference does: a larger step can make ISTA diverge."""
    lam_max = max_eigenvalue(dictionary)
    if step <= 0 or not math.isfinite(step):
        raise ValueError(f"sparse-coding step must be a finite number > 0, got {step!r}")
    if step * lam_max > 1 + STEP_TOLERANCE:
        raise ValueError(
            f"sparse-coding step {step:g} is too large for this dictionary: step·λ_max(DᵀD) = "
            f"{step * lam_max:.4g} > 1 (λ_max = {lam_max:.4g}); use a step <= {1 / lam_max:.4g}"
        )


def data_gradient(dictionary: Tensor, signals: Tensor, form: str = "residual") -> Callable[[Tensor], Tensor]:
    """H ↦ Dᵀ(D H − X), the gradient of ½‖D H − X‖_F², computed in ``form`` (:data:`FORMS`)."""
    if form == "residual":
        dt = dictionary.t()
        return lambda codes: dt @ (dictionary @ codes - signals)
    if form == "gram":  # DᵀD and DᵀX once, then one N × N product per iteration
        gram, correlation = dictionary.t() @ dictionary, dictionary.t() @ signals
        return lambda codes: gram @ codes - correlation
    raise ValueError(f"sparse-coding gradient form must be one of {', '.join(FORMS)}, got {form!r}")


class StoppingRule:
    """The reference's stopping rule, ‖H − H_prev‖_F < tol, with the flag kept on the device.

    Once the flag is set the codes stop changing, so reading the flag on the host only every
    ``check_every`` iterations returns exactly the codes (values and gradients) of the per-iteration
    rule, at the price of at most ``check_every − 1`` wasted iterations; each read is one host
    sync, and ``tol <= 0`` (run all ``max_iter`` iterations) never syncs.
    """

    def __init__(self, codes: Tensor, tol: float, check_every: int) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.tol = tol
        self.check_every = check_every
        # the flag lives on the device only when the host reads it less than every iteration
        self.deferred = tol > 0 and check_every > 1
        self.done = torch.zeros((), dtype=torch.bool, device=codes.device) if self.deferred else None
        self.iteration = 0

    def advance(self, codes: Tensor, updated: Tensor) -> tuple[Tensor, bool]:
        """The codes to keep after one iteration, and whether the host may stop iterating."""
        self.iteration += 1
        if self.tol <= 0:
            return updated, False
        if not self.deferred:  # the reference's loop, one sync per iteration
            return updated, bool(torch.linalg.matrix_norm(updated - codes) < self.tol)
        kept = torch.where(self.done, codes, updated)
        self.done = self.done | (torch.linalg.matrix_norm(updated - codes) < self.tol)
        return kept, self.iteration % self.check_every == 0 and bool(self.done)

    def hold(self, previous: Tensor, new: Tensor) -> Tensor:
        """``new`` until the flag is set, then ``previous``: freezes solver state beside the codes."""
        return torch.where(self.done, previous, new) if self.deferred else new


def ista(dictionary: Tensor, signals: Tensor, lam: float, step: float, *, max_iter: int = 2000,
         tol: float = 8e-4, check_every: int = 1, stats: dict | None = None, form: str = "residual") -> Tensor:
    """ISTA: H ← S_{αλ}(H − α Dᵀ(D H − X)); returns the codes (N × B).

    ``stats``, if given, receives ``iterations`` (run, including any after the stopping flag was set);
    ``form``: how the gradient is computed (:func:`data_gradient`).
    """
    gradient = data_gradient(dictionary, signals, form)
    codes = signals.new_zeros(dictionary.shape[1], signals.shape[1])
    rule = StoppingRule(codes, tol, check_every)
    for _ in range(max_iter):
        updated = soft_threshold(codes - step * gradient(codes), step * lam)
        codes, stop = rule.advance(codes, updated)
        if stop:
            break
    if stats is not None:
        stats["iterations"] = rule.iteration
    return codes


def fista(dictionary: Tensor, signals: Tensor, lam: float, step: float, *, max_iter: int = 200,
          tol: float = 8e-4, check_every: int = 1, stats: dict | None = None, form: str = "residual") -> Tensor:
    """FISTA (Beck & Teboulle 2009): ISTA steps from an extrapolated point, O(1/k²) instead of O(1/k).

    The values are FISTA's, but autograd treats the momentum term as a constant, so the derivative
    follows the ISTA recursion along FISTA's iterates and tends to the Jacobian of the lasso
    solution. Differentiating the extrapolation itself is unstable on an overcomplete dictionary
    (no strong convexity): on synthav memories the derivative grew ×10² after 200 iterations and
    ×10¹² after 1000, which derails stage-C training and hands white-box attacks a garbage gradient.
    ``stats`` and ``form`` as in :func:`ista`.
    """
    gradient = data_gradient(dictionary, signals, form)
    codes = signals.new_zeros(dictionary.shape[1], signals.shape[1])
    rule = StoppingRule(codes, tol, check_every)
    point = codes
    t = 1.0
    for _ in range(max_iter):
        updated = soft_threshold(point - step * gradient(point), step * lam)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        extrapolated = updated + ((t - 1) / t_next) * (updated - codes).detach()
        codes, stop = rule.advance(codes, updated)
        point = rule.hold(point, extrapolated)  # a frozen point keeps a converged batch's iterates finite
        t = t_next
        if stop:
            break
    if stats is not None:
        stats["iterations"] = rule.iteration
    return codes


SOLVERS: dict[str, Solver] = {"ista": ista, "fista": fista}

__all__ = ["FORMS", "SOLVERS", "StoppingRule", "check_step", "data_gradient", "fista", "ista", "lipschitz_step",
           "max_eigenvalue", "soft_threshold"]
