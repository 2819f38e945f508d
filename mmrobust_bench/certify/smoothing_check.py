"""The honesty check of smoothed certificates (SmoothAdv-style, Salman et al. 2019; ``certify.smoothing``): ℓ2-PGD
on the base model inside each certified radius against the Monte-Carlo soft smoothed classifier, then Cohen's
PREDICT at the attack point. Violations found are a lower bound."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor

from ..contracts import Batch, input_gradients_of, joint_l2_norm
from ..progress import progress_bar
from .smoothing_noise import (
    ABSTAIN,
    ATTACK,
    PREDICT,
    evaluating,
    fixed_feature_function,
    generators,
    group_size,
    logits_function,
    noisy_copies,
    sample_counts,
)


class Certified(Protocol):
    """What the check reads of a ``certify.smoothing.SmoothedCertificate``."""

    config: Any  # SmoothingConfig: sigma, n, alpha, batch, seed
    modalities: tuple[str, ...]
    predictions: Tensor
    radius: Tensor

    @property
    def abstained(self) -> Tensor: ...


@dataclass
class SmoothedHonesty:
    """SmoothAdv-style check of the smoothed certificates: violations found (a lower bound) among those attacked."""

    attack: str
    checked: int
    violations: int
    alpha: float

    @property
    def fraction(self) -> float:
        return self.violations / self.checked if self.checked else 0.0

    def short(self) -> str:
        return f"≥ {self.violations} / {self.checked}"

    def describe(self) -> str:
        return (
            f"smoothed honesty check ({self.attack}): ≥ {self.violations} violations found among {self.checked} "
            f"certified samples (rate {self.fraction:.2%}; a sound certificate allows about α = {self.alpha:g} "
            "per sample, plus PREDICT's own error ≤ α; counts are lower bounds)"
        )


@torch.no_grad()
def smooth_predict(
    model: Callable[[Batch], Any],
    inputs: Mapping[str, Tensor],
    modalities: Sequence[str],
    *,
    sigma: float,
    n: int,
    alpha: float,
    batch: int = 1000,
    seed: int = 0,
    indices: Sequence[int] | None = None,
    phase: int = PREDICT,
) -> Tensor:
    """Cohen et al.'s PREDICT: the top class of n noisy copies when a two-sided binomial test of its count
    against the runner-up's gives p ≤ α, else ABSTAIN. Returns (N,) classes on the CPU."""
    f = logits_function(model)
    names = tuple(inputs)
    mods = tuple(m for m in names if m in modalities)
    first = next(iter(inputs.values()))
    n_samples = first.shape[0]
    idx = list(range(n_samples)) if indices is None else [int(i) for i in indices]
    group, per = group_size(batch, n)
    out: list[int] = []
    with evaluating(model):
        _predict_groups(model, f, inputs, mods, sigma, n, alpha, batch, seed, idx, phase, group, per, out)
    return torch.tensor(out, dtype=torch.long)


def _predict_groups(model, f, inputs, mods, sigma, n, alpha, batch, seed, idx, phase, group, per, out) -> None:
    first = next(iter(inputs.values()))
    n_samples = first.shape[0]
    for start in range(0, n_samples, group):
        stop = min(n_samples, start + group)
        x = {m: t[start:stop] for m, t in inputs.items()}
        counts = sample_counts(
            fixed_feature_function(model, x, mods, f),
            x,
            mods,
            sigma,
            n,
            batch,
            generators(seed, idx[start:stop], phase, first.device),
            per=per,
        )
        top2 = counts.topk(min(2, counts.shape[1]), dim=1)
        for row in range(stop - start):
            n_a = int(top2.values[row, 0])
            n_b = int(top2.values[row, 1]) if counts.shape[1] > 1 else 0
            p = stats.binomtest(n_a, n_a + n_b, 0.5).pvalue if n_a + n_b > 0 else 1.0
            out.append(int(top2.indices[row, 0]) if p <= alpha else ABSTAIN)


def _smoothed_attack(
    f: Callable[[Batch], Tensor],
    x: Batch,
    cls: Tensor,
    modalities: Sequence[str],
    eps: Tensor,
    *,
    sigma: float,
    n_attack: int,
    steps: int,
    gens: Sequence[torch.Generator],
) -> Batch:
    """ℓ2-PGD (no clamp: the certificate covers the whole ball) maximising −log of the Monte-Carlo soft smoothed
    probability of ``cls``, E_δ softmax(f(x + δ))_cls over ``n_attack`` fresh draws per step (SmoothAdv)."""
    g = cls.shape[0]
    delta = {m: torch.zeros_like(x[m], dtype=torch.float32) for m in modalities}
    shape = lambda t: (-1,) + (1,) * (t.dim() - 1)  # noqa: E731
    ratio = 2.5 / max(steps, 1)
    for _ in range(steps):
        adv = {m: (x[m] + delta[m].to(x[m].dtype)).detach().requires_grad_() if m in modalities else x[m] for m in x}
        noisy = noisy_copies(adv, modalities, sigma, n_attack, gens)
        probs = F.softmax(f(noisy).float(), dim=1).view(g, n_attack, -1).mean(1)
        loss = -torch.log(probs.gather(1, cls[:, None]).squeeze(1).clamp_min(1e-12))
        raw = input_gradients_of(loss.sum(), [adv[m] for m in modalities])
        grads = {m: gr.float() for m, gr in zip(modalities, raw)}
        gnorm = joint_l2_norm(grads, modalities) + 1e-12
        moved = {m: delta[m] + (ratio * eps / gnorm).view(shape(gr)) * gr for m, gr in grads.items()}
        factor = torch.clamp(eps / (joint_l2_norm(moved, modalities) + 1e-12), max=1.0)
        delta = {m: d * factor.view(shape(d)) for m, d in moved.items()}
    return {m: (x[m] + delta[m].to(x[m].dtype) if m in modalities else x[m]).detach() for m in x}


def smoothed_honesty_check(
    model: Callable[[Batch], Any],
    inputs: Mapping[str, Tensor],
    certificate: Certified,
    *,
    n_attack: int = 16,
    steps: int = 20,
    n_predict: int | None = None,
    slack: float = 1e-3,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    max_samples: int = -1,
    progress: bool = False,
) -> SmoothedHonesty:
    """Attack every non-abstained sample of ``certificate`` inside (1 − slack)·its radius and count those
    whose smoothed prediction (PREDICT at level α with ``n_predict`` copies, default the certificate's n)
    is another class than the certified one; the count is a lower bound. ``max_samples`` > 0 checks only
    that many (the first ones)."""
    cfg = certificate.config
    f = logits_function(model)
    mods = certificate.modalities
    ok = torch.nonzero(~certificate.abstained).flatten()
    if max_samples > 0:
        ok = ok[:max_samples]
    first = next(iter(inputs.values()))
    dev = torch.device(device) if device is not None else first.device
    violations = 0
    n_pred = n_predict or cfg.n
    with evaluating(model):
        bar = progress_bar(
            total=int(ok.numel()), desc="smoothed honesty", enabled=progress, leave=False, log_steps="sample"
        )
        for start in range(0, ok.numel(), batch_size):
            part = ok[start : start + batch_size]
            x = {m: t[part].to(dev) for m, t in inputs.items()}
            cls = certificate.predictions[part].to(dev)
            eps = (certificate.radius[part].float() * (1 - slack)).to(dev)
            ids = part.tolist()
            # the attack moves only the noised modalities: the others' features are computed once per sample
            adv = _smoothed_attack(
                fixed_feature_function(model, x, mods, f),
                x,
                cls,
                mods,
                eps,
                sigma=cfg.sigma,
                n_attack=n_attack,
                steps=steps,
                gens=generators(cfg.seed, ids, ATTACK, dev),
            )
            pred = smooth_predict(
                model,
                adv,
                mods,
                sigma=cfg.sigma,
                n=n_pred,
                alpha=cfg.alpha,
                batch=cfg.batch,
                seed=cfg.seed,
                indices=ids,
            )
            violations += int(((pred != ABSTAIN) & (pred != cls.cpu())).sum())
            bar.update(len(ids))
        bar.close()
    attack = (
        f"SmoothAdv ℓ2-PGD (steps={steps}, n_attack={n_attack}) on the base model inside (1−{slack:g})·r, "
        f"then PREDICT (n={n_pred}, alpha={cfg.alpha:g})"
    )
    return SmoothedHonesty(attack, int(ok.numel()), violations, cfg.alpha)


__all__ = ["SmoothedHonesty", "smooth_predict", "smoothed_honesty_check"]
