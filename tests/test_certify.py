"""Certified radii, η and the honesty check: exact answers on linear two-modality models, the batched
Gram against a per-sample Jacobian, the official get_lip difference, and the certify CLI on synthav."""

import math

import pandas as pd
import pytest
import torch
from torch import nn

from mmrobust_bench.bench.certification import replace_model_rows
from mmrobust_bench.certify import EMPIRICAL, certify, estimate_lipschitz, honesty_check, unimodal_grams
from mmrobust_bench.cli import main
from mmrobust_bench.data.base import TensorSplit
from mmrobust_bench.models import ConcatHead, MultiModalNet

from helpers import flat_specs, linear_model

DIMS = {"v": 6, "a": 4}
K = 3


def split(n: int, seed: int) -> TensorSplit:
    gen = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, d, generator=gen) for m, d in DIMS.items()}
    return TensorSplit(inputs, torch.randint(0, K, (n,), generator=gen))


def hand_margins(model, test):
    with torch.no_grad():
        h = model(test.inputs).logits
    y = test.labels
    return h, y, h.gather(1, y[:, None]) - h


def min_over_j(ratio, y):
    return ratio.scatter(1, y[:, None], math.inf).min(1).values


def test_linear_concat_radii_are_exact_and_honest():
    model = linear_model(DIMS, K)
    train, test = split(40, 1), split(48, 2)
    cert = certify(model, train, test, flat_specs(DIMS), honesty_steps=20)
    blocks = model.head.blocks()
    w = model.head.fc.weight.detach()
    for m, wm in blocks.items():
        wm = wm.detach()
        assert torch.allclose(cert.tau_estimated[m], wm.norm(dim=1), atol=1e-5)
        exact = (wm[:, None] - wm[None]).norm(dim=2)  # c_j^(m) = ‖W_y^(m) − W_j^(m)‖, τ(ζ) = 1
        assert torch.allclose(cert.pair_eta[m], exact, atol=1e-4)
    h, y, margins = hand_margins(model, test)
    ru = h.scatter(1, y[:, None], -math.inf).argmax(1)
    # Eq. 5 equals the exact minimal adversarial ℓ2 distance min_j (h_y − h_j)/‖W_y − W_j‖
    full = (w[:, None] - w[None]).norm(dim=2)
    exact5 = min_over_j(margins / full[y].clamp_min(1e-12), y)
    assert torch.allclose(cert.get("eq5").radius, exact5, atol=1e-4)
    assert torch.allclose(
        cert.get("eq5", "runner_up").radius, margins.gather(1, ru[:, None]).squeeze(1) / full[y, ru], atol=1e-4
    )
    for m, wm in blocks.items():  # Eq. 7: modality m alone
        den = (wm.detach()[:, None] - wm.detach()[None]).norm(dim=2)
        assert torch.allclose(cert.get(f"eq7[{m}]").radius, min_over_j(margins / den[y].clamp_min(1e-12), y), atol=1e-4)
        assert torch.allclose(cert.local_eta[m], den[y, ru], atol=1e-4)
    # the certificate is the exact distance, so PGD cannot break it ...
    for name in ("eq5", "eq7[v]", "eq7[a]"):
        check = cert.get(name).honesty
        assert check.certified == int((exact5 > 0).sum()) and check.violations == 0
    # ... the radius is tight: a step of (1 + 1e-3)·r(x) towards the closest boundary flips every certified sample
    r = cert.get("eq5").radius
    ok = r > 0
    j = (margins / full[y].clamp_min(1e-12)).scatter(1, y[:, None], math.inf).argmin(1)
    d = w[y] - w[j]
    step = -(1 + 1e-3) * (margins.gather(1, j[:, None]) / d.pow(2).sum(1, keepdim=True)) * d
    moved = {"v": test.inputs["v"] + step[:, :6], "a": test.inputs["a"] + step[:, 6:]}
    with torch.no_grad():
        flipped = model(moved).logits.argmax(1) != y
    assert flipped[ok].all() and torch.allclose(step.norm(dim=1)[ok], (1 + 1e-3) * r[ok], rtol=1e-4)
    # ... and an inflated claim is caught by the check
    assert honesty_check(model, test, r * 3, ["v", "a"], flat_specs(DIMS)).violations > 0
    # certified accuracy: correct and r ≥ ε, over all samples
    assert cert.get("eq5").certified_accuracy(0.0) == pytest.approx(float((h.argmax(1) == y).float().mean()))
    assert cert.get("eq5").certified_accuracy(0.3) == pytest.approx(float((exact5 >= 0.3).float().mean()))


def test_linear_concat_vulnerability_indicator_and_frames():
    model = linear_model(DIMS, K)
    train, test = split(30, 3), split(30, 4)
    cert = certify(model, train, test, flat_specs(DIMS), honesty_steps=0)
    vul = cert.vulnerability().set_index("modality")
    idx = (cert.labels, cert.runner_up)
    for m in DIMS:
        assert vul.loc[m, "eta_local"] == pytest.approx(float(cert.pair_eta[m][idx].mean()), rel=1e-4)
    ratio = vul.loc["a", "eta_global"] / vul.loc["v", "eta_global"]
    assert vul.loc["a", "eta_global_ratio"] == pytest.approx(ratio)
    pairs = cert.pairs_frame()
    assert len(pairs) == len(DIMS) * K * (K - 1) and (pairs["certificate_label"] == EMPIRICAL).all()
    assert pairs["eta_eq10"].isna().all()
    summary = cert.summary_frame([0.0, 0.5])
    assert set(summary["certificate"]) == {"eq5", "eq7[v]", "eq7[a]"} and set(summary["variant"]) == {
        "min_j",
        "runner_up",
    }
    text = cert.format([0.0, 0.5])
    assert EMPIRICAL in text and "η^(a)/η^(v)" in text
    assert len(cert.samples_frame()) == 30


def test_linear_crmt_eq10_closed_form_and_official_tau_overclaims():
    model = linear_model(DIMS, K, head="crmt")
    train, test = split(40, 5), split(48, 6)
    specs = flat_specs(DIMS)
    cert = certify(model, train, test, specs, honesty_steps=20)
    head = model.head
    a = {m: head.integration[m].detach() for m in DIMS}
    wt = {m: w.detach() for m, w in head.normalised_blocks().items()}
    tau = {m: wt[m].norm(dim=1) for m in DIMS}  # centred unit rows: 1
    for m in DIMS:
        assert torch.allclose(cert.tau_estimated[m], tau[m], atol=1e-5)
        s = a[m][:, None] * wt[m]  # the modality's contribution a_k z_k has gradient a_k W̃_k
        assert torch.allclose(cert.pair_eta[m], (s[:, None] - s[None]).norm(dim=2), atol=1e-4)
    _h, y, margins = hand_margins(model, test)
    eq10 = {m: a[m].abs()[:, None] * tau[m][:, None] + a[m].abs()[None] * tau[m][None] for m in DIMS}
    den = torch.sqrt(sum(e**2 for e in eq10.values()))
    assert torch.allclose(cert.get("eq10").radius, min_over_j(margins / den[y], y), atol=1e-4)
    assert torch.allclose(cert.get("eq10[a]").radius, min_over_j(margins / eq10["a"][y], y), atol=1e-4)
    # Eq. 10 uses the triangle inequality: never above the pair-constant radius, and honest
    pos = cert.get("eq5").radius > 0
    assert (cert.get("eq10").radius[pos] <= cert.get("eq5").radius[pos] + 1e-5).all()
    for name in ("eq10", "eq10[v]", "eq10[a]", "eq5"):
        assert cert.get(name).honesty.violations == 0
    # the official get_lip differs (audio τ ≡ 0, visual accumulated over classes) and overclaims
    batches = [(train.inputs, train.labels)]
    official = estimate_lipschitz(model, batches, ["v", "a"], mode="official")
    intended = estimate_lipschitz(model, batches, ["v", "a"])
    assert torch.equal(official["a"], torch.zeros(K)) and not torch.allclose(official["v"], intended["v"])
    assert torch.allclose(intended["v"], cert.tau_estimated["v"], atol=1e-5)
    bad = certify(model, train, test, specs, tau=official, tau_source="official get_lip", honesty_steps=5)
    assert torch.isinf(bad.get("eq10[a]").radius[bad.get("eq10[a]").radius > 0]).all()
    assert bad.get("eq10[a]").honesty.violations > 0
    assert "official get_lip" in bad.format()


class TinyEncoder(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, 5), nn.Tanh(), nn.Linear(5, 4))

    def forward(self, x):
        return self.net(x)


def test_batched_gram_matches_per_sample_jacobian():
    torch.manual_seed(0)
    model = MultiModalNet({"v": TinyEncoder(6), "a": TinyEncoder(4)}, ConcatHead(["v", "a"], [4, 4], K)).eval()
    batch = {m: torch.randn(5, d) for m, d in DIMS.items()}
    grams, _ = unimodal_grams(model, batch, ["v", "a"], class_chunk=2)  # chunks of 2 over K = 3
    for m in DIMS:
        for b in range(5):

            def f(x, m=m, b=b):
                inputs = {k: v[b : b + 1] for k, v in batch.items()}
                inputs[m] = x[None]
                return model(inputs).unimodal[m][0]

            jac = torch.autograd.functional.jacobian(f, batch[m][b])
            assert torch.allclose(grams[m][b], jac @ jac.t(), atol=1e-5)


def test_certify_rejects_an_unknown_head():
    model = MultiModalNet({"v": nn.Flatten(), "a": nn.Flatten()}, nn.Identity())
    with pytest.raises(ValueError, match="ConcatHead or CRMTHead"):
        certify(model, split(4, 0), split(4, 1), flat_specs(DIMS))


SMALL = ["--dataset-set", "n_train=256", "--dataset-set", "n_test=64", "--no-progress"]


def test_rerunning_a_model_replaces_its_rows(tmp_path):
    path = tmp_path / "eta_pairs.csv"
    ident = {"dataset": "synthav", "defense": "jt", "seed": 0, "checkpoint_sha256": "ab"}
    replace_model_rows(path, pd.DataFrame([{**ident, "value": 1}, {**ident, "value": 2}]))
    replace_model_rows(path, pd.DataFrame([{**ident, "seed": 1, "value": 3}]))
    replace_model_rows(path, pd.DataFrame([{**ident, "value": 4}]))
    frame = pd.read_csv(path)
    assert sorted(zip(frame["seed"], frame["value"])) == [(0, 4), (1, 3)]


@pytest.mark.slow
def test_certify_cli_on_synthav(tmp_path, capsys):
    args = [
        "certify",
        "--defense",
        "crmt_jt",
        "--root",
        str(tmp_path),
        "--set",
        "epochs=1",
        "--set",
        "step2_epochs=1",
        "--radius",
        "0,0.1",
        "--honesty-steps",
        "2",
        "--train-samples",
        "64",
    ] + SMALL
    assert main(args) == 0
    out = capsys.readouterr().out
    assert EMPIRICAL in out and "honesty check" in out and "checkpoint (lipschitz.<m>" in out
    certified = pd.read_csv(tmp_path / "certified.csv")
    assert {"eq5", "eq10", "eq10[a]", "eq7[v]"} <= set(certified["certificate"])
    assert set(certified["radius"]) == {0.0, 0.1} and (certified["certificate_label"] == EMPIRICAL).all()
    c = certified.dropna(subset=["honesty_certified"])
    assert (
        len(c)
        and (
            (c["honesty_violations"] >= 0)
            & (c["honesty_violations"] <= c["honesty_certified"])
            & (c["honesty_certified"] <= c["n"])
        ).all()
    )
    some = c[c["honesty_certified"] > 0]
    assert (
        len(some)
        and ((some["honesty_fraction"] - some["honesty_violations"] / some["honesty_certified"]).abs() < 1e-9).all()
    )
    for _, rows in certified.groupby("certificate"):  # certified accuracy cannot grow with the radius
        acc = rows.sort_values("radius")["certified_accuracy"].to_numpy()
        assert (acc[1:] <= acc[:-1] + 1e-12).all()
    pairs = pd.read_csv(tmp_path / "eta_pairs.csv")
    assert len(pairs) == 2 * 10 * 9 and set(pairs["defense"]) == {"crmt_jt"} and pairs["eta_eq10"].notna().all()
    assert len(list((tmp_path / "certify").rglob("certificate.md"))) == 1
