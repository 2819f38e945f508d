"""Are these numbers right? Re-measure stored rows of a sweep and say how far each one moved, and why.

Two ways, both drawing ``n`` (label, seed) models with rows (seeded, so a check can be repeated) and ``cells``
of each model's cells, re-measuring them as the sweep did (same ε grids, batches and thread count) in a
scratch root, never writing the sweep's root:

- ``verify_zoo`` (the default of ``mmrobust-bench verify``) loads the committed zoo checkpoints
  (``bench.zoo``) and re-evaluates them, no training. A value passes when it equals the stored one or differs
  by at most the tolerance: the caller's, else 0 where the row was recorded with this machine's CPU
  capability, torch version and build and device, else :data:`CROSS_MACHINE_TOLERANCE` (kernels of another
  CPU capability order float sums differently, which moves a few samples across a decision boundary).
- ``verify_sweep`` (``--retrain``) re-trains each model from scratch at the recorded settings and asks
  whether each re-measured value lies within the committed seed spread: the stored mean over seeds ± k
  sample standard deviations (at least ``floor``, which also stands in for the spread of a single seed). A
  value that comes back with the recorded checkpoint and the recorded number is reported bit-identical.

With ``certificates`` each model is also certified again (``bench.sweep.certify_unit``: its empirical and
randomized-smoothing certificates, the η pairs) and its certified accuracies and η compared the same way (η
by relative difference). Each difference is printed beside the provenance recorded with the row and this
machine's (``bench.environment``), so a difference explains itself.

This module holds the default mode; ``bench.verify_retrain`` the other, ``bench.verify_measure`` what both draw
and re-measure, ``bench.verify_output`` the outcome and its table. Their public names stay importable from here.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .environment import same_software
from .sweep_plan import SweepPlan
from .sweep_units import set_threads
from .verify_measure import (
    SHOWN,
    certificate_values,
    choose_units,
    difference,
    measure_cells,
    measure_device,
    recorded_threads,
    scratch_root,
    stored_results,
    unstored_line,
)
from .verify_output import (
    VerifyOutcome,
    certificate_problems,
    format_verify_table,
    largest_difference,
    make_outcome,
)
from .verify_retrain import SEED_SPREAD_K, SPREAD_FLOOR, checkpoint_threads, verify_sweep
from .zoo import config_difference, load_trained, read_zoo

CROSS_MACHINE_TOLERANCE = 0.01  # accuracy: 10 of 1000 test samples


def verify_zoo(
    plan: SweepPlan,
    *,
    root: Path,
    zoo: Path,
    results: Path | None = None,
    n: int = 2,
    seed: int = 0,
    cells: int = 3,
    tolerance: float | None = None,
    certificates: bool = False,
    scratch: Path | None = None,
    device: str | None = None,
    progress: bool = False,
) -> VerifyOutcome:
    """Re-evaluate ``n`` random zoo models of ``plan`` (all when ``n`` <= 0) on ``cells`` random cells each (all when
    <= 0) and compare with the rows of ``results`` (default ``<root>/results.csv``); see the module docstring."""
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"verify: --tolerance must be a number >= 0, got {tolerance!r}")
    root = Path(root)
    results_path = Path(results) if results is not None else root / "results.csv"
    stored = stored_results(plan, results_path)
    mine = stored[stored["seed"].astype(int).isin(plan.seeds)]
    found = read_zoo(zoo)
    if found.dataset != plan.dataset:
        raise ValueError(
            f"verify: the zoo at {found.directory} holds {found.dataset!r} models, the sweep is {plan.dataset!r}"
        )
    in_zoo = {(e.entry, e.seed): e for e in found.entries}
    units = sorted({(str(label), int(s)) for label, s in zip(mine["label"], mine["seed"])})
    if not units:
        raise ValueError(f"verify: {results_path} holds no rows of this sweep's entries; run the sweep first")
    checkable = [u for u in units if u in in_zoo]
    if not checkable:
        raise ValueError(
            f"verify: the zoo at {found.directory} has none of the {len(units)} models with rows; "
            f"export it (`mmrobust-bench zoo export`) or re-train with --retrain"
        )
    for label, s in checkable:
        sha = str(
            mine[(mine["label"].astype(str) == label) & (mine["seed"].astype(int) == s)]["checkpoint_sha256"].iloc[-1]
        )
        if in_zoo[(label, s)].sha256 != sha:
            raise ValueError(
                f"verify: the zoo's {label} seed {s} ({in_zoo[(label, s)].sha256[:12]}…) is not the model "
                f"the rows were measured with ({sha[:12]}…); re-export the zoo"
            )
    rng = random.Random(seed)
    chosen = choose_units(checkable, n, rng)
    entries = {e.label: e for e in plan.defenses}
    items: list[dict[str, Any]] = []
    unstored: list[str] = []  # re-measured values whose cell the stored rows lack
    compared: dict[tuple[str, int], tuple[int, int]] = {}
    with scratch_root(plan, root, scratch, results_path) as (scratch_dir, ds):
        differ = config_difference(found.dataset_config, ds.config)
        if differ:
            raise ValueError(
                f"verify: the {plan.dataset} built from the sweep's options is not the data the zoo's "
                f"models were measured on ({', '.join(differ)} differ); check dataset_set and the data"
            )
        for label, unit_seed in chosen:
            rows = mine[(mine["label"].astype(str) == label) & (mine["seed"].astype(int) == unit_seed)]
            dev = measure_device(device, rows)
            set_threads(recorded_threads(rows) or plan.threads or torch.get_num_threads())
            trained = load_trained(found, label, unit_seed, device=dev, dataset=ds)
            items.extend(
                measure_cells(
                    plan,
                    trained,
                    entries[label],
                    unit_seed,
                    rows,
                    scratch=scratch_dir,
                    cells=cells,
                    rng=rng,
                    dev=dev,
                    unstored=unstored,
                )
            )
            if certificates:
                values, expected = certificate_values(
                    plan, trained, entries[label], unit_seed, root=root, scratch=scratch_dir, dev=dev
                )
                items.extend(values)
                compared[(label, unit_seed)] = (len(values), expected)
    frame = _judge_tolerance(items, tolerance)
    skipped = len(units) - len(checkable)
    report = _tolerance_report(frame, tolerance) + unstored_line(unstored)
    if skipped:
        report.append(f"{skipped} model(s) with rows are not in the zoo (not checked)")
    return make_outcome(
        frame,
        "zoo",
        report,
        None if scratch is None else Path(scratch),
        problems=certificate_problems(compared) if certificates else [],
        models=len(chosen),
    )


def _exact_expected(item: dict[str, Any]) -> bool:
    """Whether the value was re-measured (``here``: the fresh row's provenance) with the software, CPU capability,
    device and batch size (where both rows recorded one) it was recorded with."""
    recorded = {k: item.get(f"recorded_{k}", "") for k in SHOWN}
    here = item["here"]
    sizes = {str(v) for v in (recorded.get("batch_size"), here.get("batch_size")) if str(v) not in ("", "nan", "0")}
    return same_software(recorded, here) and str(recorded["device"]) == str(here["device"]) and len(sizes) <= 1


def _judge_tolerance(items: list[dict[str, Any]], tolerance: float | None) -> pd.DataFrame:
    for item in items:
        allowed = tolerance if tolerance is not None else (0.0 if _exact_expected(item) else CROSS_MACHINE_TOLERANCE)
        diff = difference(item, item["recorded"])
        item.update(
            difference=diff,
            allowed=allowed,
            reference=item["recorded"],
            passes=abs(diff) <= allowed + 1e-12 and item["n"] == item["recorded_n"],
            status=(
                "exact"
                if diff == 0 and item["n"] == item["recorded_n"]
                else "within"
                if abs(diff) <= allowed + 1e-12 and item["n"] == item["recorded_n"]
                else "FAILS"
            ),
        )
    return pd.DataFrame(items)


def _tolerance_report(frame: pd.DataFrame, tolerance: float | None) -> list[str]:
    if frame.empty:
        return []
    if tolerance is not None:
        lines = [f"tolerance: {tolerance:g} (--tolerance), accuracy as a fraction; η relative"]
    else:
        same = int((frame["allowed"] == 0).sum())
        lines = [
            f"tolerance: 0 for the {same} value(s) recorded with this machine's CPU capability, torch version "
            f"and build and device; {CROSS_MACHINE_TOLERANCE:g} for the {len(frame) - same} others "
            f"(accuracy as a fraction; η relative; --tolerance sets it)"
        ]
    return lines + largest_difference(frame)


__all__ = [
    "VerifyOutcome",
    "verify_zoo",
    "verify_sweep",
    "checkpoint_threads",
    "format_verify_table",
    "CROSS_MACHINE_TOLERANCE",
    "SEED_SPREAD_K",
    "SPREAD_FLOOR",
]
