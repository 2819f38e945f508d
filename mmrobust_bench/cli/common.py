"""Parsing helpers shared by the subcommands: ``key=value`` options, comma lists, the YAML config."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from typing import Any


def key_values(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` items (values read as YAML by ``safe_yaml.load_yaml``: no aliases, no repeated keys) into a
    dict."""
    # here: `mmrobust-bench --help` builds every parser without torch, pandas or yaml
    from ..safe_yaml import YamlInputError, load_yaml, preview

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} expects key=value, got {preview(item)}")
        key, value = item.split("=", 1)
        if not key.strip():
            raise ValueError(f"{flag} expects key=value with a key, got {preview(item)}")
        try:
            out[key.strip()] = load_yaml(value, f"{flag} {preview(item, 40)}")
        except YamlInputError as exc:
            raise ValueError(f"{exc}; quote the value or fix it" if exc.syntax else str(exc)) from None
    return out


def eps_list(text: str, flag: str = "--eps") -> list[float]:
    """Comma-separated numbers; an empty list is an error (leave the option out for the default)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        from ..safe_yaml import preview  # here, not at the top: building the parser imports no yaml

        raise ValueError(f"{flag} expects comma-separated numbers such as 0.25,0.5,1, got {preview(text)}") from exc
    if not values:
        raise ValueError(
            f"{flag} is empty: give comma-separated numbers such as 0.25,0.5,1, or leave it out for the default"
        )
    return values


def int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        # here: `mmrobust-bench --help` builds every parser without torch, pandas or yaml
        from ..safe_yaml import preview

        raise ValueError(f"{flag} expects comma-separated integers such as 0,1,2, got {preview(text)}") from exc
    if not values:
        raise ValueError(f"{flag} is empty: give comma-separated integers such as 0,1,2, or leave it out")
    return values


# options holding comma lists: an empty value ("--eps ''") is an error, never the default
LIST_OPTIONS = (
    "eps",
    "radius",
    "seeds",
    "certify",
    "defenses",
    "attacks",
    "modalities",
    "tables",
    "figures",
    "dataset",
)


def check_list_options(args: argparse.Namespace) -> None:
    """Refuse list options given with nothing in them (a blank ``--eps`` silently meant the default grid)."""
    for name in LIST_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, str) and not any(v.strip() for v in value.split(",")):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} is empty: give at least one value, or leave {flag} out for the default")


def name_list(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def command_line(argv: Sequence[str] | None) -> str:
    """The command as typed, for the "made by" stamps of every output."""
    return "mmrobust-bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Defense/training settings: the ``--config`` YAML, then ``--set`` items on top."""
    # here: `mmrobust-bench --help` builds every parser without torch, pandas or yaml
    from ..bench.validate import read_yaml_mapping

    merged: dict[str, Any] = {}
    if args.config:
        merged.update(read_yaml_mapping(args.config, "--config file"))
    merged.update(key_values(args.set, "--set"))
    return merged


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    options = key_values(args.dataset_set, "--dataset-set")
    if getattr(args, "data_root", None):
        options["data_root"] = args.data_root
    return options


def expected_error_message(exc: BaseException) -> str | None:
    """One line naming what to fix for an error a user can cause (a bad value or name, a file that cannot be
    read or written, bad YAML/JSON/CSV); None for anything else, which keeps its traceback (a bug)."""
    # the imports here: `mmrobust-bench --help` builds every parser without torch, pandas or yaml
    from ..registry import RegistryError

    try:
        import yaml

        yaml_error: tuple[type, ...] = (yaml.YAMLError,)
    except ImportError:  # pragma: no cover - yaml is a dependency
        yaml_error = ()
    try:
        from pandas.errors import EmptyDataError, ParserError

        csv_errors: tuple[type, ...] = (ParserError, EmptyDataError)
    except ImportError:  # pragma: no cover - pandas is a dependency
        csv_errors = ()
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        what = exc.strerror or str(exc)
        hint = {
            "IsADirectoryError": "give a file path, not a directory",
            "NotADirectoryError": "a path component is a file; give a path inside a directory",
            "PermissionError": "fix the permissions or choose another location",
            "FileNotFoundError": "check the path",
            "FileExistsError": "remove it or choose another location",
        }.get(type(exc).__name__, "check the path and free space")
        return f"{what}{where} ({hint})"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg} (a damaged file; delete or fix it)"
    if csv_errors and isinstance(exc, csv_errors):
        return f"cannot parse a CSV file: {str(exc).strip().splitlines()[0]} (fix or remove the damaged line)"
    if yaml_error and isinstance(exc, yaml_error):
        return f"invalid YAML: {str(exc).strip().splitlines()[0]}"
    if isinstance(exc, (ValueError, RegistryError)):
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        if not lines:
            return type(exc).__name__
        if any(line.startswith("Traceback") for line in lines):  # raised in a worker: its last line is the error
            return lines[-1]
        return " ".join(lines)
    return None


_TORCH_THREADS: list[int] = []


def choose_threads(device: str, threads: int | None = None) -> int | None:
    """Set and return the intra-op threads of a run (recorded in its rows): ``threads`` when the user named a
    count (with ``bench.busy_cores``'s warning when they would share busy cores), else on the CPU the cores
    idle now (``bench.busy_cores.auto_threads``), logged when fewer than torch's own count. None (torch's
    default, untouched) for a GPU run without a count."""
    # here: `mmrobust-bench --help` builds every parser without torch, pandas or yaml
    import torch

    from ..bench import busy_cores
    from ..bench.sweep_units import set_threads
    from ..bench.train import select_device

    cli_log = logging.getLogger("mmrobust_bench.cli")
    if not _TORCH_THREADS:  # torch's own count, read before this process first changes it
        _TORCH_THREADS.append(torch.get_num_threads())
    cpu = select_device(device).type == "cpu"
    if threads is not None:
        set_threads(threads)
        message = busy_cores.busy_cores_warning(threads) if cpu else None
        if message:
            cli_log.warning(message)
        return threads
    if not cpu:
        return None
    ceiling = _TORCH_THREADS[0]
    cores, others = busy_cores.usable_cores(), busy_cores.other_runnable()
    chosen = busy_cores.auto_threads(ceiling, cores=cores, others=others)
    set_threads(chosen)
    if chosen < ceiling:
        cli_log.info(
            "%d other runnable process(es) on %d core(s): using %d torch thread(s) instead of %d "
            "(--threads N pins a count)",
            others,
            cores,
            chosen,
            ceiling,
        )
    return chosen
