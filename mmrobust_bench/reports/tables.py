"""Tables 1–3 of the paper, rebuilt from result rows (pure functions of the rows DataFrame).

Layout as in the paper: rows are report entries (a defense label and one configuration, see
``reports.entries``: two configurations under one label are never averaged together), columns are
attacks. A cell is the mean ± sample std over seeds (a single seed shows the mean alone); the tidy
CSV also holds the 95% t-interval and the seed count of every cell (``reports.stats.COLUMN_DOC``
names the columns). The paper's reported accuracies are shown beside ours, marked "reported", when
the dataset is one of the paper's (KS, UCF101, VGGS); otherwise (synthav) they come in a separate,
labelled block, since they are not comparable. :func:`pivot_table` lays out any other grid
(every attack × modality × ε present in the rows); every table also exports to LaTeX (booktabs: ``ℓ_2``, a
``\\label``, the best mean of each column in bold, shrunk to the line width when wider, a wide pivot split into
several tables). Entries carry their display names (``reports.paper.display_name``), as on the page and in the
figures.

Names from the rows are text wherever they land: Markdown cells escape ``|``, ``<`` and line breaks
(:func:`markdown_cell`), LaTeX escapes its specials (:func:`latex_escape`), a CSV cell that a spreadsheet
would run as a formula gets a leading ``'`` (:func:`csv_safe`), and file names are slugs (``reports.paths``).

- Table 1: clean accuracy and multi-modal FGM / ℓ2-PGD on all modalities jointly at ε = 0.5.
- Table 2: uni-modal FGM / ℓ2-PGD on each modality alone at ε = 1.0, and each modality missing.
- Table 3: MMT vs CRMT-MMT: clean, uni-modal attacks at ε = 1.0, multi-modal attacks at ε = 0.5.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, atomic_write_text
from .entries import base_label, resolve_entries
from .paper import PAPER_ORDER, display_name, load_paper_tables, method_name, paper_dataset
from .paths import check_unique, output_path, slug
from .stats import COLUMN_DOC, STAT_SUFFIXES, SeedSummary, cell_key, modality_name, summarize

ALL = "all"
NONE = "none"
TRANSFORMER_METHODS = ("MMT", "CRMT-MMT")
ATTACK_TITLES = {"clean": "Clean", "fgm": "FGM", "pgd_l2": "PGD-ℓ2", "missing": "Missing"}


@dataclass(frozen=True)
class Column:
    """One table column: an attack on a modality label at ε (None: any ε, for unbounded attacks)."""

    attack: str
    modality: str
    eps: float | None

    @property
    def title(self) -> str:
        name = ATTACK_TITLES.get(self.attack, self.attack)
        if self.attack == "clean":
            return name
        where = "" if self.modality == ALL else f" {modality_name(self.modality)}"
        budget = "" if self.eps is None else f" ε={self.eps:g}"
        return f"{name}{where}{budget}"

    @property
    def key(self) -> str:
        """Stem of the cell's tidy CSV columns (``pgd_l2_a_eps1``); see ``reports.stats.COLUMN_DOC``."""
        return cell_key(self.attack, self.modality, None if self.attack == "clean" else self.eps)


@dataclass
class Table:
    number: int
    dataset: str
    title: str
    columns: list[Column]
    frame: pd.DataFrame  # tidy: one row per entry (measured) plus reported rows; columns in COLUMN_DOC
    markdown: str
    notes: list[str] = field(default_factory=list)
    latex: str = ""


def single_modalities(rows: pd.DataFrame) -> list[str]:
    """Single attacked modalities present in the rows, ``v`` then ``a`` first (the paper's order)."""
    names = {str(m) for m in rows["modality"].dropna().unique()} - {ALL, NONE}
    names = {m for m in names if "+" not in m}
    first = [m for m in ("v", "a") if m in names]
    return first + sorted(names - set(first))


def table_columns(number: int, modalities: Sequence[str]) -> list[Column]:
    clean = Column("clean", NONE, 0.0)
    if number == 1:
        return [clean, Column("fgm", ALL, 0.5), Column("pgd_l2", ALL, 0.5)]
    uni = [Column(a, m, 1.0) for a in ("fgm", "pgd_l2") for m in modalities]
    if number == 2:
        return [clean] + uni + [Column("missing", m, None) for m in modalities]
    if number == 3:
        return [clean] + uni + [Column("fgm", ALL, 0.5), Column("pgd_l2", ALL, 0.5)]
    raise ValueError(f"unknown table {number}; the paper has Tables 1, 2 and 3")


TITLES = {
    1: "Table 1 — clean accuracy and multi-modal attacks on all modalities jointly (joint ℓ2 budget ε = 0.5)",
    2: "Table 2 — uni-modal attacks on one modality (ε = 1.0) and a missing modality",
    3: "Table 3 — MMT vs CRMT-MMT: clean, uni-modal attacks (ε = 1.0), multi-modal attacks (ε = 0.5)",
}


def choose_attack_configs(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep, per attack id, the attack configuration with the most rows (ties: alphabetical); say what was left out."""
    notes = []
    keep = []
    for attack, group in rows.groupby("attack", sort=True):
        counts = group["attack_config"].value_counts()
        best = sorted(counts[counts == counts.max()].index)[0]
        keep.append(group[group["attack_config"] == best])
        others = sorted(set(counts.index) - {best})
        if others:
            notes.append(f"attack {attack}: using configuration {best!r}; left out {', '.join(map(repr, others))}")
    return (pd.concat(keep) if keep else rows.iloc[:0]), notes


def _matches(rows: pd.DataFrame, col: Column) -> pd.DataFrame:
    sel = (rows["attack"] == col.attack) & (rows["modality"].astype(str) == col.modality)
    if col.eps is not None:
        sel &= np.isclose(rows["eps"].astype(float), col.eps)
    return rows[sel]


def cell_summary(rows: pd.DataFrame, col: Column) -> SeedSummary:
    """Seed summary (mean, sample std, n, 95% t-interval) of a column; repeated rows of a seed are averaged."""
    return summarize(_matches(rows, col).groupby("seed")["accuracy"].mean())


def cell_stats(rows: pd.DataFrame, col: Column) -> tuple[float, float, int]:
    """(mean, sample std, number of seeds) of a column's accuracy; repeated rows of a seed are averaged."""
    s = cell_summary(rows, col)
    return s.mean, s.std, s.n


def fmt(mean: float, std: float = math.nan) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def paper_row_order(labels: Sequence[str]) -> list[str]:
    """Labels in the paper's method order, then the others (ablation variants, plugins) alphabetically."""
    rank = {name: i for i, name in enumerate(PAPER_ORDER)}
    return sorted(labels, key=lambda lab: (rank.get(method_name(base_label(lab)), len(rank)), str(lab)))


def _in_table(number: int, label: str) -> bool:
    return (method_name(base_label(label)) in TRANSFORMER_METHODS) == (number == 3)


def _reported(number: int, paper: pd.DataFrame, dataset: str, columns: Sequence[Column]) -> pd.DataFrame:
    """Reported accuracies in the table layout: index = paper method, columns = column titles."""
    part = paper[(paper["table"] == number) & (paper["dataset"] == dataset)]
    out = {}
    for method in [m for m in PAPER_ORDER if m in set(part["method"])]:
        mrows = part[part["method"] == method]
        values = {}
        for col in columns:
            sel = (mrows["attack"] == col.attack) & (mrows["modality"] == col.modality)
            if col.eps is not None and col.attack != "clean":
                sel &= np.isclose(mrows["eps"], col.eps)
            hit = mrows[sel]["accuracy"]
            values[col.title] = float(hit.iloc[0]) if len(hit) else math.nan
        out[method] = values
    return pd.DataFrame.from_dict(out, orient="index", columns=[c.title for c in columns])


def _stat_columns(columns: Sequence[Column]) -> list[str]:
    return [f"{c.key}_{suffix}" for c in columns for suffix in STAT_SUFFIXES]


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
                f"{col.key}_flags": cell_flags(_matches(rows, col)),
            }
        )
        seeds = max(seeds, s.n)
    rec["n_seeds"] = seeds
    return rec


def _int_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed counts as integers (nullable: reported rows have none), never ``3.0``."""
    for name in [c for c in frame.columns if c == "n_seeds" or c.endswith("_n")]:
        frame[name] = pd.array(frame[name], dtype="Int64")
    return frame


# ----------------------------------------------------------------------------- text from the rows, made safe

_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
# what a spreadsheet reads as the start of a formula (OWASP's CSV injection list)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def markdown_cell(text: object) -> str:
    """Text for Markdown (a table cell, a heading, a note): backslash and ``|`` escaped, ``<`` as ``&lt;`` (no raw
    HTML), line breaks and other control characters as one space."""
    out = _LINE_BREAKS.sub(" ", str(text)).replace("\\", "\\\\").replace("|", "\\|")
    return out.replace("<", "&lt;")


def markdown_code(text: object) -> str:
    """A Markdown code span of ``text`` (in a table cell too): fenced by more backticks than any run inside it."""
    body = _LINE_BREAKS.sub(" ", str(text)).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def _csv_cell(value: object) -> object:
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)  # -0.5, +inf: a number, not a formula
        return value
    except ValueError:
        return "'" + value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab,
    CR or LF first) prefixed with ``'``; numbers, and text that reads as a number such as ``-0.5``, stay as they are."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column].dtype):
            out[column] = out[column].map(_csv_cell)
    return out


def _entry_name(method: str, label: str) -> str:
    return markdown_cell(method) if method == label else f"{markdown_cell(method)} ({markdown_code(label)})"


_FRAME_HEAD = ["method", "label", "source", "dataset", "config_hash", "n_seeds"]


def _measured_record(data: pd.DataFrame, label: str, dataset: str, columns: Sequence[Column]) -> dict:
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


def _head_lines(title: str, dataset: str, columns: Sequence[Column]) -> list[str]:
    return [
        f"### {markdown_cell(title)} — {markdown_cell(dataset)}",
        "",
        "| Method | " + " | ".join(markdown_cell(c.title) for c in columns) + " | seeds |",
        "|---|" + "---:|" * len(columns) + "---:|",
    ]


FLAG_MARK = "⚑"  # beside a number whose rows carry a validity flag (bench.flags), in every Markdown table


def cell_flags(rows: pd.DataFrame) -> str:
    """The validity flags of a cell's rows (any seed), sorted and ";"-joined; "" when none."""
    if "flags" not in rows:
        return ""
    return ";".join(sorted({n for v in rows["flags"].dropna().astype(str) for n in v.split(";") if n}))


def flagged(text: str, flags: object) -> str:
    """A Markdown cell with its flags marked (⚑ and their names), so no flagged number reads as a plain one."""
    flags = "" if flags is None or (isinstance(flags, float) and math.isnan(flags)) else str(flags)
    return f"{text} {FLAG_MARK} {markdown_cell(flags)}" if flags and text != "—" else text


def _measured_line(rec: pd.Series, columns: Sequence[Column]) -> tuple[str, list[str]]:
    """A measured entry's Markdown row (mean ± std per column, flags marked, then the seed count) and its cells."""
    cells = [flagged(fmt(rec[f"{c.key}_mean"], rec[f"{c.key}_std"]), rec.get(f"{c.key}_flags", "")) for c in columns]
    line = f"| {_entry_name(rec['method'], rec['label'])} | " + " | ".join(cells) + f" | {int(rec['n_seeds'])} |"
    return line, cells


def _finish(
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


def _dash_note(markdown_cells: Sequence[str], reported: bool) -> list[str]:
    if not any(c == "—" for c in markdown_cells):
        return []
    note = "“—”: no measured rows for that cell (the sweep did not run that attack, modality or ε for that entry)"
    if reported:
        note += (
            "; in a reported row, the paper does not report that cell for that method and dataset (and reported "
            "rows have no seed count)"
        )
    return [note + "."]


def build_table(
    rows: pd.DataFrame,
    number: int,
    dataset: str,
    paper: pd.DataFrame | None = None,
    *,
    checkpoints: Path | None = None,
    strict: bool = False,
) -> Table:
    """Table ``number`` for ``dataset`` from result rows (grouped by entry: label and configuration)."""
    paper = load_paper_tables() if paper is None else paper
    rows, entry_notes = resolve_entries(rows, checkpoints=checkpoints, strict=strict)
    data = rows[rows["dataset"].astype(str) == dataset]
    data, notes = choose_attack_configs(data)
    notes = [n for n in entry_notes if n.startswith(f"{dataset}:")] + notes
    modalities = single_modalities(data) or ["v", "a"]
    columns = table_columns(number, modalities)
    labels = paper_row_order([lab for lab in data["defense"].astype(str).unique() if _in_table(number, lab)])
    their_name = paper_dataset(dataset)
    reported = _reported(number, paper, their_name, columns) if their_name else pd.DataFrame()

    records = []
    for label in labels:
        records.append(_measured_record(data, label, dataset, columns))
        name = method_name(base_label(label))
        if name in reported.index:
            rep = {"method": name, "label": label, "source": "reported", "dataset": their_name, "config_hash": ""}
            for col in columns:
                rep[f"{col.key}_mean"] = reported.loc[name, col.title]
            records.append(rep)
    frame = pd.DataFrame(records, columns=_FRAME_HEAD + _stat_columns(columns))

    lines = _head_lines(TITLES[number], dataset, columns)
    shown: list[str] = []
    for _, rec in frame.iterrows():
        if rec["source"] == "reported":
            name = f"↳ {rec['method']} (reported, {rec['dataset']})"
            cells = [fmt(rec[f"{c.key}_mean"]) for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " | — |")
            cells = cells + ["—"]
        else:
            line, cells = _measured_line(rec, columns)
            lines.append(line)
        shown += cells
    if not labels:
        lines.append("| (no measured rows for this table) |" + " |" * (len(columns) + 1))
    lines.append("")
    lines.append(
        "Accuracy on all test samples, mean ± sample std over seeds (seeds: how many); 95% t-intervals in "
        "the CSV; ε in model-input space (ℓ2)."
    )
    reported_blocks = []
    if not their_name:
        blocks = sorted(set(paper[paper["table"] == number]["dataset"]))
        lines += [
            "",
            f"**Reported in the paper (datasets {', '.join(blocks)} — not {markdown_cell(dataset)}; for "
            "orientation only, not comparable with the numbers above):**",
        ]
        for block in blocks:
            rep = _reported(number, paper, block, columns)
            head = "| Method | " + " | ".join(markdown_cell(c.title) for c in columns) + " |"
            lines += ["", f"Reported, {block}:", "", head, "|---|" + "---:|" * len(columns)]
            for method, values in rep.iterrows():
                cells = [fmt(v) for v in values]
                shown += cells
                lines.append(f"| {method} (reported) | " + " | ".join(cells) + " |")
            reported_blocks += [
                {
                    "method": method,
                    "label": "",
                    "source": "reported",
                    "dataset": block,
                    "config_hash": "",
                    **{f"{c.key}_mean": values[c.title] for c in columns},
                }
                for method, values in rep.iterrows()
            ]
    if reported_blocks:
        frame = pd.concat([frame, pd.DataFrame(reported_blocks)], ignore_index=True)
    frame = _int_columns(frame)
    notes = notes + _dash_note(shown, reported=bool(reported_blocks) or not reported.empty)
    return _finish(number, dataset, TITLES[number], columns, frame, lines, notes)


def build_tables(
    rows: pd.DataFrame,
    numbers: Sequence[int] = (1, 2, 3),
    datasets: Sequence[str] | None = None,
    *,
    checkpoints: Path | None = None,
    strict: bool = False,
) -> list[Table]:
    """Every requested table for every dataset in the rows (Table 3 only where MMT rows exist)."""
    paper = load_paper_tables()
    rows, _ = resolve_entries(rows, checkpoints=checkpoints, strict=strict)
    out = []
    for dataset in datasets or sorted(rows["dataset"].astype(str).unique()):
        labels = rows[rows["dataset"].astype(str) == dataset]["defense"].astype(str).unique()
        for number in numbers:
            if number == 3 and not any(_in_table(3, lab) for lab in labels):
                continue
            out.append(build_table(rows, number, dataset, paper, checkpoints=checkpoints, strict=strict))
    return out


# ----------------------------------------------------------------------------- any grid: the pivot

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
    records = [_measured_record(data, label, dataset, columns) for label in labels]
    frame = _int_columns(pd.DataFrame(records, columns=_FRAME_HEAD + _stat_columns(columns)))
    title = pivot_title(attacks, modalities, eps)
    lines = _head_lines(title, dataset, columns)
    shown: list[str] = []
    for _, rec in frame.iterrows():
        line, cells = _measured_line(rec, columns)
        shown += cells
        lines.append(line)
    lines += ["", "Accuracy, mean ± sample std over seeds; 95% t-intervals in the CSV; ε in model-input space."]
    notes = notes + _dash_note(shown, reported=False)
    return _finish(0, dataset, title, columns, frame, lines, notes)


# ----------------------------------------------------------------------------- LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_UNICODE = {
    "ε": r"$\varepsilon$",
    "ℓ": r"$\ell$",
    "±": r"$\pm$",
    "—": "---",
    "–": "--",
    "η": r"$\eta$",
    "↳": r"$\hookrightarrow$",
    "×": r"$\times$",
    "“": "``",
    "”": "''",
    "∞": r"$\infty$",
}
# a norm's name: ℓ2 → $\ell_{2}$, ℓ∞ → $\ell_{\infty}$ (the subscript belongs to the ℓ)
_NORM = re.compile(r"ℓ(\d+|∞)")
#: most value columns one LaTeX table of a pivot holds (a wider pivot is split into parts); Tables 1–3 keep
#: the paper's layout, and every table shrinks to the line width only when it is wider (``\resizebox``)
LATEX_MAX_COLUMNS = 5


def latex_escape(text: str) -> str:
    """Plain text → LaTeX: the ten special characters escaped, the few Unicode symbols reports use spelled out
    (``ℓ2`` as ``$\\ell_2$``), line breaks and other control characters as one space (a blank line would end the
    table's paragraph)."""
    out = []
    for i, part in enumerate(_NORM.split(_LINE_BREAKS.sub(" ", str(text)))):
        if i % 2:  # the subscript of a norm's ℓ: $\ell_2$, $\ell_\infty$, $\ell_{12}$
            sub = r"\infty" if part == "∞" else part
            out.append(rf"$\ell_{sub}$" if len(part) == 1 else rf"$\ell_{{{sub}}}$")
            continue
        out.extend(_LATEX_SPECIAL.get(ch) or _LATEX_UNICODE.get(ch) or ch for ch in part)
    return "".join(out)


def latex_label(table: Table, part: int = 0) -> str:
    """``tab:table1-synthav``, ``tab:pivot-synthav`` (``-2`` for the second part of a split pivot): the file's stem,
    the dataset as its slug, so any dataset name gives a valid ``\\label``."""
    stem = f"pivot-{slug(table.dataset)}" if table.number == 0 else f"table{table.number}-{slug(table.dataset)}"
    return f"tab:{stem}" + (f"-{part}" if part else "")


def latex_parts(columns: Sequence[Column], max_columns: int = LATEX_MAX_COLUMNS) -> list[list[Column]]:
    """A pivot's columns, in their order, in parts of at most ``max_columns``: an (attack, modality) group that fits
    in a part of its own starts one rather than being cut; a larger group fills parts as it comes."""
    groups: dict[tuple[str, str], list[Column]] = {}
    for col in columns:
        groups.setdefault(("", "") if col.attack == "clean" else (col.attack, col.modality), []).append(col)
    parts: list[list[Column]] = [[]]
    for group in groups.values():
        if parts[-1] and len(group) <= max_columns < len(parts[-1]) + len(group):
            parts.append([])
        for col in group:
            if len(parts[-1]) == max_columns:
                parts.append([])
            parts[-1].append(col)
    return [p for p in parts if p]


def _latex_head(col: Column) -> str:
    """A column's title on two lines (attack; modality and ε) so that columns stay narrow."""
    name = ATTACK_TITLES.get(col.attack, col.attack)
    rest = col.title[len(name) :].strip() if col.title.startswith(name) else ""
    if not rest:
        return latex_escape(col.title)
    return r"\shortstack{" + latex_escape(name) + r" \\ " + latex_escape(rest) + "}"


def _latex_value(mean: float, std: float, best: bool) -> str:
    if pd.isna(mean):
        return "---"
    shown = f"{mean:.3f}"
    shown = rf"\textbf{{{shown}}}" if best else shown
    return shown if std is None or pd.isna(std) else shown + rf"\,{{\scriptsize$\pm${std:.3f}}}"


def _latex_names(rows: pd.DataFrame) -> list[str]:
    """Each row's name: the display name, with the label beside it only where two rows would share one."""
    names = [str(r["method"]) for _, r in rows.iterrows()]
    return [
        n if names.count(n) == 1 or r["label"] in ("", n) else f"{n} ({r['label']})"
        for n, (_, r) in zip(names, rows.iterrows())
    ]


def _latex_environment(table: Table, columns: Sequence[Column], label: str, part: str) -> str:
    rows = table.frame[~((table.frame["source"] == "reported") & (table.frame["label"] == ""))]
    rows = rows.reset_index(drop=True)  # other datasets' reported blocks: not comparable, left out of LaTeX
    measured = rows["source"] == "measured"
    best = {}
    for col in columns:  # the best mean as shown (3 decimals) among our rows; ties are all bold
        values = pd.to_numeric(rows.loc[measured, f"{col.key}_mean"], errors="coerce").round(3)
        best[col.key] = values.max() if values.notna().any() else math.nan
    head = " & ".join(["Method"] + [_latex_head(c) for c in columns] + ["Seeds"]) + r" \\"
    body = []
    for (_, rec), name in zip(rows.iterrows(), _latex_names(rows)):
        if rec["source"] == "reported":
            cells = [latex_escape(f"↳ {rec['method']} (reported, {rec['dataset']})")]
            cells += [_latex_value(rec[f"{c.key}_mean"], None, False) for c in columns] + ["---"]
        else:
            cells = [latex_escape(name)]
            cells += [
                _latex_value(
                    rec[f"{c.key}_mean"],
                    rec[f"{c.key}_std"],
                    round(float(rec[f"{c.key}_mean"]), 3) == best[c.key] if pd.notna(rec[f"{c.key}_mean"]) else False,
                )
                for c in columns
            ]
            cells.append(str(int(rec["n_seeds"])))
        body.append(" & ".join(cells) + r" \\")
    title = re.sub(r"^Table \d+ — ", "", table.title)  # LaTeX numbers the table itself
    caption = latex_escape(
        f"{title} — {table.dataset}{part}. Accuracy, mean ± sample std over seeds; the best mean "
        "of each column in bold."
    )
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            r"\setlength{\tabcolsep}{4pt}",
            r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
            r"\begin{tabular}{l" + "r" * (len(columns) + 1) + "}",
            r"\toprule",
            head,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}}",
            rf"\caption{{{caption}}}",
            rf"\label{{{label}}}",
            r"\end{table}",
        ]
    )


def latex_table(table: Table, *, max_columns: int = LATEX_MAX_COLUMNS) -> str:
    """The measured rows (and reported rows beside them) as booktabs ``table`` environments, mean ± std, the best
    mean of each column in bold, each with a ``\\label`` (:func:`latex_label`) and shrunk to the line width when
    wider. A pivot wider than ``max_columns`` value columns is split into several tables (:func:`latex_parts`).

    Needs ``\\usepackage{booktabs}`` and ``\\usepackage{graphicx}`` in the preamble."""
    parts = latex_parts(table.columns, max_columns) if table.number == 0 else [list(table.columns)]
    environments = [
        _latex_environment(
            table,
            cols,
            latex_label(table, k if len(parts) > 1 else 0),
            f" (part {k} of {len(parts)})" if len(parts) > 1 else "",
        )
        for k, cols in enumerate(parts, 1)
    ]
    return "\n\n".join([r"% needs \usepackage{booktabs} and \usepackage{graphicx}", *environments]) + "\n"


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
    made_by = _LINE_BREAKS.sub(" ", command)  # one comment line, whatever the command held
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
    "Column",
    "PIVOT_TITLE",
    "Table",
    "TITLES",
    "build_table",
    "build_tables",
    "cell_stats",
    "cell_summary",
    "choose_attack_configs",
    "csv_safe",
    "fmt",
    "latex_escape",
    "latex_label",
    "latex_parts",
    "latex_table",
    "markdown_cell",
    "markdown_code",
    "paper_row_order",
    "pivot_columns",
    "pivot_table",
    "single_modalities",
    "table_columns",
    "write_tables",
]
