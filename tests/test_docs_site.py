"""The documentation site builds with ``mkdocs build --strict`` (no broken link, anchor or API reference), its CLI
reference holds every subcommand's help and its API reference every public name; the README stays short."""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mmrobust_bench as mmr
from mmrobust_bench.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def commands(parser: argparse.ArgumentParser, prefix: str = "mmrobust-bench") -> list[str]:
    """Every command line the parser knows, subcommands of subcommands included (``mmrobust-bench zoo list``)."""
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, f"{prefix} {name}")
    return found


def page_text(site: Path, page: str) -> str:
    """A built page's text, tags removed and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", (site / page / "index.html").read_text(encoding="utf-8")))


def test_readme_is_a_short_welcome_with_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert block == (
        "bash scripts/install.sh && .venv/bin/mmrobust-bench run --defense crmt_at --attack pgd_l2 "
        "--modality a\nbash scripts/install.sh test && .venv/bin/python -m pytest\n"
    )


def test_every_mmr_call_in_the_readme_fits_its_real_signature():
    """The README's Python blocks parse, and each ``mmr.NAME(...)`` call binds to that public function's signature
    (arguments that do not exist, or a required one left out, fail here before a reader copies them)."""
    import ast
    import inspect

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    calls = []
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            func = getattr(node, "func", None)
            if (
                isinstance(node, ast.Call)
                and isinstance(func, ast.Attribute)
                and getattr(func.value, "id", "") == "mmr"
            ):
                calls.append(node)
    names = {c.func.attr for c in calls}  # type: ignore[attr-defined]
    assert {"wrap", "attack", "evaluate", "certificates", "smooth_certify", "load_model", "load_dataset"} <= names
    for call in calls:
        signature = inspect.signature(getattr(mmr, call.func.attr))  # type: ignore[attr-defined]
        args = [object()] * len(call.args)
        kwargs = {k.arg: object() for k in call.keywords if k.arg}
        signature.bind(*args, **kwargs)  # raises TypeError naming the argument


@pytest.mark.slow
def test_site_builds_strict_with_every_subcommand_and_public_name(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    out = subprocess.run(
        [mkdocs, "build", "--strict", "-d", str(site)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert out.returncode == 0, out.stderr[-4000:]

    cli = page_text(site, "cli-reference")
    expected = commands(build_parser())
    assert {"mmrobust-bench run", "mmrobust-bench zoo list"} <= set(expected)  # the walk reaches subcommands
    for command in expected:
        assert command in cli, command
        usage = "usage: " + command
        assert usage in cli, usage  # the command's own --help, not only a mention

    api = page_text(site, "api")
    for name in mmr.__all__:
        assert f"mmr.{name}" in api, name
    for module in ("mmrobust_bench.hub", "mmrobust_bench.contracts", "mmrobust_bench.registry"):
        assert module in api, module
