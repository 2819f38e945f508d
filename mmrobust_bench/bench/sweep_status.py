"""How far a sweep has got, without training or measuring anything: per (entry, seed) unit, whether its model is
stored, the rows stored of the rows it will have, the certificates still to make and the cells under way that
would resume here (their journals). ``sweep --status`` prints it, e.g. between the sittings of a regeneration that
takes several.

A unit is counted as the sweep decides what is done: its model is the stored final checkpoint of the entry's
current configuration, the one the sweep would load (``bench.checkpoints``), and a row is done when a stored row
has one of the unit's row keys with that checkpoint's sha256 (a row two grid blocks share counted once, for its
first cell). Without a stored checkpoint the sweep would train the model again (bit for bit only on the kind of
machine that made it), so its rows and certificates are shown for the newest stored model of that
configuration and the unit is not done. The dataset is read from the root's cache (built there if absent),
for its modalities, test size and configuration; nothing else is written."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .cell_journal import JOURNAL_DIR, journal_identities
from .certification import CERTIFIED_CSV
from .checkpoints import load_stage
from .environment import row_provenance
from .result_readers import read_rows, read_table
from .result_rows import done_cells, other_batch_size
from .retire import entry_config_hashes
from .retire_journals import PlannedCells, orphan_reason, text_keys
from .sweep_config import DefenseEntry
from .sweep_plan import SweepPlan, unit_cells, unit_checkpoint, validate_plan
from .sweep_units import cell_row_keys, certificates_to_make

PLACEHOLDER_SHA = "-"  # the checkpoint of a unit without rows: its cells' keys, to count them


@dataclass(frozen=True)
class UnitStatus:
    """One (entry, seed) unit: whether its model is stored (``model_stored``), ``rows`` of ``expected_rows``
    stored, the certificates still to make (``method`` or ``smoothing[v,a+v]``), ``journals`` cells under way that
    would resume here with ``batches`` finished batches between them."""

    label: str
    seed: int
    rows: int
    expected_rows: int
    certificates: tuple[str, ...]
    journals: int = 0
    batches: int = 0
    model_stored: bool = True

    @property
    def state(self) -> str:
        if not self.model_stored:
            return "model not stored" if self.rows else "not started"
        if self.rows >= self.expected_rows and not self.certificates:
            return "done"
        return "under way" if self.rows or self.journals else "not started"


@dataclass(frozen=True)
class SweepStatus:
    """Every unit's status, and how many journals no run of the sweep resumes (``sweep --retire-stale`` moves
    them; ``bench.retire_journals``)."""

    units: list[UnitStatus]
    orphan_journals: int = 0
    other_batch_size_rows: int = 0  # stored rows of the units made at another batch size than the plan's


def _journals(
    folder: Path, threads: int | None, orphan: Callable[[dict], bool]
) -> tuple[dict[tuple[str, str, str], tuple[int, int]], int]:
    """(label, seed, checkpoint sha256) → (journals, finished batches) of the cells under way in ``folder`` that a
    sweep on this machine would resume (a journal records the machine it was made on; elsewhere the cell starts
    again), and how many journals no run of the sweep resumes (``orphan``, ``bench.retire_journals``)."""
    here = {k: str(v) for k, v in row_provenance().items() if k != "threads"}
    found: dict[tuple[str, str, str], tuple[int, int]] = {}
    orphans = 0
    for journal, data in journal_identities(folder):
        if orphan(data):
            orphans += 1
            continue
        if any(str(data.get(k)) != v for k, v in here.items()):
            continue
        if threads is not None and str(data.get("threads")) != str(threads):
            continue
        key = (str(data.get("label")), str(data.get("seed")), str(data.get("checkpoint_sha256")))
        journals, batches = found.get(key, (0, 0))
        found[key] = (journals + 1, batches + len(list(journal.glob("batch-*.safetensors"))))
    return found, orphans


def stored_model(plan: SweepPlan, ds: Any, entry: DefenseEntry, seed: int, root: Path) -> tuple[str | None, str]:
    """(sha256 of the unit's stored final checkpoint, the one the sweep would load, or None: it would train; the
    configuration hash of the unit's model)."""
    _, _, key = unit_checkpoint(plan, ds, entry, seed)
    stage = load_stage(key.directory(root), "final", key)
    return (None if stage is None else stage[2]), key.config_hash


def _unit_rows(plan: SweepPlan, ds: Any, entry: DefenseEntry, seed: int, sha: str, done: set[tuple]) -> tuple[int, int]:
    """(stored, expected) rows of a unit whose model has checkpoint ``sha``, each row counted for its first cell."""
    common = {"dataset": ds.name, "label": entry.label, "seed": seed, "checkpoint_sha256": sha}
    keys = {key for cell in unit_cells(plan) for key in cell_row_keys(ds, common, cell)}
    return len(keys & done), len(keys)


def sweep_status(
    plan: SweepPlan,
    root: Path,
    results_path: Path | None = None,
    *,
    shard: tuple[int, int] | None = None,
    grid_from_config: bool = True,
) -> SweepStatus:
    """The status of every unit of ``plan`` (of shard ``(i, n)``) whose rows go to ``results_path`` (default
    ``root/results.csv``; its folder also holds the journals, as for the sweep), and the journals no run of the
    plan resumes (judged by the grid too when ``grid_from_config``: it is the YAML's whole grid)."""
    root = Path(root)
    results_path = Path(results_path) if results_path is not None else root / "results.csv"
    ds = validate_plan(plan, root)
    stored = read_rows(results_path)
    done = done_cells(stored)
    certified = read_table(root / CERTIFIED_CSV)
    configs, done_text = entry_config_hashes(plan, ds), text_keys(done)
    cells = PlannedCells(plan, ds) if grid_from_config else None
    journals, orphans = _journals(
        results_path.parent / JOURNAL_DIR,
        plan.threads,
        lambda identity: orphan_reason(identity, plan, ds, configs, done_text, cells) is not None,
    )
    out = []
    resized = 0
    other_size_rows = stored[other_batch_size(stored, plan.batch_size)]
    for entry, seed in plan.work_units(shard):
        sha, config_hash = stored_model(plan, ds, entry, seed, root)
        if sha is None:  # the rows of the newest model of this configuration, for what they are worth
            mine = (
                stored[
                    (stored["dataset"].astype(str) == plan.dataset)
                    & (stored["label"].astype(str) == entry.label)
                    & (stored["seed"].astype(int) == seed)
                    & (stored["config_hash"].astype(str) == config_hash)
                ]
                if not stored.empty
                else stored
            )
            last = str(mine["checkpoint_sha256"].iloc[-1]) if not mine.empty else None
            rows, expected = _unit_rows(plan, ds, entry, seed, last or PLACEHOLDER_SHA, done)
            certificates = certificates_to_make(plan, entry, seed, ds, certified, last)
            out.append(UnitStatus(entry.label, seed, rows, expected, _names(certificates), model_stored=False))
            continue
        rows, expected = _unit_rows(plan, ds, entry, seed, sha, done)
        resized += _model_rows(other_size_rows, entry.label, seed, sha)
        certificates = certificates_to_make(plan, entry, seed, ds, certified, sha)
        n_journals, batches = journals.get((entry.label, str(seed), sha), (0, 0))
        out.append(UnitStatus(entry.label, seed, rows, expected, _names(certificates), n_journals, batches))
    return SweepStatus(out, orphans, resized)


def _model_rows(rows: pd.DataFrame, label: str, seed: int, sha: str) -> int:
    """How many of ``rows`` belong to one model."""
    if rows.empty:
        return 0
    return int(
        (
            (rows["label"].astype(str) == label)
            & (rows["seed"].astype(int) == seed)
            & (rows["checkpoint_sha256"].astype(str) == sha)
        ).sum()
    )


def _names(todo: list[tuple[str, list[str]]]) -> tuple[str, ...]:
    return tuple(f"{m}[{','.join(sets)}]" if sets else m for m, sets in todo)


def status_table(status: SweepStatus) -> str:
    """A Markdown table of ``status``'s units and a summary line (models per state, rows)."""
    units = status.units
    lines = [
        "| entry | seed | state | model | rows | certificates to make | cells under way |",
        "|---|---:|---|---|---:|---|---:|",
    ]
    for u in units:
        under_way = f"{u.journals} ({u.batches} batches)" if u.journals else "0"
        model = "stored" if u.model_stored else "to train"
        lines.append(
            f"| {u.label} | {u.seed} | {u.state} | {model} | {u.rows}/{u.expected_rows} | "
            f"{', '.join(u.certificates) or '—'} | {under_way} |"
        )
    counts = Counter(u.state for u in units)
    states = ["done", "under way", "not started"] + (["model not stored"] if counts.get("model not stored") else [])
    rows = sum(u.rows for u in units)
    expected = sum(u.expected_rows for u in units)
    summary = ", ".join(f"{counts.get(state, 0)} {state}" for state in states)
    lines.append(f"\n{len(units)} models: {summary}; rows {rows}/{expected}")
    if counts.get("model not stored"):
        lines.append(
            "model not stored: the sweep would train it again (its rows are another model's unless it comes back "
            "bit for bit, as on the kind of machine that made them) and measure what that model lacks"
        )
    if status.other_batch_size_rows:
        lines.append(
            f"{status.other_batch_size_rows} stored rows were measured at another batch size than the YAML's "
            "batch_size (counted above as stored): sweep --retire-stale moves them to retired/ and the sweep "
            "measures their cells again"
        )
    if status.orphan_journals:
        lines.append(
            f"{status.orphan_journals} journals of cells no run of this sweep resumes (other settings, or their "
            "rows are stored): sweep --retire-stale moves them to retired/"
        )
    return "\n".join(lines)


__all__ = ["SweepStatus", "UnitStatus", "status_table", "stored_model", "sweep_status"]
