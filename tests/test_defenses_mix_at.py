"""Mixup, MMAT and CRMT-Mix: mixed inputs, adversarial inputs and mixed margins, exactly."""

import copy

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from mmrobust_bench.bench.api import train_defense
from mmrobust_bench.bench.evaluate import clean_accuracy
from mmrobust_bench.defenses import TrainConfig, TrainContext, build_defense
from mmrobust_bench.defenses.adversarial import joint_normalised_ascent
from mmrobust_bench.defenses.crmt_mix import intended_mix_margin, official_mix_margin
from mmrobust_bench.defenses.mixing import draw_mix
from mmrobust_bench.models import ConcatHead, MultiModalNet

from helpers import linear_model

B = 6


def context(seed: int) -> TrainContext:
    return TrainContext(
        dataset=None, train=TrainConfig(), device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed)
    )


def record_inputs(model: nn.Module) -> list:
    seen = []
    model.register_forward_pre_hook(
        lambda module, args: seen.append({m: x.detach().clone() for m, x in args[0].items()})
    )
    return seen


def mix_batch():
    """v is the identity, so a mixed v reveals λ (diagonal) and π (the off-diagonal 1 − λ)."""
    torch.manual_seed(0)
    batch = {"v": torch.eye(B), "a": torch.randn(B, 4)}
    return batch, torch.tensor([0, 1, 2, 0, 1, 2])


def recover_mix(mixed_v: torch.Tensor) -> tuple[float, torch.Tensor]:
    off = mixed_v - torch.diag(torch.diag(mixed_v))
    moved = off.abs().sum(1) > 0
    assert moved.any(), "identity permutation drawn; pick another seed"
    lam = mixed_v.diagonal()[moved][0].item()
    perm = torch.where(moved, off.argmax(1), torch.arange(B))
    return lam, perm


# ---------------------------------------------------------------- Mixup


def test_mixup_mixes_both_modalities_alike_and_weights_the_two_targets():
    batch, y = mix_batch()
    model = linear_model({"v": B, "a": 4}, 3).train()
    seen = record_inputs(model)
    defense, _ = build_defense("mixup")
    loss = defense.loss(model, batch, y, context(11))
    lam, perm = recover_mix(seen[-1]["v"])
    assert 0 < lam < 1
    assert torch.allclose(seen[-1]["v"], lam * batch["v"] + (1 - lam) * batch["v"][perm], atol=1e-6)
    assert torch.allclose(seen[-1]["a"], lam * batch["a"] + (1 - lam) * batch["a"][perm], atol=1e-6)
    logits = model(seen[-1]).logits
    assert torch.allclose(
        loss, lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm]), atol=1e-6
    )


def test_mixup_is_reproducible_from_the_training_generator():
    batch, y = mix_batch()
    model = linear_model({"v": B, "a": 4}, 3).train()
    seen = record_inputs(model)
    defense, _ = build_defense("mixup")
    first = defense.loss(model, batch, y, context(11))
    torch.manual_seed(123)  # the global RNG plays no part
    again = defense.loss(model, batch, y, context(11))
    other = defense.loss(model, batch, y, context(12))
    assert torch.equal(first, again) and torch.equal(seen[0]["a"], seen[1]["a"])
    assert not torch.equal(seen[0]["a"], seen[2]["a"]) and not torch.equal(first, other)


def test_mix_lambda_follows_beta_alpha_alpha():
    gen = torch.Generator().manual_seed(0)
    lams = [draw_mix(4, 0.4, gen).lam for _ in range(3000)]
    assert stats.kstest(lams, stats.beta(0.4, 0.4).cdf).pvalue > 0.01
    assert draw_mix(4, 0.0, gen).lam == 1.0  # α ≤ 0: no mixing, as the reference


# ---------------------------------------------------------------- MMAT


def bn_model() -> MultiModalNet:
    """Flatten + BatchNorm encoders: train-mode attacks visibly move the running statistics."""
    torch.manual_seed(0)
    encoders = {
        "v": nn.Sequential(nn.Flatten(), nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Tanh()),
        "a": nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh()),
    }
    return MultiModalNet(encoders, ConcatHead(["v", "a"], [4, 4], 3)).train()


@pytest.mark.parametrize("overrides, eps, steps", [({}, 0.1, 5), ({"at_eps": 0.3, "at_steps": 2}, 0.3, 2)])
def test_mmat_trains_on_exactly_the_joint_normalised_ascent(overrides, eps, steps):
    model = bn_model()
    reference = copy.deepcopy(model)
    batch = {"v": torch.randn(8, 5), "a": torch.randn(8, 3)}
    y = torch.randint(0, 3, (8,))
    seen = record_inputs(model)
    defense, _ = build_defense("mmat", overrides)
    loss = defense.loss(model, batch, y, context(0))
    expected = joint_normalised_ascent(reference, batch, y, eps=eps, steps=steps)
    assert len(seen) == steps + 1
    for m in batch:
        assert torch.allclose(seen[-1][m], expected[m], atol=1e-7)
        assert not torch.allclose(expected[m], batch[m])
    assert torch.allclose(loss, F.cross_entropy(reference(expected).logits, y), atol=1e-6)
    # the model stayed in train mode throughout: BN statistics moved exactly as in the reference
    for (name, buf), ref in zip(model.named_buffers(), reference.buffers()):
        assert torch.allclose(buf.float(), ref.float(), atol=1e-6), name


# ---------------------------------------------------------------- CRMT-Mix margins


def literal_intended(z: dict, y_a, y_b, lam):
    total = 0
    for zm in z.values():
        keep = torch.ones_like(zm, dtype=torch.bool)
        keep[torch.arange(len(y_a)), y_a] = False
        keep[torch.arange(len(y_a)), y_b] = False
        numerator = (torch.exp(zm) * keep).sum(1)
        rows = torch.arange(len(y_a))
        denominator = torch.exp(lam * zm[rows, y_a] + (1 - lam) * zm[rows, y_b])
        total = total + numerator / denominator
    return torch.log(total).mean()


def literal_official(outs: list, targets_a, targets_b, lam):
    """The reference loop, transcribed (``same_target`` means "different")."""
    rows = torch.arange(targets_a.shape[0])
    same_target = targets_a != targets_b
    margin_loss = 0.0
    for modality in range(len(outs)):
        numerator = (
            torch.sum(torch.exp(outs[modality]), dim=1)
            - outs[modality][rows, targets_a]
            - outs[modality][rows, targets_b] * same_target
        )
        margin_loss = margin_loss + numerator * torch.exp(
            -(lam * outs[modality][rows, targets_a] + (1 - lam) * outs[modality][rows, targets_b])
        )
    return torch.mean(torch.log(margin_loss))


def margin_inputs(k=5):
    gen = torch.Generator().manual_seed(4)
    z = {
        "v": torch.randn(8, k, generator=gen, dtype=torch.float64),
        "a": torch.randn(8, k, generator=gen, dtype=torch.float64),
    }
    y_a = torch.randint(0, k, (8,), generator=gen)
    y_b = y_a.clone()
    y_b[:5] = (y_a[:5] + 1) % k  # five rows with two different targets, three with one
    return z, y_a, y_b


def test_intended_mix_margin_equals_the_exp_form_and_survives_huge_logits():
    z, y_a, y_b = margin_inputs()
    for lam in (0.0, 0.3, 1.0):
        assert torch.allclose(
            intended_mix_margin(z, y_a, y_b, lam).double(), literal_intended(z, y_a, y_b, lam), atol=1e-5
        )
    huge = {m: v * 1e4 for m, v in z.items()}
    assert torch.isfinite(intended_mix_margin(huge, y_a, y_b, 0.3))
    assert not torch.isfinite(literal_intended(huge, y_a, y_b, 0.3))


def test_intended_mix_margin_is_finite_for_two_classes():
    z, y_a, y_b = margin_inputs(k=2)
    z = {m: v.float().requires_grad_(True) for m, v in z.items()}
    value = intended_mix_margin(z, y_a, y_b, 0.4)
    value.backward()
    assert torch.isfinite(value) and all(torch.isfinite(v.grad).all() for v in z.values())
    # rows with two different targets have an empty numerator: the L1 floor log 1e-5 stands in
    same = y_a == y_b
    rows = torch.arange(8)
    per_row = torch.log(
        sum(torch.exp(v.detach().double()[rows, 1 - y_a] - v.detach().double()[rows, y_a]) for v in z.values())
    )
    expected = (per_row[same].sum() + (~same).sum() * torch.log(torch.tensor(1e-5, dtype=torch.float64))) / 8
    assert torch.allclose(value.double(), expected, atol=1e-5)


def test_official_mix_margin_equals_the_reference_formula():
    z, y_a, y_b = margin_inputs()
    z = {m: v.abs() + 0.1 for m, v in z.items()}  # keeps the reference's numerator positive
    for lam in (0.2, 0.7):
        assert torch.allclose(
            official_mix_margin(z, y_a, y_b, lam).double(), literal_official([z["v"], z["a"]], y_a, y_b, lam), atol=1e-5
        )
    assert not torch.allclose(official_mix_margin(z, y_a, y_b, 0.2), intended_mix_margin(z, y_a, y_b, 0.2))


@pytest.mark.parametrize("mode", ["intended", "official"])
def test_crmt_mix_loss_is_mixup_ce_plus_rho_times_the_margin(mode):
    batch, y = mix_batch()
    model = linear_model({"v": B, "a": 4}, 3, head="crmt").train()
    seen = record_inputs(model)
    defense, _ = build_defense("crmt_mix", {"rho": 1.5, "mix_margin": mode})
    loss = defense.loss(model, batch, y, context(11))
    lam, perm = recover_mix(seen[-1]["v"])
    assert torch.allclose(seen[-1]["a"], lam * batch["a"] + (1 - lam) * batch["a"][perm], atol=1e-6)
    out = model(seen[-1])
    ce = lam * F.cross_entropy(out.logits, y) + (1 - lam) * F.cross_entropy(out.logits, y[perm])
    margin = intended_mix_margin if mode == "intended" else official_mix_margin
    assert torch.allclose(loss, ce + 1.5 * margin(out.unimodal, y, y[perm], lam), atol=1e-6)


def test_unknown_mix_margin_is_refused():
    with pytest.raises(ValueError, match="mix_margin must be one of"):
        build_defense("crmt_mix", {"mix_margin": "exp"})


# ---------------------------------------------------------------- training end to end


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    return tmp_path_factory.mktemp("balance_mix_at")  # the synthav cache is built once


# synthav's short schedule: even JT needs 3 epochs on 600 samples to clear 0.5; the AT and
# CRMT-Mix runs already do at 2 and cost the most per epoch
EPOCHS = {"ogm_ge": 3, "ogm": 3, "pmr": 3, "mixup": 3, "mmat": 2, "crmt_mix": 2}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EPOCHS))
def test_each_defense_learns_synthav(name, shared_root):
    trained = train_defense(
        name,
        dataset_options=dict(n_train=600, n_test=200),
        overrides={"epochs": EPOCHS[name]},
        root=shared_root,
        progress=False,
    )
    accuracy = clean_accuracy(trained.model, trained.dataset.test, 200, torch.device("cpu")).accuracy
    assert accuracy >= 0.5, f"{name}: clean accuracy {accuracy:.3f} with 10 classes"


@pytest.mark.parametrize("step_size", [None, 0.25])
def test_joint_normalised_ascent_matches_the_formula_written_out(step_size):
    """x ← x₀ + clip(x + α·g/√(‖g_v‖² + ‖g_a‖² + 1e-6) − x₀, ±2ε), α = ε/steps unless given; with
    α = 0.25 ≫ 2ε = 0.2 the clip binds, so both branches of the formula are exercised."""
    eps, steps = 0.1, 3
    batch = {
        "v": torch.randn(8, 5, generator=torch.Generator().manual_seed(1)),
        "a": torch.randn(8, 3, generator=torch.Generator().manual_seed(2)),
    }
    y = torch.arange(8) % 3
    model, by_hand = bn_model(), bn_model()
    alpha = eps / steps if step_size is None else step_size
    v, a = batch["v"].clone(), batch["a"].clone()
    for _ in range(steps):
        v.requires_grad_(True)
        a.requires_grad_(True)
        g_v, g_a = torch.autograd.grad(F.cross_entropy(by_hand({"v": v, "a": a}).logits, y), [v, a])
        scale = alpha / torch.sqrt((torch.cat([g_v, g_a], dim=1) ** 2).sum(dim=1, keepdim=True) + 1e-6)
        with torch.no_grad():
            v = batch["v"] + (v + scale * g_v - batch["v"]).clamp(-2 * eps, 2 * eps)
            a = batch["a"] + (a + scale * g_a - batch["a"]).clamp(-2 * eps, 2 * eps)
    got = joint_normalised_ascent(model, batch, y, eps=eps, steps=steps, step_size=step_size)
    assert torch.allclose(got["v"], v, atol=1e-6) and torch.allclose(got["a"], a, atol=1e-6)
    delta = torch.cat([got["v"] - batch["v"], got["a"] - batch["a"]], dim=1).abs()
    clipped = bool(torch.isclose(delta, torch.tensor(2 * eps), atol=1e-6).any())
    assert clipped == (step_size is not None) and bool((delta <= 2 * eps + 1e-6).all())
