"""``mmrobust-bench list [PATTERN] [--json]``: every defense, attack, dataset and encoder with a one-line
description and its provider, the norms each attack supports, the torchattacks / ART attacks the adapters
run, and the library attacks they exclude with the reason.

ART is never imported here (``import art`` alone takes seconds): its attacks come from the adapter's own
table (``attacks.art_adapter.ART_ATTACKS``), shown when the library is installed.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from ..hints import name_matcher, nearest_to_pattern

log = logging.getLogger(__name__)

KINDS = ("defenses", "attacks", "datasets", "encoders")
WIDTH = 110  # text output: descriptions are cut to keep one line per entry


def add_parser(sub: argparse._SubParsersAction) -> None:
    lst = sub.add_parser(
        "list", help="list defenses, attacks, datasets and encoders with descriptions, norms and providers"
    )
    lst.add_argument(
        "pattern",
        nargs="?",
        default=None,
        help="only names matching this shell pattern, case-insensitive, e.g. '*pgd*'; without a "
        "wildcard, names containing it (default: everything)",
    )
    lst.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (keys defenses, attacks, datasets, encoders, excluded_attacks, "
        "unavailable_libraries) instead of text",
    )
    lst.set_defaults(func=cmd)


def _norms_of_class(cls: Any) -> list[str]:
    if not getattr(cls, "norm_bounded", True):
        return []  # no budget (missing): applies under any threat
    return list(getattr(cls, "norms", ()))


def _registered_attack_norms(entry: Any) -> list[str] | None:
    """Norms of a registered attack: ``attacks.attack_norms`` when it exists, else the ``norms`` of the
    class its factory returns (``None``: unknown, e.g. a plugin factory without a return annotation)."""
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from .. import attacks

    helper = getattr(attacks, "attack_norms", None)
    if helper is not None:
        return list(helper(entry.name))
    obj = entry.obj
    if inspect.isfunction(obj):
        try:
            obj = inspect.signature(obj, eval_str=True).return_annotation
        except Exception:  # unresolvable annotation: say unknown rather than fail the listing
            return None
    return _norms_of_class(obj) if inspect.isclass(obj) else None


@functools.cache
def _version(dist: str) -> str:
    """The installed version of ``dist`` (read once: every library attack's row names it)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _torchattacks_rows(names: list[str]) -> list[dict[str, Any]]:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from .. import attacks
    from ..attacks.torchattacks_adapter import import_torchattacks, supported_norms

    helper = getattr(attacks, "attack_norms", None)
    ta, rows = import_torchattacks(), []
    for name in names:
        cls = getattr(ta, name)
        norms = (
            helper(f"torchattacks:{name}") if helper else supported_norms(name, list(inspect.signature(cls).parameters))
        )
        doc = inspect.cleandoc(vars(cls).get("__doc__") or "").split("\n")[0].strip()
        rows.append(
            {
                "name": f"torchattacks:{name}",
                "norms": list(norms),
                "description": doc,
                "provider": f"torchattacks {_version('torchattacks')}",
            }
        )
    return rows


def _art_rows() -> list[dict[str, Any]]:
    """The adapter's ART table, without importing ART; ImportError when ART is not installed."""
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..attacks.art_adapter import ART_ATTACKS, INSTALL_HINT

    if importlib.util.find_spec("art") is None:
        raise ImportError(f"No module named 'art'; install it with: {INSTALL_HINT}")
    rows = []
    for name, support in sorted(ART_ATTACKS.items()):
        parts = ["ART evasion attack"]
        if support.minimal_norm:
            parts.append("minimal-norm: one run at a large ε gives the whole curve")
        if support.per_sample:
            parts.append("decision-based, one sample at a time")
        # what ArtAttack.norms is (support.norms), read from the table: attacks.attack_norms would build the
        # attack, which imports ART
        rows.append(
            {
                "name": f"art:{name}",
                "norms": list(support.norms),
                "description": "; ".join(parts),
                "provider": f"adversarial-robustness-toolbox {_version('adversarial-robustness-toolbox')}",
            }
        )
    return rows


def _family_rows(prefix: str, lister: Callable[[], list[str]], keep: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The rows of one library's attacks whose names ``keep`` accepts: the others are never built (a torchattacks
    row inspects its class)."""
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..attacks import art_adapter, torchattacks_adapter

    if prefix == "art" and lister is art_adapter.art_names:
        return [row for row in _art_rows() if keep(row["name"])]
    names = [n for n in lister() if keep(f"{prefix}:{n}")]
    if prefix == "torchattacks" and lister is torchattacks_adapter.torchattacks_names:
        return _torchattacks_rows(names)
    return [{"name": f"{prefix}:{n}", "norms": None, "description": "", "provider": prefix} for n in names]


def collect(pattern: str | None = None) -> dict[str, Any]:
    """Everything ``list`` shows, as plain data (what ``--json`` prints)."""
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..attacks import ATTACKS, FAMILY_LISTERS
    from ..attacks.art_adapter import ART_EXCLUDED
    from ..attacks.torchattacks_adapter import EXCLUDED
    from ..data import DATASETS
    from ..defenses import DEFENSES
    from ..models import ENCODERS

    keep = name_matcher(pattern)
    out: dict[str, Any] = {}
    for key, registry in zip(KINDS, (DEFENSES, ATTACKS, DATASETS, ENCODERS)):
        entries = {e.name: e for e in registry.entries()}
        rows = []
        for row in registry.describe():
            if not keep(row["name"]):
                continue
            row = {k: v for k, v in row.items() if k != "kind"}
            if key == "attacks":
                row["norms"] = _registered_attack_norms(entries[row["name"]]) if row["status"] == "ok" else None
            rows.append(row)
        out[key] = rows
    out["unavailable_libraries"] = []
    for prefix, lister in sorted(FAMILY_LISTERS.items()):
        try:
            rows = _family_rows(prefix, lister, keep)
        except ImportError as exc:  # a missing optional library must not break the listing (a bug still does)
            out["unavailable_libraries"].append({"library": prefix, "reason": str(exc)})
            continue
        out["attacks"] += [dict(row, status="ok") for row in rows]
    excluded = [("torchattacks", name, why) for name, why in EXCLUDED.items()]
    excluded += [("art", name, why) for name, why in ART_EXCLUDED.items()]
    out["excluded_attacks"] = [
        {"name": f"{lib}:{name}", "library": lib, "reason": why}
        for lib, name, why in sorted(excluded)
        if keep(f"{lib}:{name}")
    ]
    return out


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _norms_text(row: dict[str, Any]) -> str:
    norms = row.get("norms")
    return "any" if norms == [] else ",".join(norms) if norms else "?"


def format_text(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for key in KINDS:
        rows = data[key]
        if not rows:
            continue
        lines.append(
            f"{key}:"
            if key != "attacks"
            else "attacks (norms they support; use library ones as torchattacks:NAME / art:NAME):"
        )
        name_w = max(len(r["name"]) for r in rows)
        norms_w = max((len(_norms_text(r)) for r in rows), default=0) if key == "attacks" else 0
        for r in rows:
            extra = "" if r["provider"] == "builtin" or ":" in r["name"] else f"  [from {r['provider']}]"
            if r["status"] != "ok":
                extra += f"  [{r['status']}]"
            norms = f"{_norms_text(r):<{norms_w}}  " if key == "attacks" else ""
            lines.append(_cut(f"  {r['name']:<{name_w}}  {norms}{r['description']}", WIDTH) + extra)
    for lib in data["unavailable_libraries"]:
        lines.append(f"attack library {lib['library']}: unavailable ({lib['reason']})")
    if data["excluded_attacks"]:
        lines.append("excluded library attacks (the adapters cannot apply them):")
        name_w = max(len(r["name"]) for r in data["excluded_attacks"])
        lines += [f"  {r['name']:<{name_w}}  {r['reason']}" for r in data["excluded_attacks"]]
    return "\n".join(lines) if lines else "nothing matches"


def listed_names(data: dict[str, Any]) -> list[str]:
    """Every name in ``collect``'s data (entries of each kind and the excluded library attacks)."""
    return [row["name"] for key in (*KINDS, "excluded_attacks") for row in data[key]]


def nothing_matches(pattern: str, names: list[str]) -> str:
    """The error for a pattern that matches no name: the nearest names (compared without wildcards and case)."""
    near = nearest_to_pattern(pattern, names)
    return (
        f"list: nothing matches {pattern!r}; nearest names: {', '.join(near)} (`mmrobust-bench list` shows everything)"
    )


def cmd(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    data = collect(args.pattern)
    if args.pattern and not listed_names(data):
        raise ValueError(nothing_matches(args.pattern, listed_names(collect(None))))
    print(json.dumps(data, indent=1, ensure_ascii=False) if args.json else format_text(data))
    log.debug("list took %.2f s", time.perf_counter() - start)
    return 0
