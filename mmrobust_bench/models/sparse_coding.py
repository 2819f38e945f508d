"""Sparse coding against a fixed dictionary: ISTA (the ExFMem reference) and FISTA (the default).

Both minimise ½‖D H − X‖_F² + λ‖H‖₁ for a dictionary D (d × N) and signals X (d × B), one code
column per signal, starting from H = 0. The iterations are plain tensor operations, so autograd
differentiates through the unrolled solver: this is what lets white-box attacks see ExFMem
(METHODS.md §9); :func:`fista` says how its momentum is differentiated. The stopping rule is the
reference's: ‖H − H_prev‖_F over the whole batch matrix below ``tol``, or ``max_iter`` iterations.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

STEP_TOLERANCE = 1e-6  # relative slack so that α = 1/λ_max passes the check despite rounding

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


def _gradient_parts(dictionary: Tensor, signals: Tensor) -> tuple[Tensor, Tensor]:
    """DᵀD and DᵀX, so that each iteration costs one N × N product instead of two d × N ones."""
    return dictionary.t() @ dictionary, dictionary.t() @ signals


def ista(dictionary: Tensor, signals: Tensor, lam: float, step: float, *, max_iter: int = 2000,
         tol: float = 8e-4) -> Tensor:
    """ISTA: H ← S_{αλ}(H − α Dᵀ(D H − X)); returns the codes (N × B)."""
    gram, correlation = _gradient_parts(dictionary, signals)
    codes = signals.new_zeros(dictionary.shape[1], signals.shape[1])
    for _ in range(max_iter):
        updated = soft_threshold(codes - step * (gram @ codes - correlation), step * lam)
        converged = bool(torch.linalg.matrix_norm(updated - codes) < tol)
        codes = updated
        if converged:
            break
    return codes


def fista(dictionary: Tensor, signals: Tensor, lam: float, step: float, *, max_iter: int = 200,
          tol: float = 8e-4) -> Tensor:
    """FISTA (Beck & Teboulle 2009): ISTA steps from an extrapolated point, O(1/k²) instead of O(1/k).

    The values are FISTA's, but autograd treats the momentum term as a constant, so the derivative
    follows the ISTA recursion along FISTA's iterates and tends to the Jacobian of the lasso
    solution. Differentiating the extrapolation itself is unstable on an overcomplete dictionary
    (no strong convexity): on synthav memories the derivative grew ×10² after 200 iterations and
    ×10¹² after 1000, which derails stage-C training and hands white-box attacks a garbage gradient.
    """
    gram, correlation = _gradient_parts(dictionary, signals)
    codes = signals.new_zeros(dictionary.shape[1], signals.shape[1])
    point = codes
    t = 1.0
    for _ in range(max_iter):
        updated = soft_threshold(point - step * (gram @ point - correlation), step * lam)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        point = updated + ((t - 1) / t_next) * (updated - codes).detach()
        converged = bool(torch.linalg.matrix_norm(updated - codes) < tol)
        codes, t = updated, t_next
        if converged:
            break
    return codes


SOLVERS: dict[str, Solver] = {"ista": ista, "fista": fista}

__all__ = ["SOLVERS", "check_step", "fista", "ista", "lipschitz_step", "max_eigenvalue", "soft_threshold"]
