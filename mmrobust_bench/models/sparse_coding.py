"""Sparse coding against a fixed dictionary: ISTA (the ExFMem reference) and FISTA (the default).

Both minimise ½‖D H − X‖_F² + λ‖H‖₁ for a dictionary D (d × N) and signals X (d × B), one code
column per signal, starting from H = 0. The iterations are plain tensor operations, so autograd
differentiates through the unrolled solver: this is what lets white-box attacks see ExFMem
(docs/methods.md §9); :func:`fista` says how its momentum is differentiated. The stopping rule
(:data:`STOPPING`) is by default the reference's, ``"batch"``: ‖H − H_prev‖_F over the whole batch matrix
below ``tol``, or ``max_iter`` iterations. When it fires early a signal's code depends on the other signals
of its batch (they decide when everyone stops), so a model's output can change with the batch size of an
evaluation; ``"sample"`` freezes each column once its own ‖h − h_prev‖₂ is below ``tol``, which makes every
code a function of its own signal only, whatever the batch.
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

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

STEP_TOLERANCE = 1e-6  # relative slack so that α = 1/λ_max passes the check despite rounding
FORMS = ("residual", "gram")  # how an iteration computes Dᵀ(D H − X); see the module docstring
STOPPING = ("batch", "sample")  # whose change is tested against tol; see the module docstring

Solver = Callable[..., Tensor]


def _shrunk(x: Tensor, threshold: float) -> Tensor:
    """|x| − t, a new tensor (the soft threshold's own to modify)."""
    return x.abs().sub_(threshold)


def _thresholded(x: Tensor, shrunk: Tensor) -> Tensor:
    """sign(x)·max(|x| − t, 0) from ``shrunk`` = |x| − t, which it clamps in place: the formula's operations in its
    order, without a new tensor for each."""
    return torch.sign(x).mul_(shrunk.clamp_(min=0))


class _SoftThreshold(torch.autograd.Function):
    """S_t with autograd's own derivative of sign(x) * clamp(|x| − t, min=0), kept as one boolean mask.

    Recorded op by op, the formula keeps sign(x), |x| and |x| − t for the backward: three float tensors of
    the codes' size per iteration, which 200 unrolled iterations turn into gigabytes at an evaluation batch.
    Its derivative is g·sign(x)·[|x| − t ≥ 0]·sgn(x), that is g where the mask holds and zero elsewhere, so
    the backward returns the same values (up to the sign of a zero) from one byte per element instead of twelve,
    and stays differentiable (double backward, batched gradients)."""

    @staticmethod
    def forward(x: Tensor, threshold: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        shrunk = _shrunk(x, threshold)
        passes = shrunk >= 0
        if not threshold >= torch.finfo(x.dtype).tiny:  # else |x| − t ≥ 0 already implies x ≠ 0
            passes.logical_and_(x != 0)
        return _thresholded(x, shrunk), passes

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, float], output: tuple[Tensor, Tensor]) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (passes,) = ctx.saved_tensors
        return torch.where(passes, grad, torch.zeros((), dtype=grad.dtype, device=grad.device)), None


def soft_threshold(x: Tensor, threshold: float) -> Tensor:
    """S_t(x) = sign(x)·max(|x| − t, 0), the proximal map of t‖·‖₁ (differentiable in ``x``, not in ``t``)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _SoftThreshold.apply(x, threshold)[0]
    return _thresholded(x, _shrunk(x, threshold))


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
    """The stopping rule (:data:`STOPPING`), with the flag kept on the device when the host reads it rarely.

    ``"batch"`` (the reference): stop when ‖H − H_prev‖_F < tol. ``"sample"``: each column whose
    ‖h − h_prev‖₂ < tol keeps its codes from then on, and the host stops once every column has. Once a
    flag is set its codes stop changing, so reading the flags on the host only every ``check_every``
    iterations returns exactly the codes (values and gradients) of the per-iteration rule, at the price of
    at most ``check_every − 1`` wasted iterations; each read is one host sync, and ``tol <= 0`` (run all
    ``max_iter`` iterations) never syncs. ``count_columns`` keeps each column's iteration count for
    :meth:`column_iterations` (one more small device operation per iteration, so only when asked).
    """

    def __init__(
        self, codes: Tensor, tol: float, check_every: int, stopping: str = "batch", count_columns: bool = False
    ) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        if stopping not in STOPPING:
            raise ValueError(f"sparse-coding stopping rule must be one of {', '.join(STOPPING)}, got {stopping!r}")
        self.tol = tol
        self.check_every = check_every
        self.per_sample = stopping == "sample"
        # the flags live on the device when columns freeze one by one or the host reads them rarely
        self.deferred = tol > 0 and (check_every > 1 or self.per_sample)
        shape = (1, codes.shape[1]) if self.per_sample else ()
        self.done = torch.zeros(shape, dtype=torch.bool, device=codes.device) if self.deferred else None
        self.count_columns = count_columns
        self.updates: Tensor | None = None  # per column (deferred flags): iterations whose update was kept
        self.iteration = 0

    def converged(self, codes: Tensor, updated: Tensor) -> Tensor:
        """Whether this iteration's change is below ``tol``: per column (1 × B) or for the batch (scalar)."""
        with torch.no_grad():  # a test, not part of the codes: nothing to record
            return self._converged(codes, updated)

    def _converged(self, codes: Tensor, updated: Tensor) -> Tensor:
        if self.per_sample:
            return torch.linalg.vector_norm(updated - codes, dim=0, keepdim=True) < self.tol
        return torch.linalg.matrix_norm(updated - codes) < self.tol

    def advance(self, codes: Tensor, updated: Tensor) -> tuple[Tensor, bool]:
        """The codes to keep after one iteration, and whether the host may stop iterating."""
        self.iteration += 1
        if self.tol <= 0:
            return updated, False
        if not self.deferred:  # the reference's loop, one sync per iteration
            return updated, bool(self.converged(codes, updated))
        kept = torch.where(self.done, codes, updated)
        if self.count_columns:
            self.updates = (~self.done).long() + (0 if self.updates is None else self.updates)
        self.done = self.done | self.converged(codes, updated)
        return kept, self.iteration % self.check_every == 0 and bool(self.done.all())

    def column_iterations(self, columns: int) -> list[int]:
        """How many iterations each column's codes took (one host read): with a per-column freeze, the
        iteration its own test passed; otherwise the iterations run until the batch stopped."""
        if self.deferred and not self.count_columns:
            raise RuntimeError("column_iterations needs a StoppingRule made with count_columns=True")
        if self.updates is None:
            return [self.iteration] * columns
        return self.updates.expand(1, columns).reshape(-1).tolist()

    def hold(self, previous: Tensor, new: Tensor) -> Tensor:
        """``new`` until the flag is set, then ``previous``: freezes solver state beside the codes."""
        return torch.where(self.done, previous, new) if self.deferred else new


def ista(
    dictionary: Tensor,
    signals: Tensor,
    lam: float,
    step: float,
    *,
    max_iter: int = 2000,
    tol: float = 8e-4,
    check_every: int = 1,
    stats: dict | None = None,
    form: str = "residual",
    stopping: str = "batch",
) -> Tensor:
    """ISTA: H ← S_{αλ}(H − α Dᵀ(D H − X)); returns the codes (N × B).

    ``stats``, if given, receives ``iterations`` (run, including any after the stopping flag was set) and
    ``column_iterations`` (per signal, the iterations its code took: fewer when it froze on its own);
    ``form``: how the gradient is computed (:func:`data_gradient`); ``stopping``: the rule
    (:class:`StoppingRule`).
    """
    gradient = data_gradient(dictionary, signals, form)
    codes = signals.new_zeros(dictionary.shape[1], signals.shape[1])
    rule = StoppingRule(codes, tol, check_every, stopping, count_columns=stats is not None)
    for _ in range(max_iter):
        updated = soft_threshold(codes - step * gradient(codes), step * lam)
        codes, stop = rule.advance(codes, updated)
        if stop:
            break
    if stats is not None:
        stats["iterations"] = rule.iteration
        stats["column_iterations"] = rule.column_iterations(codes.shape[1])
    return codes


def fista(
    dictionary: Tensor,
    signals: Tensor,
    lam: float,
    step: float,
    *,
    max_iter: int = 200,
    tol: float = 8e-4,
    check_every: int = 1,
    stats: dict | None = None,
    form: str = "residual",
    stopping: str = "batch",
) -> Tensor:
    """FISTA (Beck & Teboulle 2009): ISTA steps from an extrapolated point, O(1/k²) instead of O(1/k).

    The values are FISTA's, but autograd treats the momentum term as a constant, so the derivative
    follows the ISTA recursion along FISTA's iterates and tends to the Jacobian of the lasso
    solution. Differentiating the extrapolation itself is unstable on an overcomplete dictionary
    (no strong convexity): on synthav memories the derivative grew ×10² after 200 iterations and
    ×10¹² after 1000, which derails stage-C training and hands white-box attacks a garbage gradient.
    ``stats``, ``form`` and ``stopping`` as in :func:`ista`.
    """
    gradient = data_gradient(dictionary, signals, form)
    codes = signals.new_zeros(dictionary.shape[1], signals.shape[1])
    rule = StoppingRule(codes, tol, check_every, stopping, count_columns=stats is not None)
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
        stats["column_iterations"] = rule.column_iterations(codes.shape[1])
    return codes


SOLVERS: dict[str, Solver] = {"ista": ista, "fista": fista}


class SparseCodingLayer:
    """Mixin of a module whose forward sparse-codes with the stopping rule ``self.stopping`` (:data:`STOPPING`),
    so code that needs batch-independent outputs can switch the rule without knowing the module
    (:func:`stopping_rule`)."""

    stopping: str


@contextlib.contextmanager
def stopping_rule(model: nn.Module, rule: str) -> Iterator[list[nn.Module]]:
    """Run every sparse-coding layer of ``model`` (:class:`SparseCodingLayer`) with stopping ``rule`` inside the
    block, and give each its own rule back afterwards, also on error. The rule is a solver option, not a learned
    weight, so one checkpoint serves both. Yields the switched layers (none: the model does no sparse coding).

    Certificates need ``"sample"``: randomized smoothing assumes a fixed base classifier, and under the
    reference's ``"batch"`` rule a sample's output depends on the noisy copies or samples coded beside it."""
    if rule not in STOPPING:
        raise ValueError(f"sparse-coding stopping rule must be one of {', '.join(STOPPING)}, got {rule!r}")
    layers = [m for m in model.modules() if isinstance(m, SparseCodingLayer)]
    saved = [layer.stopping for layer in layers]
    try:
        for layer in layers:
            layer.stopping = rule
        yield layers
    finally:
        for layer, before in zip(layers, saved):
            layer.stopping = before


__all__ = [
    "FORMS",
    "SOLVERS",
    "STOPPING",
    "SparseCodingLayer",
    "StoppingRule",
    "check_step",
    "data_gradient",
    "fista",
    "ista",
    "lipschitz_step",
    "max_eigenvalue",
    "soft_threshold",
    "stopping_rule",
]
