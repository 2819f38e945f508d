"""One orientation and one aggregation for the vulnerability-indicator ratio between two modalities
(docs/methods.md §11), used by every report that prints one: Figure 3, the findings' section 3b and each
model's ``certificate.md``.

- **Orientation**: η of the alphabetically first modality name over η of the second — η^(a)/η^(v) for audio
  ``a`` and visual ``v``, the orientation of the paper's Figure 3. It depends on the names only, never on the
  dataset's spec order or on which modality is the more fragile, so a ratio above 1 means the same on every
  dataset (above 1: the first name is the more vulnerable modality).
- **Aggregation** over a leaderboard's rows: per model (seed), the mean over class pairs (y, j) of η per
  modality, then the ratio of the two means, then the mean (± sample std) over seeds
  (:func:`eta_ratio_per_defense`). Figure 3's cells are the per-pair ratio, mean over seeds.

No torch here: reports import it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

ETA_RATIO_AGGREGATION = "mean over class pairs of η per modality, then the ratio, then mean over seeds"
ETA_RATIO_RULE = (
    "η of the alphabetically first modality over the second's (η^(a)/η^(v): the paper's Figure 3), "
    "whatever the dataset's order or the more fragile modality"
)


def eta_ratio_modalities(modalities: Iterable[str]) -> tuple[str, str]:
    """(numerator, denominator) of the η ratio between two modalities: the names in alphabetical order, so
    ``("v", "a")`` and ``("a", "v")`` both give ``("a", "v")``, the paper's η^(a)/η^(v)."""
    names = sorted({str(m) for m in modalities})
    if len(names) != 2:
        raise ValueError(
            f"an η ratio compares exactly two modalities, got {len(names)} ({', '.join(names) or 'none'}); choose two"
        )
    return names[0], names[1]


def eta_ratio_text(modalities: Iterable[str]) -> str:
    """The ratio in plain text, e.g. ``η^(a) / η^(v)``."""
    num, den = eta_ratio_modalities(modalities)
    return f"η^({num}) / η^({den})"


def eta_ratio_per_defense(
    pairs: pd.DataFrame, numerator: str, denominator: str, column: str = "eta_pair"
) -> pd.DataFrame:
    """Per defense: mean over seeds of (mean over class pairs of η^(num)) / (mean over class pairs of η^(den)),
    with the sample std and the number of seeds (columns ``defense``, ``ratio_mean``, ``ratio_std``, ``seeds``)."""
    if pairs is None or pairs.empty:
        return pd.DataFrame(columns=["defense", "ratio_mean", "ratio_std", "seeds"])
    per_model = pairs.groupby(["defense", "seed", "modality"])[column].mean().unstack("modality")
    for name in (numerator, denominator):
        if name not in per_model:
            raise ValueError(f"η rows have no modality {name!r}; have {', '.join(map(str, per_model.columns))}")
    ratio = (per_model[numerator] / per_model[denominator]).replace([np.inf, -np.inf], np.nan)
    ratio = ratio.rename("ratio").reset_index()
    return ratio.groupby("defense")["ratio"].agg(ratio_mean="mean", ratio_std="std", seeds="count").reset_index()


__all__ = ["ETA_RATIO_AGGREGATION", "ETA_RATIO_RULE", "eta_ratio_modalities", "eta_ratio_per_defense", "eta_ratio_text"]
