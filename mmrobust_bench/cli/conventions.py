"""Conventions every subcommand shares: defaults shown in ``--help``, ``-v``/``-q`` before or after the
subcommand, one logging set-up.

Nothing here imports torch or any other heavy module: ``--help`` and ``--version`` build the whole parser,
and they must answer in well under a second. Subcommand modules add their options as usual
(``sub.add_parser(...)``); :func:`install` makes every one of those parsers a :class:`SubcommandParser`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

PACKAGE_LOGGER = "mmrobust_bench"
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


# reStructuredText / Markdown marks of docstrings used as descriptions: ``code``, **bold**
_MARKUP = re.compile(r"``(.+?)``|\*\*(.+?)\*\*", re.DOTALL)


def plain(text: str) -> str:
    """``text`` without the double-backtick code and double-asterisk bold marks a docstring may carry (a
    terminal would show them raw)."""
    return _MARKUP.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to every option whose help does not already say its default.

    Unlike ``argparse.ArgumentDefaultsHelpFormatter`` it leaves out defaults that carry no information
    (``None`` for "not given", ``False`` for a flag) and help texts that already name the default in words
    ("(default: the defense id)"); descriptions keep their line breaks (module docstrings) but lose their
    markup (:func:`plain`).
    """

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            text is argparse.SUPPRESS
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or "default" in text.lower()
            or (not action.option_strings and action.nargs not in ("?", "*"))
        ):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})" if text else f"default: {shown}"


class _SubcommandVerbose(argparse._CountAction):
    """``-v`` on a subcommand: counts, and cancels a ``-q`` given before the subcommand."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *args: Any) -> None:
        super().__call__(parser, namespace, *args)
        namespace.quiet = False


class _SubcommandQuiet(argparse._StoreTrueAction):
    """``-q`` on a subcommand: quiet, and cancels a ``-v`` given before the subcommand."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *args: Any) -> None:
        super().__call__(parser, namespace, *args)
        namespace.verbose = 0


def add_verbosity(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """``-v/--verbose`` (repeatable) and ``-q/--quiet``.

    On subcommands the defaults are ``SUPPRESS``: a flag given there overrides the one before the
    subcommand (``-q`` cancels an earlier ``-v`` and the other way round), and an absent one leaves it
    alone (``mmrobust-bench -q run`` stays quiet).
    """
    group = parser.add_argument_group("output")
    flags = group.add_mutually_exclusive_group()
    flags.add_argument(
        "-v",
        "--verbose",
        action="count" if top_level else _SubcommandVerbose,
        default=0 if top_level else argparse.SUPPRESS,
        help="more detail: -v adds the package's debug messages, -vv every library's "
        "(default: the package's INFO messages)",
    )
    flags.add_argument(
        "-q",
        "--quiet",
        action="store_true" if top_level else _SubcommandQuiet,
        default=False if top_level else argparse.SUPPRESS,
        help="warnings and errors only, and no progress bars",
    )


class CommandParser(argparse.ArgumentParser):
    """The top-level parser. An argument that no parser knows is reported by the subcommand it was given
    to, with that subcommand's usage (argparse reports it from the top level, with the top-level usage)."""

    def parse_args(
        self,
        args: Sequence[str] | None = None,  # type: ignore[override]
        namespace: argparse.Namespace | None = None,
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            innermost(self, parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def innermost(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)subcommand that ``parsed`` holds, ``parser`` itself when it has none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and action.dest is not argparse.SUPPRESS:
            name = getattr(parsed, action.dest, None)
            if name in action.choices:
                return innermost(action.choices[name], parsed)
    return parser


class SubcommandParser(argparse.ArgumentParser):
    """What ``add_subparsers`` builds: the shared help formatter, and ``-v``/``-q`` on every subcommand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("formatter_class") in (
            None,
            argparse.HelpFormatter,
            argparse.RawDescriptionHelpFormatter,
            argparse.ArgumentDefaultsHelpFormatter,
        ):
            kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)
        add_verbosity(self)


def install(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction) -> None:
    """After every subcommand is added: a subcommand without a description gets its one-line help."""
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    for name, subparser in sub.choices.items():
        if subparser.description is None and helps.get(name):
            subparser.description = helps[name][:1].upper() + helps[name][1:] + "."


def log_level(args: argparse.Namespace) -> int:
    """The package's logging level: INFO by default, WARNING with ``-q``, DEBUG with ``-v``."""
    if getattr(args, "quiet", False):
        return logging.WARNING
    return logging.DEBUG if getattr(args, "verbose", 0) else logging.INFO


def configure(args: argparse.Namespace) -> None:
    """Logging to stderr at the level of ``-v``/``-q`` for ``mmrobust_bench.*`` (other libraries: warnings,
    or everything with ``-vv``); ``-q`` also turns progress bars off."""
    from .. import progress  # here: tqdm loads when a command runs, not for --help

    level = log_level(args)
    if os.environ.get("RANK", "0") not in ("", "0"):  # under torchrun rank 0 tells the story once
        level = max(level, logging.WARNING)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", 0) >= 2 else logging.WARNING,
        format=LOG_FORMAT,
        stream=sys.stderr,
    )
    logging.getLogger(PACKAGE_LOGGER).setLevel(level)
    if getattr(args, "quiet", False) and hasattr(args, "no_progress"):
        args.no_progress = True
    # bars without a progress argument of their own (dataset generation, frame caches) follow the command
    progress.set_enabled(not (getattr(args, "quiet", False) or getattr(args, "no_progress", False)))


__all__ = [
    "CommandParser",
    "HelpFormatter",
    "SubcommandParser",
    "innermost",
    "plain",
    "add_verbosity",
    "install",
    "configure",
    "log_level",
]
