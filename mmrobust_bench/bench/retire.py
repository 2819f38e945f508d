"""Retire stored rows of a sweep entry whose configuration the sweep YAML no longer asks for.

A leaderboard's rows are only comparable within one configuration (``config_hash``: the defense's keyed
settings and the schedule). When a sweep YAML changes an entry's settings (say MSEFM's ``gradient_form``),
the rows of the old configuration stay in the store beside the new ones, and the reports show both as
separate entries (``reports.entries``). Deleting them by hand is not allowed (a result file is never edited
by hand), so ``sweep --retire-stale`` moves them, under each table's lock and atomically, into
``<root>/retired/<table>``: nothing is lost, every moved row keeps its columns, and the live tables then
hold one configuration per entry. Without the flag the sweep only warns, naming the rows and the flag.

Stale means: a row of the sweep's dataset whose label is one of the sweep's entries and whose
``config_hash`` differs from the one the entry resolves to now (a blank hash, from rows older than the
column, counts as different: it cannot be shown to match). Rows of other labels or datasets are never
touched, so ``--only`` / ``--skip`` narrow what is retired the same way they narrow what is run.
Certificate files under ``<root>/certify/`` are keyed by checkpoint and stay where they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..defenses import build_defense, dataset_schedule
from ..defenses.base import key_dict
from .certification import CERTIFIED_CSV, ETA_PAIRS_CSV
from .checkpoints import config_hash_of
from .naming import UNKNOWN_CONFIG, config_series, label_series
from .result_readers import read_table
from .results import rewrite_rows

log = logging.getLogger(__name__)

RETIRED_DIR = "retired"


@dataclass
class RetireOutcome:
    """Stale rows per table path (moved when ``applied``, else only found)."""

    applied: bool
    stale: dict[Path, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.stale.values())

    def describe(self) -> str:
        parts = [f"{n} in {path}" for path, n in self.stale.items() if n]
        return "; ".join(parts) if parts else "none"

    def summary(self, what: str) -> str | None:
        """One line for the command's closing summary, naming ``what`` was found (None when nothing was)."""
        if not self.total:
            return None
        verb = "retired" if self.applied else "kept; --retire-stale moves them"
        return f"{what} ({verb}): {self.describe()}"

    def log(self, retired_dir: Path, *, moved: str, found: str) -> None:
        """Say what happened, when there were such rows: ``moved`` names them once retired (info), ``found`` once
        only found (a warning naming the flag that moves them)."""
        if not self.total:
            return
        if self.applied:
            log.info("retired %s to %s: %s", moved, retired_dir, self.describe())
        else:
            log.warning("%s (%s). Rerun with --retire-stale to move them to %s", found, self.describe(), retired_dir)


def entry_config_hashes(plan: Any, dataset: Any) -> dict[str, str]:
    """label → the ``config_hash`` each entry of ``plan`` trains under on ``dataset`` (nothing is trained)."""
    schedule = dataset_schedule(dataset)
    hashes = {}
    for entry in plan.defenses:
        defense, train_cfg = build_defense(entry.defense, {**plan.common_overrides, **entry.overrides}, schedule)
        hashes[entry.label] = config_hash_of(defense.config_dict(), key_dict(train_cfg))
    return hashes


def stale_mask(frame: pd.DataFrame, dataset: str, expected: Mapping[str, str]) -> pd.Series:
    """Rows of ``dataset`` whose label is in ``expected`` and whose config_hash is not the expected one."""
    if frame.empty or "defense" not in frame or "dataset" not in frame:
        return pd.Series(False, index=frame.index)
    labels = label_series(frame)  # certificate tables keep the label in ``defense``
    wanted = labels.map(expected)
    # a blank hash reads as UNKNOWN_CONFIG, which no entry resolves to: it cannot be shown to match
    differs = config_series(frame) != wanted.fillna(UNKNOWN_CONFIG)
    return (frame["dataset"].astype(str) == dataset) & wanted.notna() & differs


def _append_retired(path: Path, rows: pd.DataFrame) -> None:
    """Add ``rows`` to the retired copy of a table, under its lock, atomically (columns unioned)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rewrite_rows(path, lambda old: rows if old.empty else pd.concat([old, rows], ignore_index=True), any_table=True)


def retire_rows(path: Path, mask_of: Callable[[pd.DataFrame], pd.Series], retired_dir: Path, *, apply: bool) -> int:
    """Count (and with ``apply`` move) the rows of one table that ``mask_of`` selects; the retired copy is written
    before the live table is rewritten, so a crash in between duplicates rows into ``retired/`` but loses none."""
    if not path.exists():
        return 0
    if not apply:
        return int(mask_of(read_table(path)).sum())
    moved: dict[str, int] = {}

    def drop(frame: pd.DataFrame) -> pd.DataFrame | None:
        mask = mask_of(frame)
        moved["n"] = int(mask.sum())
        if not mask.any():
            return None
        _append_retired(retired_dir / path.name, frame[mask])
        return frame[~mask]

    rewrite_rows(path, drop, any_table=True)
    return moved.get("n", 0)


def retire_table(path: Path, dataset: str, expected: Mapping[str, str], retired_dir: Path, *, apply: bool) -> int:
    """:func:`retire_rows` of the rows of one table made under another configuration (:func:`stale_mask`)."""
    return retire_rows(path, lambda frame: stale_mask(frame, dataset, expected), retired_dir, apply=apply)


def retire_stale(ds: Any, expected: Mapping[str, str], *, root: Path, results_path: Path, apply: bool) -> RetireOutcome:
    """Find (``apply``: move to ``<root>/retired/``) the rows of a sweep's entries made under another
    configuration, in the results table and the certificate tables; ``ds`` is the sweep's dataset, built, and
    ``expected`` its entries' current configurations (:func:`entry_config_hashes`)."""
    outcome = RetireOutcome(applied=apply)
    for path in (results_path, root / CERTIFIED_CSV, root / ETA_PAIRS_CSV):
        outcome.stale[path] = retire_table(path, ds.name, expected, root / RETIRED_DIR, apply=apply)
    outcome.log(
        root / RETIRED_DIR,
        moved="rows of superseded configurations",
        found="stored rows of this sweep's entries come from other configurations; the reports show them as "
        "separate entries",
    )
    return outcome


__all__ = [
    "RETIRED_DIR",
    "RetireOutcome",
    "entry_config_hashes",
    "retire_rows",
    "retire_stale",
    "retire_table",
    "stale_mask",
]
