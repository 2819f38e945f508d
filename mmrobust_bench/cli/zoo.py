"""``mmrobust-bench zoo``: a leaderboard's committed checkpoints (``bench.zoo``): list, show, export.

``zoo list [PATTERN]`` lists the models of every zoo under ``leaderboards/``; ``zoo show ENTRY --seed N`` names a
model's files, sha256, card and the leaderboard rows it made; ``zoo export`` copies a sweep root's final
checkpoints into a zoo folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..hints import nearest_to_pattern
from .common import dataset_options
from .conventions import SubcommandParser


def add_parser(sub: argparse._SubParsersAction) -> None:
    zoo = sub.add_parser(
        "zoo",
        help="a leaderboard's model zoo: list its models, show one, export a sweep's checkpoints into it or restore "
        "them into a sweep root",
    )
    actions = zoo.add_subparsers(
        dest="zoo_command",
        required=True,
        parser_class=SubcommandParser,
        metavar="ACTION",
        help="list, show, export or restore",
    )
    listing = actions.add_parser("list", help="the models of every zoo (dataset, entry, defense, seed, sha256, size)")
    listing.add_argument(
        "pattern",
        nargs="?",
        help="only entries whose name or dataset/name matches this shell pattern, case-insensitive, e.g. "
        "'synthav/crmt_*'; without a wildcard, names containing it, e.g. 'avdigits' (default: every entry)",
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _where(listing)
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="one model: its files, sha256, card and the leaderboard rows it made")
    show.add_argument("entry", help="the entry's label, or DATASET/LABEL (e.g. avdigits/crmt_jt)")
    show.add_argument("--seed", type=int, required=True, help="the model's seed")
    show.add_argument("--dataset", help="the leaderboard (needed when several zoos hold the entry)")
    show.add_argument("--results", help="results CSV of the rows (default: the one the zoo index names)")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    _where(show)
    show.set_defaults(func=cmd_show)

    export = actions.add_parser(
        "export",
        help="copy the final checkpoint of every model with rows in a sweep root "
        "into a zoo folder (safetensors + JSON + zoo.json)",
    )
    export.add_argument("--root", required=True, help="the sweep's root (its checkpoints/ and results.csv)")
    export.add_argument("--out", required=True, help="the zoo folder, e.g. leaderboards/avdigits/zoo")
    export.add_argument("--config", help="the sweep YAML (default: sweep.yaml beside the root)")
    export.add_argument("--results", help="results CSV (default: <root>/results.csv)")
    export.add_argument(
        "--dataset-set",
        action="append",
        metavar="KEY=VALUE",
        help="dataset option, e.g. data_root=FSDD/recordings (never written to the zoo)",
    )
    export.add_argument("--only", help="comma-separated entry labels to export (default: every entry)")
    export.add_argument("--skip", help="comma-separated entry labels to leave out")
    export.set_defaults(func=cmd_export)

    restore = actions.add_parser(
        "restore",
        help="copy a zoo's checkpoints into a sweep root's checkpoint folders, so the sweep measures the zoo's "
        "models instead of training them again (e.g. to resume or extend a leaderboard on a fresh clone)",
    )
    restore.add_argument("--zoo", required=True, help="the zoo folder, e.g. leaderboards/avdigits/zoo")
    restore.add_argument("--root", required=True, help="the sweep's root, e.g. leaderboards/avdigits/runs")
    restore.set_defaults(func=cmd_restore)


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zoo", help="one zoo folder (default: every leaderboards/<dataset>/zoo)")
    parser.add_argument(
        "--leaderboards",
        help="the folder of the leaderboards (default: $MMROBUST_LEADERBOARDS, else the checkout's leaderboards/)",
    )


def _zoos(args: argparse.Namespace) -> list[Any]:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..bench.zoo import INDEX, leaderboards_dir, read_zoo

    if args.zoo:
        return [read_zoo(args.zoo)]
    base = Path(args.leaderboards) if args.leaderboards else leaderboards_dir()
    found = [read_zoo(p.parent) for p in sorted(base.glob(f"*/zoo/{INDEX}"))]
    if not found:
        raise ValueError(
            f"no model zoo under {base} (no */zoo/{INDEX}); export one with `mmrobust-bench zoo export` "
            f"or give --zoo/--leaderboards"
        )
    return found


def cmd_list(args: argparse.Namespace) -> int:
    rows, zoos = [], _zoos(args)
    for zoo in zoos:
        for e in zoo.match(args.pattern):
            rows.append({"dataset": zoo.dataset, **e.as_dict(), "path": str(zoo.directory / e.file)})
    if args.pattern and not rows:  # as `list`: a pattern that finds nothing is an error naming the nearest entries
        near = nearest_to_pattern(args.pattern, {f"{zoo.dataset}/{e.entry}" for zoo in zoos for e in zoo.entries})
        raise ValueError(
            f"zoo list: nothing matches {args.pattern!r}; nearest entries: {', '.join(near)} "
            "(`mmrobust-bench zoo list` shows every entry)"
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("the zoo is empty")
        return 0
    print("| dataset | entry | defense | seed | config | sha256 | size |\n|---|---|---|---:|---|---|---:|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['entry']} | {r['defense']} | {r['seed']} | {r['config_hash']} | "
            f"{r['sha256'][:12]}… | {r['size'] / 1024:.0f} KiB |"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..bench.zoo import load_record, show_rows
    from ..reports.leaderboard import card_path

    dataset, _, label = args.entry.rpartition("/")
    dataset = dataset or args.dataset
    zoos = [
        z for z in _zoos(args) if (dataset is None or z.dataset == dataset) and any(e.entry == label for e in z.entries)
    ]
    if not zoos:
        raise ValueError(
            f"no zoo holds entry {label!r}"
            + (f" of {dataset}" if dataset else "")
            + "; `mmrobust-bench zoo list` shows the entries"
        )
    if len(zoos) > 1:
        raise ValueError(
            f"entry {label!r} is in the zoos of {', '.join(z.dataset for z in zoos)}; give --dataset or DATASET/{label}"
        )
    zoo = zoos[0]
    item = zoo.find(label, args.seed)
    record = load_record(zoo, item)
    card = zoo.directory.parent / card_path(zoo.dataset, item.entry, item.seed)
    rows = show_rows(zoo, item, args.results)
    info = {
        "dataset": zoo.dataset,
        **item.as_dict(),
        "path": str(zoo.directory / item.file),
        "config_path": str(zoo.directory / item.config),
        "card": str(card) if card.exists() else None,
        "results": str(args.results or zoo.results_path or ""),
        "provenance": record.get("provenance", {}),
        "rows": [{k: _plain(v) for k, v in r.items()} for r in rows.to_dict("records")],
    }
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    print(f"{zoo.dataset} · {item.entry} ({item.defense}) seed {item.seed} · config {item.config_hash}")
    print(f"file:    {info['path']} ({item.size} bytes)\nsha256:  {item.sha256}\nconfig:  {info['config_path']}")
    print(f"card:    {info['card'] or 'none beside the zoo (mmrobust-bench report --html writes it)'}")
    trained = (record.get("provenance") or {}).get("final") or {}
    if trained:
        capability = trained.get("cpu_capability") or "CPU capability not recorded"
        print(
            f"trained: torch {trained.get('torch_version', '?')}, {capability}, {trained.get('threads', '?')} "
            f"thread(s), {trained.get('device', '?')}"
        )
    print(f"rows:    {len(rows)} in {info['results'] or 'no results CSV named by the zoo'}")
    if len(rows):
        print("| attack | modality | eps | n | accuracy |\n|---|---|---:|---:|---:|")
        for r in rows.itertuples(index=False):
            eps = "—" if r.eps != r.eps else f"{r.eps:g}"
            print(f"| {r.attack_config} | {r.modality} | {eps} | {r.n} | {r.accuracy:.4f} |")
    return 0


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and value != value else value


def cmd_export(args: argparse.Namespace) -> int:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..bench.api import invoked_command
    from ..bench.sweep import build_plan, load_sweep_config
    from ..bench.zoo import export_zoo

    root = Path(args.root)
    config = Path(args.config) if args.config else root.resolve().parent / "sweep.yaml"
    if not config.exists():
        raise ValueError(f"zoo export: no sweep YAML at {config} (the settings that rebuild each model); give --config")
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    skip = [s.strip() for s in args.skip.split(",") if s.strip()] if args.skip else None
    plan = build_plan(
        load_sweep_config(config), dataset_options=dataset_options(args), only=only, skip=skip, certify=False
    )
    outcome = export_zoo(
        plan,
        root=root,
        out=Path(args.out),
        results=Path(args.results) if args.results else None,
        command=invoked_command(),
    )
    zoo = outcome.zoo
    total = sum(e.size for e in zoo.entries)
    print(
        f"zoo export: {len(zoo.entries)} models of {zoo.dataset} in {zoo.directory} ({total / 2**20:.1f} MiB): "
        f"{len(outcome.written)} written, {outcome.unchanged} unchanged, {outcome.kept} kept from the index "
        f"(not exported this time), {len(outcome.removed)} stale files removed"
    )
    print(f"index: {zoo.index_path}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    # here, not at the top: building the parser (--help) imports no torch, pandas or yaml
    from ..bench.zoo_restore import restore_zoo

    outcome = restore_zoo(args.zoo, args.root)
    print(
        f"zoo restore: {len(outcome.restored)} checkpoints restored into {args.root}, {len(outcome.present)} "
        f"already there, {len(outcome.other)} folders holding another model left as they are"
    )
    return 0
