"""The honesty check: the stronger check (margin loss, targeted runs) finds violations that the earlier
CE-PGD check misses on constructed models; counts are reported as lower bounds; runner-up radii are
labelled "not a bound" and MMT-family certificates "heuristic"; old certified.csv rows still read."""

import types

import pandas as pd
import pytest
import torch

from mmrobust_bench.bench.certification import (
    certificate_rows,
    has_certificate,
    model_keys,
    replace_certificate_rows,
    settings_mismatch,
    with_certificate_kinds,
)
from mmrobust_bench.certify import certify
from mmrobust_bench.certify.honesty import HonestyConfig, honesty_check
from mmrobust_bench.certify.radii import KIND_EMPIRICAL, KIND_HEURISTIC, KIND_NOT_A_BOUND
from mmrobust_bench.data.base import TensorSplit

from helpers import flat_specs, linear_model

DIMS = {"v": 6, "a": 4}


def exact_radius(model, split):
    """min_j (h_y − h_j)/‖W_y − W_j‖: the exact minimal ℓ2 distance to another class of a linear model."""
    w = model.head.fc.weight.detach()
    with torch.no_grad():
        h = model(split.inputs).logits
    y = split.labels
    margins = h.gather(1, y[:, None]) - h
    dist = (w[:, None] - w[None]).norm(dim=2)[y]
    return (margins / dist.clamp_min(1e-12)).scatter(1, y[:, None], float("inf")).min(1).values


def test_margin_pgd_finds_violations_that_saturated_ce_pgd_misses():
    """A very confident linear model (logits × 10⁴): CE gradients underflow to exactly 0 in fp32, so the
    earlier check cannot move; the margin loss does not saturate and finds every overclaim."""
    model = linear_model(DIMS, 3, seed=2)
    with torch.no_grad():
        model.head.fc.weight.mul_(1e4)
        model.head.fc.bias.mul_(1e4)
    gen = torch.Generator().manual_seed(0)
    inputs = {m: torch.randn(40, d, generator=gen) for m, d in DIMS.items()}
    with torch.no_grad():
        labels = model(inputs).logits.argmax(1)  # every sample correct
    split = TensorSplit(inputs, labels)
    exact = exact_radius(model, split)
    keep = exact > 0.05  # logit gaps > 500: softmax is exactly one-hot in fp32
    split = split.subset(torch.nonzero(keep).flatten())
    exact = exact[keep]
    claim = 2 * exact  # an overclaim: the boundary is inside every claimed ball
    specs = flat_specs(DIMS)
    weak = honesty_check(model, split, claim, ["v", "a"], specs, config=HonestyConfig.legacy_check(20))
    strong = honesty_check(model, split, claim, ["v", "a"], specs, config=HonestyConfig(steps=50, targeted=False))
    assert weak.certified == strong.certified == len(split) >= 10
    assert weak.violations == 0
    assert strong.violations == strong.certified
    # and a true claim (the exact distance) is never broken by either
    true = exact * 0.999
    assert honesty_check(model, split, true, ["v", "a"], specs, config=HonestyConfig(steps=50)).violations == 0


def test_targeted_runs_find_a_close_class_that_the_untargeted_margin_ignores():
    """Class 1 is the runner-up by logit but far away (‖w₁ − w₀‖ small); class 2 has a lower logit but its
    boundary is close. The untargeted margin keeps climbing towards class 1; PGD towards class 2 crosses."""
    model = linear_model({"v": 2, "a": 2}, 3)
    with torch.no_grad():
        model.head.fc.weight.copy_(torch.tensor([[0.0, 0, 0, 0], [0.1, 0, 0, 0], [0, 0, 0, 10.0]]))
        model.head.fc.bias.copy_(torch.tensor([0.0, -1.0, -2.0]))
    gen = torch.Generator().manual_seed(1)
    inputs = {m: 0.001 * torch.randn(8, 2, generator=gen) for m in ("v", "a")}
    split = TensorSplit(inputs, torch.zeros(8, dtype=torch.long))
    claim = torch.full((8,), 1.0)  # class 2 is ~0.2 away, class 1 ~10
    specs = flat_specs({"v": 2, "a": 2})
    untargeted = honesty_check(model, split, claim, ["v", "a"], specs, config=HonestyConfig(steps=50, targeted=False))
    targeted = honesty_check(model, split, claim, ["v", "a"], specs, config=HonestyConfig(steps=50, targeted=True))
    assert untargeted.violations == 0 and targeted.violations == 8
    # restricted to the top runner-up only, the targeted run misses it again; two targets find it
    top1 = honesty_check(
        model, split, claim, ["v", "a"], specs, config=HonestyConfig(steps=50, targeted=True, targeted_classes=1)
    )
    top2 = honesty_check(
        model,
        split,
        claim,
        ["v", "a"],
        specs,
        config=HonestyConfig(steps=50, targeted=True, targeted_classes=2, restarts=1),
    )
    assert top1.violations == 0 and top2.violations == 8
    assert "≥ 8" in targeted.describe() and "lower bound" in targeted.describe()


def test_rows_are_labelled_lower_bounds_not_a_bound_and_heuristic():
    model = linear_model(DIMS, 3)
    gen = torch.Generator().manual_seed(3)

    def split(n):
        return TensorSplit(
            {m: torch.randn(n, d, generator=gen) for m, d in DIMS.items()},
            torch.randint(0, 3, (n,), generator=gen),
        )

    train, test = split(30), split(30)
    cert = certify(model, train, test, flat_specs(DIMS), honesty=HonestyConfig(steps=5, targeted_classes=1))
    frame = cert.summary_frame([0.0, 0.5])
    runner = frame["variant"] == "runner_up"
    assert (frame.loc[runner, "kind"] == KIND_NOT_A_BOUND).all() and (
        frame.loc[~runner, "kind"] == KIND_EMPIRICAL
    ).all()
    assert (frame["method"] == "empirical").all() and frame["honesty_counts"].str.contains("lower bound").all()
    text = cert.format([0.0, 0.5])
    assert "not a bound" in text and "≥ " in text and "lower bounds" in text
    # a model whose "uni-modal" scores mix modalities (MMT joint layers): every radius is heuristic
    model.preset = types.SimpleNamespace(fusion_layers=1)
    mixed = certify(model, train, test, flat_specs(DIMS), honesty_steps=0)
    kinds = mixed.summary_frame([0.0])
    assert (kinds.loc[kinds["variant"] == "min_j", "kind"] == KIND_HEURISTIC).all()
    assert "heuristic" in mixed.format([0.0]) and kinds["certificate_label"].str.contains("heuristic").all()


def test_old_certified_rows_read_with_kinds_and_smoothing_rows_sit_beside_them(tmp_path):
    ident = {"dataset": "synthav", "defense": "jt", "seed": 0, "checkpoint_sha256": "ab"}
    old = pd.DataFrame(
        [
            {
                **ident,
                "defense_id": "jt",
                "certificate": "eq5",
                "variant": "min_j",
                "modality": "all",
                "radius": 0.0,
                "certified_accuracy": 0.9,
            },
            {
                **ident,
                "defense_id": "jt",
                "certificate": "eq5",
                "variant": "runner_up",
                "modality": "all",
                "radius": 0.0,
                "certified_accuracy": 0.95,
            },
            {
                **ident,
                "defense": "mmt",
                "defense_id": "mmt",
                "certificate": "eq5",
                "variant": "min_j",
                "modality": "all",
                "radius": 0.0,
                "certified_accuracy": 0.5,
            },
        ]
    )
    path = tmp_path / "certified.csv"
    old.to_csv(path, index=False)  # written before the method/kind columns existed
    filled = with_certificate_kinds(pd.read_csv(path))
    assert list(filled["kind"]) == [KIND_EMPIRICAL, KIND_NOT_A_BOUND, KIND_HEURISTIC]
    assert (filled["method"] == "empirical").all()
    smooth = pd.DataFrame(
        [
            {
                **ident,
                "defense_id": "jt",
                "certificate": "smoothing[a]",
                "variant": "sigma=0.25",
                "modality": "a",
                "radius": r,
                "certified_accuracy": 0.8,
                "method": "smoothing",
                "kind": "sound (probabilistic, 1-alpha)",
                "sigma": 0.25,
            }
            for r in (0.0, 0.5)
        ]
    )
    replace_certificate_rows(path, smooth)
    replace_certificate_rows(path, smooth.assign(certified_accuracy=0.7))  # same set and σ: replaced
    replace_certificate_rows(path, smooth.assign(sigma=0.5, variant="sigma=0.5"))  # another σ: kept beside
    frame = pd.read_csv(path)
    assert len(frame) == 3 + 2 + 2
    assert sorted(frame.loc[frame["method"] == "smoothing", "certified_accuracy"].tolist()) == [0.7, 0.7, 0.8, 0.8]
    model = ("synthav", "jt", 0, "ab")
    assert has_certificate(frame, model) and has_certificate(frame, model, "smoothing", "a", 0.25)
    assert not has_certificate(frame, model, "smoothing", "all", 0.25)
    # stored rows of other settings are not the certificate asked for
    rows = certificate_rows(frame, model, "smoothing", "a", 0.25)
    assert settings_mismatch(rows, {"sigma": 0.25}) == []
    assert settings_mismatch(rows, {"n0": 100}) == ["n0: not recorded → 100"]
    assert settings_mismatch(rows, {"radii": (0.0, 0.5)}) == []
    assert settings_mismatch(rows, {"radii": (0.0, 0.25)}) == ["radii: [0.0, 0.5] → [0.0, 0.25]"]
    assert settings_mismatch(rows, {"sigma": 0.25, "radii": (0, 0.5)}) == []
    assert settings_mismatch(rows, {"n0": 100})
    assert model_keys(frame, "smoothing") == {model}
    with pytest.raises(ValueError, match="honesty check"):
        HonestyConfig(loss="hinge")
