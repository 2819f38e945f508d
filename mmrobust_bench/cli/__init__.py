"""``mmrobust-bench``: a thin command line over the Python API (``mmrobust_bench.bench.api``).

One module per subcommand (``run``, ``certify``, ``sweep``, ``verify``, ``zoo``, ``report``/``plot``, ``prepare``,
``list``); each adds its parser and its handler, and this module only dispatches. ``conventions`` gives every
subcommand the shared help formatter (defaults shown) and ``-v``/``-q`` (docs/cli.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from .._version import __version__
from . import certify, completion, conventions, listing, prepare, report, run, sweep, verify, zoo
from .common import check_list_options, command_line, expected_error_message

log = logging.getLogger("mmrobust_bench")


def build_parser() -> argparse.ArgumentParser:
    """The whole parser; imports nothing heavy (``--help``/``--version`` answer in well under a second)."""
    parser = conventions.CommandParser(
        prog="mmrobust-bench",
        formatter_class=conventions.HelpFormatter,
        description="Adversarial robustness of multi-modal classifiers, per modality:\n"
        "train defenses, attack them, certify them, and report.",
        epilog="`mmrobust-bench COMMAND --help` shows a command's options with their defaults;\n"
        "docs/cli.md describes the conventions they share.",
    )
    parser.add_argument("--version", action="version", version=f"mmrobust-bench {__version__}")
    conventions.add_verbosity(parser, top_level=True)
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=conventions.SubcommandParser, metavar="COMMAND"
    )
    run.add_parser(sub)
    certify.add_parser(sub)
    sweep.add_parser(sub)
    verify.add_parser(sub)
    zoo.add_parser(sub)
    report.add_parsers(sub)
    prepare.add_parser(sub)
    listing.add_parser(sub)
    completion.add_parser(sub)
    conventions.install(parser, sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C: every command resumes from what it stored, so no traceback is needed
        print("mmrobust-bench: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130  # what a shell reports for a process ended by SIGINT (128 + 2)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = command_line(argv)
    conventions.configure(args)  # -v/-q: log level, progress bars
    try:
        check_list_options(args)
        with _distributed(args):
            status = args.func(args)
        sys.stdout.flush()  # a reader that went away shows up here, not in the interpreter's exit flush
        return status
    except BrokenPipeError:  # `mmrobust-bench list | head`: the reader stopped reading; not an error
        _silence_stdout()
        return 141  # what a shell reports for a process ended by SIGPIPE (128 + 13)
    except Exception as exc:  # expected errors become one line (exit 2); anything else keeps its traceback
        message = expected_error_message(exc)
        if message is None:
            raise
        print(f"mmrobust-bench: error: {message}", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """Point stdout at the null device, so the interpreter's flush of what is still buffered at exit does not
    raise BrokenPipeError again (the recipe of Python's signal-module documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (tests, embedding)
        pass


@contextlib.contextmanager
def _distributed(args: argparse.Namespace) -> Iterator[None]:
    """Under ``torchrun`` (WORLD_SIZE > 1) join the process group for the commands that train or evaluate;
    only rank 0 prints. A no-op for one process, and for commands that never join one (``list`` does not
    import torch for it)."""
    if not getattr(args, "distributed", False):
        yield
        return
    # here: `mmrobust-bench --help` builds every parser without torch, pandas or yaml
    from ..bench import distributed

    if not distributed.launched_by_torchrun():
        yield
        return
    world = distributed.init_from_env(args.device)
    quiet = open(os.devnull, "w") if not world.main else None  # noqa: SIM115 (closed in the finally below)
    try:
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            yield
    finally:
        if quiet:
            quiet.close()
        distributed.shutdown()
