"""Randomized-smoothing certificates per modality (Cohen, Rosenfeld & Kolter, ICML 2019): **sound**
(probabilistic) ℓ2 certificates for any multi-modal model, MMT and a user's own model included.

The smoothed classifier of a base classifier f (anything mapping a batch dict to logits) with noise
on the modalities M, the others held fixed, is

    g(x) = argmax_c P(f(x + δ) = c),   δ^(m) ~ N(0, σ² I) for m ∈ M,  δ^(m) = 0 otherwise.

If the top class has probability p_A ≥ p̲_A > ½ then g is constant on the ℓ2 ball of radius
σ·Φ⁻¹(p̲_A) over the concatenation of the perturbations of the modalities in M (Cohen et al.,
Theorem 1 applied to the M coordinates; the fixed modalities are part of f). With M = {m} that is a
certificate against attacks on modality m alone; with M = all modalities, against the paper's joint
attack. Nothing about f is assumed: no Lipschitz estimate, no architecture (MMT's joint layers are fine).

``CERTIFY`` (Cohen et al., Algorithm 1): n0 noisy copies choose ĉ_A; n fresh copies count it; the
one-sided Clopper–Pearson bound p̲_A = Beta⁻¹(α; n_A, n − n_A + 1) holds with probability ≥ 1 − α;
the sample **abstains** when p̲_A ≤ ½, else it gets (ĉ_A, σ·Φ⁻¹(p̲_A)). So each returned radius is
wrong with probability at most α over the noise draws: the certificate is "sound (probabilistic, 1 − α)".

The largest radius CERTIFY can return is σ·Φ⁻¹(α^{1/n}) (:func:`largest_certifiable_radius`: every one of the
n copies votes for ĉ_A, where the bound is Beta⁻¹(α; n, 1) = α^{1/n}); 0.616 for σ 0.25, n 1000, α 0.001. A
certified accuracy at a larger radius is 0 by construction, whatever the model, so radius grids are clipped
to it with a warning naming it (:func:`capped_radii`, used by :meth:`SmoothedCertificate.summary_frame`,
:meth:`SmoothedCertificate.format` and ``mmr.smooth_certify``).

The valid box: the noise is **not clamped** to a modality's valid box (ImageNet-normalised frames).
Clamping would change the smoothed classifier (it would no longer be a Gaussian convolution and the
theorem would not apply); the certificate then covers the whole ℓ2 ball, inside and outside the box,
which contains every box-valid perturbation of that size. Train with the same unclamped noise
(``--set noise_sigma_a=σ``, ``defenses.base.TrainConfig.noise_sigma``) so the smoothed model is accurate.

Noise is drawn on the model's device from one seeded ``torch.Generator`` per (test sample, phase),
so a result depends on the seed and the sample's index, not on which other samples are certified;
``batch`` noisy copies go through the model at once (several test samples share a forward pass
when n0 or n is smaller than ``batch``).

The honesty check of a smoothed certificate (:func:`smoothed_honesty_check`) attacks the smoothed
prediction SmoothAdv-style (Salman et al. 2019): ℓ2-PGD on the base model inside the certified
radius, maximising the loss of the Monte-Carlo soft classifier averaged over ``n_attack`` noise
draws; then Cohen's ``PREDICT`` (binomial test at level α) decides the smoothed class at the attack
point. A correct certificate is broken at most at rate α (plus PREDICT's own error, at most α).

A base classifier whose logits are NaN or inf on any noisy copy of a sample is refused (:func:`sample_counts`
raises): its argmax would be class 0, "certified" with an arbitrary radius.

The Monte-Carlo machinery (noise streams, counts, the bound) is in ``certify.smoothing_noise`` and the honesty
check in ``certify.smoothing_check``; this module holds the settings, CERTIFY and its result, and re-exports both.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor

from ..contracts import ALL_MODALITIES, Batch
from ..progress import progress_bar
from .smoothing_check import SmoothedHonesty, smooth_predict, smoothed_honesty_check
from .smoothing_noise import (
    ABSTAIN,
    ESTIMATE,
    SELECT,
    certified_radius,
    clopper_pearson_lower,
    evaluating,
    fixed_feature_function,
    generators,
    group_size,
    logits_function,
    sample_counts,
)

SOUND = "sound (probabilistic, 1-alpha)"
METHOD = "smoothing"


@dataclass(frozen=True)
class SmoothingConfig:
    """CERTIFY's settings: noise σ, n0 selection and n estimation samples, error level α, noisy copies per forward."""

    sigma: float = 0.25
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    batch: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"smoothing: sigma must be a finite number > 0, got {self.sigma!r}")
        if self.n0 < 1 or self.n < 1 or self.batch < 1:
            raise ValueError(f"smoothing: n0, n and batch must be >= 1, got {self.n0}, {self.n}, {self.batch}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"smoothing: alpha must be in (0, 1), got {self.alpha!r}")

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha

    @property
    def largest_radius(self) -> float:
        """σ·Φ⁻¹(α^{1/n}) for these settings (:func:`largest_certifiable_radius`)."""
        return largest_certifiable_radius(self.sigma, self.n, self.alpha)

    @property
    def default_radii(self) -> tuple[float, ...]:
        """The radius grid when none is given: 0, σ, 2σ, … up to :attr:`largest_radius` (radius kσ needs
        p̲_A ≥ Φ(k))."""
        cap = self.largest_radius
        return tuple(k * self.sigma for k in range(int(cap / self.sigma) + 1) if k * self.sigma <= cap)


def largest_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """σ·Φ⁻¹(α^{1/n}): the largest radius CERTIFY returns with noise σ, n estimation copies and level α, reached
    when all n copies vote for the class (the one-sided Clopper–Pearson bound is then α^{1/n}); 0 when
    α^{1/n} ≤ ½, where every sample abstains. No model is certified beyond it."""
    if isinstance(sigma, bool) or not (isinstance(sigma, Real) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"smoothing: sigma must be a finite number > 0, got {sigma!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"smoothing: n must be an integer >= 1, got {n!r}")
    if isinstance(alpha, bool) or not (isinstance(alpha, Real) and 0 < alpha < 1):
        raise ValueError(f"smoothing: alpha must be in (0, 1), got {alpha!r}")
    p = float(alpha) ** (1.0 / int(n))
    return float(sigma * stats.norm.ppf(p)) if p > 0.5 else 0.0


def capped_radii(radii: Sequence[float], sigma: float, n: int, alpha: float) -> tuple[float, ...]:
    """``radii`` with every one above :func:`largest_certifiable_radius` replaced by that cap (listed once, in the
    place of the first), and a ``UserWarning`` naming the cap: certified accuracy there is 0 by construction."""
    cap = largest_certifiable_radius(sigma, n, alpha)
    values = [float(r) for r in radii]
    above = [r for r in values if r > cap]
    if not above:
        return tuple(values)
    warnings.warn(
        f"smoothing: radii {', '.join(f'{r:g}' for r in above)} are above the largest certifiable radius "
        f"σ·Φ⁻¹(α^(1/n)) = {cap:.4g} (σ {sigma:g}, n {n}, α {alpha:g}) and are clipped to it; raise n or σ "
        "to certify larger radii",
        UserWarning,
        stacklevel=3,
    )
    return tuple(dict.fromkeys(min(r, cap) for r in values))


def _label(modalities: Sequence[str], all_names: Sequence[str]) -> str:
    return ALL_MODALITIES if len(modalities) > 1 and set(modalities) == set(all_names) else "+".join(modalities)


@dataclass
class SmoothedCertificate:
    """CERTIFY's result for one noise set over a test split (tensors on the CPU)."""

    modalities: tuple[str, ...]
    all_modalities: tuple[str, ...]
    config: SmoothingConfig
    labels: Tensor  # (N,)
    predictions: Tensor  # (N,) ĉ_A, or ABSTAIN (−1)
    count_a: Tensor  # (N,) n_A among the n estimation samples
    p_lower: Tensor  # (N,) float64 Clopper–Pearson lower bound of p_A
    radius: Tensor  # (N,) float64 σ·Φ⁻¹(p̲_A) of the predicted class; NaN when abstaining
    honesty: SmoothedHonesty | None = None
    notes: list[str] = field(default_factory=list)

    label = SOUND
    kind = SOUND

    @property
    def n(self) -> int:
        return int(self.labels.numel())

    @property
    def modality_label(self) -> str:
        return _label(self.modalities, self.all_modalities)

    @property
    def abstained(self) -> Tensor:
        return self.predictions == ABSTAIN

    @property
    def correct_radius(self) -> Tensor:
        """Radius of samples certified with the true label; 0 for abstained or wrong ones."""
        ok = (self.predictions == self.labels) & ~self.abstained
        return torch.where(ok, self.radius.nan_to_num(0.0), torch.zeros_like(self.radius))

    def certified_accuracy(self, eps: float) -> float:
        """Fraction of *all* test samples certified correct with radius ≥ ε (Cohen et al.'s certified accuracy)."""
        ok = (self.predictions == self.labels) & ~self.abstained & (self.radius.nan_to_num(-1.0) >= eps)
        return float(ok.float().mean()) if self.n else 0.0

    def median_certified(self) -> float:
        r = self.correct_radius
        pos = r[r > 0]
        return float(pos.median()) if pos.numel() else math.nan

    def summary_frame(self, eps_grid: Sequence[float]) -> pd.DataFrame:
        """Rows in certified.csv's schema (method ``smoothing``, kind ``sound (probabilistic, 1-alpha)``), one per
        radius of ``eps_grid`` clipped to the largest certifiable radius (:func:`capped_radii`)."""
        h, c = self.honesty, self.config
        eps_grid = capped_radii(eps_grid, c.sigma, c.n, c.alpha)
        rows = []
        for eps in eps_grid:
            rows.append(
                {
                    "certificate": f"smoothing[{self.modality_label}]",
                    "equation": "randomized smoothing",
                    "variant": f"sigma={c.sigma:g}",
                    "modality": self.modality_label,
                    "radius": float(eps),
                    "n": self.n,
                    "certified_accuracy": self.certified_accuracy(float(eps)),
                    "median_certified_radius": self.median_certified(),
                    "honesty_attack": h.attack if h else "",
                    "honesty_certified": h.checked if h else -1,
                    "honesty_violations": h.violations if h else -1,
                    "honesty_fraction": h.fraction if h else math.nan,
                    "honesty_counts": "lower bound (>= violations found)" if h else "",
                    "tau_source": "",
                    "certificate_label": SOUND,
                    "method": METHOD,
                    "kind": SOUND,
                    "sigma": c.sigma,
                    "n0": c.n0,
                    "n_noise": c.n,
                    "alpha": c.alpha,
                    "confidence": c.confidence,
                    "abstained": float(self.abstained.float().mean()) if self.n else 0.0,
                }
            )
        return pd.DataFrame(rows)

    def samples_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "y": self.labels.numpy(),
                "prediction": self.predictions.numpy(),
                "count_a": self.count_a.numpy(),
                "p_a_lower": self.p_lower.numpy(),
                "radius": self.radius.numpy(),
                "certificate_label": SOUND,
            }
        )

    def format(self, eps_grid: Sequence[float]) -> str:
        c = self.config
        eps_grid = capped_radii(eps_grid, c.sigma, c.n, c.alpha)
        fixed = [m for m in self.all_modalities if m not in self.modalities]
        held = f"; {', '.join(fixed)} fixed" if fixed else ""
        joint = "the concatenation of " if len(self.modalities) > 1 else ""
        lines = [
            f"randomized smoothing — {SOUND}: each radius holds with probability ≥ {c.confidence:g} "
            f"(alpha = {c.alpha:g})",
            f"noise σ = {c.sigma:g} on {', '.join(self.modalities)}{held}, unclamped; n0 = {c.n0}, n = {c.n}; "
            f"{self.n} test samples, {int(self.abstained.sum())} abstained",
            f"certified against: ℓ2 perturbations of {joint}{' + '.join(self.modalities)}",
            f"largest certifiable radius σ·Φ⁻¹(α^(1/n)) = {c.largest_radius:.4g}: no sample is certified beyond "
            "it (larger radii are clipped to it)",
        ]
        lines += [f"note: {n}" for n in self.notes]
        header = (
            "| certificate | kind | median r (certified) | "
            + " | ".join(f"cert. acc @ {e:g}" for e in eps_grid)
            + " | honesty: violations found / checked |"
        )
        accs = " | ".join(f"{self.certified_accuracy(float(e)):.3f}" for e in eps_grid)
        h = self.honesty.short() if self.honesty else "not run"
        lines += [
            "",
            header,
            "|" + "---|" * (4 + len(eps_grid)),
            f"| smoothing[{self.modality_label}] σ={c.sigma:g} | {SOUND} | {self.median_certified():.4g} | "
            f"{accs} | {h} |",
        ]
        if self.honesty:
            lines += ["", self.honesty.describe()]
        return "\n".join(lines)


def smooth_certify(
    model: Callable[[Batch], Any],
    inputs: Mapping[str, Tensor],
    labels: Tensor | None,
    modalities: Sequence[str],
    config: SmoothingConfig | None = None,
    *,
    device: torch.device | str | None = None,
    indices: Sequence[int] | None = None,
    progress: bool = False,
) -> SmoothedCertificate:
    """Cohen et al.'s CERTIFY for every sample of ``inputs`` ({modality: (N, …)}), noise on ``modalities``.

    ``model`` is any ``nn.Module`` or callable mapping a batch dict to logits or a ModelOutput (an
    ``nn.Module`` is evaluated in eval mode and its mode restored). ``labels`` (N,) may be None (no
    accuracy). ``indices`` (N,) name the samples for the noise seeds (default 0..N−1).
    """
    cfg = config or SmoothingConfig()
    names = tuple(inputs)
    unknown = [m for m in modalities if m not in names]
    if unknown or not modalities:
        raise ValueError(
            f"smoothing: unknown modality {', '.join(unknown) or repr(modalities)}; valid: "
            f"{', '.join(names)} or '{ALL_MODALITIES}'"
        )
    mods = tuple(m for m in names if m in modalities)
    first = next(iter(inputs.values()))
    dev = torch.device(device) if device is not None else first.device
    n_samples = first.shape[0]
    idx = list(range(n_samples)) if indices is None else [int(i) for i in indices]
    f = logits_function(model)
    preds, counts_a = [], []
    with evaluating(model):
        group, per = group_size(cfg.batch, min(cfg.n0, cfg.n))
        bar = progress_bar(
            total=n_samples,
            desc=f"smoothing σ={cfg.sigma:g} [{'+'.join(mods)}]",
            enabled=progress,
            leave=False,
            log_steps="sample",
        )  # without a terminal: one log line per chunk
        for start in range(0, n_samples, group):
            part = range(start, min(n_samples, start + group))
            x = {m: t[start : part.stop].to(dev) for m, t in inputs.items()}
            ids = [idx[i] for i in part]
            fx = fixed_feature_function(model, x, mods, f)
            c0 = sample_counts(
                fx, x, mods, cfg.sigma, cfg.n0, cfg.batch, generators(cfg.seed, ids, SELECT, dev), per=per
            )
            c_hat = c0.argmax(1)
            c = sample_counts(
                fx, x, mods, cfg.sigma, cfg.n, cfg.batch, generators(cfg.seed, ids, ESTIMATE, dev), per=per
            )
            preds.append(c_hat.cpu())
            counts_a.append(c.gather(1, c_hat[:, None]).squeeze(1).cpu())
            bar.update(len(part))
        bar.close()
    c_hat = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    n_a = torch.cat(counts_a) if counts_a else torch.zeros(0, dtype=torch.long)
    p_lower = torch.from_numpy(clopper_pearson_lower(n_a.numpy(), cfg.n, cfg.alpha)).double()
    radius = torch.from_numpy(certified_radius(p_lower.numpy(), cfg.sigma)).double()
    abstain = ~(p_lower > 0.5)
    predictions = torch.where(abstain, torch.full_like(c_hat, ABSTAIN), c_hat)
    y = labels.detach().cpu().long() if labels is not None else torch.full_like(c_hat, ABSTAIN - 1)
    return SmoothedCertificate(mods, names, cfg, y, predictions, n_a, p_lower, radius)


__all__ = [
    "ABSTAIN",
    "METHOD",
    "SOUND",
    "SmoothedCertificate",
    "SmoothedHonesty",
    "SmoothingConfig",
    "capped_radii",
    "certified_radius",
    "clopper_pearson_lower",
    "largest_certifiable_radius",
    "logits_function",
    "sample_counts",
    "smooth_certify",
    "smooth_predict",
    "smoothed_honesty_check",
    "fixed_feature_function",
]
