"""Native FGM / ℓ2-PGD: exact answers on linear models, reference formulas, invariants."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmrobust_bench.attacks.native import FGM, PGDL2
from mmrobust_bench.contracts import ModalitySpec, ThreatModel, input_gradients_of
from mmrobust_bench.defenses.adversarial import joint_normalised_ascent
from mmrobust_bench.models import ConcatHead, MultiModalNet
from mmrobust_bench.models.lipschitz import estimate_lipschitz

from helpers import flat_specs, linear_model

DIMS = {"v": 6, "a": 4}


def minimal_l2_norm(model, x, y, modalities):
    """Closed form for a linear model: min_j (h_y − h_j) / ‖(W_y − W_j) restricted to attacked coords‖."""
    w = model.head.blocks()
    logits = model(x).logits
    best = torch.full((y.shape[0],), float("inf"))
    for j in range(logits.shape[1]):
        diff_sq = sum((w[m][y] - w[m][j]).pow(2).sum(1) for m in modalities)
        margin = logits.gather(1, y[:, None]).squeeze(1) - logits[:, j]
        r = margin / diff_sq.sqrt()
        best = torch.where(j == y, best, torch.minimum(best, r))
    return best


@pytest.mark.parametrize("modalities", [("v",), ("a",), ("v", "a")])
@pytest.mark.parametrize("attack_cls", [FGM, PGDL2])
def test_linear_binary_model_minimal_norm_is_exact(modalities, attack_cls):
    """For K=2 the CE gradient points along the optimal direction, so the attack succeeds exactly
    when ε exceeds the closed-form minimal adversarial norm."""
    model = linear_model(DIMS, 2)
    x = {m: torch.randn(64, d) for m, d in DIMS.items()}
    y = model(x).logits.argmax(1)  # correctly classified by construction
    r = minimal_l2_norm(model, x, y, modalities)
    attack = attack_cls(flat_specs(DIMS))
    threat = ThreatModel(modalities, 1.0)
    for scale, expect_fooled in [(1.01, True), (0.99, False)]:
        adv = attack(model, x, y, threat, eps=r * scale)
        fooled = model(adv).logits.argmax(1) != y
        assert bool((fooled == expect_fooled).all())


def reference_pgd(model, x, y, eps, modalities, specs, steps=4):
    """docs/methods.md §12 written out literally, as an independent reference."""
    adv = {m: v.clone() for m, v in x.items()}
    for _ in range(steps):
        inp = {m: v.clone().requires_grad_(m in modalities) for m, v in adv.items()}
        loss = F.cross_entropy(model(inp).logits, y)
        g = torch.autograd.grad(loss, [inp[m] for m in modalities])
        n = torch.sqrt(sum(gi.flatten(1).pow(2).sum(1) for gi in g)) + 1e-13
        for m, gi in zip(modalities, g):
            adv[m] = adv[m] + eps / 3 * gi / n.view(-1, *[1] * (gi.dim() - 1))
        d = torch.sqrt(sum((adv[m] - x[m]).flatten(1).pow(2).sum(1) for m in modalities))
        factor = torch.clamp(eps / (d + 1e-13), max=1.0)
        for m in modalities:
            adv[m] = specs[m].clamp(x[m] + (adv[m] - x[m]) * factor.view(-1, *[1] * (adv[m].dim() - 1)))
    return adv


def small_conv_model():
    torch.manual_seed(1)
    enc_v = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    enc_a = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(10, 4), torch.nn.Tanh())
    return MultiModalNet({"v": enc_v, "a": enc_a}, ConcatHead(["v", "a"], [4, 4], 5)).eval()


SPECS = (ModalitySpec("v", (3, 6, 6), (-1.0, -2.0, -1.5), (1.0, 2.0, 1.5)), ModalitySpec("a", (1, 10)))


def test_pgd_matches_literal_reference_with_clamp():
    model = small_conv_model()
    x = {"v": torch.rand(8, 3, 6, 6) * 2 - 1, "a": torch.randn(8, 1, 10)}
    y = torch.randint(0, 5, (8,))
    adv = PGDL2(SPECS)(model, x, y, ThreatModel(("v", "a"), 0.8))
    ref = reference_pgd(model, x, y, 0.8, ("v", "a"), {s.name: s for s in SPECS})
    for m in x:
        assert torch.allclose(adv[m], ref[m], atol=1e-6)


def test_per_sample_eps_equals_separate_runs():
    model = small_conv_model()
    x = {"v": torch.rand(5, 3, 6, 6) * 2 - 1, "a": torch.randn(5, 1, 10)}
    y = torch.randint(0, 5, (5,))
    grid = [0.1, 0.5, 2.0]
    rep = {m: v.repeat(len(grid), *[1] * (v.dim() - 1)) for m, v in x.items()}
    eps = torch.tensor(grid).repeat_interleave(5)
    attack = PGDL2(SPECS)
    batched = attack(model, rep, y.repeat(len(grid)), ThreatModel(("v", "a"), 0.1), eps)
    for i, e in enumerate(grid):
        single = attack(model, x, y, ThreatModel(("v", "a"), e))
        for m in x:
            assert torch.allclose(batched[m][i * 5 : (i + 1) * 5], single[m], atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    mods=st.sampled_from([("v",), ("a",), ("v", "a")]),
    eps=st.floats(0.0, 5.0),
    attack_cls=st.sampled_from([FGM, PGDL2]),
    batch=st.integers(1, 6),
    joint=st.booleans(),
    seed=st.integers(0, 3),
)
def test_native_attack_invariants(mods, eps, attack_cls, batch, joint, seed):
    model = small_conv_model()
    gen = torch.Generator().manual_seed(seed)
    x = {"v": torch.rand(batch, 3, 6, 6, generator=gen) * 2 - 1, "a": torch.randn(batch, 1, 10, generator=gen)}
    y = torch.randint(0, 5, (batch,), generator=gen)
    threat = ThreatModel(mods, eps, joint=joint)
    rng = torch.random.get_rng_state()
    attack = attack_cls(SPECS)
    adv = attack(model, x, y, threat)
    assert torch.equal(rng, torch.random.get_rng_state()) and not model.training
    groups = [mods] if joint else [(m,) for m in mods]
    for group in groups:
        norm = torch.sqrt(sum((adv[m] - x[m]).flatten(1).pow(2).sum(1) for m in group))
        assert bool((norm <= eps * (1 + 1e-5) + 1e-7).all())
    for m in x:
        if m not in mods:
            assert torch.equal(adv[m], x[m])
        assert adv[m].shape == x[m].shape and adv[m].dtype == x[m].dtype
    spec_v = SPECS[0]
    assert torch.equal(spec_v.clamp(adv["v"]), adv["v"])
    again = attack(model, x, y, threat)
    assert all(torch.equal(again[m], adv[m]) for m in x)


@pytest.mark.parametrize("attack_cls", [FGM, PGDL2])
def test_bf16_attacks_keep_fp32_inputs_and_budget_and_agree_with_fp32(attack_cls):
    """bf16 autocast rounds only the model's arithmetic: the adversarial inputs stay fp32, inside the
    same ε ball and box, and the direction is close to the fp32 attack's."""
    model = small_conv_model()
    x = {"v": torch.rand(16, 3, 6, 6) * 2 - 1, "a": torch.randn(16, 1, 10)}
    y = torch.randint(0, 5, (16,))
    threat = ThreatModel(("v", "a"), 0.8)
    fp32 = attack_cls(SPECS)(model, x, y, threat)
    bf16 = attack_cls(SPECS, precision="bf16")(model, x, y, threat)
    delta32 = torch.cat([(fp32[m] - x[m]).flatten(1) for m in x], 1)
    delta16 = torch.cat([(bf16[m] - x[m]).flatten(1) for m in x], 1)
    assert all(bf16[m].dtype == torch.float32 for m in x)
    assert (delta16.norm(dim=1) <= 0.8 + 1e-5).all()
    assert F.cosine_similarity(delta16, delta32, dim=1).min() > 0.95
    assert attack_cls(SPECS, precision="bf16").describe() != attack_cls(SPECS).describe()
    with pytest.raises(ValueError, match="unknown precision 'fp16'; valid: fp32, bf16"):
        attack_cls(SPECS, precision="fp16")


def test_gradients_of_an_input_the_loss_ignores_are_exact_zeros():
    used, ignored = torch.randn(3, 2, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    g_used, g_ignored = input_gradients_of((used**2).sum(), [used, ignored])
    assert torch.equal(g_used, 2 * used.detach()) and torch.equal(g_ignored, torch.zeros(3, 4))
    constant = torch.tensor(1.0)  # no graph at all (a model whose parameters and inputs are all frozen)
    assert all(torch.equal(g, torch.zeros_like(x)) for g, x in zip(input_gradients_of(constant, [used]), [used]))


def test_adversarial_training_steps_and_the_official_tau_leave_an_ignored_modality_alone():
    """The same zero-gradient rule in the training-time ascent (MMAT / CRMT-AT) and the reference get_lip:
    a modality the model never reads is neither moved nor given a gradient norm, instead of an autograd error."""
    inner = linear_model({"v": 3, "a": 2}, 3)

    class IgnoresAudio(torch.nn.Module):
        def forward(self, batch):
            return inner({**batch, "a": torch.zeros_like(batch["a"])})

    g = torch.Generator().manual_seed(0)
    batch = {"v": torch.randn(4, 3, generator=g), "a": torch.randn(4, 2, generator=g)}
    labels = torch.tensor([0, 1, 2, 0])
    adv = joint_normalised_ascent(IgnoresAudio(), batch, labels, eps=0.5)
    assert torch.equal(adv["a"], batch["a"]) and not torch.equal(adv["v"], batch["v"])
    tau = estimate_lipschitz(IgnoresAudio(), [(batch, labels)], ["a", "v"], mode="official")
    assert torch.equal(tau["a"], torch.zeros(3))  # the first modality accumulates its (zero) gradients
