"""mkdocs hook: the CLI and API reference pages are generated at build time, never written by hand.

``cli-reference.md`` gets every subcommand's ``--help`` from the argparse parser (``mmrobust_bench.cli``),
``api.md`` a mkdocstrings block for every public name of ``import mmrobust_bench as mmr`` (``mmr.__all__``),
found where the object is defined, so the page follows the code when a name moves between modules.
"""

from __future__ import annotations

import argparse
import os
import re

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

import mmrobust_bench as mmr
from mmrobust_bench.cli import build_parser

CLI_MARKER = "<!-- cli-reference -->"
API_MARKER = "<!-- api-reference -->"
MODULES = ("mmrobust_bench.hub", "mmrobust_bench.contracts", "mmrobust_bench.registry")
HELP_COLUMNS = "100"  # argparse wraps help at the terminal width; fix it so the page is the same everywhere
# The docstrings are written for help() and IDEs in reStructuredText: a role before a code span
# (":func:`wrap`", ":class:`~pkg.Name`") renders as its bare name in code type on the site.
ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):<code>(~?)([^<]*)</code>")


def subcommands(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, argparse.ArgumentParser]]:
    """``(command line, parser)`` of ``parser`` and of every subcommand below it, depth first."""
    found = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += subcommands(sub, f"{prefix} {name}")
    return found


def cli_reference() -> str:
    """One section per command: its ``--help`` as the parser prints it."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        sections = [
            f"## `{command}`\n\n```text\n{parser.format_help().rstrip()}\n```\n"
            for command, parser in subcommands(build_parser(), "mmrobust-bench")
        ]
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(sections)


def api_reference() -> str:
    """A mkdocstrings block per public name, headed ``mmr.<name>``, then the modules of :data:`MODULES` less the
    names already shown; a second name for one object points at the first instead of documenting it twice."""
    blocks: list[str] = []
    seen: dict[str, str] = {}
    for name in mmr.__all__:
        value = getattr(mmr, name)
        if name == "__version__":
            blocks.append(f"## `mmr.__version__`\n\nThe installed distribution's version (`{value}` here).\n")
            continue
        path = f"{value.__module__}.{value.__qualname__}"
        if path in seen:
            first = seen[path]
            blocks.append(f"## `mmr.{name}`\n\nThe same object as [`mmr.{first}`][{path}].\n")
            continue
        seen[path] = name
        blocks.append(
            f'::: {path}\n    options:\n      heading: "mmr.{name}"\n      toc_label: "mmr.{name}"\n'
            f"      show_root_heading: true\n"
        )
    blocks.append("## Modules\n")
    for module in MODULES:
        shown = [path.rsplit(".", 1)[1] for path in seen if path.rsplit(".", 1)[0] == module]
        hidden = "".join(f', "!^{name}$"' for name in shown)
        blocks.append(f'::: {module}\n    options:\n      heading_level: 3\n      filters: ["!^_"{hidden}]\n')
    return "\n".join(blocks)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if API_MARKER in markdown:
        markdown = markdown.replace(API_MARKER, api_reference())
    return markdown


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri == "api.md":
        html = ROLE.sub(lambda m: f"<code>{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}</code>", html)
    return html
