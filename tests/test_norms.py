"""Every threat norm (ℓ2, ℓ∞, ℓ1, ℓ0): projections, the native ℓ∞ PGD reference, the norms each attack runs
under, default grids, ``--norm`` in run / sweep, and options that explain themselves (issue 14)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mmrobust_bench.attacks import (
    ATTACKS,
    DEFAULT_EPS_BY_NORM,
    attack_norms,
    build_attack,
    default_eps,
    library_box_note,
    option_units,
    validate_attack_options,
)
from mmrobust_bench.attacks.base import l0_ball_projection, l1_ball_projection, project
from mmrobust_bench.contracts import NORMS, ModalitySpec, ModelOutput, ThreatModel

from helpers import flat_specs, linear_model

DIMS = {"v": 5, "a": 3}


def predicted(model, batch):
    with torch.no_grad():
        return model(batch).logits.argmax(1)


# ------------------------------------------------------------------ threat models and projections


def test_threat_model_takes_every_norm_and_suggests_a_fix():
    for norm in NORMS:
        assert ThreatModel(("v",), 1.0, norm).norm == norm
    with pytest.raises(ValueError, match="unknown norm 'Linf' \\(did you mean 'linf'\\?\\); valid: l2, linf, l1, l0"):
        ThreatModel(("v",), 1.0, "Linf")
    with pytest.raises(ValueError, match=r"valid: l2, linf, l1, l0"):
        ThreatModel(("v",), 1.0, "l3")


def test_l1_projection_matches_the_closed_form():
    v = torch.tensor([[3.0, 1.0, 0.0], [2.0, -2.0, 0.0], [0.2, 0.1, -0.1], [1.0, 1.0, 1.0]], dtype=torch.float64)
    r = torch.tensor([2.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    out = l1_ball_projection(v, r)
    expected = torch.tensor([[2.0, 0.0, 0.0], [1.0, -1.0, 0.0], [0.2, 0.1, -0.1], [0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)


def test_l1_projection_is_the_nearest_point_of_the_ball():
    """Against a brute-force search over a grid of the ℓ1 sphere in 2-D."""
    g = torch.Generator().manual_seed(0)
    v = 3 * torch.randn(20, 2, generator=g, dtype=torch.float64)
    r = torch.rand(20, generator=g, dtype=torch.float64) * 2
    out = l1_ball_projection(v, r)
    t = torch.linspace(0, 1, 4001, dtype=torch.float64)
    for i in range(20):
        if v[i].abs().sum() <= r[i]:
            assert torch.equal(out[i], v[i])
            continue
        pts = torch.cat(
            [torch.stack([sx * t * r[i], sy * (1 - t) * r[i]], 1) for sx, sy in itertools.product((-1, 1), (-1, 1))]
        )
        best = (pts - v[i]).norm(dim=1).min()
        assert abs(float(out[i].abs().sum() - r[i])) < 1e-9
        assert float((out[i] - v[i]).norm()) <= float(best) + 1e-6


def test_l0_projection_keeps_the_largest_entries():
    v = torch.tensor([[0.1, -3.0, 2.0, 0.5], [1.0, 2.0, 3.0, 4.0]])
    out = l0_ball_projection(v, torch.tensor([2.0, 0.9]))
    assert torch.equal(out, torch.tensor([[0.0, -3.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("norm", ["l1", "l0"])
def test_joint_projection_is_over_the_concatenation(norm):
    specs = {m: s for m, s in zip(DIMS, flat_specs(DIMS))}
    g = torch.Generator().manual_seed(1)
    clean = {m: torch.randn(4, d, generator=g) for m, d in DIMS.items()}
    adv = {m: x + torch.randn(x.shape, generator=g) for m, x in clean.items()}
    eps = torch.tensor([0.5, 1.0, 2.0, 3.0])
    out = project(clean, adv, ThreatModel(("v", "a"), 1.0, norm), eps, specs)
    delta = torch.cat([(out[m] - clean[m]) for m in DIMS], 1)
    size = delta.abs().sum(1) if norm == "l1" else (delta != 0).sum(1).float()
    limit = eps if norm == "l1" else eps.floor()
    assert bool((size <= limit + 1e-5).all())
    torch.testing.assert_close(size, limit, atol=1e-5, rtol=0)  # the random δ is larger: the bound binds


def test_l2_projection_keeps_float64_inputs_in_their_precision():
    """Rounding a float64 modality to float32 moved the clean point (δ ≠ 0 at ε = 0) and let δ exceed a small ε."""
    specs = {m: s for m, s in zip(DIMS, flat_specs(DIMS))}
    g = torch.Generator().manual_seed(2)
    clean = {m: torch.randn(5, d, generator=g, dtype=torch.float64) / 3 for m, d in DIMS.items()}
    adv = {m: x + 1e-3 * torch.randn(x.shape, generator=g, dtype=torch.float64) for m, x in clean.items()}
    threat = ThreatModel(("v", "a"), 1e-3)
    same = project(clean, clean, threat, torch.full((5,), 1e-3), specs)
    assert all(torch.equal(same[m], clean[m]) for m in DIMS)
    eps = torch.tensor([0.0, 1e-4, 1e-3, 2e-3, 1.0], dtype=torch.float64)
    out = project(clean, adv, threat, eps, specs)
    size = torch.cat([(out[m] - clean[m]).flatten(1) for m in DIMS], 1).norm(dim=1)
    assert bool((size <= eps * (1 + 1e-12)).all()) and all(out[m].dtype == torch.float64 for m in DIMS)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_a_non_finite_coordinate_from_a_library_goes_back_to_the_clean_value(norm):
    specs = {m: s for m, s in zip(DIMS, flat_specs(DIMS))}
    g = torch.Generator().manual_seed(3)
    clean = {m: torch.randn(3, d, generator=g) for m, d in DIMS.items()}
    adv = {m: x + 0.01 * torch.randn(x.shape, generator=g) for m, x in clean.items()}
    adv["v"][0, 0], adv["a"][1, :] = float("nan"), float("inf")
    out = project(clean, adv, ThreatModel(("v", "a"), 1.0, norm), torch.full((3,), 1.0), specs)
    assert all(bool(torch.isfinite(out[m]).all()) for m in DIMS)
    assert out["v"][0, 0] == clean["v"][0, 0] and torch.equal(out["a"][1], clean["a"][1])
    assert torch.equal(out["v"][2], adv["v"][2])  # finite points inside the ball are untouched


# ------------------------------------------------------------------ native ℓ∞ PGD


def test_pgd_linf_reaches_the_closed_form_corner_of_a_linear_model():
    """Two classes: ∇CE ∝ (w_other − w_true) has a fixed sign, so steps·step_ratio ≥ 1 lands on
    x + ε sign(w_other − w_true) (clamped into the box where there is one)."""
    model = linear_model(DIMS, 2, seed=3)
    specs = (ModalitySpec("v", (5,), (-0.5,) * 5, (0.5,) * 5), ModalitySpec("a", (3,)))
    g = torch.Generator().manual_seed(2)
    x = {"v": torch.rand(16, 5, generator=g) - 0.5, "a": torch.randn(16, 3, generator=g)}
    y = predicted(model, x)
    eps = torch.linspace(0.05, 0.8, 16)
    adv = build_attack("pgd_linf", specs, steps=4, step_ratio=0.5)(
        model, x, y, ThreatModel(("v", "a"), 1.0, "linf"), eps
    )
    w = model.head.blocks()
    for m in ("v", "a"):
        direction = torch.sign(w[m][1 - y] - w[m][y])
        expected = specs[0 if m == "v" else 1].clamp(x[m] + eps[:, None] * direction)
        torch.testing.assert_close(adv[m], expected, atol=1e-6, rtol=0)


class ReluNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.v = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
        self.a = nn.Sequential(nn.Linear(3, 8), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, b):
        return ModelOutput(self.head(torch.cat([self.v(b["v"]), self.a(b["a"])], 1)))


RELU_SPECS = (ModalitySpec("v", (5,), (0.0,) * 5, (1.0,) * 5), ModalitySpec("a", (3,)))


def relu_case(n: int, seed: int):
    """ReluNet, its specs (v in a [0, 1] box, a unbounded), ``n`` seeded inputs and the model's predictions."""
    model = ReluNet().eval()
    g = torch.Generator().manual_seed(seed)
    x = {"v": torch.rand(n, 5, generator=g), "a": torch.randn(n, 3, generator=g)}
    return model, RELU_SPECS, x, predicted(model, x)


def test_pgd_linf_per_sample_eps_batched_equals_sequential_and_joint_equals_separate():
    model, specs, x, y = relu_case(6, 5)
    eps = torch.tensor([0.0, 0.01, 0.05, 0.1, 0.3, 1.0])
    atk = build_attack("pgd_linf", specs, steps=5)
    threat = ThreatModel(("v", "a"), 1.0, "linf")
    batched = atk(model, x, y, threat, eps)
    for i in range(6):
        one = atk(model, {m: t[i : i + 1] for m, t in x.items()}, y[i : i + 1], threat, float(eps[i]))
        for m in x:
            torch.testing.assert_close(batched[m][i : i + 1], one[m], atol=1e-6, rtol=0)
        assert float(max((batched[m][i] - x[m][i]).abs().max() for m in x)) <= float(eps[i]) + 1e-6
    separate = atk(model, x, y, ThreatModel(("v", "a"), 1.0, "linf", joint=False), eps)
    assert all(torch.equal(batched[m], separate[m]) for m in x)
    assert atk.describe() == "pgd_linf(steps=5, step_ratio=0.25)"
    with pytest.raises(ValueError, match="pgd_linf attacks in norm linf, not l2: use --norm linf"):
        atk(model, x, y, ThreatModel(("v",), 1.0))


# ------------------------------------------------------------------ which norms each attack runs under


def _all_attack_ids():
    ids = list(ATTACKS.names())
    for lister, prefix in (
        ("mmrobust_bench.attacks.torchattacks_adapter:torchattacks_names", "torchattacks"),
        ("mmrobust_bench.attacks.art_adapter:art_names", "art"),
    ):
        module, func = lister.split(":")
        try:
            names = getattr(__import__(module, fromlist=[func]), func)()
        except ImportError:
            names = []
        ids += [f"{prefix}:{n}" for n in names]
    return ids


def test_every_attack_id_says_which_norms_it_runs_under():
    seen = {}
    for name in _all_attack_ids():
        norms = attack_norms(name)
        assert norms and set(norms) <= set(NORMS), name
        seen[name] = norms
    assert seen["fgm"] == ("l2",) and seen["pgd_l2"] == ("l2",) and seen["pgd_linf"] == ("linf",)
    assert seen["missing"] == NORMS
    if "torchattacks:PGD" in seen:
        assert seen["torchattacks:PGD"] == ("linf",) and seen["torchattacks:PGDL2"] == ("l2",)
        assert seen["torchattacks:EADL1"][0] == "l1" and seen["torchattacks:JSMA"][0] == "l0"
        assert set(seen["torchattacks:APGD"]) == {"l2", "linf"}
    if "art:FastGradientMethod" in seen:
        assert set(seen["art:FastGradientMethod"]) == {"l2", "linf", "l1"}
        assert seen["art:CarliniL0Method"][0] == "l0"


def test_torchattacks_pgd_runs_under_linf_and_names_the_flag_under_l2():
    pytest.importorskip("torchattacks")
    model, specs, x, y = relu_case(4, 6)
    atk = build_attack("torchattacks:PGD", specs, steps=3)
    adv = atk(model, x, y, ThreatModel(("a",), 0.1, "linf"))
    assert float((adv["a"] - x["a"]).abs().max()) <= 0.1 + 1e-6 and torch.equal(adv["v"], x["v"])
    with pytest.raises(ValueError, match="use --norm linf"):
        atk(model, x, y, ThreatModel(("a",), 0.1, "l2"))
    with pytest.raises(ValueError, match="use --norm linf"):
        validate_attack_options("torchattacks:PGD", {}, "l2")


def test_an_l1_threat_with_art_fgm_stays_in_the_l1_ball():
    pytest.importorskip("art")
    model, specs, x, y = relu_case(4, 7)
    adv = build_attack("art:FastGradientMethod", specs)(model, x, y, ThreatModel(("v", "a"), 0.5, "l1"))
    delta = torch.cat([(adv[m] - x[m]) for m in x], 1)
    assert bool((delta.abs().sum(1) <= 0.5 + 1e-5).all()) and float(delta.abs().sum(1).max()) > 0.4


def test_default_grids_per_norm():
    assert default_eps("l2") == (0.25, 0.5, 1.0, 1.5, 2.0)
    assert set(DEFAULT_EPS_BY_NORM) == set(NORMS)
    assert max(default_eps("linf")) <= 0.1 < min(default_eps("l1"))
    with pytest.raises(ValueError, match="did you mean 'linf'"):
        default_eps("lin")


# ------------------------------------------------------------------ options that explain themselves


def test_a_mistyped_native_option_is_one_line_naming_the_option():
    with pytest.raises(ValueError) as err:
        validate_attack_options("pgd_l2", {"step": 0.1})
    assert str(err.value).startswith("pgd_l2: unknown option(s) step (did you mean 'step_ratio'?); valid: ")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="option steps takes an integer"):
        build_attack("pgd_l2", flat_specs(DIMS), steps="ten")
    with pytest.raises(ValueError, match="takes ε from --eps"):
        validate_attack_options("fgm", {"eps": 0.5})
    assert build_attack("pgd_l2", flat_specs(DIMS), step_ratio=1 / 3).describe() == "pgd_l2(steps=4, step_ratio=0.3333)"


def test_a_library_eps_option_is_accepted_when_it_equals_the_run():
    pytest.importorskip("torchattacks")
    atk = validate_attack_options("torchattacks:PGD", {"eps": 0.03, "steps": 2}, "linf", eps=[0.0, 0.03])
    assert atk.describe() == "torchattacks:PGD(eps=0.03, steps=2)"
    with pytest.raises(ValueError, match=r"differs from the run's ε=0\.05; ε comes from --eps"):
        validate_attack_options("torchattacks:PGD", {"eps": 0.03}, "linf", eps=[0.03, 0.05])


def test_step_sizes_are_in_model_input_units():
    """``alpha=0.1`` is a step of 0.1 in model-input space whatever ε is (one sign step, no random start)."""
    pytest.importorskip("torchattacks")
    model, specs, x, y = relu_case(4, 8)
    for eps in (0.5, 2.0):
        atk = build_attack("torchattacks:PGD", specs, alpha=0.1, steps=1, random_start=False)
        moved = (atk(model, x, y, ThreatModel(("a",), eps, "linf"))["a"] - x["a"]).abs()
        torch.testing.assert_close(moved[moved > 0], torch.full_like(moved[moved > 0], 0.1), atol=1e-6, rtol=0)
    assert (
        "alpha" in option_units("torchattacks:PGD") and "model-input units" in option_units("torchattacks:PGD")["alpha"]
    )
    assert set(option_units("torchattacks:SPSA")) >= {"delta"} and option_units("pgd_l2") == {}
    assert "eps_step" in option_units("art:ProjectedGradientDescent")
    assert "clip_values" in library_box_note("art:FastGradientMethod")
    assert "clamp" in library_box_note("pgd_linf")


# ------------------------------------------------------------------ --norm in run and sweep


def test_run_and_sweep_take_a_norm():
    from mmrobust_bench.bench.sweep import build_plan
    from mmrobust_bench.bench.sweep_config import parse_block
    from mmrobust_bench.cli import build_parser

    args = build_parser().parse_args(["run", "--norm", "linf", "--attack", "pgd_linf"])
    assert args.norm == "linf"
    assert build_parser().parse_args(["run"]).norm == "l2"
    assert build_parser().parse_args(["sweep", "--norm", "l1"]).norm == "l1"
    block = parse_block({"attacks": ["pgd_linf"], "modalities": ["v"], "eps": [0.01], "norm": "linf"})
    assert block.norm == "linf"
    assert parse_block({"attacks": ["fgm"], "modalities": ["v"], "eps": [1.0]}).norm == "l2"
    with pytest.raises(ValueError, match="did you mean 'linf'"):
        parse_block({"attacks": ["pgd_linf"], "modalities": ["v"], "eps": [0.01], "norm": "lnf"})
    plan = build_plan({}, defenses=["jt"], attacks=["pgd_linf"], norm="linf")
    assert plan.grid[0].norm == "linf" and plan.grid[0].eps == default_eps("linf")


@pytest.mark.parametrize("joint", [True, False])
def test_perturbation_norm_measures_l1_and_l0_in_their_own_geometry(joint):
    """Minimal-norm curves count a sample as robust by its perturbation size: an ℓ1 or ℓ0 threat must be
    measured in ℓ1 / ℓ0 (sum over the attacked modalities for a joint budget, the largest one otherwise)."""
    from mmrobust_bench.bench.evaluate import perturbation_norm
    from mmrobust_bench.contracts import ThreatModel

    clean = {"a": torch.zeros(2, 3), "v": torch.zeros(2, 2, 2)}
    adv = {
        "a": torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 0.5]]),
        "v": torch.tensor([[[3.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]),
    }
    l1 = perturbation_norm(clean, adv, ThreatModel(("a", "v"), 1.0, norm="l1", joint=joint))
    l0 = perturbation_norm(clean, adv, ThreatModel(("a", "v"), 1.0, norm="l0", joint=joint))
    if joint:
        assert l1.tolist() == [6.0, 0.5] and l0.tolist() == [3.0, 1.0]
    else:
        assert l1.tolist() == [3.0, 0.5] and l0.tolist() == [2.0, 1.0]
