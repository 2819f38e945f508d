"""Retire the journals of cells a sweep will never resume.

A cell's journal (``bench.cell_journal``, under ``<root>/partial/``) is named by everything that makes its batches
that cell's: the model's configuration, the cell's rows (an attack's settings among them), the batch size. When a
sweep YAML changes any of these, the journal of a cell stopped part-way under the old YAML stays on disk, and
``sweep --status`` counts it as a cell under way although no sweep of this YAML will read it again. So do the
journals of cells whose rows are all stored (a run stopped between storing the rows and removing the journal).
``sweep --retire-stale`` moves them, with the rows it retires, into ``<root>/retired/partial/``; without the flag
the sweep reports them.

A journal is this sweep's to judge when its dataset, entry and seed are the sweep's; journals made on another
machine or with another thread count are judged the same way (they are that machine's to resume only while
their cell is still on the grid). With a grid given on the command line only the configuration and the stored
rows decide: the YAML's grid is not known.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .cell_journal import JOURNAL_DIR, journal_identities
from .result_readers import read_rows
from .result_rows import done_cells
from .retire import RETIRED_DIR, RetireOutcome
from .sweep_plan import SweepPlan, unit_cells
from .sweep_units import cell_row_keys

log = logging.getLogger(__name__)


def text_keys(keys: Iterable[tuple]) -> frozenset[tuple[str, ...]]:
    """Row keys as a journal's identity writes them (each value as text)."""
    return frozenset(tuple(str(v) for v in key) for key in keys)


class PlannedCells:
    """The planned cells of each model of a plan, as sets of row keys in a journal's text form (computed once a
    model)."""

    def __init__(self, plan: SweepPlan, ds: Any) -> None:
        self.plan, self.ds = plan, ds
        self._by_model: dict[tuple[str, str, str], list[frozenset[tuple[str, ...]]]] = {}

    def of(self, label: str, seed: str, sha: str) -> list[frozenset[tuple[str, ...]]]:
        model = (label, seed, sha)
        if model not in self._by_model:
            common = {"dataset": self.ds.name, "label": label, "seed": int(seed), "checkpoint_sha256": sha}
            self._by_model[model] = [text_keys(cell_row_keys(self.ds, common, c)) for c in unit_cells(self.plan)]
        return self._by_model[model]


def orphan_reason(
    identity: Mapping[str, Any],
    plan: SweepPlan,
    ds: Any,
    expected: Mapping[str, str],
    done: frozenset[tuple[str, ...]],
    cells: PlannedCells | None,
) -> str | None:
    """Why the sweep of ``plan`` will never resume the journal ``identity`` describes (None: it may, or the journal
    is not this sweep's). ``done`` holds the stored rows' keys in text form; ``cells`` the planned cells, or None
    when the grid is not the YAML's."""
    label, seed = str(identity.get("label")), str(identity.get("seed"))
    if str(identity.get("dataset")) != ds.name or label not in expected or seed not in {str(s) for s in plan.seeds}:
        return None
    if str(identity.get("config_hash")) != expected[label]:
        return "another configuration"
    rows = frozenset(tuple(str(v) for v in row) for row in identity.get("rows") or ())
    if rows and rows <= done:
        return "its rows are stored"
    if cells is None:
        return None
    if not rows or not any(rows <= cell for cell in cells.of(label, seed, str(identity.get("checkpoint_sha256")))):
        return "a cell the grid no longer holds"
    if str(identity.get("batch_size")) != str(plan.batch_size):
        return "another batch size"
    return None


def retire_journals(
    plan: SweepPlan,
    ds: Any,
    expected: Mapping[str, str],
    *,
    root: Path,
    results_path: Path,
    apply: bool,
    grid: bool,
) -> RetireOutcome:
    """Find (``apply``: move to ``<root>/retired/partial/``) the journals beside ``results_path`` that the sweep of
    ``plan`` will never resume (:func:`orphan_reason`; a journal whose rows are stored in ``results_path`` is one),
    ``grid`` whether ``plan``'s grid is the YAML's own."""
    folder = results_path.parent / JOURNAL_DIR
    outcome = RetireOutcome(applied=apply)
    if not folder.is_dir():
        return outcome
    done = text_keys(done_cells(read_rows(results_path)))  # read only when there are journals to judge
    cells = PlannedCells(plan, ds) if grid else None
    found = 0
    for journal, identity in journal_identities(folder):
        reason = orphan_reason(identity, plan, ds, expected, done, cells)
        if reason is None:
            continue
        found += 1
        if apply:
            target = root / RETIRED_DIR / JOURNAL_DIR / journal.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # the same cell's journal retired before: the newer one replaces it
                shutil.rmtree(target)
            shutil.move(str(journal), str(target))
        log.info(
            "journal %s (%s seed %s, %s): %s",
            journal.name,
            identity.get("label"),
            identity.get("seed"),
            _cell(identity),
            reason,
        )
    outcome.stale[folder] = found
    outcome.log(
        root / RETIRED_DIR / JOURNAL_DIR,
        moved="journals of cells no sweep of this file resumes",
        found="journals of cells under way will never be resumed by this sweep",
    )
    return outcome


def _cell(identity: Mapping[str, Any]) -> str:
    """The attack and modality of a journal's first row, for the log."""
    rows = identity.get("rows") or [[]]
    first = list(rows[0])
    return f"{first[5]} on {first[6]}" if len(first) > 6 else "?"


__all__ = ["PlannedCells", "orphan_reason", "retire_journals", "text_keys"]
