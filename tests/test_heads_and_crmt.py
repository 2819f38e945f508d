"""CRMT head, step-1 margin, step-2 objective and Lipschitz estimates: exact answers."""
import math

import torch

from conftest import linear_model
from mmrobust_bench.certify import estimate_lipschitz
from mmrobust_bench.defenses.crmt import margin_regulariser, step2_objective
from mmrobust_bench.models import CRMTHead, centred_unit_rows, orthonormal_rows


def test_per_class_rows_are_centred_and_unit_norm():
    w = torch.randn(7, 20)
    r = centred_unit_rows(w)
    assert torch.allclose(r.mean(1), torch.zeros(7), atol=1e-6)
    assert torch.allclose(r.norm(dim=1), torch.ones(7), atol=1e-5)
    # the reference (groups = K) is not orthogonal: off-diagonal Gram entries are non-zero
    assert (r @ r.t() - torch.eye(7)).abs().max() > 1e-3


def test_full_orthogonalisation_gives_orthonormal_rows():
    r = orthonormal_rows(torch.randn(7, 20))
    assert torch.allclose(r @ r.t(), torch.eye(7), atol=1e-4)
    assert torch.allclose(r.mean(1), torch.zeros(7), atol=1e-5)


def test_crmt_head_is_fp32_under_autocast():
    head = CRMTHead(["v", "a"], [8, 8], 3)
    feats = {"v": torch.randn(4, 8), "a": torch.randn(4, 8)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, uni = head(feats)
    assert logits.dtype == torch.float32 and uni["v"].dtype == torch.float32


def naive_margin(unimodal, labels):
    total = 0
    for z in unimodal.values():
        e = torch.exp(z - z.gather(1, labels[:, None]))
        total = total + e.sum(1) - 1.0  # the reference: Σ_k e^{z_k} e^{-z_y} − 1
    return torch.log(total + 1e-5).mean()


def test_stable_margin_equals_naive_formula_and_survives_large_logits():
    z = {"v": torch.randn(16, 5, dtype=torch.float64), "a": torch.randn(16, 5, dtype=torch.float64)}
    y = torch.randint(0, 5, (16,))
    assert torch.allclose(margin_regulariser(z, y).double(), naive_margin(z, y), atol=1e-5)
    huge = {m: v.float() * 1e4 for m, v in z.items()}
    assert torch.isfinite(margin_regulariser(huge, y))
    assert not torch.isfinite(naive_margin(huge, y))


def test_lipschitz_of_linear_concat_model_is_row_norm():
    model = linear_model({"v": 6, "a": 4}, 3)
    batches = [({"v": torch.randn(10, 6), "a": torch.randn(10, 4)}, torch.zeros(10, dtype=torch.long))]
    tau = estimate_lipschitz(model, batches, ["v", "a"])
    for m, w in model.head.blocks().items():
        assert torch.allclose(tau[m], w.norm(dim=1), atol=1e-6)


def test_lipschitz_of_crmt_head_and_official_mode_bugs():
    model = linear_model({"v": 6, "a": 4}, 3, head="crmt")
    batches = [({"v": torch.randn(10, 6), "a": torch.randn(10, 4)}, torch.zeros(10, dtype=torch.long))]
    tau = estimate_lipschitz(model, batches, ["v", "a"])
    for m in ("v", "a"):
        assert torch.allclose(tau[m], torch.ones(3), atol=1e-5)  # centred unit rows
    official = estimate_lipschitz(model, batches, ["v", "a"], mode="official")
    assert torch.equal(official["a"], torch.zeros(3))  # τ^(a) ≡ 0
    w = model.head.normalised_blocks()["v"] * model.head.integration["v"].detach()[:, None]
    expected = torch.stack([w[: k + 1].sum(0).norm() for k in range(3)])  # accumulated over classes
    assert torch.allclose(official["v"], expected, atol=1e-5)


def test_step2_objective_matches_eq10_by_hand():
    z = {"v": torch.tensor([[1.0, 0.2, -0.5]]), "a": torch.tensor([[0.3, 0.9, 0.0]])}
    a = {"v": torch.tensor([1.0, 2.0, 0.5]), "a": torch.tensor([0.5, 1.0, 1.5])}
    tau = {"v": torch.tensor([1.0, 2.0, 3.0]), "a": torch.tensor([0.5, 0.5, 0.5])}
    bias = torch.tensor([0.1, 0.0, -0.1])
    y = torch.tensor([0])
    # h = [1.0+0.15+0.1, 0.4+0.9, -0.25+0-0.1] = [1.25, 1.3, -0.35] -> runner-up j = 1
    num = (1.0 * 1.0 - 2.0 * 0.2) + (0.5 * 0.3 - 1.0 * 0.9) + 0.1
    den = math.sqrt((1.0 * 1.0 + 2.0 * 2.0) ** 2 + (0.5 * 0.5 + 1.0 * 0.5) ** 2)
    assert math.isclose(step2_objective(z, a, tau, bias, y).item(), -num / den, rel_tol=1e-6)
