"""How rows and files name things, shared by the bench and the reports above it.

The names a reader knows for modalities, the defense label and configuration of each row, the snake_case key
of a tidy CSV column, and the file name of a run's robust-accuracy curve. Pure functions of strings and rows.
"""

from __future__ import annotations

import re

import pandas as pd

from ..io import file_slug

UNKNOWN_CONFIG = "unknown"

# the names a reader knows, for titles and legends
MODALITY_NAMES = {
    "a": "audio",
    "v": "visual",
    "flow": "optical flow",
    "rgb": "RGB",
    "all": "all modalities (joint)",
    "any": "any modality (per-sample worst case)",
    "none": "none",
}


def modality_name(modality: str) -> str:
    """``"a"`` → ``"audio"``, ``"a+v"`` → ``"audio+visual"``; unknown names stay as they are."""
    text = str(modality)
    if text in MODALITY_NAMES:
        return MODALITY_NAMES[text]
    return "+".join(MODALITY_NAMES.get(part, part) for part in text.split("+"))


def label_series(rows: pd.DataFrame) -> pd.Series:
    """The defense label of every row: ``label`` where present and non-empty, else ``defense``."""
    base = rows["defense"].astype(str)
    if "label" not in rows:
        return base
    label = rows["label"].astype(object).where(rows["label"].notna(), "").astype(str).str.strip()
    return label.where(label != "", base)


def config_series(rows: pd.DataFrame) -> pd.Series:
    """The configuration hash of every row; ``UNKNOWN_CONFIG`` where the rows predate the column or it is empty."""
    if "config_hash" not in rows:
        return pd.Series(UNKNOWN_CONFIG, index=rows.index)
    cfg = rows["config_hash"].astype(object).where(rows["config_hash"].notna(), "").astype(str).str.strip()
    return cfg.where(cfg != "", UNKNOWN_CONFIG)


_SLUG = re.compile(r"[^a-z0-9.]+")


def column_slug(text: str) -> str:
    """snake_case key for a CSV column: lower case, runs of other characters → ``_`` (dots kept for ε)."""
    return _SLUG.sub("_", str(text).lower()).strip("_")


def run_plot_name(
    dataset: str, label: str, attack: str, modality: str, seed: int, config_hash: str, fmt: str = "png"
) -> str:
    """``synthav-jt-cfgb30dba09-pgd_l2-a-seed0.png``: the configuration is in the name, so runs of one label
    with different settings never overwrite each other's plots. The dataset and label are file slugs
    (``io.file_slug``: any name, however long or odd, gives a short file name of its own)."""
    cfg = f"cfg{str(config_hash)[:8]}" if config_hash else "cfgunknown"
    parts = [
        file_slug(dataset),
        file_slug(label),
        cfg,
        column_slug(attack.replace(":", "_")),
        column_slug(modality),
        f"seed{int(seed)}",
    ]
    return "-".join(p for p in parts if p) + f".{fmt}"


__all__ = [
    "MODALITY_NAMES",
    "UNKNOWN_CONFIG",
    "column_slug",
    "config_series",
    "label_series",
    "modality_name",
    "run_plot_name",
]
