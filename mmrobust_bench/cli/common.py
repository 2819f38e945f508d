"""Parsing helpers shared by the subcommands: ``key=value`` options, comma lists, the YAML config."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence


def key_values(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` items (values parsed as YAML scalars) into a dict."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def eps_list(text: str, flag: str = "--eps") -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"{flag} expects comma-separated numbers such as 0.25,0.5,1, got {text!r}") from exc


def int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"{flag} expects comma-separated integers such as 0,1,2, got {text!r}") from exc


def name_list(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def command_line(argv: Sequence[str] | None) -> str:
    """The command as typed, for the "made by" stamps of every output."""
    return "mmrobust-bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Defense/training settings: the ``--config`` YAML, then ``--set`` items on top."""
    import yaml

    merged: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.exists():
            raise ValueError(f"--config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"--config file {path} must hold a mapping of setting: value")
        merged.update(loaded)
    merged.update(key_values(args.set, "--set"))
    return merged


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    options = key_values(args.dataset_set, "--dataset-set")
    if getattr(args, "data_root", None):
        options["data_root"] = args.data_root
    return options
