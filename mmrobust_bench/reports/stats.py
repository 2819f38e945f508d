"""Seed statistics shared by every report: mean, sample std, number of seeds, 95% t-interval.

With 3 seeds the sample std says little about where the mean lies; the 95% confidence interval of
the mean uses Student's t with n − 1 degrees of freedom (``mean ± t_{0.975, n−1} · std / √n``),
which is wide for few seeds — as it should be. One seed has no std and no interval (NaN).
Also the names reports use for modalities and the snake_case keys of tidy CSV columns (``bench.naming``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..bench.naming import MODALITY_NAMES, modality_name
from ..bench.naming import column_slug as slug

CONFIDENCE = 0.95


@dataclass(frozen=True)
class SeedSummary:
    """Mean over seeds, sample std (ddof 1), seed count and the 95% t-interval of the mean."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def summarize(values: Iterable[float], confidence: float = CONFIDENCE) -> SeedSummary:
    """Summary of per-seed values (NaNs dropped)."""
    arr = np.asarray([float(v) for v in values], dtype=float)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return SeedSummary(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(arr.mean())
    if n == 1:
        return SeedSummary(mean, math.nan, 1, math.nan, math.nan)
    from scipy import stats as _stats  # imported here: scipy.stats is slow to import and most callers never need it

    std = float(arr.std(ddof=1))
    half = float(_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return SeedSummary(mean, std, n, mean - half, mean + half)


def cell_key(attack: str, modality: str, eps: float | None) -> str:
    """``pgd_l2_a_eps0.5``, ``fgm_all_eps0.5``, ``missing_a``, ``clean``: the stem of a cell's CSV columns."""
    if attack == "clean":
        return "clean"
    parts = [slug(attack), slug(modality)]
    if eps is not None and not (isinstance(eps, float) and math.isnan(eps)):
        parts.append(f"eps{float(eps):g}")
    return "_".join(p for p in parts if p)


# suffixes of a cell's seed-summary columns, in order
STAT_SUFFIXES = ("mean", "std", "ci95_low", "ci95_high", "n")
# suffixes of every column a cell stem expands to in a table's tidy CSV, in order: the summary, then its flags
CELL_SUFFIXES = (*STAT_SUFFIXES, "flags")

COLUMN_DOC = (
    "Column naming: every measured cell <attack>_<modality>_eps<ε> (e.g. pgd_l2_a_eps0.5; clean is `clean`, "
    "an unbounded attack has no _eps part, e.g. missing_a) expands to <cell>_mean, <cell>_std (sample std over seeds, "
    "ddof 1), <cell>_ci95_low / <cell>_ci95_high (95% confidence interval of the mean, Student's t with n−1 degrees "
    "of freedom), <cell>_n (seeds in that cell, integer) and <cell>_flags (the validity flags of that cell's rows, "
    "any seed, sorted and ;-joined, e.g. non_finite;zero_gradients; empty when none, and in reported rows); "
    "n_seeds is the largest <cell>_n of the row. "
    "Modality a = audio, v = visual, all = every modality under one joint ℓ2 budget; ε in model-input space."
)


__all__ = [
    "CELL_SUFFIXES",
    "CONFIDENCE",
    "COLUMN_DOC",
    "MODALITY_NAMES",
    "STAT_SUFFIXES",
    "SeedSummary",
    "cell_key",
    "modality_name",
    "slug",
    "summarize",
]
