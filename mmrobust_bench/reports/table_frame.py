"""One report table's tidy frame and Markdown, from an entry's rows: the measured record of each entry (every
column's seed summary and flags), the Markdown head and rows, the notes under the table and its LaTeX. Shared by
the paper's Tables 1–3 (``reports.tables``) and the pivot (``reports.pivot``)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .latex import latex_table
from .paper import display_name
from .safe_text import markdown_cell, markdown_code
from .stats import CELL_SUFFIXES
from .table_cells import FLAG_MARK, Column, Table, cell_flags, cell_summary, flagged, fmt, matching_rows


def cell_columns(columns: Sequence[Column]) -> list[str]:
    """Every cell's tidy CSV columns, in order: its seed summary, then its validity flags (``reports.stats``)."""
    return [f"{c.key}_{suffix}" for c in columns for suffix in CELL_SUFFIXES]


def _record(rows: pd.DataFrame, columns: Sequence[Column]) -> dict:
    rec: dict = {}
    seeds = 0
    for col in columns:
        s = cell_summary(rows, col)
        rec.update(
            {
                f"{col.key}_mean": s.mean,
                f"{col.key}_std": s.std,
                f"{col.key}_ci95_low": s.ci_low,
                f"{col.key}_ci95_high": s.ci_high,
                f"{col.key}_n": s.n,
                f"{col.key}_flags": cell_flags(matching_rows(rows, col)),
            }
        )
        seeds = max(seeds, s.n)
    rec["n_seeds"] = seeds
    return rec


def tidy_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed counts as integers (nullable: reported rows have none), never ``3.0``; flags as text, "" where a cell
    has none (reported rows included), so the CSV never says ``nan`` for "no flag"."""
    for name in [c for c in frame.columns if c == "n_seeds" or c.endswith("_n")]:
        frame[name] = pd.array(frame[name], dtype="Int64")
    for name in [c for c in frame.columns if c.endswith("_flags")]:
        frame[name] = frame[name].fillna("").astype(str)
    return frame


def _entry_name(method: str, label: str) -> str:
    return markdown_cell(method) if method == label else f"{markdown_cell(method)} ({markdown_code(label)})"


FRAME_HEAD = ["method", "label", "source", "dataset", "config_hash", "n_seeds"]


def measured_record(data: pd.DataFrame, label: str, dataset: str, columns: Sequence[Column]) -> dict:
    """One entry's measured row of a table's frame: its configuration hashes and every column's seed summary."""
    lrows = data[data["defense"].astype(str) == label]
    cfg = ",".join(sorted(set(lrows["config_hash"].astype(str)))) if "config_hash" in lrows else ""
    return {
        "method": display_name(label),
        "label": label,
        "source": "measured",
        "dataset": dataset,
        "config_hash": cfg,
        **_record(lrows, columns),
    }


def head_lines(title: str, dataset: str, columns: Sequence[Column]) -> list[str]:
    return [
        f"### {markdown_cell(title)} — {markdown_cell(dataset)}",
        "",
        "| Method | " + " | ".join(markdown_cell(c.title) for c in columns) + " | seeds |",
        "|---|" + "---:|" * len(columns) + "---:|",
    ]


def measured_line(rec: pd.Series, columns: Sequence[Column]) -> tuple[str, list[str]]:
    """A measured entry's Markdown row (mean ± std per column, flags marked, then the seed count) and its cells."""
    cells = [flagged(fmt(rec[f"{c.key}_mean"], rec[f"{c.key}_std"]), rec[f"{c.key}_flags"]) for c in columns]
    line = f"| {_entry_name(rec['method'], rec['label'])} | " + " | ".join(cells) + f" | {int(rec['n_seeds'])} |"
    return line, cells


def finish_table(
    number: int,
    dataset: str,
    title: str,
    columns: Sequence[Column],
    frame: pd.DataFrame,
    lines: list[str],
    notes: list[str],
) -> Table:
    """The table with its notes under the Markdown, and its LaTeX."""
    if notes:
        lines = lines + [""] + [f"Note: {markdown_cell(n.rstrip('.'))}." for n in notes]
    table = Table(number, dataset, title, list(columns), frame, "\n".join(lines) + "\n", notes)
    table.latex = latex_table(table)
    return table


def flag_note(frame: pd.DataFrame, columns: Sequence[Column]) -> list[str]:
    """What the ⚑ beside a number means, under a table that shows one."""
    if not any((frame[f"{c.key}_flags"].astype(bool) & frame[f"{c.key}_mean"].notna()).any() for c in columns):
        return []  # flags on a "—" cell get no mark, so no note
    return [
        f"{FLAG_MARK} and the flag names: the rows of that cell (any seed) carry those validity flags "
        "(`mmrobust_bench.bench.flags`), so the number may be a loose upper bound rather than a measurement; the "
        "CSV's `_flags` columns name them per cell."
    ]


def dash_note(markdown_cells: Sequence[str], reported: bool) -> list[str]:
    if not any(c == "—" for c in markdown_cells):
        return []
    note = "“—”: no measured rows for that cell (the sweep did not run that attack, modality or ε for that entry)"
    if reported:
        note += (
            "; in a reported row, the paper does not report that cell for that method and dataset (and reported "
            "rows have no seed count)"
        )
    return [note + "."]
