"""torchattacks adapter: agreement with the library called directly on an equivalent single-input model,
sub-batch and single-sample calls, the attack invariants over modality subsets and ε, and clear errors."""

import sys
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmrobust_bench.attacks import FAMILY_LISTERS, build_attack
from mmrobust_bench.attacks.torchattacks_adapter import SingleInputView, TorchattacksAttack, torchattacks_names
from mmrobust_bench.contracts import ModalitySpec, ThreatModel

from adapter_models import CLASSES, SingleInput, TwoModalNet, predicted
from adapter_models import assert_invariants as _assert_invariants
from adapter_models import make_batch as _make_batch

torchattacks = pytest.importorskip("torchattacks", reason="pip install --no-deps torchattacks==3.5.1")

SPECS = (
    ModalitySpec("v", (3, 4, 4), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ModalitySpec("a", (1, 6, 5)),
)
SPEC = {s.name: s for s in SPECS}


assert_invariants = partial(_assert_invariants, spec=SPEC)
make_batch = _make_batch


@pytest.mark.parametrize(
    "name, norm, extra",
    [
        ("PGDL2", "l2", {"steps": 5, "random_start": False}),
        ("PGD", "linf", {"steps": 5, "random_start": False}),
        ("FGSM", "linf", {}),
    ],
)
def test_agrees_with_torchattacks_on_equivalent_single_input_model(name, norm, extra):
    """With v inside [0.3, 0.7] and ε = 0.2 neither torchattacks' [0, 1] clamp nor the modality box
    acts, so the adapter must reproduce the library exactly. (When the box acts they differ by design:
    the library clamps its iterate, the adapter clamps inside the view and projects at the end.)"""
    model = TwoModalNet().eval()
    batch = make_batch(5, seed=1, v_low=0.3, v_high=0.7)
    labels = predicted(model, batch)
    eps = 0.2
    step = {} if name == "FGSM" else {"alpha": eps / 4}
    adv = build_attack(f"torchattacks:{name}", SPECS, **extra, **step)(
        model, batch, labels, ThreatModel(("v",), eps, norm)
    )
    reference = getattr(torchattacks, name)(SingleInput(model, batch["a"]), eps=eps, **extra, **step)(
        batch["v"], labels
    )
    assert not torch.equal(adv["v"], batch["v"])
    torch.testing.assert_close(adv["v"], reference, atol=1e-5, rtol=0)
    assert torch.equal(adv["a"], batch["a"])


def test_view_supplies_frozen_modalities_per_sample_index():
    """Rows of a permuted sub-batch, with perturbed attacked coordinates and tags jittered by less than
    the library budget, give the logits of the model on exactly those samples."""
    model = TwoModalNet().eval()
    batch = make_batch(6, seed=2)
    view = SingleInputView(model, batch, ("v",), SPEC, scale=0.5)
    x = view.encode()
    assert x.shape == (6, 1, view.height, view.width)
    order = torch.tensor([4, 1, 5, 1])
    moved = x[order].clone().flatten(1)
    g = torch.Generator().manual_seed(0)
    moved[:, :48] += 0.3 * torch.rand(4, 48, generator=g) - 0.15
    moved[:, 48 : 48 + view.n_tags] += 0.6 * torch.rand(4, view.n_tags, generator=g) - 0.3
    v = SPEC["v"].clamp(batch["v"][order] + 0.5 * (moved[:, :48] - 0.5).view(4, 3, 4, 4))
    with torch.no_grad():
        expected = model({"v": v, "a": batch["a"][order]}).logits
        got = view(moved.view(4, 1, view.height, view.width))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_view_refuses_tags_moved_beyond_the_budget():
    model = TwoModalNet().eval()
    view = SingleInputView(model, make_batch(6, seed=2), ("v", "a"), SPEC, scale=1.0)
    x = view.encode().flatten(1)
    x[0, 78] += 0.4  # halfway between the two codes: more than any budgeted move
    with pytest.raises(RuntimeError, match="tags"):
        view(x.view(6, 1, view.height, view.width))


@pytest.mark.parametrize(
    "name, options, modalities",
    [
        ("DeepFool", {"steps": 3}, ("v", "a")),
        ("DeepFool", {"steps": 3}, ("a",)),
        ("APGD", {"steps": 4, "n_restarts": 1}, ("v", "a")),
    ],
)
def test_sub_batch_attacks_keep_the_invariants(name, options, modalities):
    """DeepFool attacks one sample at a time and APGD only the still-correct ones: both go through
    the per-index view. The user's parameters get no .grad (DeepFool calls backward())."""
    model = TwoModalNet().eval()
    batch = make_batch(6, seed=3)
    labels = predicted(model, batch)
    labels[:2] = (labels[:2] + 1) % CLASSES  # already misclassified: APGD leaves them out
    threat = ThreatModel(modalities, 0.8)
    model.batch_sizes.clear()
    adv = build_attack(f"torchattacks:{name}", SPECS, **options)(model, batch, labels, threat)
    assert min(model.batch_sizes) < 6
    assert_invariants(batch, adv, threat, 0.8)
    assert any(not torch.equal(adv[m], batch[m]) for m in modalities)
    assert all(p.grad is None for p in model.parameters())


@settings(max_examples=10, deadline=None)
@given(
    modalities=st.sampled_from([("v",), ("a",), ("v", "a")]),
    eps=st.floats(0.01, 2.0),
    attack=st.sampled_from([("PGDL2", "l2"), ("PGD", "linf"), ("FGSM", "linf")]),
    training=st.booleans(),
    seed=st.integers(0, 3),
)
def test_invariants(modalities, eps, attack, training, seed):
    name, norm = attack
    model = TwoModalNet().train(training)
    batch = make_batch(4, seed=seed)
    labels = predicted(model.eval(), batch)
    model.train(training)
    threat = ThreatModel(modalities, eps, norm)
    options = {} if name == "FGSM" else {"steps": 3}
    atk = build_attack(f"torchattacks:{name}", SPECS, seed=seed, **options)
    rng = torch.random.get_rng_state()
    adv = atk(model, batch, labels, threat)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(m.training == training for m in model.modules())
    assert_invariants(batch, adv, threat, eps)
    again = atk(model, batch, labels, threat)
    assert all(torch.equal(adv[m], again[m]) for m in batch)


def test_float64_model_and_zero_eps():
    model = TwoModalNet().double().eval()
    batch = make_batch(3, seed=4, dtype=torch.float64)
    labels = predicted(model, batch)
    atk = build_attack("torchattacks:FGSM", SPECS)
    adv = atk(model, batch, labels, ThreatModel(("v", "a"), 0.1, "linf"))
    assert_invariants(batch, adv, ThreatModel(("v", "a"), 0.1, "linf"), 0.1)
    clean = atk(model, batch, labels, ThreatModel(("v", "a"), 0.0, "linf"))
    assert all(torch.equal(clean[m], batch[m]) for m in batch)


def test_targeted_moves_towards_the_targets():
    model = TwoModalNet().eval()
    batch = make_batch(5, seed=5)
    labels = predicted(model, batch)
    targets = (labels + 1) % CLASSES
    threat = ThreatModel(("v", "a"), 1.0)
    adv = build_attack("torchattacks:PGDL2", SPECS, steps=5)(model, batch, labels, threat, targets=targets)
    with torch.no_grad():
        before = F.cross_entropy(model(batch).logits, targets, reduction="none")
        after = F.cross_entropy(model(adv).logits, targets, reduction="none")
    assert bool((after < before).all())


def test_registered_family():
    atk = build_attack("torchattacks:APGD", SPECS, steps=2)
    assert isinstance(atk, TorchattacksAttack)
    assert (atk.library, atk.library_version) == ("torchattacks", torchattacks.__version__)
    assert atk.norms == ("l2", "linf")
    names = FAMILY_LISTERS["torchattacks"]()
    assert {"PGDL2", "DeepFool", "FAB", "Square", "AutoAttack"} <= set(names)
    assert not {"MultiAttack", "LGV", "DIFGSM"} & set(names)


@pytest.mark.parametrize(
    "name, options, threat, message",
    [
        ("NoSuchAttack", {}, None, "valid: .*PGDL2"),
        ("PGD", {}, ThreatModel(("v",), 0.5, "l2"), "attacks in norm linf, not l2: use --norm linf"),
        ("PGDL2", {}, ThreatModel(("v",), 0.5, "linf"), "attacks in norm l2, not linf: use --norm l2"),
        ("PGDL2", {}, ThreatModel(("v", "a"), 0.5, "l2", joint=False), "joint"),
        ("PGDL2", {"eps": 0.1}, ThreatModel(("v",), 0.5), "eps=0.1 differs from the run's ε=0.5; ε comes from --eps"),
        ("PGDL2", {"norm": "L2"}, None, "come from the threat model"),
        ("PGDL2", {"stepz": 3}, None, r"unknown option\(s\) stepz \(did you mean 'steps'\?\); valid: alpha"),
        ("PGDL2", {"steps": "ten"}, None, "option steps takes an integer"),
        ("CW", {"eps": 0.1}, None, "no budget option eps"),
        ("DIFGSM", {}, None, "cannot be adapted"),
    ],
)
def test_clear_errors(name, options, threat, message):
    model = TwoModalNet().eval()
    batch = make_batch(2, seed=6)
    with pytest.raises(ValueError, match=message):
        build_attack(f"torchattacks:{name}", SPECS, **options)(model, batch, predicted(model, batch), threat)


def test_untargetable_attack_says_so():
    model = TwoModalNet().eval()
    batch = make_batch(2, seed=6)
    labels = predicted(model, batch)
    with pytest.raises(ValueError, match="no targeted mode"):
        build_attack("torchattacks:DeepFool", SPECS)(model, batch, labels, ThreatModel(("v",), 0.5), targets=labels)


def test_missing_torchattacks_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps torchattacks==3\.5\.1"):
        torchattacks_names()


class IgnoresAudio(torch.nn.Module):
    """TwoModalNet with its audio detached and zeroed: the audio cannot change a prediction."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TwoModalNet().eval()

    def forward(self, batch):
        return self.net({**batch, "a": torch.zeros_like(batch["a"]).detach()})


@pytest.mark.parametrize("attack", ["torchattacks:PGDL2", "art:ProjectedGradientDescent", "pgd_l2", "autoattack"])
def test_an_attack_on_a_modality_the_model_ignores_moves_nothing_and_does_not_crash(attack):
    """The gradient of an ignored modality is zero (the view ties the logits to its input with weight zero),
    so every sample stays correct: the exact robust accuracy, where autograd used to raise."""
    model = IgnoresAudio()
    batch = make_batch(6, seed=2)
    labels = predicted(model, batch)
    options = {"version": "fast"} if attack == "autoattack" else {}
    adv = build_attack(attack, SPECS, **options)(model, batch, labels, ThreatModel(("a",), 1.0, "l2"))
    assert torch.equal(adv["v"], batch["v"])
    with torch.no_grad():
        assert torch.equal(model(adv).logits.argmax(1), labels)
