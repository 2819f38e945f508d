"""Retire stored rows of a sweep's entries that its grid no longer asks for.

When a sweep YAML changes a cell (an attack's settings, as a new ``autoattack`` version; a radius dropped from the
grid), the rows measured before stay in the store beside the new cell's, made by the same models: a report could
then pick either. ``sweep --retire-stale`` moves them, as it moves the rows of superseded configurations
(``bench.retire``), into ``<root>/retired/``: nothing is lost, and the live table holds only what the YAML asks for.

Off the grid means: a row of the sweep's dataset, one of its entries and seeds, under the configuration that entry
resolves to now (rows of another configuration are :func:`~mmrobust_bench.bench.retire.retire_stale`'s), whose
cell key is none of the cells the sweep plans for that model (the same keys ``sweep --status`` counts), or that
was measured at another batch size than the YAML's ``batch_size`` (a randomized attack reseeds per batch, so it is
another measurement of the cell; rows that recorded no batch size say nothing and are kept). Only the YAML's own
grid can say so: a grid given on the command line (``--attacks``, ``--modalities``, ``--eps``, ``--norm``) narrows
one run, and the rows outside it are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .naming import config_series, label_series
from .result_rows import frame_keys, other_batch_size
from .retire import RETIRED_DIR, RetireOutcome, retire_rows
from .sweep_plan import SweepPlan, unit_cells
from .sweep_units import cell_row_keys


def off_grid_mask(frame: pd.DataFrame, plan: SweepPlan, ds: Any, expected: dict[str, str]) -> pd.Series:
    """Rows of ``frame`` (a results table) of ``plan``'s entries and seeds, under their current configuration
    (``expected``: label → config hash), whose cell the plan's grid does not hold for the row's model, or which
    were measured at another batch size than the plan's."""
    if frame.empty or "dataset" not in frame or "seed" not in frame:
        return pd.Series(False, index=frame.index)
    labels = label_series(frame)
    ours = (
        (frame["dataset"].astype(str) == ds.name)
        & labels.isin(list(expected))
        & frame["seed"].isin(plan.seeds)
        & (config_series(frame) == labels.map(expected))
    )
    other_size = other_batch_size(frame, plan.batch_size)
    planned: dict[tuple[str, int, str], set[tuple]] = {}
    off = []
    for mine, resized, key in zip(ours, other_size, frame_keys(frame)):
        if not mine or resized:
            off.append(bool(mine))
            continue
        model = (key[1], key[2], key[3])  # label, seed, checkpoint sha256
        if model not in planned:
            common = {"dataset": ds.name, "label": key[1], "seed": key[2], "checkpoint_sha256": key[3]}
            planned[model] = {k for cell in unit_cells(plan) for k in cell_row_keys(ds, common, cell)}
        off.append(key not in planned[model])
    return pd.Series(off, index=frame.index)


def retire_off_grid(
    plan: SweepPlan, ds: Any, expected: dict[str, str], *, root: Path, results_path: Path, apply: bool
) -> RetireOutcome:
    """Find (``apply``: move to ``<root>/retired/``) the rows of ``plan``'s entries whose cells its grid no longer
    holds; ``ds`` is the plan's dataset, built, and ``expected`` its entries' current configurations
    (:func:`~mmrobust_bench.bench.retire.entry_config_hashes`)."""
    outcome = RetireOutcome(applied=apply)
    outcome.stale[results_path] = retire_rows(
        results_path, lambda frame: off_grid_mask(frame, plan, ds, expected), root / RETIRED_DIR, apply=apply
    )
    outcome.log(
        root / RETIRED_DIR,
        moved="rows off the sweep's grid (or of another batch size)",
        found="stored rows of this sweep's entries measure cells its grid no longer holds (or were measured at "
        "another batch size than its batch_size)",
    )
    return outcome


__all__ = ["off_grid_mask", "retire_off_grid"]
