"""``mmrobust-bench run``: train (or reuse) a defense and attack it over an ε grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import choose_threads, dataset_options, eps_list, key_values, overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="train (or reuse) a defense and attack it over an ε grid")
    run.add_argument("--defense", default="crmt_at", help="defense id (see `mmrobust-bench list`)")
    run.add_argument("--attack", default="pgd_l2", help="attack id: fgm, pgd_l2, missing, torchattacks:NAME, ...")
    run.add_argument(
        "--modality",
        default="a",
        help="attacked modality: a name, a comma list, 'all' (one joint "
        "ball) or 'any' (per sample, the worst of each modality alone "
        "and all jointly)",
    )
    run.add_argument("--dataset", default="synthav", help="dataset id (see `mmrobust-bench list`)")
    run.add_argument(
        "--eps",
        help="comma-separated ε grid in model-input space (default: by --norm, l2 "
        "0.25,0.5,1,1.5,2; linf 0.005,0.01,0.02,0.05,0.1; l1 1,2,5,10,20; l0 1,2,5,10,20 "
        "coordinates)",
    )
    run.add_argument(
        "--norm",
        choices=("l2", "linf", "l1", "l0"),
        default="l2",
        help="threat norm; `mmrobust-bench list` shows the norms of each attack",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of data order, initialisation and attack randomness")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a defense or training setting")
    run.add_argument("--config", help="YAML file of defense/training settings (--set wins)")
    run.add_argument("--attack-set", action="append", metavar="KEY=VALUE", help="attack option, e.g. steps=10")
    run.add_argument("--dataset-set", action="append", metavar="KEY=VALUE", help="dataset option, e.g. prefer=visual")
    run.add_argument(
        "--root", help="where datasets, checkpoints, results and plots go (default: $MMROBUST_HOME or ./runs)"
    )
    run.add_argument("--results", help="results CSV (default: <root>/results.csv)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    run.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun: SyncBatchNorm across GPUs (default: per-GPU statistics, as the reference)",
    )
    run.add_argument("--batch-size", type=int, default=500, help="evaluation batch size")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument(
        "--curve",
        choices=("sweep", "minimal"),
        default="sweep",
        help="sweep: attack at every ε; minimal: one minimal-norm run gives the whole curve",
    )
    run.add_argument(
        "--data-root",
        help="data directory of a real dataset: a prepared ks, vggsound or ucf101 folder, or FSDD's recordings/ for "
        "avdigits (same as --dataset-set data_root=DIR)",
    )
    run.add_argument(
        "--label",
        help="name of this configuration in the rows, so that two configurations of one "
        "defense stay apart (default: the defense id)",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="re-evaluate and replace cells already stored for this checkpoint (default: reuse them)",
    )
    run.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (torch.set_num_threads), recorded in the "
        "rows (default: on the CPU, the cores idle at the start, at most "
        "torch's own count)",
    )
    run.set_defaults(func=cmd, distributed=True)


def cmd(args: argparse.Namespace) -> int:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..bench.api import run_model
    from ..bench.configs import EvalConfig, ModelConfig

    choose_threads(args.device, args.threads)
    result = run_model(
        ModelConfig(
            defense=args.defense,
            dataset=args.dataset,
            seed=args.seed,
            overrides=overrides(args),
            dataset_options=dataset_options(args),
            label=args.label,
        ),
        EvalConfig(
            attack=args.attack,
            modality=args.modality,
            eps=eps_list(args.eps) if args.eps else None,
            norm=args.norm,
            attack_options=key_values(args.attack_set, "--attack-set"),
            batch_size=args.batch_size,
            curve=args.curve,
        ),
        root=Path(args.root) if args.root else None,
        results=Path(args.results) if args.results else None,
        device=args.device,
        progress=not args.no_progress,
        sync_batchnorm=args.sync_bn,
        force=args.force,
    )
    trained = result.trained
    print(f"{args.dataset} · defense {args.defense} (seed {args.seed}) · {trained.status}")
    print(result.table)
    print(f"checkpoint: {trained.directory} (sha256 {trained.sha256[:12]}…)")
    # a reused run's one note is this line's "reused" (said once, here); a run that evaluates logs its validity
    # flags (its notes) as warnings itself, once
    print(
        f"results:    {result.results_path} "
        + (
            f"(reused {len(result.rows)} stored rows: nothing evaluated; --force re-evaluates)"
            if result.reused
            else f"(+{len(result.rows)} rows)"
        )
    )
    if result.plot_path is not None:  # the bench measures; the CLI draws (reports sit above the bench)
        from ..reports.curves import plot_robust_curve  # here: matplotlib loads only for a run that draws

        plot_robust_curve(result.rows, result.plot_path, title=result.plot_title, command=args.command_line)
        print(f"plot:       {result.plot_path}")
    return 0
