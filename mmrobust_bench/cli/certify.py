"""``mmrobust-bench certify``: certified radii, η and an honesty check for a trained defense."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import eps_list, key_values, overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    cert = sub.add_parser("certify", help="certified radii (Eq. 5/7/10), η and an honesty check for a trained defense")
    cert.add_argument("--defense", default="crmt_at", help="defense id (see `mmrobust-bench list`)")
    cert.add_argument("--label", help="name of this model in the output rows (default: the defense id)")
    cert.add_argument("--dataset", default="synthav")
    cert.add_argument("--seed", type=int, default=0)
    cert.add_argument("--radius", help="comma-separated radii for certified accuracy (default 0,0.25,0.5,1)")
    cert.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a defense or training setting")
    cert.add_argument("--config", help="YAML file of defense/training settings (--set wins)")
    cert.add_argument("--dataset-set", action="append", metavar="KEY=VALUE", help="dataset option, e.g. n_test=200")
    cert.add_argument("--root", help="where datasets, checkpoints and certificates go (default $MMROBUST_HOME or ./runs)")
    cert.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    cert.add_argument("--batch-size", type=int, default=64, help="samples per batched Jacobian (memory: K×B×|x|)")
    cert.add_argument("--train-samples", type=int, default=-1,
                      help="training samples for the global constants (-1: all; fewer is faster and less safe)")
    cert.add_argument("--honesty-steps", type=int, default=20, help="ℓ2-PGD steps of the honesty check (0: skip)")
    cert.add_argument("--no-progress", action="store_true", help="hide progress bars")
    cert.set_defaults(func=cmd, distributed=True)


def cmd(args: argparse.Namespace) -> int:
    from ..bench import distributed
    from ..bench.api import train_defense
    from ..bench.certification import certify_defense
    from ..certify import DEFAULT_RADII

    world = distributed.current()
    if not world.main:  # under torchrun: take part in training, then let rank 0 certify
        train_defense(args.defense, dataset=args.dataset, seed=args.seed, overrides=overrides(args),
                      dataset_options=key_values(args.dataset_set, "--dataset-set"),
                      root=Path(args.root) if args.root else None, device=args.device, progress=False)
        distributed.barrier()
        return 0
    outcome = certify_defense(
        args.defense, dataset=args.dataset, seed=args.seed, label=args.label, overrides=overrides(args),
        dataset_options=key_values(args.dataset_set, "--dataset-set"),
        root=Path(args.root) if args.root else None, device=args.device,
        radii=eps_list(args.radius, "--radius") if args.radius else DEFAULT_RADII,
        honesty_steps=args.honesty_steps, train_samples=args.train_samples, batch_size=args.batch_size,
        progress=not args.no_progress, command=args.command_line,
    )
    distributed.barrier()
    trained = outcome.trained
    status = "reused cached checkpoint" if trained.cached else f"trained in {trained.seconds:.1f} s"
    print(f"{status}")
    print(outcome.text)
    print(f"files:     {outcome.directory}")
    print(f"certified: {outcome.certified_path}")
    print(f"η pairs:   {outcome.eta_path}")
    return 0
