"""``autoattack`` (the standard strong evaluation) and the ``any`` threat, on models whose exact answer is known.

A linear late-fusion model z = W_a x_a + W_v x_v + b has a closed-form distance to its decision boundary for each
set of attacked modalities: min over j ≠ y of (z_y − z_j) / ‖(w_y − w_j) restricted to those modalities‖₂ (the
region where y wins is a polytope, and the distance to the union of half-spaces is the smallest one). Scaling the
logits by 10⁴ saturates the softmax without moving the boundary: cross-entropy gradients vanish, so the paper's
PGD is fooled, while an evaluation that gradient masking cannot fool must still find the exact answer.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import mmrobust_bench as mmr
from mmrobust_bench.attacks import build_attack
from mmrobust_bench.attacks.autoattack import EVERY_RUNNER_UP, VERSIONS, AutoAttackEnsemble
from mmrobust_bench.attacks.base import Attack
from mmrobust_bench.bench.evaluate import Measurement, robust_accuracy
from mmrobust_bench.bench.flags import ZERO_GRADIENTS, check_attack
from mmrobust_bench.bench.threat_sets import ANY, combine_any, threat_sets
from mmrobust_bench.contracts import ModalitySpec, ModelOutput, ThreatModel
from mmrobust_bench.data.base import TensorSplit

K = 5
SHAPES = {"a": (1, 4, 4), "v": (2, 6)}
EPS = 0.5
SCALE = 1e4


class LinearLateFusion(nn.Module):
    """z = s · (W_a x_a + W_v x_v + b): the suite's model contract (a batch dict in, ``ModelOutput`` out)."""

    def __init__(self, scale: float = SCALE, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(K, math.prod(s), generator=g)) for m, s in SHAPES.items()}
        )
        self.b = nn.Parameter(0.1 * torch.randn(K, generator=g))
        self.scale = scale

    def forward(self, batch):
        z = sum(batch[m].flatten(1) @ self.w[m].T for m in SHAPES) + self.b
        return ModelOutput(self.scale * z)


class Positional(nn.Module):
    """The same model as a user writes it: ``forward(a, v) -> logits`` (for the public API)."""

    def __init__(self, core: LinearLateFusion) -> None:
        super().__init__()
        self.core = core

    def forward(self, a, v):
        return self.core({"a": a, "v": v}).logits


def exact_robust_accuracy(model: LinearLateFusion, batch, labels, modalities, eps: float, norm: str = "l2") -> float:
    """The fraction of samples correctly classified with every class boundary farther than ``eps``: a boundary's
    distance is the logit margin over the dual norm of the weight difference (ℓ2 for ℓ2, ℓ1 for ℓ∞)."""
    dual = 2 if norm == "l2" else 1
    with torch.no_grad():
        z = model(batch).logits / model.scale
    distance = torch.full((labels.shape[0],), math.inf)
    for j in range(K):
        diff = torch.cat([model.w[m][labels] - model.w[m][j] for m in modalities], 1)
        gap = torch.linalg.vector_norm(diff, ord=dual, dim=1)
        margin = z.gather(1, labels[:, None]).squeeze(1) - z[:, j]
        d = torch.where(labels == j, torch.full_like(margin, math.inf), margin / gap)
        distance = torch.minimum(distance, d)
    return float(((z.argmax(1) == labels) & (distance > eps)).float().mean())


@pytest.fixture(scope="module")
def linear_case():
    torch.manual_seed(1)
    n = 120
    batch = {m: torch.randn((n,) + s) for m, s in SHAPES.items()}
    model = LinearLateFusion().eval()
    with torch.no_grad():
        labels = model(batch).logits.argmax(1)
    flip = torch.arange(n) % 20 == 0  # a few misclassified samples: never counted robust
    labels[flip] = (labels[flip] + 1) % K
    specs = [ModalitySpec(m, s) for m, s in SHAPES.items()]
    return model, batch, labels, specs


def accuracy(model, adv, labels) -> float:
    with torch.no_grad():
        return float((model(adv).logits.argmax(1) == labels).float().mean())


@pytest.mark.slow
@pytest.mark.parametrize("version", ["standard", "fast", "fast-all-targets"])
@pytest.mark.parametrize("modalities", [("a",), ("v",), ("a", "v")])
def test_autoattack_finds_the_exact_robust_accuracy_where_pgd_is_masked(linear_case, modalities, version):
    model, batch, labels, specs = linear_case
    exact = exact_robust_accuracy(model, batch, labels, modalities, EPS)
    threat = ThreatModel(modalities, EPS)
    found = accuracy(model, build_attack("autoattack", specs, version=version)(model, batch, labels, threat), labels)
    assert exact - 1e-9 <= found <= exact + 0.03, (found, exact)
    pgd = build_attack("pgd_l2", specs)
    masked = accuracy(model, pgd(model, batch, labels, threat), labels)
    assert masked > exact + 0.2  # the saturated softmax zeroes CE gradients: PGD does not move
    split = TensorSplit(batch, labels)
    measured = robust_accuracy(model, split, pgd, threat, [EPS], 64, torch.device("cpu"))
    flags = check_attack(model, split, pgd, threat, [EPS], measured, torch.device("cpu"))
    assert ZERO_GRADIENTS in {f.name for f in flags}


@pytest.mark.slow
@pytest.mark.parametrize("modalities", [("a",), ("a", "v")])
def test_autoattack_finds_the_exact_linf_robust_accuracy(linear_case, modalities):
    """Under ℓ∞ the boundary's distance is the margin over the ℓ1 norm of the weight difference: the leaderboards'
    version finds it on the saturated model too."""
    model, batch, labels, specs = linear_case
    eps = 0.1
    exact = exact_robust_accuracy(model, batch, labels, modalities, eps, norm="linf")
    assert 0.1 < exact < exact_robust_accuracy(model, batch, labels, modalities, 0.0, norm="linf")  # some break
    threat = ThreatModel(modalities, eps, norm="linf")
    adv = build_attack("autoattack", specs, version="fast-all-targets")(model, batch, labels, threat)
    for m in modalities:
        assert float((adv[m] - batch[m]).abs().max()) <= eps + 1e-6
    found = accuracy(model, adv, labels)
    assert exact - 1e-9 <= found <= exact + 0.03, (found, exact)


@pytest.mark.slow
def test_any_is_the_per_sample_worst_case_and_exact(linear_case):
    model, batch, labels, specs = linear_case
    split = TensorSplit(batch, labels)
    atk = build_attack("autoattack", specs, version="fast")
    per_set = {}
    for choice in threat_sets(list(SHAPES)):
        threat = ThreatModel.parse(choice, EPS, specs)
        per_set[choice] = robust_accuracy(model, split, atk, threat, [0.25, EPS], 64, torch.device("cpu"))
    assert list(per_set) == ["a", "v", "all"]
    combined = combine_any(per_set)
    for i, m in enumerate(combined):
        assert all(m.correct <= per_set[s][i].correct for s in per_set)
        expected = torch.stack([per_set[s][i].outcomes for s in per_set]).all(0)
        assert torch.equal(m.outcomes, expected) and m.correct == int(expected.sum())
    # for a linear model the joint ball contains each single one, so any equals the joint exact answer
    exact = exact_robust_accuracy(model, batch, labels, ("a", "v"), EPS)
    assert exact - 1e-9 <= combined[1].accuracy <= exact + 0.03


def test_combine_any_needs_outcomes_on_one_grid():
    ok = Measurement(0.5, 1, 2, 0.0, torch.tensor([True, False]))
    with pytest.raises(ValueError, match="outcome"):
        combine_any({"a": [ok], "v": [Measurement(0.5, 1, 2, 0.0)]})
    with pytest.raises(ValueError, match="one ε grid"):
        combine_any({"a": [ok], "v": [Measurement(1.0, 1, 2, 0.0, torch.tensor([True, True]))]})
    both = combine_any({"a": [ok], "v": [Measurement(0.5, 1, 2, 0.0, torch.tensor([False, True]))]})
    assert both[0].correct == 0 and both[0].details == {"sets": ["a", "v"], "misclassified": {"a": 1, "v": 1}}


class CleanInput(Attack):
    """A member made to fail on purpose: it returns the clean input."""

    def perturb(self, model, batch, labels, threat, eps, *, targets=None):
        return {m: batch[m] for m in threat.modalities}


@pytest.mark.slow
def test_a_member_that_fails_changes_nothing_else(linear_case, monkeypatch):
    model, batch, labels, specs = linear_case
    threat = ThreatModel(("a", "v"), EPS)
    without = AutoAttackEnsemble(specs, version="fast", members="apgd-ce,fab-t,square")
    reference = without(model, batch, labels, threat)
    reference_breaks = without.take_breaks()["breaks"]

    ensemble = AutoAttackEnsemble(specs, version="fast")
    real = AutoAttackEnsemble._member_attack

    def failing_apgd_t(self, member, n_classes):
        return CleanInput(specs) if member.name == "apgd-t" else real(self, member, n_classes)

    monkeypatch.setattr(AutoAttackEnsemble, "_member_attack", failing_apgd_t)
    adv = ensemble(model, batch, labels, threat)
    breaks = ensemble.take_breaks()["breaks"]
    assert breaks["apgd-t"] == 0
    assert {k: v for k, v in breaks.items() if k != "apgd-t"} == reference_breaks
    for m in SHAPES:
        assert torch.equal(adv[m], reference[m])
    # the per-sample worst case: every sample a member broke stays broken in the result
    assert accuracy(model, adv, labels) == accuracy(model, reference, labels)


def test_version_members_and_errors():
    specs = [ModalitySpec(m, s) for m, s in SHAPES.items()]
    atk = build_attack("autoattack", specs)
    assert atk.describe() == "autoattack(version='standard')"
    assert [m.name for m in atk.members] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert VERSIONS["standard"][3].options["n_queries"] == 5000 and VERSIONS["standard"][1].targets == 9
    assert (
        build_attack("autoattack", specs, members="square").describe()
        == "autoattack(version='standard', members='square')"
    )
    with pytest.raises(ValueError, match="did you mean 'fast'"):
        build_attack("autoattack", specs, version="fats")
    with pytest.raises(ValueError, match="valid: apgd-ce, apgd-t, fab-t, square"):
        build_attack("autoattack", specs, members="apgd")
    with pytest.raises(ValueError, match="norm l2, linf"):
        atk.validate(ThreatModel(("a",), 1.0, "l1"))


@pytest.mark.slow
def test_evaluate_defaults_to_autoattack_and_records_members(linear_case):
    core, batch, labels, _ = linear_case
    wrapped = mmr.wrap(Positional(core), {m: mmr.Modality(s) for m, s in SHAPES.items()}, call="positional")
    loader = [(batch["a"][i : i + 40], batch["v"][i : i + 40], labels[i : i + 40]) for i in range(0, 120, 40)]
    rows = mmr.evaluate(wrapped, loader, modality=ANY, eps=EPS, version="fast", order=("a", "v", "label"))
    assert list(rows["modality"]) == ["none", "a", "v", "all", ANY]
    assert set(rows["attack"][1:]) == {"autoattack"}
    attacked = rows.iloc[1:4]
    clean_correct = round(rows.iloc[0]["accuracy"] * rows.iloc[0]["n"])
    for _, row in attacked.iterrows():
        details = json.loads(row["details"])
        assert details["version"] == "fast" and len(details["members"]) == 4
        assert sum(details["breaks"].values()) == clean_correct - round(row["accuracy"] * row["n"])
        assert ZERO_GRADIENTS not in str(row["flags"])
    any_row = rows.iloc[4]
    assert any_row["accuracy"] <= attacked["accuracy"].min()
    exact = exact_robust_accuracy(core, batch, labels, ("a", "v"), EPS)
    assert exact - 1e-9 <= any_row["accuracy"] <= exact + 0.03


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(2, 8), (1, 40, 64), (3, 32, 32), (3, 3, 32, 32)])
@pytest.mark.parametrize("boxed", [False, True])
def test_every_member_runs_on_every_modality_shape(shape, boxed):
    g = torch.Generator().manual_seed(0)
    n, d = 6, math.prod(shape)
    box = dict(lower=(0.0,) * shape[0], upper=(1.0,) * shape[0]) if boxed else {}
    specs = [ModalitySpec("x", shape, **box), ModalitySpec("y", (3,))]
    w = torch.randn(K, d + 3, generator=g) / math.sqrt(d)

    class Net(nn.Module):
        def forward(self, batch):
            return ModelOutput(torch.cat([batch["x"].flatten(1), batch["y"]], 1) @ w.T)

    model = Net()
    batch = {"x": torch.rand((n,) + shape, generator=g), "y": torch.randn(n, 3, generator=g)}
    with torch.no_grad():
        labels = model(batch).logits.argmax(1)
    for norm, eps in (("l2", 1.0), ("linf", 0.05)):
        threat = ThreatModel(("x",), eps, norm)
        for member in VERSIONS["fast"]:
            atk = AutoAttackEnsemble(specs, version="fast", members=member.name)
            adv = atk(model, batch, labels, threat)
            delta = (adv["x"] - batch["x"]).flatten(1)
            size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(1)
            assert bool((size <= eps * (1 + 1e-5) + 1e-7).all()), (member.name, norm)
            assert torch.equal(adv["y"], batch["y"])
            if boxed:
                assert float(adv["x"].min()) >= 0.0 and float(adv["x"].max()) <= 1.0
            assert atk.take_breaks()["breaks"][member.name] >= 0


def test_art_apgd_runs_on_a_small_modality():
    """ART's APGD attacks only the samples still robust; the perturbation mask must broadcast to that subset."""
    specs = [ModalitySpec("a", (2, 8)), ModalitySpec("v", (8,))]
    g = torch.Generator().manual_seed(0)
    head = nn.Linear(24, K)

    class Net(nn.Module):
        def forward(self, batch):
            return ModelOutput(head(torch.cat([batch["a"].flatten(1), batch["v"]], 1)))

    batch = {"a": torch.randn(50, 2, 8, generator=g), "v": torch.randn(50, 8, generator=g)}
    labels = torch.randint(0, K, (50,), generator=g)
    atk = build_attack("art:AutoProjectedGradientDescent", specs)
    adv = atk(Net(), batch, labels, ThreatModel(("a",), 0.5, "l2"))
    assert torch.equal(adv["v"], batch["v"])
    assert bool(((adv["a"] - batch["a"]).flatten(1).norm(dim=1) <= 0.5 * (1 + 1e-5)).all())


@pytest.mark.slow
def test_sweep_any_cell_reuses_stored_set_rows_and_counts_once(tmp_path):
    """``any`` in a sweep costs nothing beyond the set rows: stored sets are read back from their outcomes, a
    missing set (here the joint ball) is measured and stored first, and a rerun evaluates nothing."""
    from mmrobust_bench.bench.results import decode_outcomes, read_rows
    from mmrobust_bench.bench.sweep import build_plan, run_sweep

    config = {
        "dataset": "synthav",
        "dataset_set": {"n_train": 256, "n_test": 48},
        "seeds": [0],
        "set": {"epochs": 1},
        "defenses": ["jt"],
        "grid": [
            {"attacks": ["pgd_l2"], "modalities": ["v", "a"], "eps": [0.5, 1.0]},
            {"attacks": ["pgd_l2"], "modalities": [ANY], "eps": [0.5, 1.0]},
        ],
    }
    first = run_sweep(build_plan(config, certify=False), root=tmp_path, progress=False)
    # clean 1 + v, a at 2 radii (4) + the joint set the any cell measured (2) + any (2)
    assert first.evaluated_rows == 9 and first.skipped_rows == 0
    rows = read_rows(tmp_path / "results.csv")
    assert sorted(rows["modality"].unique()) == ["a", "all", ANY, "none", "v"]
    for eps in (0.5, 1.0):
        at = rows[(rows["eps"] == eps) & (rows["attack"] == "pgd_l2")].set_index("modality")
        sets = [decode_outcomes(at.loc[m, "outcomes"], int(at.loc[m, "n"])) for m in ("v", "a", "all")]
        expected = torch.stack(sets).all(0)
        assert round(at.loc[ANY, "accuracy"] * at.loc[ANY, "n"]) == int(expected.sum())
        assert at.loc[ANY, "accuracy"] <= min(at.loc[m, "accuracy"] for m in ("v", "a", "all"))
    again = run_sweep(build_plan(config, certify=False), root=tmp_path, progress=False)
    assert again.evaluated_rows == 0 and again.skipped_rows == 7


def test_a_grid_block_can_attack_a_test_subset():
    from mmrobust_bench.bench.sweep import build_plan
    from mmrobust_bench.bench.sweep_config import parse_block
    from mmrobust_bench.data.base import TensorSplit

    block = parse_block(
        {
            "attacks": ["autoattack"],
            "attack_set": {"version": "fast"},
            "modalities": ["v", "any"],
            "eps": [0.5],
            "samples": 500,
        }
    )
    assert block.samples == 500
    assert block.config("autoattack(version='fast')") == "autoattack(version='fast') [first 500 test samples]"
    split = TensorSplit({"x": torch.arange(600.0)[:, None]}, torch.zeros(600, dtype=torch.long))
    assert torch.equal(block.split(split).inputs["x"][:, 0], torch.arange(500.0))
    assert parse_block({"attacks": ["fgm"], "modalities": ["v"], "eps": [1]}).config("fgm") == "fgm"
    for bad in (-1, 2.5, True, "all"):
        with pytest.raises(ValueError, match="samples must be a whole number >= 0"):
            parse_block({"attacks": ["fgm"], "modalities": ["v"], "eps": [1], "samples": bad})
    for dataset in ("synthav", "avdigits"):  # the leaderboards' headline block plans as written
        from pathlib import Path

        import yaml

        config = yaml.safe_load((Path(__file__).parent.parent / "leaderboards" / dataset / "sweep.yaml").read_text())
        head = build_plan(config).grid[0]
        assert head.attacks == ("autoattack",) and head.modalities == ("v", "a", "all", ANY) and head.samples == 500


@pytest.mark.parametrize("side", range(5, 31))
def test_square_windows_fit_says_exactly_where_torchattacks_square_can_start(side):
    """The rule against the library itself: Square (ℓ2) on a side × side image starts, or fails on its windows."""
    import torchattacks

    from mmrobust_bench.attacks.view import square_windows_fit

    net = nn.Sequential(nn.Flatten(), nn.Linear(side * side, K))
    x = torch.rand(2, 1, side, side, generator=torch.Generator().manual_seed(side))
    attack = torchattacks.Square(net, norm="L2", eps=0.5, n_queries=1, seed=0)
    try:
        attack(x, net(x).argmax(1))  # labels the net gets right, so Square starts on both samples
    except RuntimeError as err:
        assert not square_windows_fit(side) and ("shape" in str(err) or "size of tensor" in str(err))  # shapes only
    else:
        assert square_windows_fit(side)


@pytest.mark.parametrize("modalities", [("a",), ("v",), ("a", "v")])
def test_square_runs_on_modalities_whose_view_side_its_windows_did_not_fit(modalities):
    """(1, 20, 16) audio with 7 tag bits makes a 19 × 19 view, (3, 8, 8) images one at a time a 14 × 14 one: sides
    whose last Square window the edge cut short, a shape error inside torchattacks before the view avoided them."""
    g = torch.Generator().manual_seed(0)
    specs = [ModalitySpec("a", (1, 20, 16)), ModalitySpec("v", (3, 8, 8), (0.0,) * 3, (1.0,) * 3)]
    w = torch.randn(K, 320 + 192, generator=g)

    class Net(nn.Module):
        def forward(self, batch):
            return ModelOutput(torch.cat([batch["a"].flatten(1), batch["v"].flatten(1)], 1) @ w.T)

    batch = {"a": torch.randn(64, 1, 20, 16, generator=g), "v": torch.rand(64, 3, 8, 8, generator=g)}
    with torch.no_grad():
        labels = Net()(batch).logits.argmax(1)
    adv = AutoAttackEnsemble(specs, version="fast", members="square")(
        Net(), batch, labels, ThreatModel(modalities, 0.5)
    )
    delta = torch.cat([(adv[m] - batch[m]).flatten(1) for m in modalities], 1)
    assert bool((delta.norm(dim=1) <= 0.5 * (1 + 1e-5)).all())
    assert float(adv["v"].min()) >= 0.0 and float(adv["v"].max()) <= 1.0
    with torch.no_grad():
        assert int((Net()(adv).logits.argmax(1) != labels).sum()) > 0  # it attacked, not just ran


def test_square_runs_where_the_view_would_not_be_square():
    """64 coordinates and 7 tag bits (100 samples) would make a 9 × 8 view; torchattacks' Square ℓ2 windows need
    a square image, so its view is square."""
    from mmrobust_bench.attacks.view import grid_shape

    assert grid_shape(71) == (9, 8) and grid_shape(71, square=True) == (9, 9)
    g = torch.Generator().manual_seed(0)
    specs = [ModalitySpec("v", (1, 8, 8), (0.0,), (1.0,)), ModalitySpec("a", (4,))]
    w = torch.randn(K, 68, generator=g)

    class Net(nn.Module):
        def forward(self, batch):
            return ModelOutput(torch.cat([batch["v"].flatten(1), batch["a"]], 1) @ w.T)

    batch = {"v": torch.rand(100, 1, 8, 8, generator=g), "a": torch.randn(100, 4, generator=g)}
    with torch.no_grad():
        labels = Net()(batch).logits.argmax(1)
    atk = AutoAttackEnsemble(specs, version="fast", members="square")
    adv = atk(Net(), batch, labels, ThreatModel(("v",), 0.5))
    assert bool(((adv["v"] - batch["v"]).flatten(1).norm(dim=1) <= 0.5 * (1 + 1e-5)).all())
    assert float(adv["v"].min()) >= 0.0 and float(adv["v"].max()) <= 1.0


@pytest.mark.slow
def test_fast_all_targets_reaches_a_class_outside_the_top_three_runner_ups():
    """A linear model whose only boundary within ε is towards a class with a low clean logit: its weight differs
    most from the label's, so a small step reaches it, while the three runner-ups with the highest clean logits lie
    beyond ε. APGD-T towards the top 3 (``fast``) cannot find it; towards every runner-up it finds the exact answer.
    """
    g = torch.Generator().manual_seed(3)
    d, n, eps = 8, 60, 0.5
    u = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    w = torch.zeros(6, d)
    w[1:4] = 0.1 * torch.nn.functional.normalize(torch.randn(3, d, generator=g), dim=1)  # far: margin/0.1 > ε
    w[4], w[5] = 10 * u, -10 * u  # near: the margin 6 ∓ 10 (u·x) over ‖w_0 − w_j‖ = 10, 0.3 to 0.6
    b = torch.tensor([0.0, -0.1, -0.2, -0.3, -6.0, -6.0])
    x = 0.3 * torch.linspace(-1, 1, n)[:, None] * u + 0.01 * torch.randn(n, d, generator=g)
    specs = [ModalitySpec("a", (d,)), ModalitySpec("v", (2,))]

    class Net(nn.Module):
        def forward(self, batch):
            return ModelOutput(batch["a"] @ w.T + b + 0 * batch["v"].sum(1, keepdim=True))

    batch, labels = {"a": x, "v": torch.zeros(n, 2)}, torch.zeros(n, dtype=torch.long)
    model = Net()
    with torch.no_grad():
        z = model(batch).logits
    assert bool((z.argmax(1) == 0).all()) and bool((z[:, 1:4].min(1).values > z[:, 4:].max(1).values).all())
    margins = z[:, :1] - z[:, 1:]
    distance = (margins / (w[:1] - w[1:]).norm(dim=1)).min(1).values
    exact = float((distance > eps).float().mean())
    assert 0.2 < exact < 0.8  # some samples are robust, some are not: the answer is not trivial
    threat = ThreatModel(("a",), eps)
    found = {}
    for version in ("fast", "fast-all-targets"):
        atk = AutoAttackEnsemble(specs, version=version, members="apgd-t")
        found[version] = accuracy(model, atk(model, batch, labels, threat), labels)
    assert found["fast"] == 1.0  # the top 3 runner-ups are all beyond ε
    assert exact - 1e-9 <= found["fast-all-targets"] <= exact + 0.03, (found, exact)


def test_fast_all_targets_counts_every_runner_up_and_is_named_in_the_rows():
    specs = [ModalitySpec(m, s) for m, s in SHAPES.items()]
    atk = build_attack("autoattack", specs, version="fast-all-targets")
    assert atk.describe() == "autoattack(version='fast-all-targets')"
    apgd_t = {m.name: m for m in atk.members}["apgd-t"]
    assert [apgd_t.target_count(c) for c in (4, 10, 100)] == [3, 9, 99]
    assert "targets=all" in apgd_t.describe()
    # every other member as in fast; APGD-T as fast's but for its targets
    fast = {m.name: m for m in VERSIONS["fast"]}
    for member in atk.members:
        assert member.options == fast[member.name].options
        assert member.targets == (EVERY_RUNNER_UP if member.name == "apgd-t" else fast[member.name].targets)
    # the cost estimate counts the extra targets: 9 instead of 3 APGD-T runs of 50 steps on 10 classes
    assert atk.gradient_passes(10) - build_attack("autoattack", specs, version="fast").gradient_passes(10) == 6 * 50
