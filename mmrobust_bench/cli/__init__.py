"""``mmrobust-bench``: a thin command line over the Python API (``mmrobust_bench.bench.api``).

One module per subcommand (``run``, ``certify``, ``sweep``, ``report``/``plot``, ``list``; ``prepare``
lives with the real-data preparation in ``mmrobust_bench.data.prepare``); each adds its parser and
its handler, and this module only dispatches.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Iterator, Sequence

from .. import __version__
from . import certify, listing, report, run, sweep
from .common import command_line

log = logging.getLogger("mmrobust_bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrobust-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"mmrobust-bench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_parser(sub)
    certify.add_parser(sub)
    sweep.add_parser(sub)
    report.add_parsers(sub)

    from ..data.prepare import add_prepare_parser

    add_prepare_parser(sub)
    listing.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = command_line(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from ..registry import RegistryError

    try:
        with _distributed(args):
            return args.func(args)
    except (ValueError, RegistryError) as exc:
        print(f"mmrobust-bench: error: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _distributed(args: argparse.Namespace) -> Iterator[None]:
    """Under ``torchrun`` (WORLD_SIZE > 1) join the process group for the commands that train or evaluate;
    only rank 0 prints. A no-op for one process."""
    from ..bench import distributed

    if not getattr(args, "distributed", False) or not distributed.launched_by_torchrun():
        yield
        return
    world = distributed.init_from_env(args.device)
    quiet = open(os.devnull, "w") if not world.main else None
    try:
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            yield
    finally:
        if quiet:
            quiet.close()
        distributed.shutdown()
