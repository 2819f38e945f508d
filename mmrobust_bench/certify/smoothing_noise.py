"""The Monte-Carlo machinery of randomized smoothing (``certify.smoothing``): seeded noise streams per (sample,
phase), noisy copies of the noised modalities, class counts of the base classifier, and the Clopper–Pearson bound
and radius that turn counts into a certificate."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor, nn

from ..contracts import Batch
from ..models.multimodal import MultiModalNet

ABSTAIN = -1
# Phases of the noise streams: each (sample, phase) has its own generator seed.
SELECT, ESTIMATE, ATTACK, PREDICT = range(4)


def logits_function(model: Callable[[Batch], Any]) -> Callable[[Batch], Tensor]:
    """A function batch → fused logits (B, K) from an ``nn.Module`` or callable returning logits or a
    :class:`ModelOutput` (or anything with a ``.logits`` tensor)."""

    def f(batch: Batch) -> Tensor:
        out = model(batch)
        logits = out if isinstance(out, Tensor) else getattr(out, "logits", None)
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise TypeError(
                "smoothing needs a model mapping a batch dict to logits (B, K) or a ModelOutput; got "
                f"{type(out).__name__}"
            )
        return logits

    return f


def fixed_feature_function(
    model: Any, group: Batch, noised: Sequence[str], f: Callable[[Batch], Tensor]
) -> Callable[[Batch], Tensor]:
    """``f`` for the noisy copies of one group of samples, with the encoders of the modalities that carry no
    noise run once per sample instead of once per copy.

    Only for a plain :class:`~mmrobust_bench.models.MultiModalNet` (per-modality encoders, then a head on their
    features: a modality's features depend on that modality alone); any other model, including subclasses
    that replace ``encode`` or ``forward`` (MMT's joint layers, MSEFM's sparse coding), gets ``f`` unchanged.
    The noisy copies are sample-major (``noisy_copies``), so each sample's features repeat ``rows / G`` times."""
    fixed = [m for m in group if m not in noised]
    kind = type(model)
    if (
        not fixed
        or not isinstance(model, MultiModalNet)
        or kind.encode is not MultiModalNet.encode
        or kind.encode_one is not MultiModalNet.encode_one
        or kind.forward is not MultiModalNet.forward
        or kind.classify is not MultiModalNet.classify
    ):
        return f
    g = next(iter(group.values())).shape[0]
    with torch.no_grad():
        cached = {m: model.encode_one(m, group[m]) for m in fixed}

    def partial(batch: Batch) -> Tensor:
        reps = next(iter(batch.values())).shape[0] // g
        feats = {
            m: cached[m].repeat_interleave(reps, dim=0) if m in cached else model.encode_one(m, batch[m])
            for m in model.modalities
        }
        return model.classify(feats).logits

    return partial


def clopper_pearson_lower(successes: np.ndarray | int, trials: int, alpha: float) -> np.ndarray:
    """One-sided (1 − α) Clopper–Pearson lower bound on a binomial proportion: Beta⁻¹(α; k, n − k + 1), 0 at k = 0
    (equals statsmodels' ``proportion_confint(k, n, 2α, method="beta")[0]``, as Cohen et al. use)."""
    k = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = stats.beta.ppf(alpha, np.maximum(k, 1e-300), trials - k + 1)
    return np.where(k > 0, bound, 0.0)


def certified_radius(p_lower: np.ndarray | float, sigma: float) -> np.ndarray:
    """σ·Φ⁻¹(p̲_A) where p̲_A > ½; NaN where the sample abstains."""
    p = np.asarray(p_lower, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sigma * stats.norm.ppf(p)
    return np.where(p > 0.5, r, np.nan)


def noise_seed(seed: int, index: int, phase: int) -> int:
    return (int(seed) * 1_000_003 + int(index) * 4 + phase) % (2**63 - 1)


def generators(seed: int, indices: Sequence[int], phase: int, device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(noise_seed(seed, i, phase)) for i in indices]


def noisy_copies(
    inputs: Batch, modalities: Sequence[str], sigma: float, reps: int, gens: Sequence[torch.Generator]
) -> Batch:
    """Each of the G samples repeated ``reps`` times (G·reps rows, sample-major), Gaussian noise on ``modalities``."""
    out = {}
    for m, x in inputs.items():
        rep = x.repeat_interleave(reps, dim=0)
        if m in modalities:
            noise = torch.cat(
                [torch.randn((reps,) + tuple(x.shape[1:]), generator=g, device=x.device, dtype=x.dtype) for g in gens]
            )
            rep = rep + sigma * noise
        out[m] = rep
    return out


@torch.no_grad()
def sample_counts(
    f: Callable[[Batch], Tensor],
    inputs: Batch,
    modalities: Sequence[str],
    sigma: float,
    num: int,
    batch: int,
    gens: Sequence[torch.Generator],
    num_classes: int | None = None,
    per: int | None = None,
) -> Tensor:
    """(G, K) counts of f's predicted class over ``num`` noisy copies of each of the G samples in ``inputs``,
    ``per`` copies of each per forward pass (default batch // G). NaN or inf logits on any copy are an error:
    they are no prediction, and counting their argmax (class 0) would certify it."""
    g = next(iter(inputs.values())).shape[0]
    per = per or max(1, batch // g)
    counts: Tensor | None = None
    finite: Tensor | None = None  # whether every copy's logits were finite so far, read once at the end
    done = 0
    while done < num:
        reps = min(per, num - done)
        logits = f(noisy_copies(inputs, modalities, sigma, reps, gens))
        if counts is None:
            counts = torch.zeros(g, num_classes or logits.shape[1], dtype=torch.long, device=logits.device)
        ok = torch.isfinite(logits).all()
        finite = ok if finite is None else finite & ok
        counts += F.one_hot(logits.argmax(1).view(g, reps), counts.shape[1]).sum(1)
        done += reps
    assert counts is not None and finite is not None
    if not bool(finite):
        raise ValueError(
            f"smoothing: the model's logits are NaN or inf on noisy copies (σ = {sigma:g}) of {g} "
            f"samples, so it cannot be certified (a diverged training or a damaged checkpoint?); check "
            f"its weights and inputs"
        )
    return counts


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """An ``nn.Module`` in eval mode inside, its per-module modes restored after; other callables untouched."""
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    if isinstance(model, nn.Module):
        model.eval()
    try:
        yield
    finally:
        for module, flag in modes:
            module.training = flag


def group_size(batch: int, num: int) -> tuple[int, int]:
    """(test samples per forward, noisy copies of each per forward): fixed by the settings alone, so every
    sample sees the same chunks of its noise stream whichever samples it is grouped with."""
    group = max(1, batch // max(1, num))
    return group, max(1, batch // group)


__all__ = [
    "ABSTAIN",
    "SELECT",
    "ESTIMATE",
    "ATTACK",
    "PREDICT",
    "logits_function",
    "fixed_feature_function",
    "clopper_pearson_lower",
    "certified_radius",
    "noise_seed",
    "generators",
    "noisy_copies",
    "sample_counts",
    "evaluating",
    "group_size",
]
