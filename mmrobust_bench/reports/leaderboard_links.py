"""The files beside a leaderboard page that it links (figures, tables, findings), found by their slug names and
grouped by kind for the page."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .paths import slug

#: files beside a page that it links, by kind: (title, stem pattern without the dataset's slug)
FIGURE_FILES = (
    ("Figure 1", "figure1"),
    ("Figure 3", "figure3"),
    ("Figure 4", "figure4"),
    ("Figure 5", "figure5"),
    ("certified-accuracy curves", "certified-curves"),
)
DOCUMENT_FILES = (
    ("Table 1", "table1"),
    ("Table 2", "table2"),
    ("Table 3", "table3"),
    ("pivot", "pivot"),
    ("findings", "findings"),
)
FORMAT_ORDER = ("pdf", "png", "svg", "md", "csv", "tex")


def files_beside(out_dir: Path, dataset: str, kinds: Sequence[tuple[str, str]]) -> list[str]:
    """The names of the files of ``kinds`` for ``dataset`` in ``out_dir`` (slugs: safe as relative links)."""
    found = []
    for _, stem in kinds:
        for fmt in FORMAT_ORDER:
            name = f"{stem}-{slug(dataset)}.{fmt}"
            if (Path(out_dir) / name).is_file():
                found.append(name)
    return found


def figure_links(out_dir: Path, dataset: str) -> list[str]:
    return files_beside(out_dir, dataset, FIGURE_FILES)


def grouped_files(names: Sequence[str], dataset: str, kinds: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """``[{title: "Figure 1", files: [("PDF", "figure1-x.pdf"), ("PNG", …)]}, …]`` for the page; a name of no known
    kind is listed under its own name."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        stem, _, fmt = str(name).rpartition(".")
        title = next((t for t, s in kinds if stem == f"{s}-{slug(dataset)}"), stem or str(name))
        groups.setdefault(title, []).append((fmt.upper() or str(name), str(name)))
    return [{"title": title, "files": files} for title, files in groups.items()]


__all__ = [
    "DOCUMENT_FILES",
    "FIGURE_FILES",
    "FORMAT_ORDER",
]
