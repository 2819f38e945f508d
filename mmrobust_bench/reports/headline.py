"""The leaderboards' headline: robust accuracy under the standard strong evaluation, ranked by ``any``.

A leaderboard ranks entries by ``autoattack`` (the AutoAttack-style ensemble, ``version='standard'`` unless only
another version was run) at the dataset's headline ε, on each modality alone, jointly (``all``) and ``any`` (the
attacker's per-sample choice), mean ± std over seeds, best ``any`` first. Every cell carries the flags of the rows
behind it. Beside it, the *masking check*: where the paper's ``pgd_l2`` and ``autoattack`` measured the same cell,
how much PGD overstated robustness; a gap beyond binomial noise says the PGD number was gradient masking, not
robustness. A pure function of result rows, like every report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .entries import ENTRY
from .safe_text import markdown_cell, markdown_code
from .stats import modality_name
from .table_cells import FLAG_MARK, cell_flags, flagged, fmt

STRONG = "autoattack"
PAPER_ATTACK = "pgd_l2"
PREFERRED_VERSION = "autoattack(version='standard')"
ANY = "any"
Z = 2.0  # binomial standard deviations a PGD−autoattack gap must exceed to count as masking


@dataclass(frozen=True)
class Headline:
    """The headline table (one row per entry, ranked by ``any``) and what it was read from."""

    table: pd.DataFrame
    attack_config: str
    eps: float
    modalities: list[str]


def _entry_column(rows: pd.DataFrame) -> str:
    return ENTRY if ENTRY in rows else "defense"


def strong_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The ``autoattack`` rows of one configuration: the standard version when present, else the most common."""
    strong = rows[rows["attack"].astype(str) == STRONG]
    if strong.empty:
        return strong, ""
    configs = strong["attack_config"].astype(str)
    config = PREFERRED_VERSION if (configs == PREFERRED_VERSION).any() else configs.value_counts().index[0]
    return strong[configs == config], config


def headline_eps(strong: pd.DataFrame) -> float:
    """The headline ε: the radius at which ``any`` was measured for the most models (ties: the smallest)."""
    part = strong[strong["modality"].astype(str) == ANY]
    part = part if not part.empty else strong
    counts = part.groupby(part["eps"].astype(float))["seed"].count()
    return float(sorted(counts.index, key=lambda e: (-counts[e], e))[0])


def _cell(part: pd.DataFrame) -> tuple[float, float, int, str]:
    per_seed = part.groupby("seed")["accuracy"].mean()
    if per_seed.empty:
        return math.nan, math.nan, 0, ""
    std = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan
    return float(per_seed.mean()), std, len(per_seed), cell_flags(part)


def headline(rows: pd.DataFrame, *, eps: float | None = None) -> Headline | None:
    """The headline of ``rows`` (one dataset), or None when no ``autoattack`` row exists."""
    strong, config = strong_rows(rows)
    if strong.empty:
        return None
    eps = headline_eps(strong) if eps is None else float(eps)
    strong = strong[np.isclose(strong["eps"].astype(float), eps)]
    present = [str(m) for m in strong["modality"].astype(str).unique()]
    singles = sorted(m for m in present if m not in ("all", ANY) and "+" not in m)
    modalities = singles + [m for m in ("all", ANY) if m in present]
    column = _entry_column(rows)
    clean = rows[rows["attack"].astype(str) == "clean"]
    records = []
    for entry in sorted(strong[column].astype(str).unique()):
        record: dict = {"entry": entry}
        mean, std, _seeds, flags = _cell(clean[clean[column].astype(str) == entry])
        record.update({"clean": mean, "clean_std": std, "clean_flags": flags})
        part = strong[strong[column].astype(str) == entry]
        record["seeds"] = int(part["seed"].nunique())
        for m in modalities:
            mean, std, _, flags = _cell(part[part["modality"].astype(str) == m])
            record.update({m: mean, f"{m}_std": std, f"{m}_flags": flags})
        records.append(record)
    table = pd.DataFrame.from_records(records)
    rank_by = ANY if ANY in modalities else modalities[-1]
    table = table.sort_values([rank_by, "entry"], ascending=[False, True], na_position="last").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return Headline(table, config, eps, modalities)


def headline_markdown(head: Headline) -> str:
    """The headline as a Markdown table, flags marked on their cells."""
    titles = [modality_name(m) if m != ANY else "any (worst case)" for m in head.modalities]
    lines = [
        "| rank | entry | clean | " + " | ".join(markdown_cell(t) for t in titles) + " | seeds |",
        "|---:|---|---:|" + "---:|" * (len(titles) + 1),
    ]
    for r in head.table.to_dict("records"):
        cells = [flagged(fmt(r[m], r[f"{m}_std"]), r[f"{m}_flags"]) for m in head.modalities]
        clean = flagged(fmt(r["clean"], r["clean_std"]), r["clean_flags"])
        lines.append(
            f"| {r['rank']} | {markdown_code(r['entry'])} | {clean} | " + " | ".join(cells) + f" | {r['seeds']} |"
        )
    return "\n".join(lines)


def _joined_flags(cells: pd.Series) -> str:
    return cell_flags(cells.to_frame("flags"))


def masking_check(rows: pd.DataFrame) -> pd.DataFrame:
    """Per entry, modality and ε where both were measured: the paper's PGD accuracy, ``autoattack``'s, the gap and
    whether it exceeds ``Z`` binomial standard deviations (``masking``). Means over the seeds both measured."""
    strong, _ = strong_rows(rows)
    pgd = rows[rows["attack"].astype(str) == PAPER_ATTACK]
    if strong.empty or pgd.empty:
        return pd.DataFrame(
            columns=["entry", "modality", "eps", "pgd_l2", "autoattack", "gap", "masking", "pgd_flags", "seeds"]
        )
    column = _entry_column(rows)
    keys = [column, "seed", "modality", "eps"]

    def per_seed(frame: pd.DataFrame, name: str) -> pd.DataFrame:
        frame = frame.assign(modality=frame["modality"].astype(str), eps=frame["eps"].astype(float).round(10))
        out = frame.groupby(keys, as_index=False).agg(
            **{name: ("accuracy", "mean"), f"{name}_n": ("n", "max"), f"{name}_flags": ("flags", _joined_flags)}
        )
        return out

    both = per_seed(pgd, "pgd_l2").merge(per_seed(strong, "autoattack"), on=keys)
    if both.empty:
        return pd.DataFrame(
            columns=["entry", "modality", "eps", "pgd_l2", "autoattack", "gap", "masking", "pgd_flags", "seeds"]
        )
    records = []
    for (entry, modality, eps), part in both.groupby([column, "modality", "eps"], sort=True):
        p, a = float(part["pgd_l2"].mean()), float(part["autoattack"].mean())
        n = float(part["autoattack_n"].sum())
        noise = Z * math.sqrt(max(a * (1 - a), 1.0 / max(n, 1.0)) / max(n, 1.0))
        records.append(
            {
                "entry": entry,
                "modality": modality,
                "eps": eps,
                "pgd_l2": p,
                "autoattack": a,
                "gap": p - a,
                "masking": bool(p - a > noise),
                "pgd_flags": _joined_flags(part["pgd_l2_flags"]),
                "seeds": int(part["seed"].nunique()),
            }
        )
    return pd.DataFrame.from_records(records)


def masking_markdown(check: pd.DataFrame) -> str:
    """The masking check as Markdown: the cells where PGD overstated robustness, largest gap first."""
    if check.empty:
        return "_no cell was measured by both pgd_l2 and autoattack_"
    flagged = check[check["masking"]].sort_values("gap", ascending=False)
    lines = [
        f"{len(flagged)} of {len(check)} cells measured by both attacks: the paper's PGD overstates robustness "
        f"beyond {Z:g} binomial std (the PGD number was gradient masking, not robustness).",
        "",
    ]
    if flagged.empty:
        return lines[0]
    lines += [
        "| entry | modality | ε | pgd_l2 | autoattack | gap | PGD flags | seeds |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in flagged.itertuples():
        lines.append(
            f"| {markdown_code(r.entry)} | {markdown_cell(modality_name(r.modality))} | {r.eps:g} | "
            f"{r.pgd_l2:.3f} | {r.autoattack:.3f} | {r.gap:+.3f} | {markdown_cell(r.pgd_flags or '—')} | "
            f"{r.seeds} |"
        )
    return "\n".join(lines)


def headline_sections(rows: pd.DataFrame) -> list[str]:
    """The findings' headline sections (empty when no ``autoattack`` row exists)."""
    head = headline(rows)
    if head is None:
        return []
    return [
        f"### 0. Headline: standard strong evaluation ({markdown_code(head.attack_config)}) at ε = {head.eps:g}",
        "",
        "Robust accuracy (mean ± std over seeds) on each modality alone, jointly and under **any** (per sample, "
        f"the worst of those), ranked by any. {FLAG_MARK} marks a cell whose rows carry a validity flag.",
        "",
        headline_markdown(head),
        "",
        "### 0b. Masking check: the paper's ℓ2-PGD against the strong evaluation",
        "",
        masking_markdown(masking_check(rows)),
        "",
    ]


__all__ = [
    "Headline",
    "headline",
    "headline_markdown",
    "headline_sections",
    "masking_check",
    "masking_markdown",
    "strong_rows",
    "headline_eps",
    "FLAG_MARK",
]
