"""The library adapters run the libraries' own algorithms, box included (issue 14, defects A and B).

For a modality with a valid box the adapter's result equals the library's on the single-input model of
that modality (other modalities fixed) with the library's clipping set to that box: torchattacks' [0, 1]
clamp (the box mapped onto it) and ART's ``clip_values`` — with boxes that never bind, with clean values
exactly on a bound and iterates that leave the box, and for the joint ℓ2 ball on the concatenated input.
Every adapted torchattacks / ART attack leaves the model's parameters, buffers, mode and the RNGs alone,
with the model in train mode and with BatchNorm1d, also for a batch of one.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from mmrobust_bench.attacks import build_attack
from mmrobust_bench.contracts import ModalitySpec, ModelOutput, ThreatModel, joint_l2_norm

from helpers import ART_SMALL, ART_TEST_OVERRIDES, TORCHATTACKS_SMALL

# both libraries are optional: the module is skipped without them, so ART is imported after the check
torchattacks = pytest.importorskip("torchattacks")
pytest.importorskip("art")
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent  # noqa: E402
from art.estimators.classification import PyTorchClassifier  # noqa: E402

K = 4


class TinyNet(nn.Module):
    """ "v" (3, 4, 4) and "a" (6,): a small tanh MLP each, concatenated, a linear head (the test's own model)."""

    def __init__(self, seed: int = 0, batchnorm: bool = False) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.v = nn.Sequential(
                nn.Flatten(), nn.Linear(48, 8), *([nn.BatchNorm1d(8)] if batchnorm else []), nn.Tanh()
            )
            self.a = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
            self.head = nn.Linear(16, K)

    def forward(self, batch):
        return ModelOutput(self.head(torch.cat([self.v(batch["v"]), self.a(batch["a"])], 1)))


class OnlyV(nn.Module):
    """The single-input model of "v" with "a" fixed, seen through an affine map ``v = lo + w · z`` (so the
    library's [0, 1] clamp on z is the box [lo, hi] on v; w = 1, lo = 0 is the plain model)."""

    def __init__(self, model: nn.Module, a: torch.Tensor, lo: float = 0.0, width: float = 1.0) -> None:
        super().__init__()
        self.model, self.a, self.lo, self.width = model, a, lo, width

    def forward(self, z):
        return self.model({"v": self.lo + self.width * z, "a": self.a}).logits


def batch_for(case: str, n: int = 4, seed: int = 0, lo: float = 0.0, hi: float = 1.0):
    """ "inside": v well inside the box; "bound": a third of v exactly on a bound (0 or 1 of the box)."""
    g = torch.Generator().manual_seed(seed)
    z = 0.3 + 0.4 * torch.rand(n, 3, 4, 4, generator=g)
    if case == "bound":
        pick = torch.rand(n, 3, 4, 4, generator=g)
        z = torch.where(pick < 0.17, torch.zeros_like(z), torch.where(pick > 0.83, torch.ones_like(z), z))
    return {"v": lo + (hi - lo) * z, "a": torch.randn(n, 6, generator=g)}


def specs_for(lo: float = 0.0, hi: float = 1.0):
    return (ModalitySpec("v", (3, 4, 4), (lo,) * 3, (hi,) * 3), ModalitySpec("a", (6,)))


def labels_of(model, batch):
    with torch.no_grad():
        return model(batch).logits.argmax(1)


# ------------------------------------------------------------------ the two repros of the issue (fixed values)


class SumModel(nn.Module):
    """logits [0, a0 + a1] (the issue's repro model); "o" is an unattacked second modality."""

    def forward(self, batch):
        a = batch["a"]
        return ModelOutput(torch.stack([torch.zeros_like(a[:, 0]), a.sum(1) + 0 * batch["o"].sum(1)], 1))


class SumOnly(nn.Module):
    def forward(self, a):
        return torch.stack([torch.zeros_like(a[:, 0, 0, 0]), a.flatten(1).sum(1)], 1)


REPRO_SPECS = (ModalitySpec("a", (2,), (0.0, 0.0), (1.0, 1.0)), ModalitySpec("o", (1,)))


def test_repro_art_fgm_l2_on_a_bound():
    """a = (1.0, 0.5) in [0, 1], ART FastGradientMethod ℓ2, ε = 0.3: ART gives (1.0, 0.712) (the whole
    gradient passes at the bound; the old max/min view gave 0.768)."""
    x = {"a": torch.tensor([[1.0, 0.5]]), "o": torch.zeros(1, 1)}
    y = torch.tensor([0])
    adv = build_attack("art:FastGradientMethod", REPRO_SPECS)(SumModel(), x, y, ThreatModel(("a",), 0.3))
    clf = PyTorchClassifier(
        SumOnly(), loss=nn.CrossEntropyLoss(), input_shape=(1, 1, 2), nb_classes=2, clip_values=(0.0, 1.0)
    )
    direct = FastGradientMethod(clf, norm=2, eps=0.3).generate(np.array([[[[1.0, 0.5]]]], np.float32), y.numpy())
    expected = torch.tensor([[1.0, 0.5 + 0.3 / 2**0.5]])
    torch.testing.assert_close(torch.from_numpy(direct).reshape(1, 2), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(adv["a"], expected, atol=1e-6, rtol=0)
    assert abs(float(adv["a"][0, 1]) - 0.712) < 1e-3


def test_repro_torchattacks_pgdl2_iterates_leave_the_box():
    """a = (0.9, 0.5), PGDL2 ε = 0.5, α = 0.25, 2 steps, no random start: the library clamps its own iterate,
    giving (1.0, 0.854) (the old view gave 0.927)."""
    x = {"a": torch.tensor([[0.9, 0.5]]), "o": torch.zeros(1, 1)}
    y = torch.tensor([0])
    atk = build_attack("torchattacks:PGDL2", REPRO_SPECS, alpha=0.25, steps=2, random_start=False)
    adv = atk(SumModel(), x, y, ThreatModel(("a",), 0.5))
    direct = torchattacks.PGDL2(SumOnly(), eps=0.5, alpha=0.25, steps=2, random_start=False)(
        torch.tensor([[[[0.9, 0.5]]]]), y
    )
    expected = torch.tensor([[1.0, 0.5 + 0.25 * 2**0.5]])
    torch.testing.assert_close(direct.reshape(1, 2), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(adv["a"], expected, atol=1e-6, rtol=0)
    assert abs(float(adv["a"][0, 1]) - 0.854) < 1e-3


# ------------------------------------------------------------------ torchattacks: equal to the library

TA_CASES = [
    ("FGSM", "linf", {}, lambda e, o: {"eps": e}),
    (
        "PGD",
        "linf",
        {"alpha": "a", "steps": 3, "random_start": False},
        lambda e, o: {"eps": e, "alpha": o["alpha"], "steps": 3, "random_start": False},
    ),
    (
        "PGDL2",
        "l2",
        {"alpha": "a", "steps": 3, "random_start": False},
        lambda e, o: {"eps": e, "alpha": o["alpha"], "steps": 3, "random_start": False},
    ),
]


@pytest.mark.parametrize("name, norm, options, direct_args", TA_CASES, ids=[c[0] for c in TA_CASES])
@pytest.mark.parametrize(
    "case, eps, box",
    [
        ("inside", {"linf": 0.05, "l2": 0.2}, (0.0, 1.0)),  # the box never binds
        ("bound", {"linf": 0.3, "l2": 1.5}, (0.0, 1.0)),  # clean values on bounds, iterates leave the box
        ("bound", {"linf": 0.6, "l2": 3.0}, (-1.0, 1.0)),  # a uniform box of width 2, mapped onto [0, 1]
    ],
)
def test_torchattacks_equals_the_library_on_the_single_input_model(name, norm, options, direct_args, case, eps, box):
    lo, hi = box
    width = hi - lo
    model = TinyNet(seed=1).eval()
    batch = batch_for(case, lo=lo, hi=hi)
    labels = labels_of(model, batch)
    e = eps[norm]
    opts = {k: (e / 3 if v == "a" else v) for k, v in options.items()}
    adv = build_attack(f"torchattacks:{name}", specs_for(lo, hi), **opts)(
        model, batch, labels, ThreatModel(("v",), e, norm)
    )
    # the library on the single-input model of "v", its [0, 1] clamp being the box: z = (v − lo) / w
    lib_opts = {k: (v / width if k == "alpha" else v) for k, v in opts.items()}
    attack = getattr(torchattacks, name)(OnlyV(model, batch["a"], lo, width), **direct_args(e / width, lib_opts))
    z = attack((batch["v"] - lo) / width, labels)
    direct = lo + width * z
    torch.testing.assert_close(adv["v"], direct, atol=2e-6, rtol=0)
    assert torch.equal(adv["a"], batch["a"])
    if case == "bound":  # the test exercises what it says: the box binds
        assert bool(((adv["v"] == lo) | (adv["v"] == hi)).any())
        assert not torch.equal(adv["v"], batch["v"])


# ------------------------------------------------------------------ ART: equal to the library

ART_CASES = [
    ("FastGradientMethod", "l2", {}, lambda clf, e, o: FastGradientMethod(clf, norm=2, eps=e)),
    ("FastGradientMethod", "linf", {}, lambda clf, e, o: FastGradientMethod(clf, norm=np.inf, eps=e)),
    (
        "ProjectedGradientDescent",
        "l2",
        {"eps_step": "a", "max_iter": 3, "num_random_init": 0},
        lambda clf, e, o: ProjectedGradientDescent(
            clf, norm=2, eps=e, eps_step=o["eps_step"], max_iter=3, num_random_init=0, verbose=False
        ),
    ),
]


@pytest.mark.parametrize("name, norm, options, make", ART_CASES, ids=["FGM-l2", "FGM-linf", "PGD-l2"])
@pytest.mark.parametrize(
    "case, eps, per_channel",
    [
        ("inside", {"linf": 0.05, "l2": 0.2}, False),
        ("bound", {"linf": 0.3, "l2": 1.5}, False),
        ("bound", {"linf": 0.3, "l2": 1.5}, True),  # a per-channel box: per-feature clip_values arrays
    ],
)
def test_art_equals_the_library_on_the_single_input_model(name, norm, options, make, case, eps, per_channel):
    lower, upper = ((0.0, -0.5, 0.2), (1.0, 0.5, 0.9)) if per_channel else ((0.0,) * 3, (1.0,) * 3)
    specs = (ModalitySpec("v", (3, 4, 4), lower, upper), ModalitySpec("a", (6,)))
    model = TinyNet(seed=2).eval()
    batch = batch_for(case)
    lo_t = torch.tensor(lower).view(1, 3, 1, 1)
    hi_t = torch.tensor(upper).view(1, 3, 1, 1)
    z = batch["v"]
    batch["v"] = lo_t + (hi_t - lo_t) * z  # the same relative positions (bounds included) in each channel's box
    labels = labels_of(model, batch)
    e = eps[norm]
    opts = {k: (e / 3 if v == "a" else v) for k, v in options.items()}
    adv = build_attack(f"art:{name}", specs, **opts)(model, batch, labels, ThreatModel(("v",), e, norm))
    clip = (
        (lo_t.expand(1, 3, 4, 4)[0].numpy().astype(np.float32), hi_t.expand(1, 3, 4, 4)[0].numpy().astype(np.float32))
        if per_channel
        else (0.0, 1.0)
    )
    clf = PyTorchClassifier(
        OnlyV(model, batch["a"]), loss=nn.CrossEntropyLoss(), input_shape=(3, 4, 4), nb_classes=K, clip_values=clip
    )
    direct = make(clf, e, opts).generate(batch["v"].numpy(), labels.numpy())
    torch.testing.assert_close(adv["v"], torch.from_numpy(direct), atol=2e-6, rtol=0)
    assert torch.equal(adv["a"], batch["a"])
    if case == "bound":
        assert bool(((adv["v"] == lo_t) | (adv["v"] == hi_t)).any())


# ------------------------------------------------------------------ the joint ℓ2 ball on the concatenated input


class Concat(nn.Module):
    """The single-input model on the concatenation (v, b) as one (B, 1, 1, 54) image."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        flat = x.flatten(1)
        return self.model({"v": flat[:, :48].reshape(-1, 3, 4, 4), "a": flat[:, 48:]}).logits


@pytest.mark.parametrize("library", ["torchattacks", "art"])
def test_joint_l2_equals_the_library_on_the_concatenated_input(library):
    specs = (ModalitySpec("v", (3, 4, 4), (0.0,) * 3, (1.0,) * 3), ModalitySpec("a", (6,), (0.0,) * 6, (1.0,) * 6))
    model = TinyNet(seed=3).eval()
    batch = batch_for("bound", n=5)
    batch["a"] = torch.rand(5, 6, generator=torch.Generator().manual_seed(4))
    batch["a"][:, 0] = 1.0
    labels = labels_of(model, batch)
    eps, step = 1.5, 0.5
    threat = ThreatModel(("v", "a"), eps)
    x = torch.cat([batch["v"].flatten(1), batch["a"]], 1).view(5, 1, 1, 54)
    if library == "torchattacks":
        adv = build_attack("torchattacks:PGDL2", specs, alpha=step, steps=3, random_start=False)(
            model, batch, labels, threat
        )
        direct = torchattacks.PGDL2(Concat(model), eps=eps, alpha=step, steps=3, random_start=False)(x, labels)
    else:
        adv = build_attack("art:ProjectedGradientDescent", specs, eps_step=step, max_iter=3, num_random_init=0)(
            model, batch, labels, threat
        )
        clf = PyTorchClassifier(
            Concat(model), loss=nn.CrossEntropyLoss(), input_shape=(1, 1, 54), nb_classes=K, clip_values=(0.0, 1.0)
        )
        direct = torch.from_numpy(
            ProjectedGradientDescent(
                clf, norm=2, eps=eps, eps_step=step, max_iter=3, num_random_init=0, verbose=False
            ).generate(x.numpy(), labels.numpy())
        )
    got = torch.cat([adv["v"].flatten(1), adv["a"]], 1)
    torch.testing.assert_close(got, direct.flatten(1), atol=2e-6, rtol=0)
    assert bool(((got == 0) | (got == 1)).any())


def test_non_uniform_box_keeps_l2_geometry_and_the_box():
    """torchattacks cannot express a box whose channels differ in width: the adapter keeps the ℓ2 ball and
    clamps into the box (documented in ``library_box_note``)."""
    from mmrobust_bench.attacks import library_box_note

    specs = (ModalitySpec("v", (3, 4, 4), (0.0, -2.0, 0.0), (1.0, 2.0, 0.5)), ModalitySpec("a", (6,)))
    model = TinyNet(seed=5).eval()
    batch = batch_for("inside", n=4)
    labels = labels_of(model, batch)
    adv = build_attack("torchattacks:PGDL2", specs, steps=3)(model, batch, labels, ThreatModel(("v",), 2.0))
    assert bool((joint_l2_norm({"v": adv["v"] - batch["v"]}, ("v",)) <= 2.0 * (1 + 1e-5)).all())
    assert torch.equal(specs[0].clamp(adv["v"]), adv["v"]) and torch.equal(adv["a"], batch["a"])
    assert "non-uniform" in library_box_note("torchattacks:PGDL2") and "torch.clamp" in library_box_note(
        "torchattacks:PGD"
    )


# ------------------------------------------------------------------ defect B: the model is left alone


def _small_options(library: str, name: str) -> dict:
    probe = build_attack(f"{library}:{name}", specs_for())
    table = TORCHATTACKS_SMALL if library == "torchattacks" else ART_SMALL
    options = {k: v for k, v in table.items() if k in probe.signature_args}
    if library == "art":
        options.update(ART_TEST_OVERRIDES.get(name, {}))
    return options


def _adapted():
    from mmrobust_bench.attacks.art_adapter import art_names
    from mmrobust_bench.attacks.torchattacks_adapter import torchattacks_names

    names = [("torchattacks", n) for n in torchattacks_names()] + [("art", n) for n in art_names()]
    return [p for p in names if p != ("torchattacks", "AutoAttack") and p != ("art", "AutoAttack")]


def _state(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        torch.random.get_rng_state(),
        np.random.get_state()[1].copy(),
        random.getstate(),
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
    )


def _assert_same_state(before, after):
    state_b, modes_b, rng_b, np_b, py_b, req_b, _grad_b = before
    state_a, modes_a, rng_a, np_a, py_a, req_a, grad_a = after
    assert state_b.keys() == state_a.keys()
    for k in state_b:
        assert torch.equal(state_b[k], state_a[k]), f"{k} changed"
    assert modes_b == modes_a and req_b == req_a and all(g is None for g in grad_a)
    assert torch.equal(rng_b, rng_a) and np.array_equal(np_b, np_a) and py_b == py_a


@pytest.mark.parametrize("library, name", _adapted(), ids=[f"{lib}:{n}" for lib, n in _adapted()])
@pytest.mark.parametrize("n", [3, 1])
def test_library_attack_leaves_a_batchnorm_model_in_train_mode_alone(library, name, n):
    """Parameters, BatchNorm running statistics and num_batches_tracked, train/eval flags and the global RNGs
    are unchanged; the unattacked modality is bit-identical, δ is inside the ε ball and the box. A batch of
    one works too (BatchNorm1d in train mode would refuse it: no probe runs the model in train mode)."""
    if name == "AutoAttack":
        pytest.skip("AutoAttack runs APGD, FAB and Square, each covered here")
    model = TinyNet(seed=6, batchnorm=True)
    with torch.no_grad():  # non-trivial running statistics, so a changed one shows
        model.v[2].running_mean.uniform_(-0.1, 0.1)
        model.v[2].running_var.uniform_(0.5, 1.5)
    model.train()
    batch = batch_for("bound", n=n, seed=7)
    model.eval()
    labels = labels_of(model, batch)
    model.train()
    atk = build_attack(f"{library}:{name}", specs_for(), **_small_options(library, name))
    norm = atk.norms[0]
    eps = 3.0 if norm == "l0" else 0.5
    threat = ThreatModel(("v",), eps, norm)
    before = _state(model)
    adv = atk(model, batch, labels, threat)
    _assert_same_state(before, _state(model))
    assert torch.equal(adv["a"], batch["a"])
    delta = (adv["v"] - batch["v"]).double().flatten(1)
    bound = {
        "l2": delta.norm(dim=1),
        "linf": delta.abs().amax(1),
        "l1": delta.abs().sum(1),
        "l0": (delta != 0).sum(1).double(),
    }[norm]
    assert bool((bound <= eps * (1 + 1e-5) + 1e-7).all())
    assert torch.equal(specs_for()[0].clamp(adv["v"]), adv["v"])


@pytest.mark.parametrize("name, norm, eps", [("PGDL2", "l2", 0.3), ("PGD", "linf", 0.3), ("PGD", "linf", 0.8)])
def test_joint_bounded_and_unbounded_modalities(name, norm, eps):
    """A uniform box and an unbounded modality attacked jointly: the box is the library's clamp while ε/w ≤ 0.5
    (the unbounded modality, centred, never reaches [0, 1]), the view's clamp above; random starts beyond the
    tags' tolerance run one sample at a time. Either way: inside the ball and the box, reproducible."""
    model = TinyNet(seed=8).eval()
    batch = batch_for("bound", n=5, seed=9)
    labels = labels_of(model, batch)
    atk = build_attack(f"torchattacks:{name}", specs_for(), steps=3)  # random_start=True (library default)
    threat = ThreatModel(("v", "a"), eps, norm)
    plan = atk.plan(threat, eps)
    assert plan.box_map == (eps <= 0.5) and plan.per_sample == (plan.box_map and eps > 0.35)
    adv = atk(model, batch, labels, threat)
    delta = torch.cat([(adv[m] - batch[m]).flatten(1) for m in ("v", "a")], 1).double()
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(1)
    assert bool((size <= eps * (1 + 1e-5)).all()) and float(size.max()) > 0.5 * eps
    assert torch.equal(specs_for()[0].clamp(adv["v"]), adv["v"])
    again = atk(model, batch, labels, threat)
    assert all(torch.equal(adv[m], again[m]) for m in adv)
