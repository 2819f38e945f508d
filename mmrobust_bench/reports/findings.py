"""The numbers behind a leaderboard's findings, straight from its CSVs (``mmrobust-bench report --findings``).

Four questions of the paper, each answered by a table of mean ± sample std over seeds:

1. *Preference*: which modality JT leans on — accuracy with each modality missing (zero-filled).
2. *Fragility*: which modality's uni-modal ℓ2-PGD hurts more, over the radius grid.
3. *Robustness and imbalance*: per defense, clean and robust accuracy at chosen cells, and the
   empirical vulnerability-indicator ratio η^(a)/η^(v) (mean over class pairs, from ``eta_pairs.csv``).
4. *Ablation*: the same cells for the CRMT stages (Figure 5 labels).

Plus the honesty check of every certificate (claims broken by ℓ2-PGD inside the claimed radius).
The prose that interprets these tables is written by people; these are only the numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .tables import fmt, paper_row_order


@dataclass(frozen=True)
class Cell:
    """One measured quantity: attack on modality at ε (``None`` for unbounded attacks and clean)."""

    title: str
    attack: str
    modality: str
    eps: float | None = None


def seed_stats(rows: pd.DataFrame, defense: str, cell: Cell) -> tuple[float, float, int]:
    """(mean, sample std, seeds) of one cell's accuracy for one defense label."""
    sel = (rows["defense"] == defense) & (rows["attack"] == cell.attack) & (rows["modality"].astype(str) == cell.modality)
    if cell.eps is not None:
        sel &= np.isclose(rows["eps"].astype(float), cell.eps)
    per_seed = rows[sel].groupby("seed")["accuracy"].mean()
    if per_seed.empty:
        return math.nan, math.nan, 0
    return float(per_seed.mean()), float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan, len(per_seed)


def cell_table(rows: pd.DataFrame, defenses: Sequence[str], cells: Sequence[Cell]) -> str:
    lines = ["| defense | " + " | ".join(c.title for c in cells) + " | seeds |",
             "|---|" + "---:|" * (len(cells) + 1)]
    for d in defenses:
        stats = [seed_stats(rows, d, c) for c in cells]
        seeds = max((s[2] for s in stats), default=0)
        if seeds == 0:
            continue
        lines.append(f"| `{d}` | " + " | ".join(fmt(m, s) for m, s, _ in stats) + f" | {seeds} |")
    return "\n".join(lines)


def eta_ratio(pairs: pd.DataFrame, numerator: str, denominator: str,
              column: str = "eta_pair") -> pd.DataFrame:
    """Per defense: mean over seeds of (mean over class pairs of η^(num)) / (mean over class pairs of η^(den))."""
    if pairs is None or pairs.empty:
        return pd.DataFrame(columns=["defense", "ratio_mean", "ratio_std", "seeds"])
    per_model = (pairs.groupby(["defense", "seed", "modality"])[column].mean().unstack("modality"))
    ratio = (per_model[numerator] / per_model[denominator]).rename("ratio").reset_index()
    out = ratio.groupby("defense")["ratio"].agg(ratio_mean="mean", ratio_std="std", seeds="count").reset_index()
    return out


def honesty_table(certified: pd.DataFrame, defenses: Sequence[str]) -> str:
    """Per defense and certificate (min over j): certified samples and those PGD broke inside the claim."""
    if certified is None or certified.empty:
        return "_no certificates_"
    sel = certified[(certified["variant"] == "min_j") & np.isclose(certified["radius"].astype(float), 0.0)]
    lines = ["| defense | certificate | median certified radius | broken / certified (all seeds) |",
             "|---|---|---:|---:|"]
    for d in defenses:
        for cert, group in sel[sel["defense"] == d].groupby("certificate", sort=True):
            broken, total = int(group["honesty_violations"].sum()), int(group["honesty_certified"].sum())
            lines.append(f"| `{d}` | {cert} | {group['median_certified_radius'].mean():.3f} | "
                         f"{broken} / {total} ({broken / max(total, 1):.1%}) |")
    return "\n".join(lines)


def findings_markdown(rows: pd.DataFrame, *, pairs: pd.DataFrame | None = None,
                      certified: pd.DataFrame | None = None, reference: str = "jt",
                      ablation: Sequence[str] = ("jt", "crmt_jt_orth_only", "crmt_jt_step1_only",
                                                 "crmt_jt_step2_only", "crmt_jt"),
                      grid: Sequence[float] | None = None, command: str = "") -> str:
    """Markdown with the four tables (and the honesty check), for one dataset's rows."""
    modalities = sorted({str(m) for m in rows["modality"].dropna().unique()} - {"none", "all"} - {""})
    modalities = [m for m in modalities if "+" not in m]
    defenses = paper_row_order(sorted(rows["defense"].unique()))
    if grid is None:
        pgd = rows[(rows["attack"] == "pgd_l2") & rows["modality"].isin(modalities)]
        grid = sorted(float(e) for e in pgd["eps"].dropna().unique())
    out = [f"made by: `{command}`" if command else "", ""]
    out += [f"### 1. Preference: {reference} with one modality missing (zero-filled)", "",
            cell_table(rows, [reference], [Cell("clean", "clean", "none")]
                       + [Cell(f"{m} missing", "missing", m) for m in modalities]), ""]
    out += [f"### 2. Fragility: {reference} under uni-modal ℓ2-PGD (paper's 4 steps of ε/3)", "",
            _modality_grid(rows, reference, modalities, grid), ""]
    cells = ([Cell("clean", "clean", "none")]
             + [Cell(f"PGD {m} ε={e:g}", "pgd_l2", m, e) for m in modalities for e in _pick(grid)]
             + [Cell("PGD all ε=0.5", "pgd_l2", "all", 0.5)]
             + [Cell(f"{m} missing", "missing", m) for m in modalities])
    out += ["### 3. Robust accuracy per defense", "", cell_table(rows, defenses, cells), ""]
    if pairs is not None and not pairs.empty and len(modalities) == 2:
        num, den = _fragile_first(rows, reference, modalities, grid)
        ratios = eta_ratio(pairs, num, den)
        order = {d: i for i, d in enumerate(defenses)}
        ratios = ratios.sort_values("defense", key=lambda s: s.map(lambda d: order.get(d, len(order))))
        out += [f"### 3b. Imbalance: empirical η^({num}) / η^({den}) (mean over class pairs; 1 = balanced)", "",
                "| defense | ratio | seeds |", "|---|---:|---:|"]
        out += [f"| `{r.defense}` | {fmt(r.ratio_mean, r.ratio_std)} | {r.seeds} |" for r in ratios.itertuples()]
        out += [""]
    present = [d for d in ablation if d in set(rows["defense"])]
    if len(present) > 1:
        out += ["### 4. CRMT ablation (Figure 5 stages)", "", cell_table(rows, present, cells), ""]
    if certified is not None and not certified.empty:
        out += ["### Honesty check of the empirical certificates", "", honesty_table(certified, defenses), ""]
    return "\n".join(out).strip() + "\n"


def _pick(grid: Sequence[float]) -> list[float]:
    """A middle and the largest radius of the grid: where differences between defenses show."""
    values = sorted(set(grid))
    if len(values) <= 2:
        return values
    return [values[len(values) // 2], values[-1]]


def _modality_grid(rows: pd.DataFrame, defense: str, modalities: Sequence[str], grid: Sequence[float]) -> str:
    lines = ["| modality | " + " | ".join(f"ε={e:g}" for e in grid) + " |", "|---|" + "---:|" * len(grid)]
    for m in modalities:
        lines.append(f"| {m} | " + " | ".join(fmt(*seed_stats(rows, defense, Cell("", "pgd_l2", m, e))[:2])
                                              for e in grid) + " |")
    return "\n".join(lines)


def _fragile_first(rows: pd.DataFrame, defense: str, modalities: Sequence[str],
                   grid: Sequence[float]) -> tuple[str, str]:
    """(more fragile, less fragile) modality of ``defense``: lower mean PGD accuracy over the grid first."""
    mean = {m: np.nanmean([seed_stats(rows, defense, Cell("", "pgd_l2", m, e))[0] for e in grid] or [np.nan])
            for m in modalities}
    first, second = sorted(modalities, key=lambda m: mean[m])
    return first, second


__all__ = ["Cell", "seed_stats", "cell_table", "eta_ratio", "honesty_table", "findings_markdown"]
