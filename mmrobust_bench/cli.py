"""``mmrobust-bench``: a thin command line over the Python API (``mmrobust_bench.bench.api``)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from . import __version__

log = logging.getLogger("mmrobust_bench")


def _key_values(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _eps_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"--eps expects comma-separated numbers such as 0.25,0.5,1, got {text!r}") from exc


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.exists():
            raise ValueError(f"--config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"--config file {path} must hold a mapping of setting: value")
        merged.update(loaded)
    merged.update(_key_values(args.set, "--set"))
    return merged


def _cmd_run(args: argparse.Namespace) -> int:
    from .bench.api import DEFAULT_EPS, run

    result = run(
        defense=args.defense, attack=args.attack, modality=args.modality, dataset=args.dataset,
        eps=_eps_list(args.eps) if args.eps else DEFAULT_EPS, seed=args.seed, overrides=_overrides(args),
        attack_options=_key_values(args.attack_set, "--attack-set"),
        dataset_options=_key_values(args.dataset_set, "--dataset-set"),
        root=Path(args.root) if args.root else None, results=Path(args.results) if args.results else None,
        device=args.device, batch_size=args.batch_size, progress=not args.no_progress,
    )
    trained = result.trained
    status = "reused cached checkpoint" if trained.cached else f"trained in {trained.seconds:.1f} s"
    print(f"{args.dataset} · defense {args.defense} (seed {args.seed}) · {status}")
    print(result.table)
    print(f"checkpoint: {trained.directory} (sha256 {trained.sha256[:12]}…)")
    print(f"results:    {result.results_path} (+{len(result.rows)} rows)")
    if result.plot_path is not None:
        print(f"plot:       {result.plot_path}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .attacks import ATTACKS, FAMILY_LISTERS
    from .data import DATASETS
    from .defenses import DEFENSES

    for registry in (DEFENSES, ATTACKS, DATASETS):
        print(f"{registry.kind}s:")
        for row in registry.describe():
            status = "" if row["status"] == "ok" else f"  [{row['status']}]"
            print(f"  {row['name']:<24} {row['provider']}{status}")
    for prefix, lister in sorted(FAMILY_LISTERS.items()):
        try:
            names = lister()
        except Exception as exc:  # a missing optional library must not break the listing
            print(f"attack library {prefix}: unavailable ({exc})")
            continue
        print(f"attacks from {prefix} (use as {prefix}:NAME): {', '.join(names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrobust-bench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mmrobust-bench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

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
    run.add_argument("--batch-size", type=int, default=500, help="evaluation batch size")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.set_defaults(func=_cmd_run)

    lst = sub.add_parser("list", help="list defenses, attacks and datasets with their providers")
    lst.set_defaults(func=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .registry import RegistryError

    try:
        return args.func(args)
    except (ValueError, RegistryError) as exc:
        print(f"mmrobust-bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
