"""The solvers' soft threshold keeps one boolean mask for its backward instead of the formula's float
intermediates: the codes and every derivative through the unrolled solver (first order, double backward,
batched vector-Jacobian products as the certificates use) must equal, bit for bit, those of the formula
recorded op by op."""

from __future__ import annotations

import pytest
import torch

from mmrobust_bench.models import sparse_coding
from mmrobust_bench.models.sparse_coding import FORMS, SOLVERS, STOPPING, lipschitz_step, soft_threshold


def op_by_op(x: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0)


def problem(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    d = torch.randn(12, 40, generator=gen, dtype=dtype)
    return d / d.norm(dim=0), torch.randn(12, 7, generator=gen, dtype=dtype)


def derivatives(solver: str, d: torch.Tensor, signals: torch.Tensor, **options) -> list[torch.Tensor]:
    x = signals.clone().requires_grad_(True)
    codes = SOLVERS[solver](d, x, 0.1, lipschitz_step(d), max_iter=60, **options)
    probes = torch.randn((3,) + codes.shape, generator=torch.Generator().manual_seed(6), dtype=codes.dtype)
    (rows,) = torch.autograd.grad(codes, x, probes, is_grads_batched=True, retain_graph=True)
    (grad,) = torch.autograd.grad(codes.square().sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(grad.square().sum(), x)
    return [codes.detach(), grad.detach(), second, rows]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stopping", STOPPING)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_codes_and_derivatives_equal_those_of_the_op_by_op_formula(monkeypatch, solver, form, stopping, dtype):
    d, signals = problem(dtype)
    options = {"form": form, "stopping": stopping, "tol": 1e-3}
    masked = derivatives(solver, d, signals, **options)
    monkeypatch.setattr(sparse_coding, "soft_threshold", op_by_op)
    recorded = derivatives(solver, d, signals, **options)
    assert bool((masked[0] != 0).any()) and bool((masked[0] == 0).any())  # both sides of the threshold
    assert bool(masked[2].abs().sum() > 0)  # the double backward is not trivially zero
    for name, a, b in zip(("codes", "gradient", "double backward", "batched products"), masked, recorded):
        assert torch.equal(a, b), name


def test_ties_at_the_threshold_and_at_zero_get_the_formulas_derivative():
    """clamp passes the gradient at |x| − t = 0 exactly, and sign(0) = 0 blocks it at x = 0 (t = 0, or a t that
    float32 rounds to 0)."""
    x = torch.tensor([-0.25, -0.5, 0.0, 0.125, 0.25, 2.0], requires_grad=True)
    for threshold in (0.25, 0.0, 1e-50):  # 1e-50 rounds to 0 in float32
        weights = torch.arange(1.0, 7.0)
        (masked,) = torch.autograd.grad((soft_threshold(x, threshold) * weights).sum(), x)
        (recorded,) = torch.autograd.grad((op_by_op(x, threshold) * weights).sum(), x)
        assert torch.equal(masked, recorded)
        assert torch.equal(soft_threshold(x, threshold), op_by_op(x, threshold))
    assert not soft_threshold(x.detach(), 0.25).requires_grad
    assert torch.equal(soft_threshold(x.detach(), 0.25), op_by_op(x.detach(), 0.25))  # no-grad path: same values


def saved_bytes(monkeypatch, threshold_fn) -> int:
    """Bytes the autograd graph of one unrolled FISTA solve keeps for its backward."""
    monkeypatch.setattr(sparse_coding, "soft_threshold", threshold_fn)
    d, signals = problem(torch.float32)
    x = signals.clone().requires_grad_(True)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sparse_coding.fista(d, x, 0.1, lipschitz_step(d), max_iter=50, tol=0.0)
    return sum(seen.values())


def test_the_unrolled_solver_keeps_a_tenth_of_the_formulas_memory(monkeypatch):
    """Per iteration the formula keeps sign(x), |x| and |x| − t (three float code-sized tensors), the mask one
    byte per code; the rest of the graph (the dictionary, the d × B residuals) is small beside them."""
    masked = saved_bytes(monkeypatch, soft_threshold)
    recorded = saved_bytes(monkeypatch, op_by_op)
    assert masked * 10 < recorded
