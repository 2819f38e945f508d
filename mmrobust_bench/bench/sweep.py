"""Sweeps over defenses × seeds × attacks × modalities × ε, resumable cell by cell, with certification.

The YAML file and its options are described in docs/sweeps.md. The parts: ``bench.sweep_config`` parses the
YAML, ``bench.sweep_plan`` builds and checks the plan, ``bench.sweep_units`` runs one (defense, seed) unit, and
``bench.executors`` runs the units here or on Ray; :func:`run_sweep` ties them together.
"""

from __future__ import annotations

from pathlib import Path

from ..io import default_root
from . import distributed
from .api import invoked_command
from .executors import EXECUTORS, run_units
from .retire import entry_config_hashes, retire_stale
from .retire_grid import retire_off_grid
from .retire_journals import retire_journals
from .sweep_config import CertifySpec, DefenseEntry, GridBlock, load_sweep_config, parse_shard
from .sweep_plan import SweepPlan, build_plan, validate_plan
from .sweep_units import SweepOutcome, mark_row_flags, set_threads
from .train import select_device
from .validate import check_run_settings


def run_sweep(
    plan: SweepPlan,
    *,
    root: Path | None = None,
    results: Path | None = None,
    device: str = "auto",
    progress: bool = True,
    command: str | None = None,
    sync_batchnorm: bool = False,
    shard: tuple[int, int] | None = None,
    executor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    retire: bool = False,
    grid_from_config: bool = True,
    measure: bool = True,
) -> SweepOutcome:
    """Run every cell of ``plan`` that is not yet in ``results``; append each cell's rows when it finishes.

    ``shard=(i, n)`` restricts the run to shard ``i``'s (label, seed) units. ``executor="ray"`` runs the
    units as Ray tasks (``bench.executors``; ``address`` of an existing cluster, else a local one with
    ``workers`` workers). Under torchrun every rank trains and measures its share of each cell; rank 0
    appends the rows and certifies (certification is not sharded) while the others wait.

    Stored rows of the plan's entries made under another configuration are reported (a warning), and with
    ``retire`` moved to ``<root>/retired/`` before any work (``bench.retire``); so are the rows of cells the
    plan's grid no longer holds (``bench.retire_grid``) when ``grid_from_config``: the grid is the whole one
    the YAML asks for, not a narrower one given for this run; and the journals of cells no run of the plan will
    resume (``bench.retire_journals``). ``measure=False`` stops after that: nothing is trained or measured (so
    ``--retire-stale`` can run once before the processes of a parallel regeneration)."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if executor == "local" and (address is not None or workers is not None):
        raise ValueError("--address and --workers apply to --executor ray; drop them or add --executor ray")
    root = Path(root) if root is not None else default_root()
    results_path = Path(results) if results is not None else root / "results.csv"
    command = command or invoked_command()
    set_threads(plan.threads)
    dev = select_device(device)
    # before any work: rows are never lost to an unwritable location or a damaged results file
    check_run_settings(root=root, results=results_path)
    ds = validate_plan(plan, root)
    if retire and distributed.current().active:
        raise ValueError("--retire-stale rewrites the result tables: run it in one process, not under torchrun")
    main = distributed.current().main
    retired = off_grid = journals = None
    if main:  # each entry's configuration is resolved once (it builds the defense) for every check
        expected = entry_config_hashes(plan, ds)
        retired = retire_stale(ds, expected, root=root, results_path=results_path, apply=retire)
        if grid_from_config:
            off_grid = retire_off_grid(plan, ds, expected, root=root, results_path=results_path, apply=retire)
        journals = retire_journals(
            plan, ds, expected, root=root, results_path=results_path, apply=retire, grid=grid_from_config
        )
    if not measure:
        outcome = SweepOutcome(results_path=results_path)
        outcome.retired, outcome.off_grid, outcome.journals = retired, off_grid, journals
        return outcome
    units = plan.work_units(shard)
    outcome = run_units(
        executor,
        plan,
        units,
        root=root,
        results_path=results_path,
        device=str(dev),
        progress=progress,
        command=command,
        sync_batchnorm=sync_batchnorm,
        address=address,
        workers=workers,
    )
    if distributed.current().main:
        mark_row_flags(results_path)
        outcome.retired = retired
        outcome.off_grid = off_grid
        outcome.journals = journals
    return outcome


__all__ = [
    "CertifySpec",
    "DefenseEntry",
    "GridBlock",
    "SweepOutcome",
    "SweepPlan",
    "build_plan",
    "load_sweep_config",
    "parse_shard",
    "run_sweep",
]
