"""Tables 1–3 of the paper, rebuilt from result rows (pure functions of the rows DataFrame).

Layout as in the paper: rows are methods, columns are attacks. A cell is the mean ± std over
seeds (sample std; a single seed shows the mean alone). The paper's reported accuracies are
shown beside ours, marked "reported", when the dataset is one of the paper's (KS, UCF101,
VGGS); otherwise (synthav) they come in a separate, labelled block, since they are not comparable.

- Table 1: clean accuracy and multi-modal FGM / ℓ2-PGD on all modalities jointly at ε = 0.5.
- Table 2: uni-modal FGM / ℓ2-PGD on each modality alone at ε = 1.0, and each modality missing.
- Table 3: MMT vs CRMT-MMT: clean, uni-modal attacks at ε = 1.0, multi-modal attacks at ε = 0.5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..io import atomic_path, atomic_write_text
from .paper import PAPER_ORDER, load_paper_tables, method_name, paper_dataset

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
        where = "" if self.modality == ALL else f" #{self.modality}"
        budget = "" if self.eps is None else f" ε={self.eps:g}"
        return f"{name}{where}{budget}"


@dataclass
class Table:
    number: int
    dataset: str
    title: str
    columns: list[Column]
    frame: pd.DataFrame  # one row per method (measured) plus reported rows; see layout_frame
    markdown: str
    notes: list[str] = field(default_factory=list)


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


def cell_stats(rows: pd.DataFrame, col: Column) -> tuple[float, float, int]:
    """(mean, sample std, number of seeds) of a column's accuracy; repeated rows of a seed are averaged."""
    per_seed = _matches(rows, col).groupby("seed")["accuracy"].mean()
    if per_seed.empty:
        return math.nan, math.nan, 0
    std = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan
    return float(per_seed.mean()), std, int(len(per_seed))


def fmt(mean: float, std: float = math.nan) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def paper_row_order(labels: Sequence[str]) -> list[str]:
    """Labels in the paper's method order, then the others (ablation variants, plugins) alphabetically."""
    rank = {name: i for i, name in enumerate(PAPER_ORDER)}
    return sorted(labels, key=lambda lab: (rank.get(method_name(lab), len(rank)), str(lab)))


def _in_table(number: int, label: str) -> bool:
    return (method_name(label) in TRANSFORMER_METHODS) == (number == 3)


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


def build_table(rows: pd.DataFrame, number: int, dataset: str, paper: pd.DataFrame | None = None) -> Table:
    """Table ``number`` for ``dataset`` from result rows."""
    paper = load_paper_tables() if paper is None else paper
    data = rows[rows["dataset"].astype(str) == dataset]
    data, notes = choose_attack_configs(data)
    modalities = single_modalities(data) or ["v", "a"]
    columns = table_columns(number, modalities)
    labels = paper_row_order([lab for lab in data["defense"].astype(str).unique() if _in_table(number, lab)])
    their_name = paper_dataset(dataset)
    reported = _reported(number, paper, their_name, columns) if their_name else pd.DataFrame()

    records = []
    for label in labels:
        rec = {"method": method_name(label), "label": label, "source": "measured", "dataset": dataset}
        lrows = data[data["defense"].astype(str) == label]
        seeds = set()
        for col in columns:
            mean, std, n = cell_stats(lrows, col)
            rec[col.title], rec[f"{col.title} std"] = mean, std
            if n:
                seeds.add(n)
        rec["seeds"] = max(seeds) if seeds else 0
        records.append(rec)
        name = method_name(label)
        if name in reported.index:
            rep = {"method": name, "label": label, "source": "reported", "dataset": their_name, "seeds": math.nan}
            for col in columns:
                rep[col.title], rep[f"{col.title} std"] = reported.loc[name, col.title], math.nan
            records.append(rep)
    frame = pd.DataFrame(records, columns=["method", "label", "source", "dataset", "seeds"]
                         + [t for c in columns for t in (c.title, f"{c.title} std")])

    header = "| Method | " + " | ".join(c.title for c in columns) + " | seeds |"
    rule = "|---|" + "---:|" * len(columns) + "---:|"
    lines = [f"### {TITLES[number]} — {dataset}", "", header, rule]
    for _, rec in frame.iterrows():
        if rec["source"] == "reported":
            name = f"↳ {rec['method']} (reported, {rec['dataset']})"
            cells = [fmt(rec[c.title]) for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " | — |")
        else:
            name = rec["method"] if rec["method"] == rec["label"] else f"{rec['method']} (`{rec['label']}`)"
            cells = [fmt(rec[c.title], rec[f"{c.title} std"]) for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {rec['seeds']} |")
    if not labels:
        lines.append("| (no measured rows for this table) |" + " |" * (len(columns) + 1))
    lines.append("")
    lines.append("Accuracy on all test samples, mean ± sample std over seeds; ε in model-input space (ℓ2).")
    if not their_name:
        blocks = sorted(set(paper[paper["table"] == number]["dataset"]))
        lines += ["", f"**Reported in the paper (datasets {', '.join(blocks)} — not {dataset}; for orientation only, "
                  "not comparable with the numbers above):**"]
        for block in blocks:
            rep = _reported(number, paper, block, columns)
            lines += ["", f"Reported, {block}:", "", "| Method | " + " | ".join(c.title for c in columns) + " |",
                      "|---|" + "---:|" * len(columns)]
            for method, values in rep.iterrows():
                lines.append(f"| {method} (reported) | " + " | ".join(fmt(v) for v in values) + " |")
            rep_records = [{"method": method, "label": "", "source": "reported", "dataset": block, "seeds": math.nan,
                            **{c.title: values[c.title] for c in columns}} for method, values in rep.iterrows()]
            frame = pd.concat([frame, pd.DataFrame(rep_records)], ignore_index=True)
    if notes:
        lines += [""] + [f"Note: {n}." for n in notes]
    return Table(number, dataset, TITLES[number], columns, frame, "\n".join(lines) + "\n", notes)


def build_tables(rows: pd.DataFrame, numbers: Sequence[int] = (1, 2, 3),
                 datasets: Sequence[str] | None = None) -> list[Table]:
    """Every requested table for every dataset in the rows (Table 3 only where MMT rows exist)."""
    paper = load_paper_tables()
    out = []
    for dataset in datasets or sorted(rows["dataset"].astype(str).unique()):
        labels = rows[rows["dataset"].astype(str) == dataset]["defense"].astype(str).unique()
        for number in numbers:
            if number == 3 and not any(_in_table(3, lab) for lab in labels):
                continue
            out.append(build_table(rows, number, dataset, paper))
    return out


def write_tables(tables: Sequence[Table], out_dir: str | Path, *, command: str) -> list[Path]:
    """``table<N>-<dataset>.md`` and ``.csv`` per table and a combined ``report.md``; every file names the
    command (the CSVs in a ``made_by`` column)."""
    out_dir = Path(out_dir)
    written = []
    for t in tables:
        stem = out_dir / f"table{t.number}-{t.dataset}"
        atomic_write_text(stem.with_suffix(".md"), f"<!-- made by: {command} -->\n{t.markdown}")
        with atomic_path(stem.with_suffix(".csv")) as tmp:
            t.frame.assign(made_by=command).to_csv(tmp, index=False)
        written += [stem.with_suffix(".md"), stem.with_suffix(".csv")]
    body = "\n".join(t.markdown for t in tables) if tables else "(no result rows)\n"
    report = out_dir / "report.md"
    atomic_write_text(report, f"# Results\n\nmade by: `{command}`\n\n{body}")
    return written + [report]


__all__ = ["Column", "Table", "TITLES", "build_table", "build_tables", "cell_stats", "choose_attack_configs", "fmt",
           "paper_row_order", "single_modalities", "table_columns", "write_tables"]
