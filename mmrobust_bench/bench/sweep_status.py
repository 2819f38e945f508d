"""How far a sweep has got, without training or measuring anything: per (entry, seed) unit, the rows stored of
the rows it will have, the certificates still to make and the cells under way (their journals). ``sweep --status``
prints it, e.g. between the sittings of a regeneration that takes several.

A unit's rows are counted as the sweep decides what is done: the row keys of its cells (``sweep_units``), with the
checkpoint of the unit's newest stored rows of the entry's current configuration, a row two grid blocks share
counted once, for its first cell. The dataset is read from the root's cache (built there if absent), for its
modalities and test size; nothing else is written."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .cell_journal import IDENTITY_FILE, JOURNAL_DIR
from .certification import CERTIFIED_CSV
from .result_readers import read_rows, read_table
from .result_rows import done_cells
from .retire import entry_config_hashes
from .sweep_config import DefenseEntry
from .sweep_plan import SweepPlan, unit_cells, validate_plan
from .sweep_units import cell_row_keys, certificates_to_make
from .verify_measure import newest_models

PLACEHOLDER_SHA = "-"  # the checkpoint of a unit without rows: its cells' keys, to count them


@dataclass(frozen=True)
class UnitStatus:
    """One (entry, seed) unit: ``rows`` of ``expected_rows`` stored, the certificates still to make (``method`` or
    ``smoothing[v,a+v]``), ``journals`` cells under way with ``batches`` finished batches between them."""

    label: str
    seed: int
    rows: int
    expected_rows: int
    certificates: tuple[str, ...]
    journals: int = 0
    batches: int = 0

    @property
    def state(self) -> str:
        if self.rows >= self.expected_rows and not self.certificates:
            return "done"
        return "under way" if self.rows or self.journals else "not started"


def _journals(root: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """(label, seed) → (journals, finished batches) of the cells under way under ``root``."""
    found: dict[tuple[str, str], tuple[int, int]] = {}
    for identity in sorted((root / JOURNAL_DIR).glob(f"*/{IDENTITY_FILE}")):
        try:
            data = json.loads(identity.read_text())
        except (OSError, ValueError):
            continue  # a journal being written or damaged: the sweep measures its cell again
        key = (str(data.get("label")), str(data.get("seed")))
        journals, batches = found.get(key, (0, 0))
        found[key] = (journals + 1, batches + len(list(identity.parent.glob("batch-*.safetensors"))))
    return found


def _unit_rows(plan: SweepPlan, ds: Any, entry: DefenseEntry, seed: int, sha: str, done: set[tuple]) -> tuple[int, int]:
    """(stored, expected) rows of a unit whose model has checkpoint ``sha``, each row counted for its first cell."""
    common = {"dataset": ds.name, "label": entry.label, "seed": seed, "checkpoint_sha256": sha}
    keys = {key for cell in unit_cells(plan) for key in cell_row_keys(ds, common, cell)}
    return len(keys & done), len(keys)


def sweep_status(
    plan: SweepPlan, root: Path, results_path: Path | None = None, *, shard: tuple[int, int] | None = None
) -> list[UnitStatus]:
    """The status of every unit of ``plan`` (of shard ``(i, n)``) whose rows go to ``results_path`` (default
    ``root/results.csv``)."""
    root = Path(root)
    ds = validate_plan(plan, root)
    hashes = entry_config_hashes(plan, ds)
    stored = read_rows(results_path if results_path is not None else root / "results.csv")
    if not stored.empty:
        current = [hashes.get(str(label)) == str(h) for label, h in zip(stored["label"], stored["config_hash"])]
        stored = stored[(stored["dataset"].astype(str) == plan.dataset) & pd.Series(current, index=stored.index)]
    newest = newest_models(stored, "label")
    done = done_cells(newest)
    certified = read_table(root / CERTIFIED_CSV)
    journals = _journals(root)
    out = []
    for entry, seed in plan.work_units(shard):
        mine = newest[(newest["label"].astype(str) == entry.label) & (newest["seed"].astype(int) == seed)]
        sha = str(mine["checkpoint_sha256"].iloc[-1]) if not mine.empty else None
        rows, expected = _unit_rows(plan, ds, entry, seed, sha or PLACEHOLDER_SHA, done)
        todo = certificates_to_make(plan, entry, seed, ds, certified, sha)
        certificates = tuple(f"{m}[{','.join(sets)}]" if sets else m for m, sets in todo)
        n_journals, batches = journals.get((entry.label, str(seed)), (0, 0))
        out.append(UnitStatus(entry.label, seed, rows, expected, certificates, n_journals, batches))
    return out


def status_table(units: list[UnitStatus]) -> str:
    """A Markdown table of ``units`` and a summary line (models done / under way / not started, rows)."""
    lines = [
        "| entry | seed | state | rows | certificates to make | cells under way |",
        "|---|---:|---|---:|---|---:|",
    ]
    for u in units:
        under_way = f"{u.journals} ({u.batches} batches)" if u.journals else "0"
        lines.append(
            f"| {u.label} | {u.seed} | {u.state} | {u.rows}/{u.expected_rows} | {', '.join(u.certificates) or '—'} "
            f"| {under_way} |"
        )
    counts: Mapping[str, int] = pd.Series([u.state for u in units], dtype=object).value_counts().to_dict()
    rows = sum(u.rows for u in units)
    expected = sum(u.expected_rows for u in units)
    lines.append(
        f"\n{len(units)} models: {counts.get('done', 0)} done, {counts.get('under way', 0)} under way, "
        f"{counts.get('not started', 0)} not started; rows {rows}/{expected}"
    )
    return "\n".join(lines)


__all__ = ["UnitStatus", "status_table", "sweep_status"]
