"""The whole attack suite: every torchattacks / ART attack class run or excluded with a reason, the
invariants of every registered native attack, the minimal-norm attack and curves, batched ε grids,
and the missing-modality attack (input fills and feature level) through the evaluation and ``run``."""

import math

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmrobust_bench.attacks import ATTACKS, build_attack
from mmrobust_bench.attacks.minimal_norm import MinimalNormL2
from mmrobust_bench.bench.api import attack_options_for, run, train_means
from mmrobust_bench.bench.evaluate import minimal_norm_curve, robust_accuracy
from mmrobust_bench.contracts import ModalitySpec, ThreatModel, joint_l2_norm
from mmrobust_bench.data import build_dataset
from mmrobust_bench.data.base import TensorSplit
from mmrobust_bench.models import build_model

from helpers import (
    ART_SMALL,
    ART_TEST_OVERRIDES,
    CLASSES,
    SPECS,
    TORCHATTACKS_SMALL,
    ReluNet,
    assert_invariants,
    flat_specs,
    linear_model,
    make_batch,
)

CPU = torch.device("cpu")


def predicted(model, batch):
    with torch.no_grad():
        return model(batch).logits.argmax(1)


# --------------------------------------------------------------------------- library enumeration


def _installed(lister):
    try:
        return lister()
    except ImportError:
        return []


def _torchattacks_classes():
    from mmrobust_bench.attacks.torchattacks_adapter import torchattacks_classes

    return _installed(torchattacks_classes)


def _art_classes():
    from mmrobust_bench.attacks.art_adapter import art_classes

    return _installed(art_classes)


# Attacks that hand back the clean input for every sample at the tiny settings of helpers.TORCHATTACKS_SMALL /
# ART_SMALL: the identity attack by design, and minimal-norm / score-based attacks that keep a sample they could
# not flip within 10 iterations, 2 binary-search steps or 20 queries (CarliniL0Method: 3 iterations in tanh space
# of the true box, which the adapter hands to ART exactly). Their result must then be the clean batch
# bit for bit (the adapter decodes an untouched library coordinate exactly); every other attack must
# move the inputs, so an adapter that returned its input unchanged would fail here.
RETURN_CLEAN_AT_TEST_SETTINGS = {"torchattacks": {"VANILA", "CW", "EADEN", "EADL1", "Square"}, "art": {"ElasticNet"}}


def assert_moved_or_returned_clean(library, name, batch, adv, modalities):
    moved = max(float((adv[m] - batch[m]).abs().max()) for m in modalities)
    if name in RETURN_CLEAN_AT_TEST_SETTINGS[library]:
        assert all(torch.equal(adv[m], batch[m]) for m in modalities), f"{name} moved the inputs by {moved:g}"
    else:
        assert moved > 1e-3, f"{library}:{name} left the inputs where they were (max |δ| = {moved:g})"


def test_every_torchattacks_class_is_run_or_excluded():
    """A new torchattacks release cannot add an attack that silently goes untested: each class is either
    run below (``torchattacks_names``) or excluded with a reason."""
    ta = pytest.importorskip("torchattacks")
    from mmrobust_bench.attacks.torchattacks_adapter import EXCLUDED, torchattacks_names

    classes = set(_torchattacks_classes())
    assert len(classes) > 30 and ta.__version__
    assert set(torchattacks_names()) | set(EXCLUDED) == classes
    assert not set(torchattacks_names()) & set(EXCLUDED)
    assert all(len(reason) > 20 for reason in EXCLUDED.values())


@pytest.mark.parametrize("name", [n for n in _torchattacks_classes()])
def test_each_torchattacks_attack_runs_or_says_why_not(name):
    from mmrobust_bench.attacks.torchattacks_adapter import EXCLUDED

    model = ReluNet().eval()
    batch = make_batch(5, seed=1)
    labels = predicted(model, batch)
    if name in EXCLUDED:
        with pytest.raises(ValueError, match="cannot be adapted"):
            build_attack(f"torchattacks:{name}", SPECS)
        return
    probe = build_attack(f"torchattacks:{name}", SPECS)
    options = {k: v for k, v in TORCHATTACKS_SMALL.items() if k in probe.signature_args}
    atk = build_attack(f"torchattacks:{name}", SPECS, **options)
    # AutoAttack runs FAB and Square (5000 queries) on whatever APGD leaves correct: a radius that APGD
    # always completes keeps the test short
    eps = 20.0 if name == "AutoAttack" else 1.0
    threat = ThreatModel(("v", "a"), eps, atk.norms[0])
    adv = atk(model, batch, labels, threat)
    assert_invariants(batch, adv, threat, eps)
    assert_moved_or_returned_clean("torchattacks", name, batch, adv, threat.modalities)


def test_every_art_evasion_class_is_run_or_excluded():
    art = pytest.importorskip("art")
    from mmrobust_bench.attacks.art_adapter import ART_ATTACKS, ART_EXCLUDED, art_names

    classes = set(_art_classes())
    assert len(classes) > 40 and art.__version__
    assert set(art_names()) | set(ART_EXCLUDED) == classes
    assert not set(ART_ATTACKS) & set(ART_EXCLUDED)
    assert all(len(reason) > 20 for reason in ART_EXCLUDED.values())


@pytest.mark.parametrize("name", [n for n in _art_classes()])
def test_each_art_attack_runs_or_says_why_not(name):
    from mmrobust_bench.attacks.art_adapter import ART_EXCLUDED

    model = ReluNet().eval()
    batch = make_batch(5, seed=1)
    labels = predicted(model, batch)
    if name in ART_EXCLUDED:
        with pytest.raises(ValueError, match="cannot be adapted"):
            build_attack(f"art:{name}", SPECS)
        return
    if name == "AutoAttack":
        pytest.importorskip("multiprocess", reason="ART's AutoAttack imports multiprocess without declaring it")
    probe = build_attack(f"art:{name}", SPECS)
    options = {k: v for k, v in ART_SMALL.items() if k in probe.signature_args}
    options.update(ART_TEST_OVERRIDES.get(name, {}))
    atk = build_attack(f"art:{name}", SPECS, **options)
    # AutoAttack runs Square (5000 queries) on whatever APGD leaves correct: a radius that APGD always
    # completes keeps the test short
    eps = 20.0 if name == "AutoAttack" else 1.0
    threat = ThreatModel(("v", "a"), eps, atk.norms[0])
    adv = atk(model, batch, labels, threat)
    assert_invariants(batch, adv, threat, eps)
    assert_moved_or_returned_clean("art", name, batch, adv, threat.modalities)


# --------------------------------------------------------------------------- native attacks


def _native_names():
    return [n for n in ATTACKS.names() if build_attack(n, SPECS).library == "native"]


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(_native_names()),
    modalities=st.sampled_from([("v",), ("a",), ("v", "a")]),
    eps=st.floats(0.0, 3.0),
    n=st.integers(1, 5),
    training=st.booleans(),
    seed=st.integers(0, 3),
)
def test_native_attack_invariants(name, modalities, eps, n, training, seed):
    """The invariants of docs/design.md §3 for every registered native attack (fgm, pgd_l2, fmn_l2, missing, ...)."""
    model = ReluNet(seed).train(training)
    batch = make_batch(n, seed)
    labels = torch.randint(0, CLASSES, (n,), generator=torch.Generator().manual_seed(seed))
    atk = build_attack(name, SPECS, seed=seed)
    threat = ThreatModel(modalities, eps, atk.norms[0])
    rng = torch.random.get_rng_state()
    adv = atk(model, batch, labels, threat)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert all(m.training == training for m in model.modules())
    assert_invariants(batch, adv, threat, eps, bounded=atk.norm_bounded)
    again = atk(model, batch, labels, threat)
    assert all(torch.equal(adv[m], again[m]) for m in batch)


DIMS = {"v": 6, "a": 4}


def closed_form_minimal_norm(model, x, y, modalities):
    """min_j (h_y − h_j) / ‖W_y − W_j‖ over the attacked coordinates, for a linear model."""
    w = model.head.blocks()
    with torch.no_grad():
        logits = model(x).logits
    best = torch.full((y.shape[0],), math.inf)
    for j in range(logits.shape[1]):
        norm = torch.sqrt(sum((w[m][y] - w[m][j]).pow(2).sum(1) for m in modalities))
        margin = logits.gather(1, y[:, None]).squeeze(1) - logits[:, j]
        best = torch.where(j == y, best, torch.minimum(best, (margin / norm).detach()))
    return best


@pytest.mark.parametrize("modalities", [("v",), ("a",), ("v", "a")])
def test_fmn_recovers_the_closed_form_minimal_norm_of_a_linear_model(modalities):
    model = linear_model(DIMS, 5, seed=3)
    g = torch.Generator().manual_seed(0)
    x = {m: torch.randn(48, d, generator=g) for m, d in DIMS.items()}
    y = predicted(model, x)
    exact = closed_form_minimal_norm(model, x, y, modalities)
    adv = MinimalNormL2(flat_specs(DIMS))(model, x, y, ThreatModel(modalities, 1e3))
    found = joint_l2_norm({m: adv[m] - x[m] for m in modalities}, modalities)
    assert bool((predicted(model, adv) != y).all())
    assert float((found / exact - 1).abs().max()) < 0.02


def test_fmn_respects_the_box_and_is_misclassified_at_its_norm():
    model = ReluNet().eval()
    batch = make_batch(6, seed=2)
    labels = predicted(model, batch)
    threat = ThreatModel(("v",), 100.0)
    adv = MinimalNormL2(SPECS, steps=40)(model, batch, labels, threat)
    assert_invariants(batch, adv, threat, 100.0)
    assert bool((predicted(model, adv) != labels).any())


def _linear_split(n=40, k=4, seed=0):
    model = linear_model(DIMS, k, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(n, d, generator=g) for m, d in DIMS.items()}
    labels = predicted(model, x)
    labels[:4] = (labels[:4] + 1) % k  # a few misclassified samples: norm 0
    return model, TensorSplit(x, labels)


@pytest.mark.parametrize(
    "attack, options, tolerance",
    [
        ("fmn_l2", {"steps": 60}, 0.02),
        ("torchattacks:DeepFool", {"steps": 10}, 0.03),  # overshoot 0.02
        ("art:DeepFool", {"max_iter": 10, "epsilon": 0.01}, 0.02),  # ART's default overshoot is below float32 rounding
    ],
)
def test_minimal_norm_curve_matches_the_closed_form(attack, options, tolerance):
    """On a linear model the curve from one minimal-norm run is the closed-form one; DeepFool is exact there."""
    if attack.startswith(("torchattacks", "art")):
        pytest.importorskip(attack.split(":")[0])
    model, split = _linear_split()
    threat = ThreatModel(("v", "a"), 1.0)
    exact = closed_form_minimal_norm(model, split.inputs, split.labels, ("v", "a"))
    exact = torch.where(predicted(model, split.inputs) == split.labels, exact, torch.zeros_like(exact))
    grid = [0.0, 0.5, 1.0, 2.0]
    curve = minimal_norm_curve(model, split, build_attack(attack, flat_specs(DIMS), **options), threat, grid, 16, CPU)
    assert curve.radius == 8.0 and curve.norms.shape == (40,)
    assert bool((curve.norms[:4] == 0).all())
    ok = exact > 0
    assert float((curve.norms[ok] / exact[ok] - 1).abs().max()) < tolerance
    for m in curve.measurements:
        assert m.correct == int((curve.norms > m.eps).sum()) and m.n == 40
    assert curve.measurements[0].correct == int(ok.sum())


def test_minimal_norm_curve_refuses_attacks_that_are_not_minimal_norm():
    model, split = _linear_split()
    with pytest.raises(ValueError, match="does not search for a minimal"):
        minimal_norm_curve(
            model, split, build_attack("pgd_l2", flat_specs(DIMS)), ThreatModel(("v",), 1.0), [0.5], 16, CPU
        )


# --------------------------------------------------------------------------- batched ε grids on synthav-small


@pytest.fixture(scope="module")
def synthav_small(tmp_path_factory):
    return build_dataset("synthav", cache_dir=tmp_path_factory.mktemp("datasets"), n_train=256, n_test=64)


def test_batched_grid_equals_separate_runs_on_synthav(synthav_small, monkeypatch):
    """robust_accuracy runs the R radii of a native attack as one batched call; its inputs and counts are those
    of R separate runs (labels are the model's own predictions, so every count starts from all correct)."""
    ds = synthav_small
    torch.manual_seed(0)
    model = build_model(ds.specs, ds.num_classes, ds.encoders, feature_dim=8).eval()
    atk = build_attack("pgd_l2", ds.specs)
    threat = ThreatModel(("v", "a"), 0.5)
    grid = [0.1, 0.5, 2.0]
    n = 12
    test = ds.test.subset(torch.arange(n))
    test = TensorSplit(test.inputs, predicted(model, test.inputs))
    calls = []
    original = type(atk).__call__
    monkeypatch.setattr(type(atk), "__call__", lambda self, *a, **k: calls.append(original(self, *a, **k)) or calls[-1])
    batched = robust_accuracy(model, test, atk, threat, grid, n * len(grid), CPU)
    separate = [robust_accuracy(model, test, atk, threat, [e], n, CPU)[0] for e in grid]
    assert len(calls) == 1 + len(grid) and calls[0]["v"].shape[0] == n * len(grid)
    assert [m.eps for m in batched] == grid
    assert [m.correct for m in batched] == [m.correct for m in separate]
    assert batched[0].correct > batched[-1].correct
    for i in range(len(grid)):
        for m in ("v", "a"):
            torch.testing.assert_close(calls[0][m][i * n : (i + 1) * n], calls[1 + i][m], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- missing modality

THREE = {"v": 5, "a": 3, "t": 4}
THREE_SPECS = (ModalitySpec("v", (1, 5), (0.0,), (1.0,)), ModalitySpec("a", (3,)), ModalitySpec("t", (4,)))


def _three_modal():
    model = linear_model(THREE, 3, seed=1)
    g = torch.Generator().manual_seed(1)
    x = {
        "v": torch.rand(20, 1, 5, generator=g),
        "a": torch.randn(20, 3, generator=g),
        "t": torch.randn(20, 4, generator=g),
    }
    return model, x, predicted(model, x)


@pytest.mark.parametrize("modalities", [("v",), ("a", "t"), ("v", "a", "t")])
def test_missing_input_fills_any_number_of_modalities(modalities):
    model, x, y = _three_modal()
    threat = ThreatModel(modalities, 0.0)
    means = {m: v.mean(0) for m, v in x.items()}
    zero = build_attack("missing", THREE_SPECS)(model, x, y, threat)
    mean = build_attack("missing", THREE_SPECS, fill="mean", fill_values=means)(model, x, y, threat)
    noise_atk = build_attack("missing", THREE_SPECS, fill="noise", noise_std=0.5, seed=3)
    noise = noise_atk(model, x, y, threat)
    for m in THREE:
        if m in modalities:
            assert bool((zero[m] == 0).all())
            assert torch.equal(mean[m], means[m].expand_as(x[m]))
            assert not torch.equal(noise[m], x[m])
        else:
            assert torch.equal(zero[m], x[m]) and torch.equal(mean[m], x[m]) and torch.equal(noise[m], x[m])
    assert torch.equal(
        noise_atk(model, x, y, threat)["a" if "a" in modalities else "v"], noise["a" if "a" in modalities else "v"]
    )
    assert bool((noise["v"] >= 0).all()) and bool((noise["v"] <= 1).all())


@pytest.mark.parametrize("modalities", [("v",), ("a", "t")])
def test_missing_feature_level_zeroes_encoder_outputs_during_evaluation(modalities):
    model, x, y = _three_modal()
    split = TensorSplit(x, y)
    atk = build_attack("missing", THREE_SPECS, level="feature")
    assert atk.describe() == "missing(level=feature)"
    measured = robust_accuracy(model, split, atk, ThreatModel(modalities, 0.0), [0.5, 1.0], 8, CPU)
    assert len(measured) == 1 and model.dropped_features == frozenset()
    model.dropped_features = frozenset(modalities)
    expected = int((predicted(model, x) == y).sum())
    model.dropped_features = frozenset()
    assert measured[0].correct == expected
    assert expected < int((predicted(model, x) == y).sum())


def test_missing_feature_level_needs_a_model_that_can_drop_features():
    model = ReluNet().eval()
    batch = make_batch(4, seed=0)
    split = TensorSplit(batch, predicted(model, batch))
    with pytest.raises(ValueError, match="dropped_features"):
        robust_accuracy(
            model, split, build_attack("missing", SPECS, level="feature"), ThreatModel(("v",), 0.0), [0.0], 4, CPU
        )


def test_missing_mean_fill_needs_fill_values_when_it_runs():
    atk = build_attack("missing", SPECS, fill="mean")  # options alone validate before any data is loaded
    with pytest.raises(ValueError, match="needs fill_values"):
        atk.validate(ThreatModel(("v",), 0.0))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fill": "blank"}, "unknown fill 'blank'; valid: zero, mean, noise"),
        ({"level": "pixel"}, "unknown level 'pixel'; valid: input, feature"),
        ({"level": "feature", "fill": "noise"}, "level='input' only"),
    ],
)
def test_missing_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        build_attack("missing", SPECS, **options)


def test_mean_fill_comes_from_the_train_split(synthav_small):
    options = attack_options_for("missing", {"fill": "mean"}, synthav_small)
    means = train_means(synthav_small.train)
    assert set(options["fill_values"]) == {"v", "a"}
    torch.testing.assert_close(options["fill_values"]["a"], synthav_small.train.inputs["a"].float().mean(0))
    assert options["fill_values"]["v"].shape == synthav_small.specs[0].shape and means["v"].shape == (3, 3, 32, 32)
    assert attack_options_for("missing", {"fill": "zero"}, synthav_small) == {"fill": "zero"}


# --------------------------------------------------------------------------- through run()

SMALL = {"n_train": 256, "n_test": 64}


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.mark.slow
def test_run_missing_mean_and_feature_level(run_root):
    out = run(
        "jt",
        "missing",
        "a",
        dataset_options=SMALL,
        overrides={"epochs": 1},
        root=run_root,
        eps=[0.5],
        attack_options={"fill": "mean"},
        progress=False,
    )
    rows = out.rows
    assert list(rows["attack_config"]) == ["clean", "missing(fill=mean)"] and math.isnan(rows["eps"].iloc[1])
    feature = run(
        "jt",
        "missing",
        "v",
        dataset_options=SMALL,
        overrides={"epochs": 1},
        root=run_root,
        eps=[0.5],
        attack_options={"level": "feature"},
        progress=False,
    )
    assert feature.trained.cached and feature.rows["attack_config"].iloc[1] == "missing(level=feature)"
    assert feature.trained.model.dropped_features == frozenset()


@pytest.mark.slow
def test_run_minimal_norm_curve(run_root):
    out = run(
        "jt",
        "fmn_l2",
        "a",
        dataset_options=SMALL,
        overrides={"epochs": 1},
        root=run_root,
        eps=[0.25, 1.0],
        attack_options={"steps": 20},
        curve="minimal",
        progress=False,
    )
    attacked = out.rows[out.rows["attack"] == "fmn_l2"]
    assert list(attacked["eps"]) == [0.25, 1.0]
    assert all("minimal-norm curve, radius 4" in c for c in attacked["attack_config"])
    assert attacked["accuracy"].is_monotonic_decreasing
    assert attacked["accuracy"].iloc[0] <= out.rows["accuracy"].iloc[0]
    saved = pd.read_csv(out.results_path)
    assert "flags" in saved.columns
    with pytest.raises(ValueError, match="needs a minimal-norm attack"):
        run("jt", "pgd_l2", "a", dataset_options=SMALL, root=run_root, curve="minimal", progress=False)
