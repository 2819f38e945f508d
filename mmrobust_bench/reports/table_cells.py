"""The cells of a report table: a :class:`Column` (attack, modality, ε), the :class:`Table` it builds, and how a
cell reads the rows (seed summary, validity flags, the attack configuration used, the row order).

Shared by the paper's tables (``reports.tables``), the pivot (``reports.pivot``), their LaTeX
(``reports.latex``), the leaderboard page and the figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .entries import base_label
from .paper import PAPER_ORDER, method_name
from .safe_text import markdown_cell
from .stats import SeedSummary, cell_key, modality_name, summarize

ALL = "all"
NONE = "none"
ANY = "any"  # per sample, the worst of each modality alone and all jointly (bench.threat_sets)
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


def attack_settings(rows: pd.DataFrame) -> pd.Series:
    """Each row's attack setting: its configuration and its norm. APGD-style attacks describe themselves the same
    way under ℓ2 and ℓ∞, so the configuration alone would let the two norms share (and average into) one cell."""
    norm = rows["norm"].fillna("").astype(str) if "norm" in rows else pd.Series("", index=rows.index)
    return rows["attack_config"].astype(str) + SETTING_SEP + norm


SETTING_SEP = " @ "  # between an attack's configuration and its norm in a setting


def setting_text(setting: str) -> str:
    """``pgd_l2(steps=4, …) @ l2`` as the notes say it: ``'pgd_l2(steps=4, …)' (ℓ2)``."""
    config, _, norm = setting.rpartition(SETTING_SEP)
    return f"{config!r}" + (f" ({NORM_NAMES.get(norm, norm)})" if norm else "")


NORM_NAMES = {"l2": "ℓ2", "linf": "ℓ∞", "l1": "ℓ1", "l0": "ℓ0"}


def choose_attack_configs(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep, per attack id, the setting (configuration and norm, :func:`attack_settings`) with the most rows (ties:
    alphabetical, so ℓ2 before ℓ∞); say what was left out. Every cell then holds one attack, never an average of
    two."""
    notes = []
    keep = []
    settings = attack_settings(rows).to_numpy(dtype=str) if len(rows) else np.array([], dtype=str)
    attacks = rows["attack"].astype(str).to_numpy()
    for attack in sorted(set(attacks)):
        mine = attacks == attack
        counts = pd.Series(settings[mine]).value_counts()
        best = sorted(counts[counts == counts.max()].index)[0]
        keep.append(rows[mine & (settings == best)])
        others = sorted(set(counts.index) - {best})
        if others:
            notes.append(
                f"attack {attack}: using configuration {setting_text(best)}; left out "
                + ", ".join(setting_text(o) for o in others)
            )
    return (pd.concat(keep) if keep else rows.iloc[:0]), notes


def matching_rows(rows: pd.DataFrame, col: Column) -> pd.DataFrame:
    sel = (rows["attack"] == col.attack) & (rows["modality"].astype(str) == col.modality)
    if col.eps is not None:
        sel &= np.isclose(rows["eps"].astype(float), col.eps)
    return rows[sel]


def cell_summary(rows: pd.DataFrame, col: Column) -> SeedSummary:
    """Seed summary (mean, sample std, n, 95% t-interval) of a column; repeated rows of a seed are averaged."""
    return summarize(matching_rows(rows, col).groupby("seed")["accuracy"].mean())


def cell_stats(rows: pd.DataFrame, col: Column) -> tuple[float, float, int]:
    """(mean, sample std, number of seeds) of a column's accuracy; repeated rows of a seed are averaged."""
    s = cell_summary(rows, col)
    return s.mean, s.std, s.n


def fmt(mean: float, std: float = math.nan) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def number(value: object, spec: str = ".3f") -> str:
    """``value`` formatted with ``spec``; "—" when it is missing or NaN (never "nan"), "∞" / "−∞" when infinite
    (a median certified radius can be)."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return format(x, spec)


def paper_row_order(labels: Sequence[str]) -> list[str]:
    """Labels in the paper's method order, then the others (ablation variants, plugins) alphabetically."""
    rank = {name: i for i, name in enumerate(PAPER_ORDER)}
    return sorted(labels, key=lambda lab: (rank.get(method_name(base_label(lab)), len(rank)), str(lab)))


FLAG_MARK = "⚑"  # beside a number whose rows carry a validity flag (bench.flags), in every Markdown table


def cell_flags(rows: pd.DataFrame) -> str:
    """The validity flags of a cell's rows (any seed), sorted and ";"-joined; "" when none."""
    if "flags" not in rows:
        return ""
    return ";".join(sorted({n for v in rows["flags"].dropna().astype(str) for n in v.split(";") if n}))


def flag_text(flags: object) -> str:
    """A cell's flags as text: "" for none, whether missing (None, NaN: a reported row) or empty."""
    return "" if flags is None or (isinstance(flags, float) and math.isnan(flags)) else str(flags)


def flagged(text: str, flags: object) -> str:
    """A Markdown cell with its flags marked (⚑ and their names), so no flagged number reads as a plain one."""
    flags = flag_text(flags)
    return f"{text} {FLAG_MARK} {markdown_cell(flags)}" if flags and text != "—" else text


__all__ = [
    "ALL",
    "ATTACK_TITLES",
    "FLAG_MARK",
    "NONE",
    "NORM_NAMES",
    "Column",
    "Table",
    "cell_flags",
    "cell_stats",
    "cell_summary",
    "attack_settings",
    "choose_attack_configs",
    "flag_text",
    "flagged",
    "fmt",
    "number",
    "paper_row_order",
    "setting_text",
    "single_modalities",
    "ANY",
]
