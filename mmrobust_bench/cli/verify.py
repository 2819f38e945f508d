"""``mmrobust-bench verify``: are a sweep's stored numbers right on this machine?

By default the committed zoo checkpoints are re-evaluated (no training) and each re-measured value must equal
the stored one or lie within the tolerance; ``--retrain`` re-trains the models and checks each value against
the committed seed spread. Exit 1 when a value fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import default_root
from .common import key_values


def add_parser(sub: argparse._SubParsersAction) -> None:
    ve = sub.add_parser(
        "verify",
        help="re-evaluate N random zoo models of a sweep (or re-train them with --retrain) "
        "and check each stored value within a tolerance (exit 1 if one is not)",
    )
    ve.add_argument("--config", required=True, help="the sweep YAML the rows were made with")
    ve.add_argument("--root", help="the sweep's root, read only (default: $MMROBUST_HOME or ./runs)")
    ve.add_argument("--results", help="results CSV (default: <root>/results.csv)")
    ve.add_argument("--zoo", help="the zoo folder of the committed checkpoints (default: zoo/ beside the sweep YAML)")
    ve.add_argument("--n", type=int, default=2, help="how many (defense label, seed) models to check (0: all)")
    ve.add_argument("--seed", type=int, default=0, help="seed of the random choice of models and cells")
    ve.add_argument("--cells", type=int, default=3, help="cells re-evaluated per model, drawn at random (0: all)")
    ve.add_argument(
        "--tolerance",
        type=float,
        help="largest accepted difference of a re-evaluated value, accuracy as a fraction and η relative "
        "(default: 0 where the row was recorded with this CPU capability, torch version, build and "
        "device, else 0.01)",
    )
    ve.add_argument(
        "--retrain",
        action="store_true",
        help="re-train the models instead of loading the zoo, and accept a value inside the committed "
        "seed spread (mean ± max(k·std, floor) over seeds)",
    )
    ve.add_argument("--k", type=float, default=3.0, help="--retrain: standard deviations of the seed spread")
    ve.add_argument(
        "--floor",
        type=float,
        default=0.01,
        help="--retrain: smallest accepted distance from the seed mean (a zero or single-seed spread)",
    )
    ve.add_argument(
        "--certificates",
        action="store_true",
        help="also certify each model again (the sweep's certify: block) and compare its certified "
        "accuracies and η pairs (slow: smoothing takes minutes per model)",
    )
    ve.add_argument(
        "--scratch",
        help="keep the re-measured rows (and re-trained checkpoints) here, a folder outside --root "
        "(default: a temporary folder, removed after)",
    )
    ve.add_argument(
        "--dataset-set",
        action="append",
        metavar="KEY=VALUE",
        help="dataset option, as the sweep was given it, e.g. data_root=free-spoken-digit-dataset/recordings "
        "(a value that changes the data is refused: the rows name the dataset they were measured on)",
    )
    ve.add_argument("--device", help="device to evaluate on (default: the one the rows recorded when present)")
    ve.add_argument("--no-progress", action="store_true", help="hide progress bars")
    ve.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..bench.sweep import build_plan, load_sweep_config
    from ..bench.verify import verify_zoo
    from ..bench.verify_retrain import verify_sweep

    plan = build_plan(load_sweep_config(args.config), dataset_options=key_values(args.dataset_set, "--dataset-set"))
    root = Path(args.root) if args.root else default_root()
    common = dict(
        root=root,
        results=Path(args.results) if args.results else None,
        n=args.n,
        seed=args.seed,
        cells=args.cells,
        scratch=Path(args.scratch) if args.scratch else None,
        device=args.device,
        progress=not args.no_progress,
        certificates=args.certificates,
    )
    if args.retrain:
        if args.tolerance is not None or args.zoo:
            raise ValueError(
                "verify: --tolerance and --zoo apply to re-evaluating the zoo; --retrain uses the seed "
                "spread (--k, --floor)"
            )
        outcome = verify_sweep(plan, k=args.k, floor=args.floor, **common)
    else:
        zoo = Path(args.zoo) if args.zoo else Path(args.config).resolve().parent / "zoo"
        outcome = verify_zoo(plan, zoo=zoo, tolerance=args.tolerance, **common)
    print(outcome.table)
    for line in outcome.report:
        print(line)
    frame = outcome.rows
    models = outcome.models  # the models re-measured, also when none of their values was compared
    how = "re-evaluated from the zoo" if outcome.mode == "zoo" else "re-trained"
    if not len(frame):
        print(f"verify: none of the re-measured values of {models} model(s) is in the stored rows")
    elif outcome.ok:
        exact = int(frame["status"].isin(["exact", "bit-identical"]).sum())
        print(f"verify: {len(frame)} values of {models} model(s) {how}: all pass ({exact} exactly equal)")
    else:
        bad = frame[~frame["passes"]]
        print(f"verify: {len(frame)} values of {models} model(s) {how}: {len(bad)} fail")
    for problem in outcome.problems:
        print(f"verify: FAILS: {problem}")
    if outcome.scratch is not None:
        print(f"scratch: {outcome.scratch}")
    return 0 if outcome.ok else 1
