"""Randomized-smoothing certificates of any wrapped model (:func:`smooth_certify`): sound with probability 1 − α,
a thin layer over ``certify.smoothing`` that reads the user's loader and returns tidy frames."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..bench.validate import check_count
from ..certify.smoothing import SOUND, SmoothingConfig, capped_radii, smoothed_honesty_check
from ..certify.smoothing import smooth_certify as certify_smoothed
from ..contracts import ALL_MODALITIES, ThreatModel
from .batches import batch_device, check_classes, device_batch, labels_of, num_classes, restored_modes
from .declare import WrappedModel, check_wrapped
from .estimate import ANNOUNCE_SECONDS, announce, warn_busy_cores
from .formatting import tidy_frame

log = logging.getLogger(__name__)

SMOOTHING_ROWS = ("sample", "certified_accuracy")  # the two kinds of row of SmoothingResult.to_frame
# the columns of SmoothingResult.to_frame, in order (then any others: the honesty check's)
SMOOTHING_COLUMNS = (
    "row",
    "modality",
    "sample",
    "label",
    "prediction",
    "abstained",
    "p_a_lower",
    "radius",
    "eps",
    "certified_accuracy",
    "abstained_fraction",
    "samples",
    "sigma",
    "n0",
    "n",
    "alpha",
    "kind",
)


@dataclass(frozen=True)
class SmoothingResult:
    """What :func:`smooth_certify` returns: per-sample rows and per-radius rows kept apart, so that a mean over
    ``summary`` never mixes in a sample's radius.

    ``samples``: one row per test sample (``sample``, ``label``, ``prediction`` (−1 when abstaining),
    ``abstained``, ``p_a_lower``, ``radius`` (NaN when abstaining)); ``summary``: one row per radius ``eps``
    (``certified_accuracy``, ``abstained_fraction``, ``samples`` and the honesty counts when checked); both carry
    ``modality``, ``sigma``, ``n0``, ``n``, ``alpha`` and ``kind``.

    Attributes:
        samples: one row per test sample.
        summary: one row per radius.
        largest_radius: σ·Φ⁻¹(α^{1/n}), beyond which nothing is certified
            (``certify.smoothing.largest_certifiable_radius``).
    """

    samples: pd.DataFrame
    summary: pd.DataFrame
    largest_radius: float

    def to_frame(self) -> pd.DataFrame:
        """Both in one tidy frame with a ``row`` column: ``"sample"`` rows, then ``"certified_accuracy"`` rows."""
        return tidy_frame(self.samples, self.summary, SMOOTHING_ROWS[1], SMOOTHING_COLUMNS)


def smooth_certify(
    model: WrappedModel,
    loader: Iterable[Any],
    *,
    modality: str | Sequence[str] = ALL_MODALITIES,
    sigma: float = 0.25,
    n0: int = 100,
    n: int = 1000,
    alpha: float = 0.001,
    batch: int = 1000,
    seed: int = 0,
    radii: Sequence[float] | None = None,
    order: Sequence[str] | None = None,
    label_key: str | None = None,
    device: str | torch.device | None = None,
    max_samples: int | None = None,
    n_attack: int = 0,
    attack_steps: int = 20,
    progress: bool = False,
) -> SmoothingResult:
    """Randomized-smoothing certificates (Cohen et al. 2019; ``mmrobust_bench.certify.smoothing``) of any wrapped
    model: **sound (probabilistic, 1 − α)** — each radius holds with probability ≥ 1 − ``alpha`` over the noise
    draws, whatever the model (no uni-modal scores, no Lipschitz estimate needed). Train the model with the same
    unclamped noise or the smoothed classifier abstains a lot. No radius is certified beyond σ·Φ⁻¹(α^{1/n})
    (0.62 at the defaults, 0.80 with ``n=10_000``, which costs 10× more). The loader is held in memory.

    Args:
        model: a model wrapped by :func:`~mmrobust_bench.plug.wrap`.
        loader: batches with labels, as :func:`~mmrobust_bench.plug.evaluate` takes them.
        modality: where the Gaussian noise goes: one name, ``"a,v"`` or ``"all"`` (the others held fixed).
        sigma: the noise's standard deviation.
        n0: noise draws that pick each sample's class.
        n: noise draws that bound its probability.
        alpha: the failure probability of each certificate.
        batch: noisy copies per forward pass.
        seed: the noise's seed.
        radii: the ε of the summary rows; default 0, σ, 2σ, … up to the largest certifiable radius, and given
            radii above it are clipped to it with a warning naming it.
        order: the layout of tuple batches.
        label_key: the key of the labels in dict batches.
        device: where batches go (default: the model's).
        max_samples: certify only the first this many samples (None: every sample).
        n_attack: > 0 also runs the SmoothAdv-style honesty check with this many noise draws per step
            (violations found are a lower bound) and adds its counts to the summary rows.
        attack_steps: the honesty check's PGD steps.
        progress: show progress bars.

    Counts (``n0``, ``n``, ``batch``, ``max_samples``, ``n_attack``, ``attack_steps``) and ``seed`` must be whole
    numbers, never truncated.

    Returns:
        A :class:`SmoothingResult`: ``.samples`` (one row per test sample), ``.summary`` (one row per ε of
        ``radii``: the fraction of all samples certified correct with radius ≥ ε, and the abstention rate),
        ``.largest_radius`` and ``.to_frame()`` (both in one tidy frame with a ``row`` column).
    """
    wrapped = check_wrapped(model)
    n0, n, batch = (check_count(v, name) for v, name in ((n0, "n0"), (n, "n"), (batch, "batch")))
    seed, n_attack = check_count(seed, "seed", minimum=0), check_count(n_attack, "n_attack (0 skips the check)", 0)
    attack_steps = check_count(attack_steps, "attack_steps")
    if max_samples is not None:
        max_samples = check_count(max_samples, "max_samples (None: every sample)")
    config = SmoothingConfig(sigma=float(sigma), n0=n0, n=n, alpha=float(alpha), batch=batch, seed=seed)
    radii = capped_radii(config.default_radii if radii is None else radii, config.sigma, config.n, config.alpha)
    dev = batch_device(wrapped, device)
    warn_busy_cores("smooth_certify", dev)
    inputs: dict[str, list[Tensor]] = {m: [] for m in wrapped.names}
    labels: list[Tensor] = []
    count = classes = 0
    for raw in loader:
        split, part = device_batch(wrapped, raw, order, label_key, dev)
        y = labels_of(split, None).to(dev)
        classes = classes or num_classes(wrapped, part)
        check_classes(y, classes)  # a label beyond the logits would count as a wrong prediction, silently
        for m in wrapped.names:
            inputs[m].append(part[m])
        labels.append(y)
        count += int(y.shape[0])
        if max_samples is not None and count >= max_samples:
            break
    if not labels:
        raise ValueError("the loader gave no batches")
    keep = count if max_samples is None else min(count, int(max_samples))
    x = {m: torch.cat(v)[:keep] for m, v in inputs.items()}
    y = torch.cat(labels)[:keep]
    spec = modality if isinstance(modality, str) else ",".join(modality)
    mods = ThreatModel.parse(spec, 0.0, wrapped.specs).modalities
    with restored_modes(wrapped):
        _announce_cost(wrapped, x, keep, n0 + n, batch)
        cert = certify_smoothed(wrapped, x, y, mods, config, device=dev, progress=progress)
        honesty = (
            smoothed_honesty_check(
                wrapped, x, cert, n_attack=n_attack, steps=attack_steps, device=dev, progress=progress
            )
            if n_attack > 0
            else None
        )
    common = {
        "modality": cert.modality_label,
        "sigma": config.sigma,
        "n0": config.n0,
        "n": config.n,
        "alpha": config.alpha,
        "kind": SOUND,
    }
    samples = pd.DataFrame(
        {
            "modality": cert.modality_label,
            "sample": np.arange(cert.n),
            "label": cert.labels.numpy().astype(int),
            "prediction": cert.predictions.numpy().astype(int),
            "abstained": cert.abstained.numpy().astype(bool),
            "p_a_lower": cert.p_lower.numpy(),
            "radius": cert.radius.numpy(),
            **{k: v for k, v in common.items() if k != "modality"},
        }
    )
    abstained = float(cert.abstained.float().mean()) if cert.n else 0.0
    rows: list[dict[str, Any]] = []
    for eps in radii:
        row = {
            "eps": float(eps),
            "certified_accuracy": cert.certified_accuracy(eps),
            "abstained_fraction": abstained,
            "samples": cert.n,
            **common,
        }
        if honesty is not None:
            row.update(
                {
                    "honesty_checked": honesty.checked,
                    "honesty_violations": honesty.violations,
                    "honesty_counts": "lower bound (>= violations found)",
                    "honesty_attack": honesty.attack,
                }
            )
        rows.append(row)
    return SmoothingResult(samples, pd.DataFrame(rows), config.largest_radius)


def _announce_cost(model: nn.Module, x: Mapping[str, Tensor], samples: int, draws: int, batch: int) -> float:
    """Time one forward pass of ``batch`` copies of the first sample and warn, before a long smoothing run starts, how
    long ``samples`` × ``draws`` noisy forwards will take here (the estimate, in seconds, is returned)."""
    size = max(1, min(batch, draws))
    probe = {m: v[:1].expand((size,) + tuple(v.shape[1:])) for m, v in x.items()}
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        model(probe)
    estimate = (time.perf_counter() - start) * samples * math.ceil(draws / size)
    return announce(
        "smooth_certify",
        estimate,
        f"{samples} samples × {draws} noisy forward passes",
        "lower n or max_samples for a quicker answer",
        bound=False,
        logger=log,
    )


__all__ = ["SMOOTHING_ROWS", "SMOOTHING_COLUMNS", "ANNOUNCE_SECONDS", "SmoothingResult", "smooth_certify"]
