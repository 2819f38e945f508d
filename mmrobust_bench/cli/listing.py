"""``mmrobust-bench list``: every registered defense, attack, dataset and encoder with its provider."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    lst = sub.add_parser("list", help="list defenses, attacks, datasets and encoders with their providers")
    lst.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    from ..attacks import ATTACKS, FAMILY_LISTERS
    from ..data import DATASETS
    from ..defenses import DEFENSES
    from ..models import ENCODERS

    for registry in (DEFENSES, ATTACKS, DATASETS, ENCODERS):
        print(f"{registry.kind}s:")
        for row in registry.describe():
            status = "" if row["status"] == "ok" else f"  [{row['status']}]"
            print(f"  {row['name']:<24} {row['provider']}{status}")
    for prefix, lister in sorted(FAMILY_LISTERS.items()):
        try:
            names = lister()
        except ImportError as exc:  # a missing optional library must not break the listing (a bug still does)
            print(f"attack library {prefix}: unavailable ({exc})")
            continue
        print(f"attacks from {prefix} (use as {prefix}:NAME): {', '.join(names)}")
    return 0
