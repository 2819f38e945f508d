"""``mmrobust-bench sweep``: defenses × seeds × attacks × modalities × ε, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .common import choose_threads, eps_list, int_list, key_values, name_list

if TYPE_CHECKING:
    from ..bench.sweep_units import SweepOutcome


def add_parser(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="defenses × seeds × attacks × modalities × ε, resumable, rows appended per cell")
    sw.add_argument("--config", help="sweep YAML (dataset, seeds, set, defenses with labels, grid, certify)")
    sw.add_argument("--defenses", help="comma-separated defense ids (replaces the YAML's entries)")
    sw.add_argument(
        "--only",
        metavar="LABELS",
        help="comma-separated entry labels: run only these entries of the YAML (with their own settings)",
    )
    sw.add_argument(
        "--skip",
        metavar="LABELS",
        help="comma-separated entry labels: leave these entries of the YAML out (e.g. a slow defense, for later)",
    )
    sw.add_argument(
        "--certify-method",
        metavar="METHODS",
        help="comma-separated certification methods (empirical, smoothing): replaces the YAML's "
        "certify method list, e.g. every model's quick empirical certificate first",
    )
    sw.add_argument(
        "--certify-sets",
        metavar="SETS",
        help="comma-separated smoothing noise sets of the certify: block to run now (e.g. v,all; a "
        "two-modality set as a+v), the others left for later: one slow model's sets in separate "
        "processes at once. Cells not yet stored and other certify methods still run: add "
        "--certify-method smoothing to run the sets alone",
    )
    sw.add_argument(
        "--no-certify",
        action="store_true",
        help="leave out the YAML's certify: block: train and evaluate every cell now, certify later "
        "with the same command without this flag (finished cells are skipped)",
    )
    sw.add_argument(
        "--status",
        action="store_true",
        help="train and measure nothing: print, per entry and seed, the rows stored of the rows it will have, "
        "the certificates still to make and the cells under way (with --shard: that shard's)",
    )
    sw.add_argument(
        "--retire-stale",
        action="store_true",
        help="before the work, move the stored rows of this sweep's entries made under another "
        "configuration (a changed setting), or of cells the YAML's grid no longer holds (a changed attack "
        "setting, a dropped radius) or measured at another batch_size (not with "
        "--attacks/--modalities/--eps/--norm), to <root>/retired/, "
        "with the journals of cells no run of this sweep resumes (without it they are only reported); "
        "with --status: retire, then print the status, measuring nothing",
    )
    sw.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the YAML's, else 0)")
    sw.add_argument(
        "--attacks",
        help="comma-separated attack ids; any of --attacks/--modalities/--eps replaces the YAML grid by one "
        "block (default: the YAML grid's; in a command-line block or without a grid, fgm,pgd_l2)",
    )
    sw.add_argument(
        "--modalities",
        help="comma-separated attacked modalities: v, a, all (joint) (default: the YAML grid's; in a "
        "command-line block or without a grid, v,a,all)",
    )
    sw.add_argument(
        "--eps",
        help="comma-separated ε grid (default: the YAML grid's; in a command-line block or without a grid, "
        "0.5,1 for l2, else the --norm's own grid)",
    )
    sw.add_argument(
        "--norm",
        choices=("l2", "linf", "l1", "l0"),
        help="threat norm of every grid block; without --eps a command-line block takes the norm's "
        "own ε grid (default: each block's own `norm`, else l2)",
    )
    sw.add_argument("--dataset", help="dataset id (default: the YAML's, else synthav)")
    sw.add_argument("--dataset-set", action="append", metavar="KEY=VALUE", help="dataset option, e.g. n_train=256")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every defense, e.g. epochs=1")
    sw.add_argument("--certify", metavar="RADII", help="also certify every model, certified accuracy at these radii")
    sw.add_argument("--root", help="where datasets, checkpoints, results go (default: $MMROBUST_HOME or ./runs)")
    sw.add_argument("--results", help="results CSV (default: <root>/results.csv)")
    sw.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    sw.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun: SyncBatchNorm across GPUs (default: per-GPU statistics, as the reference)",
    )
    sw.add_argument("--batch-size", type=int, help="evaluation batch size (default: the YAML's, else 500)")
    sw.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sw.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads for all work, replacing the YAML's "
        "`threads` and recorded in every row (default: the YAML's; else on "
        "the CPU, the cores idle at the start, at most torch's own count)",
    )
    sw.add_argument(
        "--shard",
        metavar="I/N",
        help="run only shard I of N (0-based) of the (defense, seed) units; "
        "shards may run at once against one root, e.g. a Slurm array "
        "with --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT",
    )
    sw.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: this process; ray: trainings and cells as Ray tasks (needs the [ray] extra)",
    )
    sw.add_argument(
        "--address", help="with --executor ray: address of an existing Ray cluster (default: start a local one)"
    )
    sw.add_argument(
        "--workers",
        type=int,
        help="with --executor ray: concurrent tasks (default: one per core, "
        "or cores / threads when threads are pinned)",
    )
    sw.set_defaults(func=cmd, distributed=True)


def cmd(args: argparse.Namespace) -> int:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..bench.sweep import build_plan, load_sweep_config, parse_shard, run_sweep

    if args.no_certify and (args.certify or args.certify_method or args.certify_sets):
        raise ValueError(
            "--no-certify leaves certification out; drop it, or drop --certify/--certify-method/--certify-sets"
        )
    plan = build_plan(
        load_sweep_config(args.config) if args.config else {},
        defenses=name_list(args.defenses),
        seeds=int_list(args.seeds, "--seeds") if args.seeds else None,
        attacks=name_list(args.attacks),
        modalities=name_list(args.modalities),
        eps=eps_list(args.eps) if args.eps else None,
        dataset=args.dataset,
        dataset_options=key_values(args.dataset_set, "--dataset-set"),
        overrides=key_values(args.set, "--set"),
        batch_size=args.batch_size,
        certify_radii=eps_list(args.certify, "--certify") if args.certify else None,
        threads=args.threads,
        norm=args.norm,
        only=name_list(args.only),
        skip=name_list(args.skip),
        certify_methods=name_list(args.certify_method),
        certify=not args.no_certify,
        certify_sets=name_list(args.certify_sets),
    )
    shard = parse_shard(args.shard)
    # a grid given on the command line narrows one run: only the YAML's whole grid says what is off it
    grid_from_config = not (args.attacks or args.modalities or args.eps or args.norm)
    if args.status:
        from ..bench.sweep_status import status_table, sweep_status
        from ..io import default_root

        root = Path(args.root) if args.root else default_root()
        results = Path(args.results) if args.results else None
        if args.retire_stale:  # retire, then say where the sweep stands: nothing is trained or measured
            retired = run_sweep(
                plan, root=root, results=results, retire=True, grid_from_config=grid_from_config, measure=False
            )
            print_retired(retired)
        status = sweep_status(plan, root, results, shard=shard, grid_from_config=grid_from_config)
        print(status_table(status))
        return 0
    if args.executor == "local":  # Ray tasks get their own share of the cores (bench.executors.ray_threads)
        choose_threads(args.device, plan.threads)
    outcome = run_sweep(
        plan,
        root=Path(args.root) if args.root else None,
        results=Path(args.results) if args.results else None,
        device=args.device,
        progress=not args.no_progress,
        command=args.command_line,
        sync_batchnorm=args.sync_bn,
        shard=shard,
        executor=args.executor,
        address=args.address,
        workers=args.workers,
        retire=args.retire_stale,
        grid_from_config=grid_from_config,
    )
    part = f"shard {shard[0]}/{shard[1]}: " if shard else ""
    print(
        f"sweep: {part}{outcome.models} models, {outcome.evaluated_rows} rows evaluated, "
        f"{outcome.skipped_rows} already present, {outcome.certified} certified"
    )
    print_retired(outcome)
    print(f"results: {outcome.results_path}")
    return 0


def print_retired(outcome: SweepOutcome) -> None:
    """One line per kind of stale row or journal a sweep found (or moved, with --retire-stale)."""
    for found, what in (
        (outcome.retired, "rows of other configurations"),
        (outcome.off_grid, "rows of cells the grid no longer holds or of another batch size"),
        (outcome.journals, "journals of cells no run of this sweep resumes"),
    ):
        line = found.summary(what) if found is not None else None
        if line:
            print(line)
