"""Any grid of the rows as a table (``report --pivot``): one row per entry, one column per (attack, modality, ε)
present in the rows, optionally filtered, cells mean ± sample std over seeds (table number 0)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .entries import resolve_entries
from .table_cells import NONE, Column, Table, choose_attack_configs, paper_row_order
from .table_frame import (
    FRAME_HEAD,
    cell_columns,
    dash_note,
    finish_table,
    flag_note,
    head_lines,
    measured_line,
    measured_record,
    tidy_columns,
)

PIVOT_TITLE = "Pivot — every attack × modality × ε in the rows"


def pivot_title(
    attacks: Sequence[str] | None = None, modalities: Sequence[str] | None = None, eps: Sequence[float] | None = None
) -> str:
    """The pivot's title: :data:`PIVOT_TITLE` when nothing filters it, else the filters it was built with."""
    filters = [
        f"{what} {', '.join(str(v) for v in values)}"
        for what, values in (("attack", attacks), ("modality", modalities), ("ε", eps))
        if values
    ]
    return PIVOT_TITLE if not filters else "Pivot — " + "; ".join(filters) + " (rows present)"


def pivot_columns(
    data: pd.DataFrame,
    attacks: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    eps: Sequence[float] | None = None,
) -> list[Column]:
    """Every (attack, modality, ε) cell present in ``data`` (clean first), optionally filtered."""
    cols = [Column("clean", NONE, 0.0)] if (data["attack"] == "clean").any() else []
    seen = set()
    order = {m: i for i, m in enumerate(dict.fromkeys(["v", "a"] + sorted(set(data["modality"].astype(str)))))}
    attacked = data[data["attack"] != "clean"]
    for rec in attacked[["attack", "modality", "eps"]].drop_duplicates().itertuples(index=False):
        e = None if pd.isna(rec.eps) else float(rec.eps)
        col = Column(str(rec.attack), str(rec.modality), e)
        if col in seen:
            continue
        if attacks and col.attack not in attacks:
            continue
        if modalities and col.modality not in modalities:
            continue
        if eps and (e is None or not any(np.isclose(e, x) for x in eps)):
            continue
        seen.add(col)
        cols.append(col)
    head = cols[:1] if cols and cols[0].attack == "clean" else []
    rest = cols[len(head) :]
    rest.sort(key=lambda c: (c.attack, order.get(c.modality, len(order)), -1.0 if c.eps is None else c.eps))
    return head + rest


def pivot_table(
    rows: pd.DataFrame,
    dataset: str,
    *,
    attacks: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    eps: Sequence[float] | None = None,
    checkpoints: Path | None = None,
    strict: bool = False,
) -> Table:
    """Any grid of the rows as a table: one row per entry, one column per (attack, modality, ε) present
    (``attacks`` / ``modalities`` / ``eps`` filter it), cells mean ± std over seeds (table number 0)."""
    rows, entry_notes = resolve_entries(rows, checkpoints=checkpoints, strict=strict)
    data = rows[rows["dataset"].astype(str) == dataset]
    if data.empty:
        have = ", ".join(sorted(rows["dataset"].astype(str).unique())) or "none"
        raise ValueError(f"no rows for dataset {dataset!r}; have {have}")
    data, notes = choose_attack_configs(data)
    notes = [n for n in entry_notes if n.startswith(f"{dataset}:")] + notes
    known_attacks = sorted(set(data["attack"].astype(str)))
    for name in attacks or ():
        if name not in known_attacks:
            raise ValueError(f"no {name!r} rows for {dataset!r}; attacks in the rows: {', '.join(known_attacks)}")
    columns = pivot_columns(data, attacks, modalities, eps)
    if not columns:
        raise ValueError(f"the filters leave no cells for {dataset!r}")
    labels = paper_row_order(list(data["defense"].astype(str).unique()))
    records = [measured_record(data, label, dataset, columns) for label in labels]
    frame = tidy_columns(pd.DataFrame(records, columns=FRAME_HEAD + cell_columns(columns)))
    title = pivot_title(attacks, modalities, eps)
    lines = head_lines(title, dataset, columns)
    shown: list[str] = []
    for _, rec in frame.iterrows():
        line, cells = measured_line(rec, columns)
        shown += cells
        lines.append(line)
    lines += ["", "Accuracy, mean ± sample std over seeds; 95% t-intervals in the CSV; ε in model-input space."]
    notes = notes + flag_note(frame, columns) + dash_note(shown, reported=False)
    return finish_table(0, dataset, title, columns, frame, lines, notes)


__all__ = [
    "PIVOT_TITLE",
    "pivot_columns",
    "pivot_table",
    "pivot_title",
]
