"""``mmrobust-bench completion {bash,zsh,tcsh}``: the shell's tab-completion script for every subcommand and
option, generated from the parser itself by shtab (the ``completion`` extra), so it never goes stale.

Install it once, e.g. ``mmrobust-bench completion bash > ~/.local/share/bash-completion/completions/mmrobust-bench``
(docs/cli.md).
"""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "tcsh")
INSTALL_HINT = "pip install 'mmrobust-bench[completion]' (or pip install shtab)"
# options that name a folder or a file, completed with the shell's own path completion
DIRECTORY_OPTIONS = frozenset(
    {"--root", "--out", "--data-root", "--raw", "--scratch", "--zoo", "--checkpoints", "--leaderboards"}
)
FILE_OPTIONS = frozenset({"--results", "--config", "--eta", "--certified", "--list"})


def add_parser(sub: argparse._SubParsersAction) -> None:
    comp = sub.add_parser("completion", help="print the tab-completion script of a shell (needs shtab)")
    comp.add_argument("shell", choices=SHELLS, help="the shell the script is for")
    comp.set_defaults(func=cmd)


def completion_script(shell: str) -> str:
    """The completion script of ``shell`` for the whole ``mmrobust-bench`` parser."""
    try:
        import shtab  # here: shtab is optional
    except ImportError:
        raise ValueError(f"shell completion needs shtab: {INSTALL_HINT}") from None
    from . import build_parser  # here: the package imports this module while it builds the parser

    parser = build_parser()
    for sub in _parsers(parser):
        for action in sub._actions:
            names = set(action.option_strings)
            if names & DIRECTORY_OPTIONS:
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
            elif names & FILE_OPTIONS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every (sub)subcommand parser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def cmd(args: argparse.Namespace) -> int:
    print(completion_script(args.shell))
    return 0
