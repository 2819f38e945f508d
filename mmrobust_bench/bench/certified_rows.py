"""The certificate tables' names and the kinds of their rows, for the bench that writes them and the reports that
read them (no training, no certification run here)."""

from __future__ import annotations

import pandas as pd

from ..certify.radii import KIND_EMPIRICAL, KIND_HEURISTIC, KIND_NOT_A_BOUND, RUNNER_UP
from ..certify.smoothing import METHOD as SMOOTHING

MODEL_COLUMNS = ("dataset", "defense", "seed", "checkpoint_sha256")

CERTIFIED_CSV = "certified.csv"
ETA_PAIRS_CSV = "eta_pairs.csv"
EMPIRICAL_METHOD = "empirical"
METHODS = (EMPIRICAL_METHOD, SMOOTHING)
MMT_FAMILY = ("mmt", "crmt_mmt")  # defense ids whose certified.csv rows predate the kind column: heuristic


def with_certificate_kinds(frame: pd.DataFrame) -> pd.DataFrame:
    """certified.csv rows with ``method`` and ``kind`` filled where they predate those columns: ``empirical``
    rows, kind ``not a bound (runner-up only)`` for runner-up radii, ``heuristic …`` for MMT-family models."""
    if frame.empty:
        return frame
    frame = frame.copy()
    if "method" not in frame.columns:
        frame["method"] = pd.NA
    frame["method"] = frame["method"].fillna(EMPIRICAL_METHOD)
    if "kind" not in frame.columns:
        frame["kind"] = pd.NA
    missing = frame["kind"].isna()
    if missing.any():
        variant = frame.get("variant", pd.Series("", index=frame.index)).astype(str)
        defense_id = frame.get("defense_id", pd.Series("", index=frame.index)).astype(str)
        kind = pd.Series(KIND_EMPIRICAL, index=frame.index)
        kind[defense_id.isin(MMT_FAMILY)] = KIND_HEURISTIC
        kind[variant == RUNNER_UP] = KIND_NOT_A_BOUND
        frame.loc[missing, "kind"] = kind[missing]
    return frame


__all__ = [
    "CERTIFIED_CSV",
    "EMPIRICAL_METHOD",
    "ETA_PAIRS_CSV",
    "METHODS",
    "MMT_FAMILY",
    "MODEL_COLUMNS",
    "with_certificate_kinds",
]
