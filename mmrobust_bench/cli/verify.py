"""``mmrobust-bench verify``: re-train sampled (defense, seed) entries of a sweep and check its rows reproduce."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    ve = sub.add_parser("verify", help="re-train N random (defense, seed) entries of a sweep at the recorded settings "
                                       "and report which stored rows reproduce exactly (exit 1 if any does not)")
    ve.add_argument("--config", required=True, help="the sweep YAML the rows were made with")
    ve.add_argument("--root", help="the sweep's root (default $MMROBUST_HOME or ./runs); nothing in it is written")
    ve.add_argument("--results", help="results CSV (default <root>/results.csv)")
    ve.add_argument("--n", type=int, default=2, help="how many (defense label, seed) entries to re-train")
    ve.add_argument("--seed", type=int, default=0, help="seed of the random choice of entries and cells")
    ve.add_argument("--cells", type=int, default=3, help="cells re-evaluated per entry, drawn at random")
    ve.add_argument("--scratch", help="keep the re-trained checkpoints and rows here (default: a temporary "
                                      "folder, removed after)")
    ve.add_argument("--device", help="device to re-train on (default: the one the rows recorded)")
    ve.add_argument("--no-progress", action="store_true", help="hide progress bars")
    ve.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    from ..bench.sweep import build_plan, load_sweep_config
    from ..bench.verify import verify_sweep
    from ..io import default_root

    plan = build_plan(load_sweep_config(args.config))
    root = Path(args.root) if args.root else default_root()
    outcome = verify_sweep(plan, root=root, results=Path(args.results) if args.results else None, n=args.n,
                           seed=args.seed, cells=args.cells, scratch=Path(args.scratch) if args.scratch else None,
                           device=args.device, progress=not args.no_progress)
    print(outcome.table)
    bad = int((~outcome.rows["reproduces"]).sum()) if len(outcome.rows) else 0
    units = outcome.rows[["label", "seed"]].drop_duplicates() if len(outcome.rows) else []
    print(f"verify: {len(outcome.rows)} rows of {len(units)} entries re-measured, "
          + ("all reproduce exactly" if outcome.ok else f"{bad} do not reproduce"
             if len(outcome.rows) else "none of them is in the stored rows"))
    if outcome.scratch is not None:
        print(f"scratch: {outcome.scratch}")
    return 0 if outcome.ok else 1
