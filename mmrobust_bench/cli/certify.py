"""``mmrobust-bench certify``: certified radii, η and an honesty check for a trained defense.

``--method empirical`` (default): Eq. 5/7/10 radii from gradient-based Lipschitz estimates (empirical).
``--method smoothing``: randomized-smoothing certificates (sound, probabilistic at level 1 − alpha) with
Gaussian noise on ``--modality`` (one modality, a comma list for a joint ball, or ``all``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import choose_threads, eps_list, key_values, overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    cert = sub.add_parser(
        "certify",
        help="certified radii: empirical (Eq. 5/7/10, η) or sound randomized smoothing, with an honesty check",
    )
    cert.add_argument("--defense", default="crmt_at", help="defense id (see `mmrobust-bench list`)")
    cert.add_argument("--label", help="name of this model in the output rows (default: the defense id)")
    cert.add_argument("--dataset", default="synthav", help="dataset id (see `mmrobust-bench list`)")
    cert.add_argument("--seed", type=int, default=0, help="training seed of the model to certify")
    cert.add_argument(
        "--radius",
        help="comma-separated radii for certified accuracy (default: 0,0.25,0.5,1; "
        "smoothing: 0, sigma, 2 sigma, ... up to the largest certifiable radius "
        "sigma*Phi^-1(alpha^(1/n)), above which radii are clipped with a warning)",
    )
    cert.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a defense or training setting")
    cert.add_argument("--config", help="YAML file of defense/training settings (--set wins)")
    cert.add_argument("--dataset-set", action="append", metavar="KEY=VALUE", help="dataset option, e.g. n_test=200")
    cert.add_argument(
        "--root", help="where datasets, checkpoints and certificates go (default: $MMROBUST_HOME or ./runs)"
    )
    cert.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    cert.add_argument("--batch-size", type=int, default=64, help="samples per batched Jacobian (memory: K×B×|x|)")
    cert.add_argument(
        "--train-samples",
        type=int,
        default=-1,
        help="training samples for the global constants: -1 = all, or N >= 1 (fewer is faster and "
        "less safe; 0 is refused)",
    )
    cert.add_argument(
        "--method",
        default="empirical",
        choices=("empirical", "smoothing"),
        help="empirical: Eq. 5/7/10 from Lipschitz estimates; smoothing: randomized smoothing "
        "(sound with probability 1 - alpha)",
    )
    cert.add_argument(
        "--modality",
        action="append",
        metavar="M",
        help="smoothing: modalities that get noise and are certified: one (a), a joint set (a,v) or all; "
        "repeat for several runs (default: all)",
    )
    cert.add_argument("--sigma", type=float, default=0.25, help="smoothing: noise standard deviation σ (input space)")
    cert.add_argument("--n0", type=int, default=100, help="smoothing: noise samples that choose the class")
    cert.add_argument("--n", type=int, default=10000, help="smoothing: noise samples that bound its probability")
    cert.add_argument(
        "--alpha",
        type=float,
        default=0.001,
        help="smoothing: failure probability; each radius holds with probability 1 - alpha",
    )
    cert.add_argument("--noise-batch", type=int, default=1000, help="smoothing: noisy copies per forward pass")
    cert.add_argument(
        "--test-samples",
        type=int,
        default=-1,
        help="certify only the first N >= 1 test samples (-1: all; 0 is refused)",
    )
    cert.add_argument(
        "--honesty-steps",
        type=int,
        default=100,
        help="PGD steps of the honesty check: N >= 0 (0 skips it); its counts are lower bounds",
    )
    cert.add_argument("--honesty-restarts", type=int, default=0, help="extra random-start runs of every honesty attack")
    cert.add_argument(
        "--honesty-targets",
        type=int,
        default=-1,
        help="targeted runs towards the N runner-up classes (-1: every class, 0: untargeted only)",
    )
    cert.add_argument(
        "--honesty-loss",
        default="margin",
        choices=("margin", "ce"),
        help="loss of the honesty check's PGD (margin: CW logit margin; ce: cross-entropy)",
    )
    cert.add_argument(
        "--honesty-legacy",
        action="store_true",
        help="the earlier weak check (untargeted CE ℓ2-PGD, no restarts, last iterate), for comparison; "
        "with --honesty-steps 20 it is the suite's original 20-step version",
    )
    cert.add_argument(
        "--n-attack",
        type=int,
        default=16,
        help="smoothing honesty check: noise draws per PGD step (SmoothAdv); 0 skips the check",
    )
    cert.add_argument("--attack-steps", type=int, default=20, help="smoothing honesty check: PGD steps")
    cert.add_argument(
        "--attack-samples",
        type=int,
        default=-1,
        help="smoothing honesty check: attack only the first N >= 1 certified samples (-1: all; 0 is refused)",
    )
    cert.add_argument("--no-progress", action="store_true", help="hide progress bars")
    cert.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (torch.set_num_threads) for training and certifying, recorded in the "
        "certificate rows (default: on the CPU, the cores idle at the start, at most torch's own count)",
    )
    cert.set_defaults(func=cmd, distributed=True)


def cmd(args: argparse.Namespace) -> int:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..bench import distributed
    from ..bench.api import train_defense
    from ..bench.certification import certify_model
    from ..bench.configs import CertifyConfig, ModelConfig
    from ..bench.validate import check_count

    # 0 would mean "all" below (only N > 0 subsets), the opposite of what it says: refused with the two valid forms
    check_count(args.test_samples, "--test-samples (test samples to certify; -1 = all)", sentinel=-1)
    check_count(
        args.attack_samples, "--attack-samples (certified samples the honesty check attacks; -1 = all)", sentinel=-1
    )
    choose_threads(args.device, args.threads)
    world = distributed.current()
    if not world.main:  # under torchrun: take part in training, then let rank 0 certify
        train_defense(
            args.defense,
            dataset=args.dataset,
            seed=args.seed,
            overrides=overrides(args),
            dataset_options=key_values(args.dataset_set, "--dataset-set"),
            root=Path(args.root) if args.root else None,
            device=args.device,
            progress=False,
        )
        distributed.barrier()
        return 0
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..certify.honesty import HonestyConfig
    from ..certify.smoothing import SmoothingConfig

    if args.honesty_legacy:
        honesty = HonestyConfig.legacy_check(args.honesty_steps)
    else:
        honesty = HonestyConfig(
            steps=max(args.honesty_steps, 0),
            restarts=args.honesty_restarts,
            targeted=args.honesty_targets != 0,
            targeted_classes=args.honesty_targets,
            loss=args.honesty_loss,
        )
    smoothing = (
        SmoothingConfig(
            sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha, batch=args.noise_batch, seed=args.seed
        )
        if args.method == "smoothing"
        else None
    )
    outcome = certify_model(
        ModelConfig(
            defense=args.defense,
            dataset=args.dataset,
            seed=args.seed,
            overrides=overrides(args),
            dataset_options=key_values(args.dataset_set, "--dataset-set"),
            label=args.label,
        ),
        CertifyConfig(
            method=args.method,
            radii=eps_list(args.radius, "--radius") if args.radius else None,
            honesty_steps=args.honesty_steps,
            honesty=honesty,
            train_samples=args.train_samples,
            test_samples=args.test_samples,
            batch_size=args.batch_size,
            smoothing=smoothing,
            modalities=tuple(args.modality or ["all"]),
            n_attack=args.n_attack,
            attack_steps=args.attack_steps,
            attack_samples=args.attack_samples,
        ),
        root=Path(args.root) if args.root else None,
        device=args.device,
        progress=not args.no_progress,
        command=args.command_line,
    )
    distributed.barrier()
    trained = outcome.trained
    print(trained.status)
    print(outcome.text)
    print(f"files:     {outcome.directory}")
    print(f"certified: {outcome.certified_path}")
    if args.method == "empirical":
        print(f"η pairs:   {outcome.eta_path}")
    return 0
