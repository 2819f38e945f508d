"""Report tables written to disk: Markdown, CSV (formula cells neutralised) and LaTeX per table, a sidecar naming
the command and the column scheme, and a combined ``report.md``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..io import atomic_path, atomic_write_text
from .paths import check_unique, output_path, slug
from .safe_text import LINE_BREAKS, csv_safe, markdown_code
from .stats import COLUMN_DOC
from .table_cells import Table


def write_tables(tables: Sequence[Table], out_dir: str | Path, *, command: str) -> list[Path]:
    """``table<N>-<dataset>.{md,csv,tex}`` per table (``pivot-<dataset>`` for a pivot; the dataset's slug), a
    ``.csv.txt`` sidecar naming the command and the column scheme, and a combined ``report.md``. CSV cells that
    would run as spreadsheet formulas are neutralised (:func:`csv_safe`)."""
    out_dir = Path(out_dir)
    stems = [
        output_path(out_dir, f"pivot-{slug(t.dataset)}" if t.number == 0 else f"table{t.number}-{slug(t.dataset)}")
        for t in tables
    ]
    check_unique((stem, f"table {t.number} of {t.dataset}") for stem, t in zip(stems, tables))
    made_by = LINE_BREAKS.sub(" ", command)  # one comment line, whatever the command held
    written = []
    for stem, t in zip(stems, tables):
        md, csv, tex = (stem.with_name(stem.name + ext) for ext in (".md", ".csv", ".tex"))
        atomic_write_text(md, f"<!-- made by: {made_by.replace('>', '&gt;')} -->\n{t.markdown}")
        with atomic_path(csv) as tmp:
            csv_safe(t.frame).to_csv(tmp, index=False)
        atomic_write_text(
            csv.with_name(csv.name + ".txt"),
            f"{t.title} — {t.dataset}\nmade by: {made_by}\n\n"
            f"{COLUMN_DOC}\nsource: measured (our rows) or reported (the paper's numbers; mean only).\n",
        )
        atomic_write_text(tex, f"% made by: {made_by}\n{t.latex}")
        written += [md, csv, tex]
    body = "\n".join(t.markdown for t in tables) if tables else "(no result rows)\n"
    report = output_path(out_dir, "report.md")
    atomic_write_text(report, f"# Results\n\nmade by: {markdown_code(made_by)}\n\n{body}")
    return written + [report]


__all__ = [
    "write_tables",
]
