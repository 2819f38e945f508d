"""Helpers shared by several test modules: tiny seeded models and specs, the attack suite's small model and
invariants, fixture result rows for the reports, and a headless browser. Tests import them from here; no test
imports another test module or conftest (conftest keeps only fixtures and hooks)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile

import pandas as pd
import pytest
import torch
from torch import nn

from mmrobust_bench.bench.results import COLUMNS
from mmrobust_bench.contracts import ModalitySpec, ModelOutput, ThreatModel, joint_l2_norm
from mmrobust_bench.models import ConcatHead, CRMTHead, MultiModalNet

# --------------------------------------------------------------------------- tiny closed-form models


def linear_model(dims: dict[str, int], num_classes: int, head: str = "concat", seed: int = 0) -> MultiModalNet:
    """Identity encoders (flatten) + a fusion head: every quantity has a closed form."""
    torch.manual_seed(seed)
    names = list(dims)
    encoders: dict[str, nn.Module] = {m: nn.Flatten() for m in names}
    fusion: nn.Module
    if head == "concat":
        fusion = ConcatHead(names, [dims[m] for m in names], num_classes)
    else:
        fusion = CRMTHead(names, [dims[m] for m in names], num_classes)
        with torch.no_grad():
            for m in names:
                fusion.integration[m].uniform_(0.5, 2.0)
    return MultiModalNet(encoders, fusion).eval()


def flat_specs(dims: dict[str, int]) -> tuple[ModalitySpec, ...]:
    """One unbounded flat spec per modality, in the order of ``dims``."""
    return tuple(ModalitySpec(m, (d,)) for m, d in dims.items())


# --------------------------------------------------------------------------- the attack suite's model and checks

SPECS = (
    ModalitySpec("v", (3, 4, 4), (0.0, -0.5, 0.0), (1.0, 0.5, 1.0)),
    ModalitySpec("a", (1, 6, 5)),
)
SPEC = {s.name: s for s in SPECS}
CLASSES = 4


class ReluNet(nn.Module):
    """Two small ReLU MLPs, concatenated, a linear head: unbounded features, so a large enough perturbation
    of either modality can reach every class."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.enc = nn.ModuleDict(
                {
                    "v": nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU()),
                    "a": nn.Sequential(nn.Flatten(), nn.Linear(30, 16), nn.ReLU()),
                }
            )
            self.head = nn.Linear(32, CLASSES)

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        return ModelOutput(self.head(torch.cat([self.enc[m](batch[m]) for m in ("v", "a")], 1)))


def make_batch(n: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` seeded inputs inside SPECS' boxes (video's middle channel sits in [-0.5, 0.5])."""
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(n, 3, 4, 4, generator=g)
    v[:, 1] -= 0.5
    return {"v": v, "a": torch.randn(n, 1, 6, 5, generator=g)}


def assert_invariants(
    batch: dict[str, torch.Tensor],
    adv: dict[str, torch.Tensor],
    threat: ThreatModel,
    eps: float,
    bounded: bool = True,
) -> None:
    """The attack contract: within ε (when bounded), untouched outside the threat, inside the box, same layout."""
    if bounded:
        delta = {m: (adv[m] - batch[m]).double() for m in threat.modalities}
        if threat.norm == "l2":
            assert bool((joint_l2_norm(delta, threat.modalities) <= eps * (1 + 1e-5) + 1e-7).all())
        else:
            # + 1e-6: clean ± ε is rounded to float32, one ulp of the clean value (|x| ≲ 4) away from exact
            assert all(float(d.abs().max()) <= eps * (1 + 1e-5) + 1e-6 for d in delta.values())
    for m, x in batch.items():
        if m not in threat.modalities:
            assert torch.equal(adv[m], x)
        assert torch.equal(SPEC[m].clamp(adv[m]), adv[m])
        assert (adv[m].dtype, adv[m].device, adv[m].shape) == (x.dtype, x.device, x.shape)


# Small settings by option name, applied where an attack's constructor takes them, so that every attack
# runs once in well under a second on the tiny model.
TORCHATTACKS_SMALL = {
    "steps": 2,
    "max_iterations": 10,
    "n_queries": 20,
    "nb_iter": 1,
    "nb_sample": 8,
    "n_restarts": 1,
    "binary_search_steps": 2,
    "N": 2,
    "noise_batch_size": 2,
    "eot_iter": 1,
}
ART_SMALL = {
    "max_iter": 3,
    "nb_random_init": 1,
    "num_random_init": 1,
    "binary_search_steps": 1,
    "max_eval": 20,
    "init_eval": 5,
    "init_size": 20,
    "num_trial": 3,
    "sample_size": 3,
    "nb_restarts": 1,
    "max_halving": 2,
    "max_doubling": 2,
    "initial_const": 1.0,
    "largest_const": 2.0,
}

# The Carlini-Wagner attacks have no budget, so the adapter hands ART the true boxes at scale 1 (as on a
# single-input model); in tanh space of a [0, 1] box three iterations need a larger constant or step to flip.
ART_TEST_OVERRIDES = {
    "CarliniL0Method": {"initial_const": 10.0},
    "CarliniL2Method": {"initial_const": 10.0},
    "CarliniLInfMethod": {"learning_rate": 0.1},
}


# --------------------------------------------------------------------------- fixture result rows for the reports

PGD = "pgd_l2(steps=4, step=eps*0.3333)"
LABELS = [
    "jt",
    "gb",
    "mmat",
    "crmt_jt",
    "crmt_at",
    "crmt_jt_orth_only",
    "crmt_jt_step1_only",
    "crmt_jt_step2_only",
    "mmt",
    "crmt_mmt",
]


def accuracy(label: str, attack: str, modality: str, eps: float, seed: int) -> float:
    """A deterministic, plausible accuracy: robust defenses lose less, audio is the fragile modality."""
    base = 0.8 + 0.01 * LABELS.index(label)
    robust = 0.3 if label.startswith("crmt") else 0.6
    fragility = {"v": 0.2, "a": 0.5, "all": 0.6, "none": 0.0}[modality]
    if attack == "missing":
        return base - fragility / 2 + 0.01 * seed
    e = 0.0 if math.isnan(eps) else eps
    return max(0.0, base - robust * fragility * e) + 0.01 * seed


def fixture_rows(dataset: str = "synthav") -> pd.DataFrame:
    """results.csv rows of every label × seeds 0–2 × clean, FGM, PGD-ℓ2 and missing cells (accuracy above)."""
    cells = [("clean", "clean", "none", 0.0), ("fgm", "fgm", "all", 0.5), ("pgd_l2", PGD, "all", 0.5)]
    cells += [(a, c, m, 1.0) for a, c in (("fgm", "fgm"), ("pgd_l2", PGD)) for m in ("v", "a")]
    cells += [("pgd_l2", PGD, m, e) for m in ("v", "a") for e in (0.25, 0.5, 2.0)]
    cells += [("missing", "missing(fill=zero)", m, math.nan) for m in ("v", "a")]
    rows = []
    for label in LABELS:
        for seed in (0, 1, 2):
            for attack, config, modality, eps in cells:
                rows.append(
                    {
                        "dataset": dataset,
                        "defense": label,
                        "seed": seed,
                        "checkpoint_sha256": f"{label}{seed}",
                        "config_hash": "c",
                        "attack": attack,
                        "attack_config": config,
                        "library": "native",
                        "library_version": "0.1.0",
                        "modality": modality,
                        "norm": "l2",
                        "eps": eps,
                        "n": 64,
                        "accuracy": accuracy(label, attack, modality, eps, seed),
                        "wall_seconds": 0.1,
                        "device": "cpu",
                        "suite_version": "0.1.0",
                        "timestamp": "2024-01-01T00:00:00+00:00",
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def fixture_eta(k: int = 4) -> pd.DataFrame:
    """eta_pairs.csv rows for jt, mmat and crmt_jt: audio's η is ``audio_scale`` times video's."""
    rows = []
    for label, audio_scale in (("jt", 3.0), ("mmat", 2.5), ("crmt_jt", 1.2)):
        for seed in (0, 1):
            for m in ("v", "a"):
                for y in range(k):
                    for j in range(k):
                        if j != y:
                            eta = (audio_scale if m == "a" else 1.0) * (1 + 0.1 * y + 0.05 * j)
                            rows.append(
                                {
                                    "dataset": "synthav",
                                    "defense": label,
                                    "seed": seed,
                                    "checkpoint_sha256": f"{label}{seed}",
                                    "modality": m,
                                    "class_y": y,
                                    "class_j": j,
                                    "eta_pair": eta,
                                    "eta_eq10": math.nan,
                                    "eta_local_mean": eta,
                                }
                            )
    return pd.DataFrame(rows)


def mixed_jt_rows() -> pd.DataFrame:
    """JT under one label, trained with epochs=1 (config aaaa…, seeds 0 and 1) and epochs=3 (bbbb…, seed 0)."""
    rows = fixture_rows()
    jt = rows[rows["defense"] == "jt"]
    short = jt[jt["seed"] < 2].assign(config_hash="aaaaaaaaaaaa", accuracy=0.18)
    short["checkpoint_sha256"] = "sha-short-" + short["seed"].astype(str)
    long = jt[jt["seed"] == 0].assign(config_hash="bbbbbbbbbbbb", accuracy=0.785, checkpoint_sha256="sha-long-0")
    return pd.concat([rows[rows["defense"] != "jt"], short, long], ignore_index=True)


SOUND = "sound (probabilistic, 1-alpha)"
CERTIFIED_LABELS = ("jt", "gb", "crmt_jt", "crmt_at", "mmt")


def certified_accuracy(method: str, label: str, modality: str, radius: float, seed: int) -> float:
    """A deterministic certified accuracy: smoothing 0.8 − 0.5 r, empirical 0.9 − 0.4 r, lower per label."""
    i = CERTIFIED_LABELS.index(label) + {"v": 0, "a": 1, "all": 2}[modality] * 10
    return (0.8 - 0.5 * radius if method == "smoothing" else 0.9 - 0.4 * radius) - 0.01 * i + 0.01 * seed


def fixture_certified(dataset: str = "synthav") -> pd.DataFrame:
    """certified.csv rows of 5 entries × 2 seeds × 3 modalities × radii 0, 0.25, 0.5, 1: randomized smoothing
    (σ 0.25, n 1000, α 0.001: its largest certifiable radius 0.616 leaves 1.0 out), the empirical Eq. 7 / Eq. 5
    certificate (heuristic for MMT) and a runner-up row that is not a bound."""
    rows = []
    for label in CERTIFIED_LABELS:
        for seed in (0, 1):
            common = dict(
                dataset=dataset,
                defense=label,
                defense_id=label,
                seed=seed,
                config_hash="c",
                checkpoint_sha256=f"{label}{seed}",
                n=100,
                median_certified_radius=0.5,
                honesty_certified=10,
                honesty_violations=0,
            )
            for modality, certificate, equation in (
                ("v", "eq7[v]", "Eq. 7"),
                ("a", "eq7[a]", "Eq. 7"),
                ("all", "eq5", "Eq. 5"),
            ):
                for r in (0.0, 0.25, 0.5, 1.0):
                    kind = "heuristic (modalities mix before the head)" if label == "mmt" else "empirical"
                    rows.append(
                        {
                            **common,
                            "method": "empirical",
                            "kind": kind,
                            "certificate": certificate,
                            "equation": equation,
                            "variant": "min_j",
                            "modality": modality,
                            "radius": r,
                            "certified_accuracy": certified_accuracy("empirical", label, modality, r, seed),
                        }
                    )
                    rows.append(
                        {
                            **common,
                            "method": "empirical",
                            "kind": "not a bound (runner-up only)",
                            "certificate": certificate,
                            "equation": equation,
                            "variant": "runner_up",
                            "modality": modality,
                            "radius": r,
                            "certified_accuracy": 0.99,
                        }
                    )
                    rows.append(
                        {
                            **common,
                            "method": "smoothing",
                            "kind": SOUND,
                            "certificate": f"smoothing[{modality}]",
                            "equation": "randomized smoothing",
                            "variant": "sigma=0.25",
                            "modality": modality,
                            "radius": r,
                            "sigma": 0.25,
                            "n_noise": 1000,
                            "alpha": 0.001,
                            "certified_accuracy": certified_accuracy("smoothing", label, modality, r, seed),
                        }
                    )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- a headless browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def browser() -> str:
    """The first chromium on PATH; skips the test without one (fails it when CI sets MMROBUST_REQUIRE_BROWSER=1)."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    reason = (
        "no chromium found on PATH (looked for "
        + ", ".join(BROWSERS)
        + "); install it with `apt-get install -y chromium`"
    )
    if os.environ.get("MMROBUST_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " — MMROBUST_REQUIRE_BROWSER=1 (CI) requires it")
    pytest.skip(reason)


def run_browser(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless chromium with a throw-away profile."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [browser(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def result_row(label, seed, attack, modality, eps, accuracy, *, config=None, flags="", n=1000):
    """A minimal result row of dataset "d" (the report tests' unit), ``config`` defaulting to the attack id."""
    from mmrobust_bench.bench.results import ResultRow

    return ResultRow(
        dataset="d",
        defense=label,
        label=label,
        seed=seed,
        checkpoint_sha256=f"{label}{seed}",
        config_hash="c" * 16,
        attack=attack,
        attack_config=config or attack,
        library="x",
        library_version="1",
        modality=modality,
        norm="l2",
        eps=eps,
        n=n,
        accuracy=accuracy,
        wall_seconds=0.0,
        device="cpu",
        suite_version="0",
        flags=flags,
    )
