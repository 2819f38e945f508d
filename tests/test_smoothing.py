"""Randomized smoothing per modality: exact answers on linear models (the smoothed classifier of
argmax(Wx + b) with two classes has p_A = Φ(|margin| / (σ‖w^(M)‖)) for noise on the modalities M),
Clopper–Pearson and Φ⁻¹ against independent scipy calls, abstention, the joint ball, the 1 − α rate
under the exact worst-case attack, and the SmoothAdv-style check on a small non-linear model."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from mmrobust_bench.certify.smoothing import (
    ABSTAIN,
    SOUND,
    SmoothingConfig,
    clopper_pearson_lower,
    smooth_certify,
    smooth_predict,
    smoothed_honesty_check,
)
from mmrobust_bench.contracts import ModelOutput
from mmrobust_bench.models import ConcatHead, MultiModalNet

from helpers import linear_model

DIMS = {"v": 5, "a": 3}


def two_class_model(seed: int = 0) -> MultiModalNet:
    return linear_model(DIMS, 2, seed=seed)


def inputs(n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, d, generator=gen) for m, d in DIMS.items()}


def closed_form(model: MultiModalNet, x: dict, noised: tuple[str, ...]):
    """(top class, p_A, exact distance to the boundary moving only the noised modalities) per sample."""
    w = model.head.fc.weight.detach().double()
    b = model.head.fc.bias.detach().double()
    blocks = dict(zip(DIMS, (w[1] - w[0]).split(list(DIMS.values()))))
    flat = torch.cat([x[m].double() for m in DIMS], dim=1)
    margin = flat @ (w[1] - w[0]) + (b[1] - b[0])  # h_1 − h_0
    norm = math.sqrt(sum(float(blocks[m].pow(2).sum()) for m in noised))
    return (margin > 0).long(), margin.abs() / norm, norm


def radius_floor(dist: torch.Tensor, cfg: SmoothingConfig) -> np.ndarray:
    """σΦ⁻¹ of the Clopper–Pearson bound at a count 5 standard deviations below its mean n·p_A, with the
    closed-form p_A = Φ(dist/σ): what CERTIFY must reach unless the draw is a 5-σ outlier."""
    p = stats.norm.cdf(dist.numpy() / cfg.sigma)
    k = np.clip(np.floor(cfg.n * p - 5 * np.sqrt(cfg.n * p * (1 - p)) - 1), 0, cfg.n)
    return np.nan_to_num(cfg.sigma * stats.norm.ppf(clopper_pearson_lower(k, cfg.n, cfg.alpha)), nan=0.0)


def test_clopper_pearson_and_radius_match_scipy():
    n, alpha = 500, 0.001
    for k in (0, 1, 250, 400, 499, 500):
        exact = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
        assert clopper_pearson_lower(k, n, alpha) == pytest.approx(exact, abs=1e-10)


@pytest.mark.parametrize("noised", [("a",), ("v",), ("v", "a")])
def test_linear_two_class_smoothing_matches_the_closed_form(noised):
    model = two_class_model()
    x = inputs(24, 1)
    cfg = SmoothingConfig(sigma=0.5, n0=64, n=4000, alpha=0.001, batch=512, seed=3)
    cert = smooth_certify(model, x, None, noised, cfg)
    cls, dist, _norm = closed_form(model, x, noised)
    p_true = torch.from_numpy(stats.norm.cdf(dist.numpy() / cfg.sigma))  # Φ(|margin| / (σ‖w^(M)‖))
    p_hat = cert.count_a.double() / cfg.n
    ok = ~cert.abstained
    assert ok.sum() >= 12
    assert torch.equal(cert.predictions[ok], cls[ok])  # the smoothed class is the linear model's class
    se = torch.sqrt(p_true * (1 - p_true) / cfg.n).clamp_min(1e-3)
    assert ((p_hat[ok] - p_true[ok]).abs() <= 5 * se[ok]).all()
    # p̲_A and the radius from independent scipy calls
    for i in torch.nonzero(ok).flatten().tolist():
        k = int(cert.count_a[i])
        low = stats.binomtest(k, cfg.n).proportion_ci(confidence_level=1 - 2 * cfg.alpha, method="exact").low
        assert float(cert.p_lower[i]) == pytest.approx(low, abs=1e-9)
        assert float(cert.radius[i]) == pytest.approx(cfg.sigma * stats.norm.ppf(low), rel=1e-9)
    # sound: below the exact distance to the boundary along the noised modalities (jointly for two)
    assert (cert.radius[ok] <= dist[ok] + 1e-9).all()
    # and close to it: σΦ⁻¹(p_A) = |margin|/‖w^(M)‖ exactly when p̲_A → p_A; n_A = n caps it at σΦ⁻¹(α^(1/n))
    cap = cfg.sigma * stats.norm.ppf(cfg.alpha ** (1 / cfg.n))
    full = cert.count_a == cfg.n
    assert torch.allclose(cert.radius[ok & full], torch.full_like(cert.radius[ok & full], cap))
    assert (cert.radius[ok].numpy() >= radius_floor(dist, cfg)[ok.numpy()] - 1e-9).all()
    assert cert.modality_label == ("all" if len(noised) == 2 else noised[0])


def test_joint_noise_certifies_the_joint_ball_with_the_joint_norm():
    model = two_class_model(seed=4)
    x = inputs(16, 2)
    cfg = SmoothingConfig(sigma=0.4, n0=64, n=20000, alpha=0.001, batch=2000, seed=0)
    joint = smooth_certify(model, x, None, ["v", "a"], cfg)
    _, dist_joint, norm_joint = closed_form(model, x, ("v", "a"))
    _, dist_a, norm_a = closed_form(model, x, ("a",))
    ok = ~joint.abstained
    # the joint radius is |margin|/‖w‖ over both modalities' weights (up to the confidence bound) ...
    assert (joint.radius[ok].numpy() >= radius_floor(dist_joint, cfg)[ok.numpy()] - 1e-9).all()
    assert ((dist_joint[ok] - joint.radius[ok]) < 0.1 * dist_joint[ok] + 0.02).float().mean() > 0.6
    assert (joint.radius[ok] <= dist_joint[ok]).all()
    # ... and that is smaller than the audio-only distance, which the joint noise cannot certify
    assert norm_joint > norm_a and (dist_joint < dist_a).all()


def test_abstain_when_the_lower_bound_is_not_above_one_half():
    model = two_class_model()
    w = model.head.fc.weight.detach()
    b = model.head.fc.bias.detach()
    # a point on the decision boundary: p_A = 1/2 exactly
    d = torch.cat([w[1] - w[0]])
    t = -(b[1] - b[0]) / d.pow(2).sum()
    point = (t * d)[None]
    x = {"v": point[:, :5], "a": point[:, 5:]}
    cert = smooth_certify(model, x, torch.tensor([0]), ["v", "a"], SmoothingConfig(sigma=0.5, n0=32, n=2000))
    assert cert.predictions.tolist() == [ABSTAIN] and math.isnan(float(cert.radius[0]))
    assert cert.certified_accuracy(0.0) == 0.0
    # too few samples to reach p̲_A > 1/2 at this α: n = 5 gives at most α^(1/5) = 0.25
    far = inputs(4, 9)
    few = smooth_certify(model, far, None, ["a"], SmoothingConfig(sigma=0.1, n0=5, n=5, alpha=0.001))
    assert (few.predictions == ABSTAIN).all()
    assert torch.allclose(few.p_lower[few.count_a == 5], torch.tensor(0.001**0.2, dtype=torch.float64))


def test_certificate_is_violated_at_most_at_rate_alpha_under_the_exact_worst_case_attack():
    """Over repeated noise draws, the exact worst attack (a step of r towards the boundary along the noised
    modality) flips the *true* smoothed classifier only when r exceeds the true radius: at rate ≤ α."""
    model = two_class_model(seed=1)
    x = inputs(20, 5)
    alpha = 0.1
    _, dist, _ = closed_form(model, x, ("a",))
    violations = trials = 0
    for seed in range(15):
        cert = smooth_certify(
            model, x, None, ["a"], SmoothingConfig(sigma=0.5, n0=16, n=60, alpha=alpha, seed=seed, batch=2000)
        )
        ok = ~cert.abstained
        trials += int(ok.sum())
        # the true smoothed class at x' = x − r·w/‖w‖ changes iff r > |margin|/‖w^(a)‖
        violations += int((cert.radius[ok] > dist[ok]).sum())
    assert trials > 100
    bound = stats.binom.ppf(0.999, trials, alpha)  # α per claim, allowing for chance
    assert violations <= bound


class Mlp(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 6))

    def forward(self, x):
        return self.net(x)


def small_net() -> MultiModalNet:
    torch.manual_seed(0)
    return MultiModalNet({"v": Mlp(5), "a": Mlp(3)}, ConcatHead(["v", "a"], [6, 6], 3)).eval()


def test_smoothed_certificates_survive_the_smoothadv_attack_on_a_small_model():
    model = small_net()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # sharper decision regions
    x = inputs(12, 7)
    cfg = SmoothingConfig(sigma=0.5, n0=32, n=1000, alpha=0.01, batch=4000, seed=0)
    cert = smooth_certify(model, x, None, ["a"], cfg)
    assert int((~cert.abstained).sum()) >= 6
    check = smoothed_honesty_check(model, x, cert, n_attack=32, steps=10, n_predict=1000)
    assert check.checked == int((~cert.abstained).sum())
    assert check.violations <= max(1, stats.binom.ppf(0.999, check.checked, 2 * cfg.alpha))
    # the same attack with an inflated claim breaks it: the check can fail
    inflated = cert
    inflated.radius = cert.radius * 10
    broken = smoothed_honesty_check(model, x, inflated, n_attack=32, steps=10, n_predict=1000)
    assert broken.violations > 0


def test_any_callable_works_and_results_are_reproducible_and_subset_independent():
    model = small_net()
    x = inputs(10, 3)
    y = torch.randint(0, 3, (10,), generator=torch.Generator().manual_seed(0))
    cfg = SmoothingConfig(sigma=0.25, n0=20, n=200, alpha=0.01, batch=64, seed=5)
    a = smooth_certify(model, x, y, ["v", "a"], cfg)
    as_tensor = smooth_certify(lambda b: model(b).logits, x, y, ["v", "a"], cfg)
    as_output = smooth_certify(lambda b: ModelOutput(logits=model(b).logits), x, y, ["v", "a"], cfg)
    for other in (as_tensor, as_output):
        assert torch.equal(a.count_a, other.count_a) and torch.equal(a.predictions, other.predictions)
    part = smooth_certify(model, {m: t[3:7] for m, t in x.items()}, y[3:7], ["v", "a"], cfg, indices=range(3, 7))
    assert torch.equal(part.count_a, a.count_a[3:7])
    frame = a.summary_frame([0.0, 0.25])
    assert (frame["kind"] == SOUND).all() and (frame["method"] == "smoothing").all()
    assert frame["certified_accuracy"].iloc[0] == pytest.approx(
        float(((a.predictions == y) & (a.predictions != ABSTAIN)).float().mean())
    )
    assert "sound (probabilistic, 1-alpha)" in a.format([0.0, 0.25])
    with pytest.raises(ValueError, match="unknown modality"):
        smooth_certify(model, x, y, ["flow"], cfg)
    with pytest.raises(ValueError, match="alpha"):
        SmoothingConfig(alpha=0.0)
    assert model.training is False
    pred = smooth_predict(model, x, ["v", "a"], sigma=0.25, n=200, alpha=0.01)
    agree = (pred == a.predictions) | (pred == ABSTAIN) | (a.predictions == ABSTAIN)
    assert agree.float().mean() > 0.8
    assert np.isfinite(a.median_certified()) or (a.predictions == ABSTAIN).all()


def test_noise_on_one_modality_encodes_the_other_once_per_sample_with_identical_certificates():
    from mmrobust_bench.certify.smoothing import fixed_feature_function, logits_function

    torch.manual_seed(1)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 6))
    model = MultiModalNet({"v": conv, "a": Mlp(3)}, ConcatHead(["v", "a"], [6, 6], 3)).eval()
    gen = torch.Generator().manual_seed(3)
    x = {"v": torch.randn(9, 1, 8, 8, generator=gen), "a": torch.randn(9, 3, generator=gen)}
    y = torch.randint(0, 3, (9,), generator=gen)
    cfg = SmoothingConfig(sigma=0.5, n0=16, n=300, alpha=0.01, batch=128, seed=2)
    calls = []
    conv.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    for noised in (["a"], ["v"], ["v", "a"]):
        calls.clear()
        fast = smooth_certify(model, x, y, noised, cfg)
        rows_seen = sum(calls)
        plain = smooth_certify(lambda b: model(b).logits, x, y, noised, cfg)  # a callable: no shortcut
        assert torch.equal(fast.count_a, plain.count_a) and torch.equal(fast.predictions, plain.predictions)
        # noise on the audio only: the image encoder sees each sample once per group, not once per noisy copy
        assert rows_seen == (9 if noised == ["a"] else 9 * (16 + 300))
        # the SmoothAdv check (attack, then PREDICT) takes the same shortcut with the same outcome
        calls.clear()
        checked = smoothed_honesty_check(model, x, fast, n_attack=4, steps=3, n_predict=200, batch_size=4)
        rows_seen = sum(calls)
        reference = smoothed_honesty_check(
            lambda b: model(b).logits, x, fast, n_attack=4, steps=3, n_predict=200, batch_size=4
        )
        assert (checked.checked, checked.violations) == (reference.checked, reference.violations)
        if noised == ["a"]:  # each checked sample's image once for the attack, once for PREDICT
            assert rows_seen == 2 * checked.checked > 0
        predicted = smooth_predict(model, x, noised, sigma=0.5, n=200, alpha=0.01, batch=128)
        assert torch.equal(
            predicted, smooth_predict(lambda b: model(b).logits, x, noised, sigma=0.5, n=200, alpha=0.01, batch=128)
        )
    f = logits_function(model)

    class JointEncode(MultiModalNet):  # a subclass that may mix modalities keeps the plain path
        def encode(self, batch):
            return super().encode(batch)

    joint = JointEncode({"v": conv, "a": Mlp(3)}, ConcatHead(["v", "a"], [6, 6], 3)).eval()
    assert fixed_feature_function(joint, x, ("a",), f) is f
    assert fixed_feature_function(model, x, ("v", "a"), f) is f


def test_noise_augmentation_setting_is_generic_validated_and_keeps_old_keys():
    from mmrobust_bench.defenses import build_defense
    from mmrobust_bench.defenses.base import add_input_noise, key_dict

    _, plain = build_defense("crmt_jt")
    assert "noise_sigma" not in key_dict(plain)  # old checkpoints keep their keys
    _, noisy = build_defense("jt", {"noise_sigma_a": "0.25", "noise_sigma_v": 0.1})
    assert noisy.noise_sigma == {"a": 0.25, "v": 0.1} and key_dict(noisy)["noise_sigma"] == {"a": 0.25, "v": 0.1}
    _, same = build_defense("gb", {"noise_sigma": "{a: 0.25, v: 0.1}"})
    assert same.noise_sigma == noisy.noise_sigma
    with pytest.raises(ValueError, match="finite number >= 0"):
        build_defense("jt", {"noise_sigma_a": -1})
    x = {"a": torch.zeros(4000, 3), "v": torch.ones(4000, 2)}
    out = add_input_noise(x, {"a": 0.5}, torch.Generator().manual_seed(0))
    assert torch.equal(out["v"], x["v"]) and abs(float(out["a"].std()) - 0.5) < 0.02  # unclamped Gaussian


def test_certify_cli_smoothing_end_to_end_on_tiny_synthav(tmp_path, capsys):
    import pandas as pd

    from mmrobust_bench.cli import main
    from mmrobust_bench.reports.certified_curves import plot_certified_curves

    small = [
        "--root",
        str(tmp_path),
        "--dataset-set",
        "n_train=128",
        "--dataset-set",
        "n_test=32",
        "--set",
        "epochs=1",
        "--set",
        "noise_sigma_a=0.25",
        "--no-progress",
    ]
    # the training loop refuses a noise modality the dataset lacks, naming the valid ones
    assert main(["certify", "--defense", "jt", "--set", "noise_sigma_flow=0.1", "--method", "smoothing"] + small) != 0
    assert "unknown modality flow; valid: v, a" in capsys.readouterr().err
    args = [
        "certify",
        "--defense",
        "jt",
        "--method",
        "smoothing",
        "--modality",
        "a",
        "--sigma",
        "0.25",
        "--n0",
        "8",
        "--n",
        "64",
        "--alpha",
        "0.05",
        "--test-samples",
        "12",
        "--n-attack",
        "2",
        "--attack-steps",
        "2",
        "--attack-samples",
        "3",
        "--radius",
        "0,0.1",
    ] + small
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "sound (probabilistic, 1-alpha)" in out and "probability ≥ 0.95" in out
    assert (
        main(
            [
                "certify",
                "--defense",
                "jt",
                "--honesty-steps",
                "2",
                "--honesty-targets",
                "1",
                "--train-samples",
                "32",
                "--test-samples",
                "12",
                "--radius",
                "0,0.1",
            ]
            + small
        )
        == 0
    )
    frame = pd.read_csv(tmp_path / "certified.csv")
    smooth = frame[frame["method"] == "smoothing"]
    assert len(smooth) == 2 and (smooth["kind"] == SOUND).all() and (smooth["modality"] == "a").all()
    assert (smooth["n"] == 12).all() and (smooth["alpha"] == 0.05).all() and (smooth["honesty_certified"] >= 0).all()
    empirical = frame[frame["method"] == "empirical"]
    assert set(empirical["kind"]) == {"empirical", "not a bound (runner-up only)"} and len(empirical) == 2 * 2 * 3
    assert len(list((tmp_path / "certify").rglob("smoothing-a-sigma0.25/certificate.md"))) == 1
    paths = plot_certified_curves(frame, tmp_path / "figs", command="test")
    assert len(paths) == 1 and paths[0].exists() and paths[0].with_name(paths[0].name + ".txt").exists()


def test_sweep_certify_block_parses_smoothing_keys_and_rejects_unknown_methods():
    from mmrobust_bench.bench.sweep import build_plan

    plan = build_plan(
        {
            "defenses": ["jt"],
            "certify": {
                "method": ["empirical", "smoothing"],
                "sigma": 0.5,
                "n0": 10,
                "n": 50,
                "alpha": 0.01,
                "modalities": ["a", "all"],
                "honesty_targets": 0,
                "honesty_loss": "ce",
            },
        }
    )
    spec = plan.certify
    assert spec.methods == ("empirical", "smoothing") and spec.modalities == ("a", "all")
    assert (spec.smoothing.sigma, spec.smoothing.n0, spec.smoothing.n, spec.smoothing.alpha) == (0.5, 10, 50, 0.01)
    assert not spec.honesty.targeted and spec.honesty.loss == "ce"
    legacy = build_plan({"defenses": ["jt"], "certify": {"honesty_legacy": True, "honesty_steps": 20}}).certify
    assert legacy.honesty.legacy and legacy.honesty.steps == 20 and legacy.methods == ("empirical",)
    with pytest.raises(ValueError, match="certify method smoothin unknown; valid: empirical, smoothing"):
        build_plan({"defenses": ["jt"], "certify": {"method": "smoothin"}})


def test_sweep_smoothing_certifies_each_noise_set_once(tmp_path):
    import pandas as pd

    from mmrobust_bench.bench.sweep import build_plan, run_sweep

    config = {
        "defenses": ["jt"],
        "seeds": [0],
        "set": {"epochs": 1, "noise_sigma_a": 0.25},
        "dataset_set": {"n_train": 128, "n_test": 16},
        "grid": [{"attacks": ["missing"], "modalities": ["a"]}],
        "certify": {
            "method": ["smoothing"],
            "modalities": ["a"],
            "n0": 8,
            "n": 32,
            "alpha": 0.1,
            "n_attack": 0,
            "radii": [0.0, 0.1],
        },
    }
    first = run_sweep(build_plan(config), root=tmp_path, progress=False)
    assert first.certified == 1
    config["certify"]["modalities"] = ["a", "all"]  # only the new noise set is certified
    second = run_sweep(build_plan(config), root=tmp_path, progress=False)
    frame = pd.read_csv(tmp_path / "certified.csv")
    assert second.certified == 1 and sorted(set(frame["modality"])) == ["a", "all"] and len(frame) == 4
    assert run_sweep(build_plan(config), root=tmp_path, progress=False).certified == 0


def test_certify_sets_keeps_some_noise_sets_of_the_block_and_refuses_others():
    from mmrobust_bench.bench.sweep import build_plan

    config = {
        "defenses": ["jt", {"defense": "msefm", "certify": {"test_samples": 300}}],
        "certify": {"method": ["empirical", "smoothing"], "modalities": ["a", "v,a", "all"]},
    }
    plan = build_plan(config, certify_sets=["all", "a+v"])  # "v,a" in the block, "a+v" as rows spell it
    assert plan.certify.modalities == ("v,a", "all")  # the block's order and spelling
    assert plan.certify_for(plan.defenses[1]).modalities == ("v,a", "all")
    assert plan.certify_for(plan.defenses[1]).test_samples == 300  # the entry's own settings stay
    assert plan.certify.methods == ("empirical", "smoothing")
    with pytest.raises(
        ValueError,
        match=r"--certify-sets v is not a noise set of the certify: block; "
        r"its sets: a, a\+v, all",
    ):
        build_plan(config, certify_sets=["v"])
    with pytest.raises(ValueError, match="certify methods are empirical; add --certify-method smoothing"):
        build_plan(config, certify_sets=["a"], certify_methods=["empirical"])
    with pytest.raises(ValueError, match="certify: block, which is missing"):
        build_plan({"defenses": ["jt"]}, certify_sets=["a"])
    # only the blocks the selected entries use are checked: here the sweep's block has no smoothing at all
    own = {
        "defenses": ["jt", {"defense": "msefm", "certify": {"method": ["smoothing"], "modalities": ["a", "v"]}}],
        "certify": {"method": ["empirical"]},
    }
    selected = build_plan(own, only=["msefm"], certify_sets=["v"])
    assert selected.certify_for(selected.defenses[0]).modalities == ("v",)
    with pytest.raises(ValueError, match="certify of defense entry 'msefm': --certify-sets all is not a noise set"):
        build_plan(own, only=["msefm"], certify_sets=["all"])
    with pytest.raises(ValueError, match="add --certify-method smoothing"):
        build_plan(own, certify_sets=["v"])  # jt uses the sweep's block, which has no smoothing


def test_noise_sets_split_across_runs_give_the_rows_of_one_run(tmp_path, capsys):
    """--certify-sets a, then --certify-sets v (as two processes would, at once), store exactly the rows and the
    per-sample noise counts of one run of the whole block, timestamps apart; a run of the whole block afterwards
    finds nothing to do. The model is trained enough for the noise to move its votes, so a set whose noise
    depended on its place in the list would show in the counts."""
    import pandas as pd
    import yaml

    from mmrobust_bench.cli import main

    config = {
        "defenses": ["jt"],
        "seeds": [0],
        "set": {"epochs": 4},
        "dataset_set": {"n_train": 512, "n_test": 16},
        "grid": [{"attacks": ["missing"], "modalities": ["a"]}],
        "certify": {
            "method": ["smoothing"],
            "modalities": ["a", "v"],
            "sigma": 1.0,
            "n0": 8,
            "n": 32,
            "alpha": 0.1,
            "n_attack": 0,
            "radii": [0.0, 0.1],
        },
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    split, whole = tmp_path / "split", tmp_path / "whole"
    common = ["sweep", "--config", str(path), "--no-progress", "--threads", "1"]
    assert main(common + ["--root", str(split), "--certify-sets", "a"]) == 0
    assert set(pd.read_csv(split / "certified.csv")["modality"]) == {"a"}
    assert main(common + ["--root", str(split), "--certify-sets", "v"]) == 0
    assert main(common + ["--root", str(whole)]) == 0
    capsys.readouterr()
    assert main(common + ["--root", str(split)]) == 0
    assert "0 certified" in capsys.readouterr().out

    def rows(root):
        frame = pd.read_csv(root / "certified.csv").drop(columns=["timestamp"])
        return frame.sort_values(["modality", "radius"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(split), rows(whole))
    for name in ("a", "v"):
        (split_samples,) = (split / "certify").rglob(f"smoothing-{name}-sigma1/samples.csv")
        (whole_samples,) = (whole / "certify").rglob(f"smoothing-{name}-sigma1/samples.csv")
        counts = pd.read_csv(split_samples)
        pd.testing.assert_frame_equal(counts, pd.read_csv(whole_samples))
        assert counts["count_a"].nunique() > 1  # the noise moves the votes: the comparison can see a seed change
    assert main(common + ["--root", str(split), "--certify-sets", "all"]) != 0
    assert "its sets: a, v" in capsys.readouterr().err


def test_an_interrupted_smoothing_run_keeps_the_noise_sets_it_finished(tmp_path, monkeypatch):
    import pandas as pd

    from mmrobust_bench.bench import certification
    from mmrobust_bench.bench.sweep import build_plan, run_sweep

    config = {
        "defenses": ["jt"],
        "seeds": [0],
        "set": {"epochs": 1},
        "dataset_set": {"n_train": 128, "n_test": 16},
        "grid": [{"attacks": ["missing"], "modalities": ["a"]}],
        "certify": {
            "method": ["smoothing"],
            "modalities": ["a", "v"],
            "n0": 8,
            "n": 32,
            "alpha": 0.1,
            "n_attack": 0,
            "radii": [0.0, 0.1],
        },
    }
    real = certification.smooth_certify
    calls = []

    def interrupted_on_the_second_set(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(certification, "smooth_certify", interrupted_on_the_second_set)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(build_plan(config), root=tmp_path, progress=False)
    assert set(pd.read_csv(tmp_path / "certified.csv")["modality"]) == {"a"}  # the finished set was written
    monkeypatch.setattr(certification, "smooth_certify", real)
    assert run_sweep(build_plan(config), root=tmp_path, progress=False).certified == 1  # only v is left
    assert sorted(set(pd.read_csv(tmp_path / "certified.csv")["modality"])) == ["a", "v"]


@pytest.mark.cuda
def test_smoothing_runs_on_cuda_with_device_generators_and_is_reproducible():
    model = small_net().cuda()
    x = {m: t.cuda() for m, t in inputs(16, 4).items()}
    cfg = SmoothingConfig(sigma=0.25, n0=32, n=2000, alpha=0.01, batch=4096, seed=1)
    first = smooth_certify(model, x, None, ["a"], cfg)
    again = smooth_certify(model, x, None, ["a"], cfg)
    assert torch.equal(first.count_a, again.count_a) and torch.equal(first.predictions, again.predictions)
    on_cpu = smooth_certify(small_net(), {m: t.cpu() for m, t in x.items()}, None, ["a"], cfg)
    # different noise streams (device generators), same smoothed classifier: counts agree statistically
    assert ((first.count_a - on_cpu.count_a).abs() <= 5 * (cfg.n * 0.25) ** 0.5 + 1).all()


def test_smoothing_certifies_an_mmt_model_whose_modalities_mix():
    """Smoothing needs only the fused logits: it applies to MMT (joint layers), where Eq. 5/7/10 are heuristic."""
    from mmrobust_bench.certify import mixes_modalities
    from mmrobust_bench.data.synthav import SynthAVConfig, audio_spec, visual_spec
    from mmrobust_bench.models.mmt import build_mmt

    specs = (visual_spec(SynthAVConfig()), audio_spec(SynthAVConfig()))
    torch.manual_seed(0)
    model = build_mmt(specs, 10, head="crmt").eval()
    assert mixes_modalities(model)
    gen = torch.Generator().manual_seed(0)
    x = {s.name: torch.randn((3,) + s.shape, generator=gen) for s in specs}
    cert = smooth_certify(model, x, torch.zeros(3, dtype=torch.long), ["a"], SmoothingConfig(n0=8, n=32, batch=64))
    assert cert.n == 3 and cert.modalities == ("a",) and cert.summary_frame([0.0])["kind"].eq(SOUND).all()
