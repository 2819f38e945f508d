"""The largest radius randomized smoothing can certify, σ·Φ⁻¹(α^{1/n}) (certify.smoothing.largest_certifiable_radius):
its closed form, radius grids clipped to it with a warning (summary rows, ``mmr.smooth_certify``), default radii
under it, and certified-accuracy curves that stop at it, drawn as steps, with the cap marked."""

import math
import warnings

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mmrobust_bench as mmr
from mmrobust_bench.certify.smoothing import SmoothingConfig, capped_radii, largest_certifiable_radius, smooth_certify
from mmrobust_bench.reports.certified_curves import CAP_LABEL, certified_curve_data, figure_certified_curves

SETTINGS = [(0.25, 1000, 0.001), (0.25, 10_000, 0.001), (0.5, 100, 0.01), (0.12, 100_000, 0.05), (1.0, 10, 0.1)]


@pytest.mark.parametrize("sigma,n,alpha", SETTINGS)
def test_cap_is_sigma_times_the_normal_quantile_of_alpha_to_the_one_over_n(sigma, n, alpha):
    expected = sigma * stats.norm.ppf(alpha ** (1.0 / n))
    assert largest_certifiable_radius(sigma, n, alpha) == pytest.approx(expected, rel=1e-12)
    assert SmoothingConfig(sigma=sigma, n=n, alpha=alpha).largest_radius == pytest.approx(expected, rel=1e-12)


def test_cap_values_and_refusals():
    assert round(largest_certifiable_radius(0.25, 1000, 0.001), 2) == 0.62  # the avdigits sweep's setting
    assert round(largest_certifiable_radius(0.25, 10_000, 0.001), 2) == 0.80  # mmr.smooth_certify with n=10_000
    assert largest_certifiable_radius(1.0, 1, 0.4) == 0.0  # α^(1/n) = 0.4 ≤ ½: every sample abstains
    for args, message in [
        ((0.0, 10, 0.1), "sigma must be a finite number > 0, got 0.0"),
        ((0.25, 0, 0.1), "n must be an integer >= 1, got 0"),
        ((0.25, 2.5, 0.1), "n must be an integer >= 1, got 2.5"),
        ((0.25, 10, 1.0), r"alpha must be in \(0, 1\), got 1.0"),
    ]:
        with pytest.raises(ValueError, match=f"^smoothing: {message}$"):
            largest_certifiable_radius(*args)


def test_capped_radii_clip_to_the_cap_once_and_warn_naming_it():
    cap = largest_certifiable_radius(0.25, 1000, 0.001)
    with pytest.warns(
        UserWarning,
        match=r"radii 1, 2 are above the largest certifiable radius σ·Φ⁻¹\(α\^\(1/n\)\) "
        r"= 0\.6158 \(σ 0\.25, n 1000, α 0\.001\) and are clipped to it",
    ):
        assert capped_radii([0.0, 0.5, 1.0, 2.0], 0.25, 1000, 0.001) == (0.0, 0.5, cap)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing above the cap: no warning
        assert capped_radii((0.0, 0.25, 0.5), 0.25, 1000, 0.001) == (0.0, 0.25, 0.5)


class Constant(nn.Module):
    """Logits that ignore the input: every noisy copy votes for class 0, so n_A = n and p̲_A = α^(1/n)."""

    def forward(self, audio, video):
        return torch.tensor([[3.0, 0.0]]).expand(audio.shape[0], 2)


def test_a_model_certain_everywhere_is_certified_exactly_at_the_cap_and_no_further():
    x = {"a": torch.zeros(5, 2), "v": torch.zeros(5, 3)}
    cfg = SmoothingConfig(sigma=0.25, n0=10, n=1000, alpha=0.001, batch=1000)
    cert = smooth_certify(lambda b: Constant()(b["a"], b["v"]), x, torch.zeros(5, dtype=torch.long), ["a"], cfg)
    cap = cfg.largest_radius
    assert torch.equal(cert.radius, torch.full((5,), cap, dtype=torch.float64))  # bit for bit the cap
    with pytest.warns(UserWarning, match="largest certifiable radius"):
        frame = cert.summary_frame([0.0, 0.5, 1.0])
    assert list(frame["radius"]) == [0.0, 0.5, cap] and list(frame["certified_accuracy"]) == [1.0, 1.0, 1.0]
    with pytest.warns(UserWarning, match="largest certifiable radius"):
        text = cert.format([0.0, 1.0])
    assert "largest certifiable radius σ·Φ⁻¹(α^(1/n)) = 0.6158" in text and "cert. acc @ 0.615816" in text


def test_the_api_clips_a_radius_above_the_cap_with_a_warning_and_defaults_under_it():
    wrapped = mmr.wrap(Constant(), {"audio": mmr.Modality((2,)), "video": mmr.Modality((3,))})
    loader = DataLoader(
        TensorDataset(torch.zeros(4, 2), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)), batch_size=4
    )
    cap = 0.25 * stats.norm.ppf(0.001 ** (1 / 1000))
    with pytest.warns(UserWarning, match=r"radii 1 are above the largest certifiable radius .* = 0\.6158"):
        result = mmr.smooth_certify(wrapped, loader, modality="audio", n0=10, n=1000, batch=1000, radii=(0.0, 0.5, 1.0))
    assert result.largest_radius == pytest.approx(cap, rel=1e-12)
    assert list(result.summary["eps"]) == [0.0, 0.5, result.largest_radius]
    assert list(result.summary["certified_accuracy"]) == [1.0, 1.0, 1.0]  # every sample certified at the cap
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default radii never warn: 0, σ, 2σ under the cap 0.616
        default = mmr.smooth_certify(wrapped, loader, modality="audio", n0=10, n=1000, batch=1000)
    assert list(default.summary["eps"]) == [0.0, 0.25, 0.5]


def smoothing_rows(radii, *, n_noise=1000, alpha=0.001, sigma=0.25) -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(
                dataset="avdigits",
                defense="jt",
                defense_id="jt",
                seed=0,
                config_hash="c",
                method="smoothing",
                kind="sound (probabilistic, 1-alpha)",
                certificate="smoothing[a]",
                equation="randomized smoothing",
                variant=f"sigma={sigma:g}",
                modality="a",
                radius=r,
                certified_accuracy=0.9 - 0.5 * min(r, 1.0) if r <= 0.62 else 0.0,
                sigma=sigma,
                n_noise=n_noise,
                alpha=alpha,
            )
            for r in radii
        ]
    )


def test_curves_stop_at_the_cap_as_steps_with_the_cap_marked():
    cap = largest_certifiable_radius(0.25, 1000, 0.001)
    for radii, last in (([0.0, 0.1, 0.25, 0.5, 1.0], 0.5), ([0.0, 0.25, 0.5, cap], cap)):
        rows = smoothing_rows(radii)
        data = certified_curve_data(rows)
        assert list(data["radius"]) == [r for r in radii if r <= cap] and (data["cap"] == cap).all()
        fig = figure_certified_curves(rows, dataset="avdigits")
        ax = fig.axes[0]
        curve = next(line for line in ax.get_lines() if line.get_label().startswith("jt · smoothing"))
        assert list(curve.get_xdata()) == [r for r in radii if r <= cap] and max(curve.get_xdata()) == last
        assert curve.get_drawstyle() == "steps-pre"
        marks = [line for line in ax.get_lines() if line.get_label().startswith(CAP_LABEL)]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [cap, cap]
        assert marks[0].get_label() == "largest certifiable radius (smoothing σ=0.25 n=1000 α=0.001)"
        assert not ax.texts  # the cap is named in the key below, never across the curves
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "largest certifiable radius σ·Φ⁻¹(α^(1/n)): 0.616 (σ=0.25 n=1000 α=0.001)" in legend
        plt.close(fig)


def test_curves_without_n_or_alpha_keep_every_radius_and_draw_no_cap():
    rows = smoothing_rows([0.0, 0.5, 1.0]).drop(columns=["n_noise", "alpha"])
    data = certified_curve_data(rows)
    assert list(data["radius"]) == [0.0, 0.5, 1.0] and data["cap"].isna().all()
    fig = figure_certified_curves(rows, dataset="avdigits")
    assert not any(line.get_label().startswith(CAP_LABEL) for line in fig.axes[0].get_lines())
    assert not math.isnan(fig.axes[0].get_lines()[0].get_xdata()[-1])
    plt.close(fig)


def test_certify_cli_smoothing_defaults_to_radii_under_the_cap(tmp_path, capsys):
    from mmrobust_bench.cli import main

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
        "6",
        "--n-attack",
        "0",
        "--root",
        str(tmp_path),
        "--dataset-set",
        "n_train=64",
        "--dataset-set",
        "n_test=8",
        "--set",
        "epochs=1",
        "--no-progress",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the default grid is under the cap: nothing to clip
        assert main(args) == 0
    cap = 0.25 * stats.norm.ppf(0.05 ** (1 / 64))  # 0.42: the grid is 0 and σ
    assert "largest certifiable radius σ·Φ⁻¹(α^(1/n)) = 0.4219" in capsys.readouterr().out
    assert round(cap, 4) == 0.4219
    rows = pd.read_csv(tmp_path / "certified.csv")
    assert list(rows["radius"]) == [0.0, 0.25]


def test_a_sweep_warns_once_per_model_about_radii_above_the_cap(tmp_path):
    """Two noise sets, a summary and a text each: the clipping is named in one warning, not one per set and file."""
    from mmrobust_bench.bench.sweep import build_plan, run_sweep

    config = {
        "defenses": ["jt"],
        "seeds": [0],
        "set": {"epochs": 1},
        "dataset_set": {"n_train": 64, "n_test": 8},
        "grid": [{"attacks": ["missing"], "modalities": ["a"]}],
        "certify": {
            "method": ["smoothing"],
            "modalities": ["a", "all"],
            "n0": 8,
            "n": 32,
            "alpha": 0.1,
            "n_attack": 0,
            "radii": [0.0, 0.1, 5.0],
        },
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_sweep(build_plan(config), root=tmp_path, progress=False).certified == 1
    clipped = [w for w in caught if "above the largest certifiable radius" in str(w.message)]
    assert len(clipped) == 1 and "radii 5 are above" in str(clipped[0].message)
    frame = pd.read_csv(tmp_path / "certified.csv")
    cap = largest_certifiable_radius(0.25, 32, 0.1)
    assert sorted(set(frame["modality"])) == ["a", "all"]
    assert all(sorted(g) == pytest.approx([0.0, 0.1, cap]) for _, g in frame.groupby("modality")["radius"])
