"""``mmrobust-bench run``: train (or reuse) a defense and attack it over an ε grid."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import dataset_options, eps_list, key_values, overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="train (or reuse) a defense and attack it over an ε grid")
    run.add_argument("--defense", default="crmt_at", help="defense id (see `mmrobust-bench list`)")
    run.add_argument("--attack", default="pgd_l2", help="attack id: fgm, pgd_l2, missing, torchattacks:NAME, ...")
    run.add_argument("--modality", default="a", help="attacked modality: a name, a comma list, or 'all' (joint)")
    run.add_argument("--dataset", default="synthav")
    run.add_argument("--eps", help="comma-separated ε grid in model-input space (default 0.25,0.5,1,1.5,2)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a defense or training setting")
    run.add_argument("--config", help="YAML file of defense/training settings (--set wins)")
    run.add_argument("--attack-set", action="append", metavar="KEY=VALUE", help="attack option, e.g. steps=10")
    run.add_argument("--dataset-set", action="append", metavar="KEY=VALUE", help="dataset option, e.g. prefer=visual")
    run.add_argument("--root", help="where datasets, checkpoints, results and plots go (default $MMROBUST_HOME or ./runs)")
    run.add_argument("--results", help="results CSV (default <root>/results.csv)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    run.add_argument("--sync-bn", action="store_true",
                     help="under torchrun: SyncBatchNorm across GPUs (default: per-GPU statistics, as the reference)")
    run.add_argument("--batch-size", type=int, default=500, help="evaluation batch size")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--curve", choices=("sweep", "minimal"), default="sweep",
                     help="sweep: attack at every ε; minimal: one minimal-norm run gives the whole curve")
    run.add_argument("--data-root", help="directory of a prepared real dataset (ks, vggsound, ucf101)")
    run.set_defaults(func=cmd, distributed=True)


def cmd(args: argparse.Namespace) -> int:
    from ..bench.api import DEFAULT_EPS, run

    result = run(
        defense=args.defense, attack=args.attack, modality=args.modality, dataset=args.dataset,
        eps=eps_list(args.eps) if args.eps else DEFAULT_EPS, seed=args.seed, overrides=overrides(args),
        attack_options=key_values(args.attack_set, "--attack-set"),
        dataset_options=dataset_options(args),
        root=Path(args.root) if args.root else None, results=Path(args.results) if args.results else None,
        device=args.device, batch_size=args.batch_size, progress=not args.no_progress, curve=args.curve,
        sync_batchnorm=args.sync_bn,
    )
    trained = result.trained
    status = "reused cached checkpoint" if trained.cached else f"trained in {trained.seconds:.1f} s"
    print(f"{args.dataset} · defense {args.defense} (seed {args.seed}) · {status}")
    print(result.table)
    print(f"checkpoint: {trained.directory} (sha256 {trained.sha256[:12]}…)")
    print(f"results:    {result.results_path} (+{len(result.rows)} rows)")
    if result.plot_path is not None:
        print(f"plot:       {result.plot_path}")
    for note in result.notes:
        print(f"note: {note}")
    return 0
