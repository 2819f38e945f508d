"""The numbers the READMEs and docs quote are the ones the leaderboards' reports print.

The headline tables of ``README.md``, ``docs/leaderboards.md`` and each ``leaderboards/<dataset>/README.md`` are
written by hand from ``findings-<dataset>.md`` (made by ``mmrobust-bench report --findings``). Every row of them
that names an entry is checked here against the findings' headline (§0) and its differences to JT (§0c): the
values, the ⚑ on a flagged cell and the ▲ / ▼ of a difference. A re-measured leaderboard whose prose was not
updated fails here instead of quoting stale numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmrobust_bench.reports.paper import display_name

ROOT = Path(__file__).resolve().parent.parent
DATASETS = sorted(p.parent.name for p in (ROOT / "leaderboards").glob("*/findings-*.md"))

# a prose table's column title -> the findings' column title (section §0, or §0c for a difference to JT)
HEADLINE_COLUMNS = {
    "clean": "clean",
    "audio": "audio",
    "image": "visual",
    "video": "visual",
    "visual": "visual",
    "joint": "all modalities (joint)",
    "any": "any (worst case)",
}
VERSUS_COLUMNS = {"any − jt": "any (worst case)", "any − jt (95% interval)": "any (worst case)"}


def tables(lines: list[str]) -> list[list[list[str]]]:
    """The Markdown tables in ``lines``: each a list of rows of stripped cells, the separator row dropped."""
    found, current = [], []
    for line in [*lines, ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def sections(text: str) -> dict[str, list[str]]:
    """Lines under each Markdown heading, keyed by the heading's text."""
    out: dict[str, list[str]] = {"": []}
    key = ""
    for line in text.splitlines():
        if line.startswith("#"):
            key = line.lstrip("#").strip()
            out[key] = []
        else:
            out[key].append(line)
    return out


def value(cell: str) -> tuple[str, bool, str]:
    """A cell as (number text, flagged, gain mark): bold, flag names and the minus sign normalised away."""
    text = cell.replace("**", "").replace("−", "-")
    mark = "▲" if "▲" in text else "▼" if "▼" in text else ""
    number = re.match(r"\s*([+-]?[0-9.]+(?: ± [0-9.]+)?|—)", text)
    return (number.group(1) if number else text.strip()), "⚑" in text, mark


def findings(dataset: str) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The findings' §0 (headline) and §0c (against JT) as {display name: {column: cell}}."""
    parts = sections((ROOT / "leaderboards" / dataset / f"findings-{dataset}.md").read_text(encoding="utf-8"))
    out = []
    for prefix in ("0. Headline", "0c. Against"):
        (key,) = [k for k in parts if k.startswith(prefix)]
        (table,) = tables(parts[key])
        head, *rows = table
        out.append({display_name(row[head.index("entry")].strip("`")): dict(zip(head, row)) for row in rows})
    return out[0], out[1]


def prose_tables(dataset: str) -> list[tuple[str, list[list[str]]]]:
    """(where, table) for every table with an entry column in a section of the prose that is about ``dataset``."""
    own = ROOT / "leaderboards" / dataset / "README.md"
    found = []
    for path in (ROOT / "README.md", ROOT / "docs" / "leaderboards.md", own):
        for heading, lines in sections(path.read_text(encoding="utf-8")).items():
            if path != own and dataset not in heading:
                continue
            for table in tables(lines):
                head = [c.replace("**", "").lower() for c in table[0]]
                if ("entry" in head or "defense" in head) and any(h in HEADLINE_COLUMNS for h in head):
                    found.append((f"{path.relative_to(ROOT)} § {heading or '(top)'}", table))
    return found


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_quoted_headline_number_is_the_findings_number(dataset):
    headline, versus = findings(dataset)
    quoted = prose_tables(dataset)
    assert quoted, f"no headline table quoted for {dataset}"
    checked = 0
    for where, (head, *rows) in quoted:
        head = [c.replace("**", "").lower() for c in head]
        name_at = head.index("entry") if "entry" in head else head.index("defense")
        for row in rows:
            name = row[name_at].replace("**", "")
            assert name in headline, f"{where}: '{name}' is no entry of findings-{dataset}.md §0"
            for title, cell in zip(head, row):
                if title in HEADLINE_COLUMNS:
                    expected = headline[name][HEADLINE_COLUMNS[title]]
                elif title in VERSUS_COLUMNS:
                    expected = versus[name][VERSUS_COLUMNS[title]] if name in versus else "—"
                elif title == "rank":
                    expected = headline[name]["rank"]
                else:
                    continue
                assert value(cell) == value(expected), f"{where}: {name}, {title}: quoted {cell!r}, made {expected!r}"
                checked += 1
    assert checked >= 6 * len(headline)  # the leaderboard's own README quotes every entry
