"""Running a sweep's work: one (defense entry, seed) unit — training, each cell not yet stored, the certificate —
and the flags that need rows of several cells. ``bench.sweep.run_sweep`` hands the units to an executor
(``bench.executors``) that calls these.

Over 400 lines as one module: a unit's training, cells, ``any`` cell and certificate share the unit's stored-row
bookkeeping (what is done, what a cell claims)."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .._version import __version__
from ..attacks import build_attack
from ..contracts import ALL_MODALITIES, ThreatModel
from ..data.base import leading_count
from . import distributed
from .api import attack_options_for, train_defense
from .cell_journal import CellJournal
from .certification import (
    CERTIFIED_CSV,
    certificate_rows,
    certify_model,
    noise_set,
    read_table,
    settings_mismatch,
    smoothed_label,
)
from .configs import ModelConfig
from .environment import row_provenance
from .evaluate import Measurement, clean_accuracy, robust_accuracy
from .flags import Flag, check_attack, clean_row_flags, flag_rows, row_flags
from .result_readers import read_rows
from .result_rows import (
    CLEAN,
    NO_MODALITY,
    ResultRow,
    attack_rows,
    cell_key,
    clean_row,
    decode_outcomes,
    done_cells,
    frame_keys,
)
from .results import append_rows, rewrite_rows
from .retire import RetireOutcome
from .sweep_config import CertifySpec, DefenseEntry, GridBlock
from .sweep_plan import SweepPlan, unit_cells
from .threat_sets import ANY, any_flags, combine_any, modality_label, threat_sets
from .train import TrainedModel, model_dtype, select_device

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    results_path: Path
    evaluated_rows: int = 0
    skipped_rows: int = 0
    models: int = 0
    certified: int = 0
    retired: RetireOutcome | None = None  # stale rows found (or moved, with --retire-stale) before the work
    off_grid: RetireOutcome | None = None  # rows of cells the grid no longer holds, found (or moved) alike
    journals: RetireOutcome | None = None  # journals of cells no run of the plan resumes, found (or moved) alike

    def add(self, other: SweepOutcome) -> None:
        self.evaluated_rows += other.evaluated_rows
        self.skipped_rows += other.skipped_rows
        self.models += other.models
        self.certified += other.certified


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` (intra-op, also OpenMP/MKL) when a count is given; recorded in every row."""
    if threads is None:
        return
    if int(threads) < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(int(threads))


def train_unit(
    plan: SweepPlan,
    entry: DefenseEntry,
    seed: int,
    *,
    root: Path,
    device: str,
    progress: bool = False,
    sync_batchnorm: bool = False,
) -> TrainedModel:
    """Train (or load) the model of one unit (under the checkpoint folder's lock, see ``bench.train``)."""
    return train_defense(
        entry.defense,
        dataset=plan.dataset,
        seed=seed,
        overrides={**plan.common_overrides, **entry.overrides},
        dataset_options=plan.dataset_options,
        root=root,
        device=device,
        progress=progress,
        sync_batchnorm=sync_batchnorm,
    )


def unit_common(trained: TrainedModel, entry: DefenseEntry, seed: int, dev: torch.device) -> dict[str, Any]:
    """The columns every row of a unit shares (identity and provenance)."""
    ds = trained.dataset  # type: ignore[attr-defined]
    return dict(
        dataset=ds.name,
        defense=entry.defense,
        label=entry.label,
        seed=seed,
        checkpoint_sha256=trained.sha256,
        config_hash=trained.key.config_hash,
        device=str(dev),
        suite_version=__version__,
        dtype=model_dtype(trained.model),
    )


def run_cell(
    plan: SweepPlan,
    trained: TrainedModel,
    entry: DefenseEntry,
    seed: int,
    cell: tuple[GridBlock, str, str] | None,
    *,
    dev: torch.device,
    done: set[tuple],
    results_path: Path,
    claimed: set[tuple] | None = None,
) -> tuple[int, int]:
    """Evaluate one cell of a unit unless its rows are stored: (rows evaluated, rows skipped).

    ``claimed``: the row keys of the unit's earlier cells. Grid blocks may overlap (a uni-modal block at ε = 1 and
    a radius grid through 1): such a row belongs to its first cell, so a later cell neither evaluates nor counts it
    and each stored row is counted once. The cell's own keys are added to it. None: every ε of the cell."""
    common = {**unit_common(trained, entry, seed, dev), "batch_size": plan.batch_size}
    if cell is None:
        return _clean_cell(trained, common, plan.batch_size, dev, done, results_path)
    block, attack, modality = cell
    return _attack_cell(
        trained, common, block, attack, modality, plan.batch_size, dev, done, results_path, claimed=claimed
    )


def earlier_cell_keys(
    plan: SweepPlan, trained: TrainedModel, entry: DefenseEntry, seed: int, index: int, dev: torch.device
) -> set[tuple]:
    """The row keys of the attack cells before ``unit_cells(plan)[index]``: ``claimed`` for a cell run on its own
    (a Ray task), so it counts and evaluates what it would in the sequential sweep."""
    common = unit_common(trained, entry, seed, dev)
    keys: set[tuple] = set()
    for cell in unit_cells(plan)[:index]:
        if cell is not None:
            keys.update(_cell_plan(trained.dataset, common, *cell)[3].values())
    return keys


def cell_row_keys(ds: Any, common: Mapping[str, Any], cell: tuple[GridBlock, str, str] | None) -> list[tuple]:
    """The row keys of one cell of a unit (``unit_cells``) on dataset ``ds``, without a model: ``common`` names
    its dataset, label, seed and checkpoint (``sweep_status`` counts stored rows with them)."""
    if cell is None:
        return [
            cell_key(
                common["dataset"],
                common["label"],
                common["seed"],
                common["checkpoint_sha256"],
                CLEAN,
                CLEAN,
                NO_MODALITY,
                0.0,
            )
        ]
    return list(_cell_plan(ds, common, *cell)[3].values())


def certificate_settings(spec: CertifySpec, method: str, test_size: int) -> dict[str, Any]:
    """The recorded settings a stored certificate of ``method`` must have been made with to count as this sweep's
    (:func:`~mmrobust_bench.bench.certification.settings_mismatch`): the number of test samples, and the radius
    grid (empirical; smoothing clips radii above its cap) or smoothing's ``n0``, ``n`` and ``alpha``."""
    n = leading_count(spec.test_samples, test_size)
    if method == "smoothing":
        s = spec.smoothing
        return {"n": n, "n0": s.n0, "n_noise": s.n, "alpha": s.alpha}
    return {"n": n, "radii": spec.radii}


def _stored(
    stored: pd.DataFrame,
    model: tuple,
    method: str,
    expect: dict[str, Any],
    *,
    modality: str | None = None,
    sigma: float | None = None,
) -> bool:
    """Whether the certificate is stored with the sweep's settings; stored rows of other settings are named in a
    warning (certifying again replaces them)."""
    rows = certificate_rows(stored, model, method, modality, sigma)
    if rows.empty:
        return False
    differ = settings_mismatch(rows, expect)
    if differ:
        what = method if modality is None else f"{method} on {modality}"
        log.warning(
            "%s %s seed %s: the stored %s certificate was made with other settings (%s); certifying again replaces it",
            model[0],
            model[1],
            model[2],
            what,
            "; ".join(differ),
        )
    return not differ


def certificates_to_make(
    plan: SweepPlan, entry: DefenseEntry, seed: int, ds: Any, stored: pd.DataFrame, sha256: str | None
) -> list[tuple[str, list[str]]]:
    """The certificates of a unit not yet stored with the sweep's settings: (method, noise sets), the sets only
    for smoothing (those not stored at its σ). ``sha256``: the unit's model (None: not trained, nothing stored)."""
    spec = plan.certify_for(entry)
    if spec is None:
        return []
    if sha256 is None:
        return [(m, list(spec.modalities) if m == "smoothing" else []) for m in spec.methods]
    model = (ds.name, entry.label, seed, sha256)
    names = [s.name for s in ds.specs]
    todo: list[tuple[str, list[str]]] = []
    for method in spec.methods:
        expect = certificate_settings(spec, method, len(ds.test))
        if method == "smoothing":
            sets = [
                m
                for m in spec.modalities
                if not _stored(
                    stored,
                    model,
                    method,
                    expect,
                    modality=smoothed_label(noise_set(m, names), names),
                    sigma=spec.smoothing.sigma,
                )
            ]
            if sets:
                todo.append((method, sets))
        elif not _stored(stored, model, method, expect):
            todo.append((method, []))
    return todo


def certify_unit(
    plan: SweepPlan,
    trained: TrainedModel,
    entry: DefenseEntry,
    seed: int,
    *,
    root: Path,
    dev: torch.device,
    command: str,
) -> int:
    """Certify a unit's model unless its certificate rows are stored; 1 if it certified, else 0."""
    spec = plan.certify_for(entry)
    assert spec is not None
    ds = trained.dataset  # type: ignore[attr-defined]
    todo = certificates_to_make(plan, entry, seed, ds, read_table(root / CERTIFIED_CSV), trained.sha256)
    for method, sets in todo:
        certify_model(
            ModelConfig(
                defense=entry.defense,
                dataset=plan.dataset,
                seed=seed,
                overrides={**plan.common_overrides, **entry.overrides},
                dataset_options=plan.dataset_options,
                label=entry.label,
            ),
            spec.for_method(method, seed=seed, modalities=sets),
            root=root,
            device=str(dev),
            progress=False,
            trained=trained,
            command=command,
        )
    return 1 if todo else 0


def run_unit(
    plan: SweepPlan,
    entry: DefenseEntry,
    seed: int,
    *,
    root: Path,
    results_path: Path,
    device: str,
    progress: bool = False,
    command: str,
    sync_batchnorm: bool = False,
    bar: Any = None,
) -> SweepOutcome:
    """One (defense, seed) unit start to end: train or load, every cell not yet stored, the certificate."""
    outcome = SweepOutcome(results_path)
    dev = select_device(device)
    main_rank = distributed.current().main
    trained = train_unit(
        plan, entry, seed, root=root, device=str(dev), progress=progress, sync_batchnorm=sync_batchnorm
    )
    outcome.models += 1
    done = done_cells(read_rows(results_path))  # read per unit: other shards/processes may have added cells
    claimed: set[tuple] = set()
    for cell in unit_cells(plan):
        if bar is not None:  # names the cell on the bar while it runs, and in its log line once done
            what = "clean" if cell is None else f"{cell[1]} on {cell[2]}"
            bar.set_postfix_str(f"{entry.label} seed {seed}: {what}")
        evaluated, skipped = run_cell(
            plan, trained, entry, seed, cell, dev=dev, done=done, results_path=results_path, claimed=claimed
        )
        outcome.evaluated_rows += evaluated
        outcome.skipped_rows += skipped
        if bar is not None:
            bar.update(1)
    if plan.certify is not None:
        if bar is not None:
            bar.set_postfix_str(f"{entry.label} seed {seed}: certificate")
        if main_rank:
            outcome.certified += certify_unit(plan, trained, entry, seed, root=root, dev=dev, command=command)
        distributed.barrier()
        if bar is not None:
            bar.update(1)
    return outcome


def mark_row_flags(results_path: Path) -> pd.DataFrame:
    """Add the flags that need rows of several cells (``non_monotone`` along an ε curve assembled from several
    grid blocks, ``fgm_beats_pgd`` between the fgm and pgd_l2 cells of one model) to the results CSV, atomically
    and under the store's lock. Idempotent: flags already present stay, nothing is duplicated."""

    def update(frame: pd.DataFrame) -> pd.DataFrame | None:
        if frame.empty:
            return None
        flags = flag_rows(frame)
        if flags.astype(str).tolist() == frame["flags"].astype(str).tolist():
            return None
        frame["flags"] = flags
        return frame

    return rewrite_rows(results_path, update)


def _clean_cell(
    trained: TrainedModel,
    common: dict[str, Any],
    batch_size: int,
    dev: torch.device,
    done: set[tuple],
    results_path: Path,
) -> tuple[int, int]:
    """The clean-accuracy row of one model, unless present: (rows evaluated, rows skipped)."""
    key = cell_row_keys(trained.dataset, common, None)[0]  # type: ignore[attr-defined]
    if key in done:
        return 0, 1
    clean = clean_accuracy(trained.model, trained.dataset.test, batch_size, dev)  # type: ignore[attr-defined]
    _append_on_main(results_path, [clean_row(clean, norm="l2", flags=clean_row_flags(clean), common=common)])
    done.add(key)
    return 1, 0


def _cell_plan(
    ds: Any, common: Mapping[str, Any], block: GridBlock, attack: str, modality: str
) -> tuple[Any, ThreatModel, str, dict[float, tuple]]:
    """One attack cell's attack, threat, modality label and row key per ε (NaN for ``missing``) on dataset ``ds``."""
    atk = build_attack(attack, ds.specs, seed=common["seed"], **attack_options_for(attack, block.attack_set, ds))
    grid = list(block.eps) if atk.norm_bounded else [math.nan]
    choice = ALL_MODALITIES if modality == ANY else modality  # ``any``'s threat stands for its norm only
    threat = ThreatModel.parse(choice, 0.0 if math.isnan(grid[0]) else grid[0], ds.specs, norm=block.norm)
    label = ANY if modality == ANY else modality_label(modality, threat)
    keys = {
        e: cell_key(
            common["dataset"],
            common["label"],
            common["seed"],
            common["checkpoint_sha256"],
            attack,
            block.config(atk.describe()),
            label,
            e,
            threat.norm,
        )
        for e in grid
    }
    return atk, threat, label, keys


def _attack_cell(
    trained: TrainedModel,
    common: dict[str, Any],
    block: GridBlock,
    attack: str,
    modality: str,
    batch_size: int,
    dev: torch.device,
    done: set[tuple],
    results_path: Path,
    claimed: set[tuple] | None = None,
) -> tuple[int, int]:
    """One attack on one modality at the block's ε values not yet present, batched over ε, rows appended at once."""
    atk, _threat, _label, keys = _cell_plan(trained.dataset, common, block, attack, modality)
    grid = list(keys)
    if claimed is not None:  # rows an earlier cell of this unit owns: not this cell's to evaluate or count
        grid = [e for e in grid if keys[e] not in claimed]
        claimed.update(keys.values())
        if not grid:
            return 0, 0
    todo = [e for e in grid if keys[e] not in done]
    if not todo:
        return 0, len(grid)
    if modality == ANY:
        return _any_cell(
            trained, common, block, attack, atk, todo, batch_size, dev, done, results_path, keys, len(grid)
        )
    _measured, _cells, rows, journal = _measure_set(
        trained, common, block, attack, modality, todo, batch_size, dev, results_path=results_path
    )
    _append_on_main(results_path, rows)
    if journal is not None:
        journal.discard()
    done.update(keys[e] for e in todo)
    return len(rows), len(grid) - len(todo)


def _measure_set(
    trained: TrainedModel,
    common: dict[str, Any],
    block: GridBlock,
    attack: str,
    modality: str,
    todo: Sequence[float],
    batch_size: int,
    dev: torch.device,
    *,
    results_path: Path,
) -> tuple[list[Measurement], dict[float, str], list[ResultRow], CellJournal | None]:
    """One attack on one modality choice at the ε values ``todo``: its measurements, each ε's flags cell, its rows,
    and its journal.

    Finished batches and the validity checks go to a cell journal beside ``results_path`` (``bench.cell_journal``),
    so a stopped sweep resumes the cell where it stopped; the caller discards the journal once the rows are
    stored."""
    ds = trained.dataset  # type: ignore[attr-defined]
    atk, threat, label, keys = _cell_plan(trained.dataset, common, block, attack, modality)
    eps_grid = list(todo) if atk.norm_bounded else [0.0]
    test = block.split(ds.test)
    journal = cell_journal(results_path, common, [keys[e] for e in todo], batch_size, len(test))
    # progress as the process allows (off with --no-progress / -q): a bar beside the sweep's on a terminal, and in a
    # log file a line with the ETA once a minute while a long cell (an autoattack cell: up to an hour) runs
    measured = robust_accuracy(
        trained.model, test, atk, threat, eps_grid, batch_size, dev, progress=True, journal=journal
    )
    stored_flags = journal.checks() if journal is not None else None
    if stored_flags is None:
        flags = check_attack(trained.model, test, atk, threat, eps_grid, measured, dev)
        if journal is not None:
            journal.store_checks([dataclasses.asdict(f) for f in flags])
    else:
        flags = [Flag(**f) for f in stored_flags]
    for flag in flags:
        log.warning(
            "%s %s seed %s, %s on %s: %s",
            common["dataset"],
            common["label"],
            common["seed"],
            attack,
            label,
            flag.note(),
        )
    rows = attack_rows(
        measured,
        attack=attack,
        attack_config=block.config(atk.describe()),
        library=atk.library,
        library_version=atk.library_version,
        modality=label,
        norm=threat.norm,
        norm_bounded=atk.norm_bounded,
        flags_at=partial(row_flags, flags),
        common=common,
    )
    cells = {m.eps if atk.norm_bounded else math.nan: row.flags for m, row in zip(measured, rows)}
    return measured, cells, rows, journal


def cell_journal(
    results_path: Path, common: dict[str, Any], keys: Sequence[tuple], batch_size: int, samples: int
) -> CellJournal | None:
    """The journal of a cell whose rows go to ``results_path`` (None under torchrun, whose ranks share batches):
    named by everything that could make its stored batches another measurement's, the machine's provenance
    included (a job resumed on another node starts the cell again). Like stored rows, it is keyed by the suite's
    version, not its source: a resume after editing the code continues with the new code."""
    if distributed.current().active:
        return None
    identity = {
        # the model, its checkpoint, device, dtype, the suite's version (the batch size below, as a number)
        **{k: str(v) for k, v in common.items() if k != "batch_size"},
        **row_provenance(common["device"]),  # torch, its build, the CPU capability, the device's name, threads
        "rows": [[str(v) for v in k] for k in keys],  # as text: a ``missing`` cell's ε is NaN, which JSON refuses
        "batch_size": int(batch_size),
        "samples": int(samples),
    }
    return CellJournal.open(results_path.parent, identity)


def _any_cell(
    trained: TrainedModel,
    common: dict[str, Any],
    block: GridBlock,
    attack: str,
    atk: Any,
    todo: list[float],
    batch_size: int,
    dev: torch.device,
    done: set[tuple],
    results_path: Path,
    keys: dict[float, tuple],
    planned: int,
) -> tuple[int, int]:
    """The ``any`` rows at ``todo``: each threat set's stored per-sample outcomes where its row has them, the set
    measured (and its rows stored) where not, then the per-sample worst case (``bench.threat_sets``)."""
    ds = trained.dataset  # type: ignore[attr-defined]
    stored = read_rows(results_path)
    by_key = dict(zip(frame_keys(stored), stored.itertuples(index=False))) if not stored.empty else {}
    per_set: dict[str, list[Measurement]] = {}
    set_cells: dict[str, dict[float, str]] = {}
    evaluated = 0
    for choice in threat_sets([s.name for s in ds.specs]):
        _, _, label, set_keys = _cell_plan(trained.dataset, common, block, attack, choice)
        found = {e: by_key.get(set_keys[e]) for e in todo}
        need = [e for e in todo if found[e] is None or not str(getattr(found[e], "outcomes", "") or "")]
        measured_at: dict[float, Measurement] = {}
        cells: dict[float, str] = {}
        if need:
            measured, new_cells, rows, journal = _measure_set(
                trained, common, block, attack, choice, need, batch_size, dev, results_path=results_path
            )
            fresh = [row for e, row in zip(need, rows) if set_keys[e] not in done]
            # a stored row without outcomes is replaced by the measurement ``any`` is combined from, so no stored
            # set row can disagree with (and read below) the stored ``any``
            stale = [row for e, row in zip(need, rows) if set_keys[e] in done]
            _append_on_main(results_path, fresh)
            if stale:
                _append_on_main(results_path, stale, replace=True)
            if journal is not None:
                journal.discard()
            done.update(set_keys[e] for e in need)
            evaluated += len(fresh)
            # under the planned ε, as the stored sets below: an attack without a budget measures at ε 0, plans NaN
            measured_at.update((e, dataclasses.replace(m, eps=e)) for e, m in zip(need, measured))
            cells.update(new_cells)
        for e in todo:
            if e not in measured_at:
                row = found[e]
                measured_at[e] = Measurement(
                    e,
                    round(row.accuracy * row.n),
                    int(row.n),
                    float(row.wall_seconds),
                    decode_outcomes(row.outcomes, int(row.n)),
                )
                cells[e] = "" if pd.isna(row.flags) else str(row.flags)
        per_set[label] = [measured_at[e] for e in todo]
        set_cells[label] = cells
    rows = attack_rows(
        combine_any(per_set),
        attack=attack,
        attack_config=block.config(atk.describe()),
        library=atk.library,
        library_version=atk.library_version,
        modality=ANY,
        norm=block.norm,
        norm_bounded=atk.norm_bounded,
        common=common,
        flags_at=lambda e: any_flags({s: c.get(e, "") for s, c in set_cells.items()}),
    )
    _append_on_main(results_path, rows)
    done.update(keys[e] for e in todo)
    return evaluated + len(rows), planned - len(todo)


def _append_on_main(results_path: Path, rows: list[ResultRow], *, replace: bool = False) -> None:
    """Rank 0 writes (every rank measured its share and holds the merged numbers)."""
    if distributed.current().main:
        append_rows(results_path, rows, replace=replace)


__all__ = [
    "SweepOutcome",
    "certify_unit",
    "earlier_cell_keys",
    "mark_row_flags",
    "run_cell",
    "run_unit",
    "set_threads",
    "train_unit",
    "unit_common",
]
