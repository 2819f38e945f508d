"""ART adapter: agreement with ART called directly on an equivalent single-input model, the attack
invariants over modality subsets and ε, masks and exact per-feature boxes, and clear errors."""

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mmrobust_bench.attacks import FAMILY_LISTERS, build_attack
from mmrobust_bench.attacks import view as view_module
from mmrobust_bench.attacks.art_adapter import ART_ATTACKS, ArtAttack
from mmrobust_bench.attacks.view import SingleInputView
from mmrobust_bench.contracts import ModalitySpec, ThreatModel

from adapter_models import CLASSES, SingleInput, TwoModalNet, predicted
from adapter_models import assert_invariants as _assert_invariants
from adapter_models import make_batch as _make_batch

# ART is optional: the module is skipped without it, so its classes are imported after the check
art = pytest.importorskip("art", reason="pip install adversarial-robustness-toolbox==1.20.1 packaging")
from art.attacks.evasion import ProjectedGradientDescent  # noqa: E402
from art.estimators.classification import PyTorchClassifier  # noqa: E402

SPECS = (
    ModalitySpec("v", (3, 4, 4), (0.0, -0.5, 0.0), (1.0, 0.5, 1.0)),
    ModalitySpec("a", (1, 6, 5)),
)
SPEC = {s.name: s for s in SPECS}


assert_invariants = partial(_assert_invariants, spec=SPEC)
make_batch = partial(_make_batch, centre_channel=1)  # channel 1 of v lives in [-0.5, 0.5]


def test_agrees_with_art_pgd_on_equivalent_single_input_model():
    """ℓ2 PGD without random start, v inside the box with room to spare and ε = 0.2: ART's [0, 1] clip and
    the modality box never act, so the adapter must reproduce ART on the single-input model."""
    model = TwoModalNet().eval()
    batch = make_batch(5, seed=1, v_low=0.3, v_high=0.7)
    labels = predicted(model, batch)
    eps, step, iters = 0.2, 0.05, 6
    threat = ThreatModel(("v",), eps)
    adv = build_attack("art:ProjectedGradientDescent", SPECS, eps_step=step, max_iter=iters, num_random_init=0)(
        model, batch, labels, threat
    )
    direct = PyTorchClassifier(
        SingleInput(model, batch["a"]),
        loss=nn.CrossEntropyLoss(),
        input_shape=(3, 4, 4),
        nb_classes=CLASSES,
        clip_values=(-1.0, 2.0),
        device_type="cpu",
    )
    reference = ProjectedGradientDescent(
        direct, norm=2, eps=eps, eps_step=step, max_iter=iters, num_random_init=0, batch_size=5, verbose=False
    ).generate(batch["v"].numpy(), labels.numpy())
    assert not torch.equal(adv["v"], batch["v"])
    np.testing.assert_allclose(adv["v"].numpy(), reference, atol=2e-5, rtol=0)
    assert torch.equal(adv["a"], batch["a"])


def test_clip_bounds_are_each_samples_exact_box():
    model = TwoModalNet().eval()
    batch = make_batch(3, seed=2)
    view = SingleInputView(model, batch, ("v", "a"), SPEC, scale=0.5)
    lower, upper = view.clip_bounds(1e-6)
    low_u = view.decode(lower)
    high_u = view.decode(upper)
    lo, hi = SPEC["v"].box(batch["v"])
    # wherever [0, 1] in library units does not cut first, the bounds are the modality's box exactly
    inside_lo = low_u["v"] > batch["v"] - 0.5 * 0.5 + 1e-6
    inside_hi = high_u["v"] < batch["v"] + 0.5 * 0.5 - 1e-6
    torch.testing.assert_close(low_u["v"][inside_lo], lo.expand_as(batch["v"])[inside_lo])
    torch.testing.assert_close(high_u["v"][inside_hi], hi.expand_as(batch["v"])[inside_hi])
    assert bool(inside_lo.any()) and bool(inside_hi.any())
    # unbounded audio: the [0, 1] library box; tags and padding pinned around their values
    torch.testing.assert_close(low_u["a"], batch["a"] - 0.25)
    x = view.encode().flatten(1)
    assert float((upper.flatten(1)[:, 78:] - x[:, 78:]).abs().max()) <= 1.1e-6


def test_view_reads_rows_and_skips_copies_for_the_whole_batch():
    model = TwoModalNet().eval()
    batch = make_batch(3, seed=2)
    view = SingleInputView(model, batch, ("a",), SPEC, scale=1.0)
    x = view.encode()
    assert view.rows(x) is None
    assert view.rows(x[[2, 0, 2]]).tolist() == [2, 0, 2]
    jittered = x.clone().flatten(1)
    jittered[:, 30 : 30 + view.n_tags] += 0.2
    assert view.rows(jittered.view_as(x)) is None
    with torch.no_grad():
        torch.testing.assert_close(view(x[[2, 0, 2]]), model({m: v[[2, 0, 2]] for m, v in batch.items()}).logits)


@pytest.mark.parametrize(
    "name, options",
    [
        ("ProjectedGradientDescent", {"max_iter": 3, "num_random_init": 1}),
        ("FastGradientMethod", {"num_random_init": 1}),
    ],
)
def test_mask_keeps_tags_and_padding_still(monkeypatch, name, options):
    """Masked attacks never perturb tags or padding, not even by their random start. (APGD's random start
    ignores the mask; it moves tags by at most its budget, which the view tolerates.)"""
    model = TwoModalNet().eval()
    batch = make_batch(6, seed=3)
    labels = predicted(model, batch)
    seen = []
    original = view_module.SingleInputView.rows

    def spy(self, x):
        d = self.clean.shape[1]
        seen.append((x.detach().flatten(1)[:, d:].double(), self.encode().flatten(1)[:, d:].double()))
        return original(self, x)

    monkeypatch.setattr(view_module.SingleInputView, "rows", spy)
    build_attack(f"art:{name}", SPECS, **options)(model, batch, labels, ThreatModel(("v", "a"), 0.8))
    rows = [(x, clean) for x, clean in seen if x.shape[0] == clean.shape[0]]
    assert rows and all(float((x - clean).abs().max()) < 1e-7 for x, clean in rows)


@pytest.mark.parametrize(
    "name, options",
    [
        ("HopSkipJump", {"max_iter": 2, "max_eval": 20, "init_eval": 5, "init_size": 20}),
        ("BoundaryAttack", {"max_iter": 3, "num_trial": 3, "sample_size": 3, "init_size": 20}),
    ],
)
def test_decision_based_attacks_stay_in_the_exact_boxes(name, options):
    """One estimator per sample with exact per-feature clip values: random starts stay inside each modality's
    box, and the attack finds adversarial inputs (success counted with the model itself)."""
    model = TwoModalNet().eval()
    batch = make_batch(4, seed=4)
    labels = predicted(model, batch)
    threat = ThreatModel(("v", "a"), 50.0)
    adv = build_attack(f"art:{name}", SPECS, **options)(model, batch, labels, threat)
    assert_invariants(batch, adv, threat, 50.0)
    assert bool((predicted(model, adv) != labels).any())


@settings(max_examples=8, deadline=None)
@given(
    modalities=st.sampled_from([("v",), ("a",), ("v", "a")]),
    eps=st.floats(0.05, 2.0),
    attack=st.sampled_from(
        [
            ("FastGradientMethod", "l2", {}),
            ("ProjectedGradientDescent", "linf", {"max_iter": 3, "num_random_init": 1}),
            ("DeepFool", "l2", {"max_iter": 3}),
            ("CarliniL2Method", "l2", {"max_iter": 2, "binary_search_steps": 1}),
            ("HopSkipJump", "l2", {"max_iter": 1, "max_eval": 10, "init_eval": 5, "init_size": 10}),
        ]
    ),
    training=st.booleans(),
    seed=st.integers(0, 3),
)
def test_invariants(modalities, eps, attack, training, seed):
    name, norm, options = attack
    model = TwoModalNet().train(training)
    batch = make_batch(3, seed=seed)
    labels = predicted(model.eval(), batch)
    model.train(training)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    threat = ThreatModel(modalities, eps, norm)
    atk = build_attack(f"art:{name}", SPECS, seed=seed, **options)
    rng = torch.random.get_rng_state()
    np_rng = np.random.get_state()[1].copy()
    adv = atk(model, batch, labels, threat)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert np.array_equal(np.random.get_state()[1], np_rng)
    assert all(m.training == training for m in model.modules())
    assert all(p.requires_grad and torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert_invariants(batch, adv, threat, eps)
    again = atk(model, batch, labels, threat)
    assert all(torch.equal(adv[m], again[m]) for m in batch)


def test_float64_model_and_zero_eps():
    model = TwoModalNet().double().eval()
    batch = make_batch(3, seed=5, dtype=torch.float64)
    labels = predicted(model, batch)
    atk = build_attack("art:ProjectedGradientDescent", SPECS, max_iter=3)
    threat = ThreatModel(("v", "a"), 0.3)
    adv = atk(model, batch, labels, threat)
    assert_invariants(batch, adv, threat, 0.3)
    assert not torch.equal(adv["a"], batch["a"])
    clean = atk(model, batch, labels, threat.with_eps(0.0))
    assert all(torch.equal(clean[m], batch[m]) for m in batch)


def test_targeted_moves_towards_the_targets():
    model = TwoModalNet().eval()
    batch = make_batch(5, seed=6)
    labels = predicted(model, batch)
    targets = (labels + 1) % CLASSES
    threat = ThreatModel(("v", "a"), 1.0)
    adv = build_attack("art:ProjectedGradientDescent", SPECS, max_iter=5)(model, batch, labels, threat, targets=targets)
    with torch.no_grad():
        before = F.cross_entropy(model(batch).logits, targets, reduction="none")
        after = F.cross_entropy(model(adv).logits, targets, reduction="none")
    assert bool((after < before).all())


def test_registered_family():
    atk = build_attack("art:DeepFool", SPECS)
    assert isinstance(atk, ArtAttack) and atk.minimal_norm
    assert (atk.library, atk.library_version) == ("art", art.__version__)
    names = FAMILY_LISTERS["art"]()
    assert set(names) == set(ART_ATTACKS)
    assert {
        "FastGradientMethod",
        "ProjectedGradientDescent",
        "AutoProjectedGradientDescent",
        "AutoAttack",
        "DeepFool",
        "CarliniL2Method",
        "ElasticNet",
        "HopSkipJump",
        "BoundaryAttack",
    } <= set(names)


@pytest.mark.parametrize(
    "name, options, threat, message",
    [
        ("NoSuchAttack", {}, None, "unknown ART attack 'NoSuchAttack'.*valid: .*ProjectedGradientDescent"),
        ("ProjectedGradientDescnt", {}, None, "did you mean 'art:ProjectedGradientDescent'"),
        ("AdversarialPatch", {}, None, "cannot be adapted.*patch"),
        ("DeepFool", {}, ThreatModel(("v",), 0.5, "linf"), "attacks in norm l2, not linf: use --norm l2"),
        ("BasicIterativeMethod", {}, ThreatModel(("v",), 0.5, "l2"), "attacks in norm linf, not l2: use --norm linf"),
        ("ProjectedGradientDescent", {}, ThreatModel(("v", "a"), 0.5, joint=False), "joint"),
        ("ProjectedGradientDescent", {"eps": 0.1}, ThreatModel(("v",), 0.5), "differs from the run's ε=0.5"),
        ("ProjectedGradientDescent", {"norm": 2}, None, "come from the threat model"),
        (
            "ProjectedGradientDescent",
            {"max_iterz": 3},
            None,
            r"unknown option\(s\) max_iterz \(did you mean 'max_iter'\?\)",
        ),
    ],
)
def test_clear_errors(name, options, threat, message):
    model = TwoModalNet().eval()
    batch = make_batch(2, seed=7)
    with pytest.raises(ValueError, match=message):
        build_attack(f"art:{name}", SPECS, **options)(
            model, batch, predicted(model, batch), threat or ThreatModel(("v",), 0.5)
        )


def test_untargetable_attack_says_so():
    model = TwoModalNet().eval()
    batch = make_batch(2, seed=7)
    labels = predicted(model, batch)
    with pytest.raises(ValueError, match="no targeted mode"):
        build_attack("art:DeepFool", SPECS)(model, batch, labels, ThreatModel(("v",), 0.5), targets=labels)
