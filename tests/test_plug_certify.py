"""``mmr.certificates`` runs the suite's honesty check (HonestyConfig, options passed through) and
``mmr.smooth_certify`` randomizes-smooths a user's own model: exact answers on small models defined here."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mmrobust_bench as mmr
from mmrobust_bench.certify.honesty import HonestyConfig, honesty_check
from mmrobust_bench.certify.smoothing import SOUND, SmoothingConfig, clopper_pearson_lower
from mmrobust_bench.certify.smoothing import smooth_certify as library_smooth_certify
from mmrobust_bench.data.base import TensorSplit

K = 3
DA, DV = 4, 6
MODALITIES = {"audio": mmr.Modality((DA,)), "video": mmr.Modality((DV,))}


class TanhSum(nn.Module):
    """Late fusion of non-linear uni-modal scores z^(m) = W^(m) tanh(A^(m) x^(m)): logits = z^(a) + z^(v)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(5)
        self.aa, self.av = (nn.Parameter(2 * torch.randn(8, d, generator=gen)) for d in (DA, DV))
        self.wa, self.wv = (nn.Parameter(torch.randn(K, 8, generator=gen)) for _ in range(2))

    def scores(self, audio, video):
        return torch.tanh(audio @ self.aa.T) @ self.wa.T, torch.tanh(video @ self.av.T) @ self.wv.T

    def forward(self, audio, video):
        za, zv = self.scores(audio, video)
        return {"logits": za + zv, "unimodal": {"audio": za, "video": zv}}


def expected_eq7_audio(model: TanhSum, train_a, train_v, a, v, y) -> torch.Tensor:
    """Eq. 7 on audio by hand: L_{y,j} = max over train of ‖∇_a (z_y − z_j)‖, r = min_j (h_y − h_j) / L_{y,j}."""
    lip = torch.zeros(K, K)
    for i in range(train_a.shape[0]):
        jac = torch.autograd.functional.jacobian(
            lambda x, i=i: model.scores(x[None], train_v[i : i + 1])[0][0], train_a[i]
        )  # (K, DA)
        lip = torch.maximum(lip, (jac[:, None] - jac[None]).norm(dim=2))
    with torch.no_grad():
        h = model(a, v)["logits"]
    ratio = ((h.gather(1, y[:, None]) - h) / lip[y]).scatter(1, y[:, None], math.inf).min(1).values
    return torch.where(h.argmax(1) == y, ratio.clamp_min(0), torch.zeros_like(ratio)).detach()


def data(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, DA, generator=gen), torch.randn(n, DV, generator=gen)


def test_certificates_run_the_strong_honesty_check_with_its_options():
    model = TanhSum()
    wrapped = mmr.wrap(model, MODALITIES)
    train_a, train_v = data(2, 3)  # two training samples: the Lipschitz estimate is far too small
    a, v = data(24, 2)
    with torch.no_grad():
        y = model(a, v)["logits"].argmax(1)
    train = DataLoader(TensorDataset(train_a, train_v, torch.zeros(2, dtype=torch.long)), batch_size=2)
    test = DataLoader(TensorDataset(a, v, y), batch_size=10)
    r = expected_eq7_audio(model, train_a, train_v, a, v, y)
    split = TensorSplit({"audio": a, "video": v}, y)
    found = {}
    for config in (
        HonestyConfig(steps=30, seed=3),
        HonestyConfig(steps=30, targeted=False, loss="ce", seed=3),
        HonestyConfig.legacy_check(10),
    ):
        frame = mmr.certificates(wrapped, train, test, honesty=config).summary.set_index("certificate")
        found[config.describe()] = frame.loc["eq7[audio]", "honesty_violations"]
        row = frame.loc["eq7[audio]"]
        assert row["median_radius"] == pytest.approx(float(r[r > 0].median()), rel=1e-4)
        direct = honesty_check(wrapped, split, r, ("audio",), wrapped.specs, config=config)
        assert row["honesty_attack"] == config.describe() == direct.attack
        assert (row["honesty_certified"], row["honesty_violations"]) == (direct.certified, direct.violations)
        assert row["honesty_counts"] == "lower bound (>= violations found)"
    default = mmr.certificates(wrapped, train, test).summary.set_index("certificate").loc["eq7[audio]"]
    assert default["honesty_attack"] == HonestyConfig().describe()  # margin loss, targeted, 100 steps
    assert "margin" in default["honesty_attack"] and "targeted: every runner-up class" in default["honesty_attack"]
    assert default["honesty_violations"] > 0  # the too-small constants overclaim, and the check says so
    assert default["honesty_violations"] >= max(found.values())  # 100 steps, margin + targeted: the strongest
    fewer = mmr.certificates(wrapped, train, test, honesty_steps=7, seed=1).summary.set_index("certificate")
    fewer = fewer.loc["eq7[audio]"]
    assert fewer["honesty_attack"] == HonestyConfig(steps=7, seed=1).describe()
    off = mmr.certificates(wrapped, train, test, honesty_steps=0).summary.set_index("certificate").loc["eq7[audio]"]
    assert (off["honesty_certified"], off["honesty_violations"], off["honesty_counts"]) == (-1, -1, "not run")
    with pytest.raises(ValueError, match=r"honesty= takes a mmrobust_bench\.certify\.honesty\.HonestyConfig"):
        mmr.certificates(wrapped, train, test, honesty={"steps": 3})
    with pytest.raises(
        TypeError,
        match=r"^mmr\.certificates\(wrapped, train, test\) needs two loaders: the test "
        r"loader is missing \(train gives the Lipschitz constants, test the certified "
        r"radii\)$",
    ):
        mmr.certificates(wrapped, test)


class Linear2(nn.Module):
    """A user's two-class linear model over two modalities, called positionally."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        self.fc = nn.Linear(DA + DV, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(2, DA + DV, generator=gen))
            self.fc.bias.copy_(0.1 * torch.randn(2, generator=gen))

    def forward(self, audio, video):
        return self.fc(torch.cat([audio, video], 1))


@pytest.mark.parametrize("modality,noised", [("audio", slice(0, DA)), ("all", slice(0, DA + DV))])
def test_smooth_certify_on_a_user_linear_model_matches_the_closed_form(modality, noised):
    model = Linear2()
    wrapped = mmr.wrap(model, MODALITIES)
    a, v = data(20, 3)
    with torch.no_grad():
        margin = (model(a, v) @ torch.tensor([1.0, -1.0])).double()  # h_0 − h_1
    y = (margin < 0).long()
    y[:3] = 1 - y[:3]  # three samples labelled against the model: never certified correct
    loader = DataLoader(TensorDataset(a, v, y), batch_size=8)
    sigma, n, alpha = 0.5, 3000, 0.001
    result = mmr.smooth_certify(
        wrapped,
        loader,
        modality=modality,
        sigma=sigma,
        n0=50,
        n=n,
        alpha=alpha,
        batch=600,
        seed=2,
        radii=(0.0, 0.5, 1.0),
    )
    assert result.largest_radius == pytest.approx(sigma * stats.norm.ppf(alpha ** (1 / n)))  # 1.416 > every radius
    for frame in (result.samples, result.summary):
        assert (frame["kind"] == SOUND).all() and (frame["sigma"] == sigma).all() and (frame["alpha"] == alpha).all()
        assert (frame["modality"] == modality).all()
    assert len(result.samples) == 20 and list(result.summary["eps"]) == [0.0, 0.5, 1.0]
    assert "eps" not in result.samples and "radius" not in result.summary  # the two kinds of row never mix
    # to_frame: both in one tidy frame with a row column, samples first
    tidy = result.to_frame()
    assert list(tidy["row"]) == ["sample"] * 20 + ["certified_accuracy"] * 3
    assert list(tidy.columns[:4]) == ["row", "modality", "sample", "label"]
    assert np.allclose(tidy.loc[tidy["row"] == "sample", "radius"], result.samples["radius"], equal_nan=True)
    assert list(tidy.loc[tidy["row"] == "certified_accuracy", "certified_accuracy"]) == list(
        result.summary["certified_accuracy"]
    )
    samples = result.samples.set_index("sample")
    assert list(samples.index) == list(range(20))
    # closed form: p_A = Φ(|margin| / (σ‖w^(M)‖)), the exact distance to the boundary is |margin| / ‖w^(M)‖
    w = (model.fc.weight[0] - model.fc.weight[1]).detach().double()
    dist = (margin.abs() / w[noised].norm()).numpy()
    ok = ~samples["abstained"].to_numpy(bool)
    assert ok.sum() >= 10
    cls = (margin < 0).long().numpy()
    assert (samples["prediction"].to_numpy()[ok] == cls[ok]).all()
    assert (samples.loc[~ok, "prediction"] == -1).all() and samples.loc[~ok, "radius"].isna().all()
    radius = samples["radius"].to_numpy()
    assert (radius[ok] <= dist[ok] + 1e-9).all()  # sound: never past the true boundary
    p = stats.norm.cdf(dist / sigma)
    k = np.clip(np.floor(n * p - 5 * np.sqrt(n * p * (1 - p)) - 1), 0, n)  # a 5-σ low count
    floor = np.nan_to_num(sigma * stats.norm.ppf(clopper_pearson_lower(k, n, alpha)), nan=0.0)
    assert (radius[ok] >= floor[ok] - 1e-9).all()
    # the same numbers as the library on the wrapped model (same seeds, same sample indices)
    mods = ("audio",) if modality == "audio" else ("audio", "video")
    cert = library_smooth_certify(
        wrapped,
        {"audio": a, "video": v},
        y,
        mods,
        SmoothingConfig(sigma=sigma, n0=50, n=n, alpha=alpha, batch=600, seed=2),
    )
    assert np.allclose(radius, cert.radius.numpy(), equal_nan=True)
    assert np.allclose(samples["p_a_lower"].to_numpy(), cert.p_lower.numpy())
    # certified accuracy: samples certified with their true label at radius ≥ ε, over all samples
    acc = result.summary.set_index("eps")
    for eps in (0.0, 0.5, 1.0):
        hit = (samples["prediction"] == samples["label"]) & ~samples["abstained"] & (samples["radius"] >= eps)
        assert acc.loc[eps, "certified_accuracy"] == pytest.approx(hit.mean())
        assert acc.loc[eps, "certified_accuracy"] == pytest.approx(cert.certified_accuracy(eps))
    assert acc.loc[0.0, "certified_accuracy"] <= 17 / 20  # the three mislabelled samples never count
    assert acc["samples"].eq(20).all()


def test_smooth_certify_checks_its_inputs_and_runs_the_honesty_check():
    wrapped = mmr.wrap(Linear2(), MODALITIES)
    a, v = data(6, 4)
    loader = DataLoader(TensorDataset(a, v, torch.zeros(6, dtype=torch.long)), batch_size=6)
    with pytest.raises(ValueError, match="unknown modality sound; valid: audio, video or 'all'"):
        mmr.smooth_certify(wrapped, loader, modality="sound")
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        mmr.smooth_certify(wrapped, loader, sigma=0.0)
    result = mmr.smooth_certify(
        wrapped,
        loader,
        modality=["video"],
        sigma=0.25,
        n0=20,
        n=200,
        batch=200,
        max_samples=4,
        n_attack=4,
        attack_steps=3,
    )
    assert len(result.samples) == 4 and (result.samples["modality"] == "video").all()
    acc = result.summary
    assert (acc["honesty_counts"] == "lower bound (>= violations found)").all()
    assert (acc["honesty_checked"] == int((~result.samples["abstained"]).sum())).all()
    # the default radii stop under the cap σ·Φ⁻¹(α^(1/n)) = 0.25·Φ⁻¹(0.001^(1/200)) = 0.456: 0 and σ
    assert result.largest_radius == pytest.approx(0.25 * stats.norm.ppf(0.001 ** (1 / 200)))
    assert list(acc["eps"]) == [0.0, 0.25]


def test_a_long_smoothing_run_says_how_long_before_it_starts(caplog):
    """The default n is sized for minutes (1000 draws; 0.62 is then the largest certifiable radius), and a call
    expected to take more than a minute warns first with the estimate and the remedy."""
    import inspect
    import logging

    from mmrobust_bench.plug import smoothing

    assert inspect.signature(mmr.smooth_certify).parameters["n"].default == 1000
    slow = type("Slow", (torch.nn.Module,), {"forward": lambda self, batch: (time.sleep(0.05), batch)[1]})()
    x = {"a": torch.zeros(3, 2)}
    with caplog.at_level(logging.WARNING, logger="mmrobust_bench.plug.smoothing"):
        quick = smoothing._announce_cost(slow, x, samples=3, draws=100, batch=100)
        assert quick < 60 and not caplog.records
        long = smoothing._announce_cost(slow, x, samples=2000, draws=1100, batch=1000)
    assert long > 60 and "smooth_certify: about" in caplog.text and "lower n or max_samples" in caplog.text
