"""OGM-GE / OGM gradient modulation and PMR prototypes and loss: exact answers on tiny models."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmrobust_bench.data.base import InMemoryDataset, TensorSplit
from mmrobust_bench.defenses import TrainConfig, TrainContext, build_defense
from mmrobust_bench.defenses.pmr import PROTOTYPES
from mmrobust_bench.models import ConcatHead, MultiModalNet

from helpers import flat_specs, linear_model

K = 3


def conv_encoder(channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def conv_model(dominant: str) -> tuple[MultiModalNet, dict, torch.Tensor]:
    """Two conv encoders; the ``dominant`` block of the head is scaled up and the labels follow it."""
    torch.manual_seed(0)
    model = MultiModalNet({"v": conv_encoder(3), "a": conv_encoder(1)}, ConcatHead(["v", "a"], [5, 5], K)).train()
    batch = {"v": torch.randn(6, 3, 5, 5), "a": torch.randn(6, 1, 5, 5)}
    with torch.no_grad():
        for m, w in model.head.blocks().items():
            w.mul_(20.0 if m == dominant else 0.5)
        labels = model(batch).unimodal[dominant].argmax(1)
    return model, batch, labels


def context(seed: int = 0, epoch: int = 0, dataset=None, batch_size: int = 64) -> TrainContext:
    return TrainContext(
        dataset=dataset,
        train=TrainConfig(batch_size=batch_size),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(seed),
        epoch=epoch,
    )


def one_step(defense, model, batch, labels, ctx):
    """loss → backward → after_backward, as the shared loop; returns raw and final gradients."""
    model.zero_grad()
    defense.loss(model, batch, labels, ctx).backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    state = ctx.generator.get_state()
    defense.after_backward(model, ctx)
    return raw, {n: p.grad.clone() for n, p in model.named_parameters()}, state


def literal_coefficients(model, batch, labels, alpha):
    """s_m = Σ_i softmax(W^(m) φ^(m) + b/2)_{y_i}; k = 1 − tanh(α ρ) for the dominant modality."""
    with torch.no_grad():
        feats = model.encode(batch)
        w, b = model.head.fc.weight, model.head.fc.bias
        s_v = F.softmax(feats["v"] @ w[:, :5].t() + b / 2, 1)[torch.arange(6), labels].sum().item()
        s_a = F.softmax(feats["a"] @ w[:, 5:].t() + b / 2, 1)[torch.arange(6), labels].sum().item()
    if s_v / s_a > 1:
        return {"v": 1 - math.tanh(alpha * s_v / s_a), "a": 1.0}
    return {"v": 1.0, "a": 1 - math.tanh(alpha * s_a / s_v)}


def is_conv_weight(name: str, grad: torch.Tensor) -> bool:
    return name.startswith("encoders.") and grad.dim() == 4


@pytest.mark.parametrize("dominant", ["v", "a"])
def test_ogm_ge_scales_the_dominant_encoder_and_adds_gradient_scaled_noise(dominant):
    model, batch, labels = conv_model(dominant)
    defense, _ = build_defense("ogm_ge", {"alpha": 0.3})
    k = literal_coefficients(model, batch, labels, 0.3)
    assert k[dominant] < 1 and k["a" if dominant == "v" else "v"] == 1.0
    raw, final, state = one_step(defense, model, batch, labels, context(seed=7))
    # reproduce the noise: one seed from the training generator, then parameter order
    gen = torch.Generator().set_state(state)
    noise_gen = torch.Generator().manual_seed(int(torch.randint(2**63 - 1, (1,), generator=gen).item()))
    for m in ("v", "a"):
        for name, p in model.encoders[m].named_parameters():
            key = f"encoders.{m}.{name}"
            if p.dim() == 4:
                g = raw[key]
                noise = torch.empty_like(g).normal_(0.0, g.std().item() + 1e-8, generator=noise_gen)
                assert torch.allclose(final[key], k[m] * g + noise, rtol=0, atol=1e-7), key
                assert not torch.equal(final[key], raw[key])  # noise on both encoders, k = 1 too
    for name, g in raw.items():
        if not is_conv_weight(name, g):
            assert torch.equal(final[name], g), name  # BN, conv bias, fusion untouched


def test_plain_ogm_scales_without_noise_and_leaves_the_generator_alone():
    model, batch, labels = conv_model("v")
    defense, _ = build_defense("ogm", {"alpha": 0.3})
    k = literal_coefficients(model, batch, labels, 0.3)
    ctx = context(seed=7)
    raw, final, state = one_step(defense, model, batch, labels, ctx)
    assert torch.equal(ctx.generator.get_state(), state)
    for name, g in raw.items():
        if is_conv_weight(name, g):  # k is computed in fp32 on the device (no host sync): fp32 rounding
            assert torch.allclose(final[name], k[name.split(".")[1]] * g, rtol=1e-6, atol=0), name
        else:
            assert torch.equal(final[name], g), name


@pytest.mark.parametrize("name", ["ogm_ge", "ogm"])
@pytest.mark.parametrize("epoch", [1, 5])
def test_gradients_are_untouched_outside_the_modulation_window(name, epoch):
    model, batch, labels = conv_model("v")
    defense, _ = build_defense(name, {"modulation_start": 2, "modulation_end": 4})
    ctx = context(epoch=epoch)
    raw, final, state = one_step(defense, model, batch, labels, ctx)
    assert all(torch.equal(final[n], g) for n, g in raw.items())
    assert torch.equal(ctx.generator.get_state(), state)


def test_window_bounds_are_inclusive():
    model, batch, labels = conv_model("v")
    defense, _ = build_defense("ogm", {"modulation_start": 2, "modulation_end": 4})
    for epoch in (2, 4):
        raw, final, _ = one_step(defense, model, batch, labels, context(epoch=epoch))
        assert not torch.equal(final["encoders.v.0.weight"], raw["encoders.v.0.weight"])


def test_ogm_refuses_three_modalities():
    model = linear_model({"v": 2, "a": 2, "f": 2}, K).train()
    batch = {m: torch.randn(4, 2) for m in ("v", "a", "f")}
    defense, _ = build_defense("ogm_ge")
    with pytest.raises(ValueError, match="exactly two modalities"):
        defense.loss(model, batch, torch.zeros(4, dtype=torch.long), context())


# ---------------------------------------------------------------- PMR


def pmr_setup(n: int = 40, batch_size: int = 2):
    """Identity encoders, so features are the inputs and prototypes are plain input means."""
    dims = {"v": 4, "a": 3}
    model = linear_model(dims, 5).train()
    gen = torch.Generator().manual_seed(1)
    inputs = {m: torch.randn(n, d, generator=gen) for m, d in dims.items()}
    labels = torch.randint(0, 5, (n,), generator=gen)
    split = TensorSplit(inputs, labels)
    dataset = InMemoryDataset("tiny", flat_specs(dims), 5, split, split)
    return model, dataset, inputs, labels


def expected_selection(ctx: TrainContext, n: int, batch_size: int) -> torch.Tensor:
    """Indices of the first ⌊n_batches/10⌋ (≥ 1) batches of the next shuffle of ctx.generator."""
    order = torch.randperm(n, generator=torch.Generator().set_state(ctx.generator.get_state()))
    take = max(1, math.ceil(n / batch_size) // 10)
    return order[: take * batch_size]


def class_means(x: torch.Tensor, labels: torch.Tensor, k: int):
    means = torch.zeros(k, x.shape[1])
    present = torch.zeros(k, dtype=torch.bool)
    for c in range(k):
        rows = x[labels == c]
        if len(rows):
            means[c], present[c] = rows.mean(0), True
    return means, present


def test_pmr_prototypes_are_class_means_then_plain_then_ema_and_absent_classes_keep_theirs():
    model, dataset, inputs, labels = pmr_setup()
    defense, _ = build_defense("pmr", {"momentum_coef": 0.3})
    ctx = context(seed=3, epoch=0, dataset=dataset, batch_size=2)
    history = []
    old = None
    for epoch in (0, 1, 2):
        ctx.epoch = epoch
        if epoch > 0:  # a known, non-zero previous prototype so "keeps the old one" is visible
            old = {m: torch.full((5, d), 10.0 + epoch) for m, d in (("v", 4), ("a", 3))}
            ctx.state[PROTOTYPES] = {m: p.clone() for m, p in old.items()}
        chosen = expected_selection(ctx, 40, 2)  # 20 batches -> the first 2, 4 samples
        defense.on_epoch_start(model, ctx)
        assert model.training
        for m in ("v", "a"):
            means, present = class_means(inputs[m][chosen], labels[chosen], 5)
            assert not present.all()  # 4 samples, 5 classes: some class is absent
            previous = torch.zeros_like(means) if old is None else old[m]
            # the reference applies the EMA only once the finished epoch's index is > 0
            new = means if epoch < 2 else 0.7 * means + 0.3 * previous
            expected = torch.where(present[:, None], new, previous)
            assert torch.allclose(ctx.state[PROTOTYPES][m], expected, atol=1e-6)
        history.append(chosen)
    assert not torch.equal(history[0], history[1])  # a fresh shuffle every time


def literal_pce(features, prototypes, labels):
    dist = ((features[:, None, :] - prototypes[None, :, :]) ** 2).sum(-1).sqrt()
    return F.cross_entropy(-dist, labels), F.softmax(-dist, 1)[torch.arange(len(labels)), labels].sum()


@pytest.mark.parametrize("helped", ["v", "a"])
def test_pmr_loss_adds_the_prototypical_ce_of_the_weaker_modality(helped):
    model, dataset, inputs, labels = pmr_setup()
    batch = {m: x[:8] for m, x in inputs.items()}
    y = labels[:8]
    strong = "a" if helped == "v" else "v"
    gen = torch.Generator().manual_seed(5)
    prototypes = {m: torch.randn(5, x.shape[1], generator=gen) * 3 for m, x in inputs.items()}
    # the strong modality's prototypes sit on its samples: it scores high
    for i in range(8):
        prototypes[strong][y[i]] = batch[strong][i]
    ctx = context(dataset=dataset)
    ctx.state[PROTOTYPES] = prototypes
    defense, _ = build_defense("pmr", {"alpha": 0.7})
    loss = defense.loss(model, batch, y, ctx)
    ce = F.cross_entropy(model(batch).logits, y)
    pce = {m: literal_pce(batch[m], prototypes[m], y) for m in ("v", "a")}
    rho = pce["a"][1] / pce["v"][1]
    assert (rho > 1) == (helped == "v")
    assert torch.allclose(loss, ce + 0.7 * pce[helped][0], atol=1e-5)
    # the other modality's prototypical CE adds nothing to the gradient either (features = inputs here)
    x = {m: t.clone().requires_grad_(True) for m, t in batch.items()}
    grads = torch.autograd.grad(defense.loss(model, x, y, ctx), [x["v"], x["a"]])
    literal_loss = F.cross_entropy(model(x).logits, y) + 0.7 * literal_pce(x[helped], prototypes[helped], y)[0]
    literal = torch.autograd.grad(literal_loss, [x["v"], x["a"]])
    assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(grads, literal))
    ctx.epoch = 101  # outside the default window [0, 100]
    assert torch.allclose(defense.loss(model, batch, y, ctx), ce, atol=1e-6)
