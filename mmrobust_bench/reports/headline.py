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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ..bench.result_rows import decode_outcomes
from .entries import ENTRY
from .safe_text import markdown_cell, markdown_code
from .stats import modality_name
from .table_cells import (
    ANY,
    FLAG_MARK,
    NORM_NAMES,
    SETTING_SEP,
    attack_settings,
    cell_flags,
    choose_attack_configs,
    flagged,
    fmt,
    number,
)

STRONG = "autoattack"
PAPER_ATTACK = "pgd_l2"
PREFERRED_VERSION = "autoattack(version='standard')"
HEADLINE_NORM = "l2"  # the paper's threat model, and the norm every page's ε is labelled in
Z = 2.0  # binomial standard deviations a PGD−autoattack gap must exceed to count as masking


@dataclass(frozen=True)
class Headline:
    """The headline table (one row per entry, ranked by ``any``) and what it was read from."""

    table: pd.DataFrame
    attack_config: str
    eps: float
    modalities: list[str]
    # the rows behind the cells: the strong evaluation's at ``eps`` and the clean ones, by entry in ``entry_column``
    strong: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False, compare=False)
    clean: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False, compare=False)
    entry_column: str = "defense"
    norm: str = HEADLINE_NORM

    @property
    def described(self) -> str:
        """The strong evaluation's configuration and norm, as titles say it."""
        return f"{self.attack_config}, {NORM_NAMES.get(self.norm, self.norm)}"

    def cell_rows(self, entry: str, column: str) -> pd.DataFrame:
        """The rows of one cell: ``column`` ``clean`` or one of :attr:`modalities`."""
        frame = self.clean if column == "clean" else self.strong[self.strong["modality"].astype(str) == column]
        return frame[frame[self.entry_column].astype(str) == entry]


def _entry_column(rows: pd.DataFrame) -> str:
    return ENTRY if ENTRY in rows else "defense"


def strong_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The ``autoattack`` rows of one setting (configuration and norm, never a mix): ℓ2 when present, then the
    standard version when present, else the most common; returns them and their configuration."""
    strong = rows[rows["attack"].astype(str) == STRONG]
    if strong.empty:
        return strong, ""
    settings = attack_settings(strong)
    counts = settings.value_counts()

    def preference(setting: str) -> tuple[bool, bool, int, str]:
        config, _, norm = setting.rpartition(SETTING_SEP)
        return norm != HEADLINE_NORM, config != PREFERRED_VERSION, -int(counts[setting]), setting

    best = sorted(counts.index, key=preference)[0]
    return strong[settings == best], best.rpartition(SETTING_SEP)[0]


def rows_norm(rows: pd.DataFrame) -> str:
    """The norm of rows of one setting ("" when the rows do not say)."""
    norms = rows["norm"].dropna().astype(str).unique() if "norm" in rows else []
    return str(norms[0]) if len(norms) else ""


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
    cells = Headline(pd.DataFrame(), config, eps, modalities, strong, clean, column, rows_norm(strong) or HEADLINE_NORM)
    records = []
    for entry in sorted(strong[column].astype(str).unique()):
        record: dict = {"entry": entry, "seeds": int(strong[strong[column].astype(str) == entry]["seed"].nunique())}
        for m in ["clean", *modalities]:
            mean, std, _, flags = _cell(cells.cell_rows(entry, m))
            record.update({m: mean, f"{m}_std": std, f"{m}_flags": flags})
        records.append(record)
    table = pd.DataFrame.from_records(records)
    rank_by = ANY if ANY in modalities else modalities[-1]
    table = table.sort_values([rank_by, "entry"], ascending=[False, True], na_position="last").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return replace(cells, table=table)


def headline_markdown(head: Headline) -> str:
    """The headline as a Markdown table, flags marked on their cells."""
    titles = [column_title(m) for m in head.modalities]
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


MASKING_TEST = (
    "on the same samples, PGD-correct samples the strong evaluation broke outnumber the reverse by more than "
    f"{Z:g} standard deviations (McNemar; rows without per-sample outcomes: the gap exceeds {Z:g} binomial standard "
    "deviations), so the PGD number was gradient masking or a weak attack, not robustness"
)
MASKING_COLUMNS = [
    "entry",
    "modality",
    "eps",
    "pgd_l2",
    "autoattack",
    "gap",
    "masking",
    "pgd_flags",
    "strong_flags",
    "seeds",
    "paired",
    "pgd_config",
]


def _paired_counts(pgd: pd.Series, strong: pd.Series) -> tuple[float, int, int] | None:
    """On the strong evaluation's samples (the first ``n`` of the split, where the PGD row measured at least as
    many): PGD's accuracy there, and how many samples PGD left correct that the strong evaluation broke (``b``)
    and the reverse (``c``); None when a row has no per-sample outcomes."""
    n_pgd, n_strong = int(pgd["n"]), int(strong["n"])
    if not _has_outcomes(pgd) or not _has_outcomes(strong) or n_strong > n_pgd:
        return None
    mine = decode_outcomes(str(pgd["outcomes"]), n_pgd)[:n_strong]
    theirs = decode_outcomes(str(strong["outcomes"]), n_strong)
    return float(mine.double().mean()), int((mine & ~theirs).sum()), int((~mine & theirs).sum())


def _has_outcomes(row: pd.Series) -> bool:
    value = row.get("outcomes", "")
    return isinstance(value, str) and value != ""


def masking_check(rows: pd.DataFrame) -> pd.DataFrame:
    """Per entry, modality and ε where both were measured: the paper's PGD accuracy, ``autoattack``'s, the gap and
    whether it says the PGD number was masking (``masking``); means over the seeds both measured.

    Where the rows hold per-sample outcomes (``paired``), both accuracies are on the same samples (the strong
    evaluation's, the first of the split) and the test is McNemar's: of the samples the two attacks disagree on,
    ``b`` PGD left correct and the strong evaluation broke, ``c`` the reverse; masking when ``b − c`` exceeds ``Z``
    standard deviations of that count under equal strength (``Z·√(b + c)``), summed over seeds. Otherwise the gap of
    the two accuracies, each on its own samples, must exceed ``Z`` binomial standard deviations."""
    strong, _ = strong_rows(rows)
    pgd, _ = choose_attack_configs(rows[rows["attack"].astype(str) == PAPER_ATTACK])
    # the paper's PGD is an ℓ2 attack: a strong evaluation in another norm measured another threat
    if strong.empty or pgd.empty or rows_norm(strong) not in ("", HEADLINE_NORM):
        return pd.DataFrame(columns=MASKING_COLUMNS)
    pgd_config = str(pgd["attack_config"].iloc[0])
    strong = strong[strong["accuracy"].notna()]
    pgd = pgd[pgd["accuracy"].notna()]
    column = _entry_column(rows)
    keys = [column, "seed", "modality", "eps"]

    def keyed(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.assign(modality=frame["modality"].astype(str), eps=frame["eps"].astype(float).round(10))
        return frame.drop_duplicates(keys, keep="last").set_index(keys)

    mine, theirs = keyed(pgd), keyed(strong)
    common = mine.index.intersection(theirs.index)
    if common.empty:
        return pd.DataFrame(columns=MASKING_COLUMNS)
    records = []
    for (entry, modality, eps), index in (
        pd.Series(list(common), index=common).groupby(level=[0, 2, 3], sort=True).groups.items()
    ):
        pairs = [(mine.loc[k], theirs.loc[k]) for k in index]
        counts = [_paired_counts(p, a) for p, a in pairs]
        a = float(np.mean([float(t["accuracy"]) for _, t in pairs]))
        paired_counts = [c for c in counts if c is not None]
        if len(paired_counts) == len(counts):
            p = float(np.mean([acc for acc, _, _ in paired_counts]))
            broke, kept = sum(b for _, b, _ in paired_counts), sum(c for _, _, c in paired_counts)
            masking, paired = bool(broke - kept > Z * math.sqrt(broke + kept)), True
        else:
            p = float(np.mean([float(q["accuracy"]) for q, _ in pairs]))
            n = float(sum(float(t["n"]) for _, t in pairs))
            noise = Z * math.sqrt(max(a * (1 - a), 1.0 / max(n, 1.0)) / max(n, 1.0))
            masking, paired = bool(p - a > noise), False
        records.append(
            {
                "entry": entry,
                "modality": modality,
                "eps": eps,
                "pgd_l2": p,
                "autoattack": a,
                "gap": p - a,
                "masking": masking,
                "pgd_flags": cell_flags(pd.DataFrame({"flags": [q.get("flags") for q, _ in pairs]})),
                "strong_flags": cell_flags(pd.DataFrame({"flags": [t.get("flags") for _, t in pairs]})),
                "seeds": len(pairs),
                "paired": paired,
                "pgd_config": pgd_config,
            }
        )
    return pd.DataFrame.from_records(records, columns=MASKING_COLUMNS)


def masking_markdown(check: pd.DataFrame) -> str:
    """The masking check as Markdown: the cells where PGD overstated robustness, largest gap first, each number
    with its own cell's flags."""
    if check.empty:
        return "_no cell was measured by both pgd_l2 and autoattack_"
    overstated = check[check["masking"]].sort_values("gap", ascending=False)
    if overstated.empty:
        return masking_summary(check)
    lines = [
        masking_summary(check),
        "",
        "| entry | modality | ε | pgd_l2 | autoattack | gap | seeds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in overstated.itertuples():
        lines.append(
            f"| {markdown_code(r.entry)} | {markdown_cell(modality_name(r.modality))} | {r.eps:g} | "
            f"{flagged(number(r.pgd_l2), r.pgd_flags)} | {flagged(number(r.autoattack), r.strong_flags)} | "
            f"{number(r.gap, '+.3f')} | {r.seeds} |"
        )
    return "\n".join(lines)


def masking_summary(check: pd.DataFrame, code: Callable[[str], str] = markdown_code) -> str:
    """One line: how many compared cells PGD overstated, by which test, with which PGD configuration (written by
    ``code``: Markdown code by default, ``str`` for a page that escapes it); and that only the compared cells were
    checked."""
    configs = sorted(set(check["pgd_config"].astype(str))) if "pgd_config" in check else []
    masked = int(check["masking"].sum())
    return (
        f"{masked} of {len(check)} cells measured by both attacks ("
        + ", ".join(code(c) for c in configs)
        + f" against the strong evaluation): the paper's PGD overstates robustness there: {MASKING_TEST}. "
        "Only these cells were compared: a PGD number at another ε or modality is not confirmed by this check."
    )


def _seed_values(part: pd.DataFrame) -> tuple[np.ndarray, float]:
    """Per-seed accuracies of one cell and the samples each was measured on (mean over seeds)."""
    per_seed = part.groupby("seed").agg(accuracy=("accuracy", "mean"), n=("n", "max"))
    return per_seed["accuracy"].to_numpy(dtype=float), float(per_seed["n"].mean()) if len(per_seed) else math.nan


def difference(a: np.ndarray, n_a: float, b: np.ndarray, n_b: float) -> tuple[float, float, str]:
    """Mean of ``a`` minus mean of ``b`` (per-seed accuracies on ``n_a`` / ``n_b`` samples a seed), the half-width
    of its 95% interval and the verdict ``higher``, ``lower`` or ``within noise`` (``untested`` under 2 seeds a
    side). The interval is Welch's t over seeds, never narrower than the binomial noise of the two means (seeds
    that agree exactly do not make a difference certain)."""
    d = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2 or not math.isfinite(d):
        return d, math.nan, "untested"
    from scipy import stats as _stats  # imported here: scipy.stats is slow to import and most reports never need it

    var_a, var_b = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)

    def binomial(values: np.ndarray, n: float) -> float:
        p = float(values.mean())
        return max(p * (1 - p), 1.0 / max(n, 1.0)) / (max(n, 1.0) * len(values))

    seeds, noise = var_a + var_b, binomial(a, n_a) + binomial(b, n_b)
    if seeds >= noise:
        df = seeds**2 / ((var_a**2 / (len(a) - 1)) + (var_b**2 / (len(b) - 1)))
    else:
        df = float(len(a) + len(b) - 2)
    half = float(_stats.t.ppf(0.975, df)) * math.sqrt(max(seeds, noise))
    return d, half, "higher" if d > half else "lower" if d < -half else "within noise"


VERDICT_MARK = {"higher": " ▲", "lower": " ▼", "within noise": "", "untested": ""}


def reference_comparison(head: Headline, reference: str) -> pd.DataFrame:
    """Per entry other than ``reference`` and per headline column (clean, each modality, all, any): the difference
    from ``reference`` with its 95% half-width and verdict (:func:`difference`), and the flags of both cells."""
    records = []
    seeds = dict(zip(head.table["entry"], head.table["seeds"]))  # as the headline counts them
    for entry in head.table["entry"]:
        if entry == reference:
            continue
        record: dict = {"entry": entry, "seeds": int(seeds[entry])}
        for m in ["clean", *head.modalities]:
            mine, ref = head.cell_rows(entry, m), head.cell_rows(reference, m)
            d, half, verdict = difference(*_seed_values(mine), *_seed_values(ref))
            flags = cell_flags(pd.concat([mine, ref]))
            record.update({m: d, f"{m}_half": half, f"{m}_verdict": verdict, f"{m}_flags": flags})
        records.append(record)
    return pd.DataFrame.from_records(records)


def comparison_markdown(comparison: pd.DataFrame, head: Headline, reference: str) -> str:
    """The comparison with the reference as Markdown, in the headline's order."""
    if comparison.empty:
        return f"_no entry besides {markdown_code(reference)}_"
    names, titles = comparison_columns(head)
    lines = [
        "| entry | " + " | ".join(markdown_cell(t) for t in titles) + " | seeds |",
        "|---|" + "---:|" * (len(titles) + 1),
    ]
    for r in comparison.to_dict("records"):
        cells = [flagged(difference_text(r, m), r[f"{m}_flags"]) for m in names]
        lines.append(f"| {markdown_code(r['entry'])} | " + " | ".join(cells) + f" | {r['seeds']} |")
    return "\n".join(lines)


def comparison_columns(head: Headline) -> tuple[list[str], list[str]]:
    """The comparison's columns (clean, then the headline's) and their titles."""
    names = ["clean", *head.modalities]
    return names, ["clean", *(column_title(m) for m in head.modalities)]


def column_title(modality: str) -> str:
    """A headline column's title: the modality's name, or ``any (worst case)``."""
    return modality_name(modality) if modality != ANY else "any (worst case)"


def difference_text(record: Mapping[str, Any], column: str) -> str:
    """One comparison cell: ``+0.052 ± 0.031 ▲`` (the difference, its 95% half-width when there is one, the mark)."""
    value, half = record[column], record[f"{column}_half"]
    text = "—" if not math.isfinite(value) else f"{value:+.3f}"
    if math.isfinite(half):
        text += f" ± {half:.3f}"
    return text + VERDICT_MARK[record[f"{column}_verdict"]]


def headline_sections(rows: pd.DataFrame, reference: str | None = None) -> list[str]:
    """The findings' headline sections (empty when no ``autoattack`` row exists); with ``reference`` (an entry),
    each entry's difference from it under the strong evaluation."""
    head = headline(rows)
    if head is None:
        return []
    versus = []
    if reference is not None and reference in set(head.table["entry"]):
        versus = [
            f"### 0c. Against {markdown_code(reference)} under the strong evaluation",
            "",
            f"Each entry's robust accuracy minus {markdown_code(reference)}'s (mean over seeds; clean accuracy on "
            "the whole test split) ± the half-width of the difference's 95% interval (Welch's t over seeds, never "
            "narrower than the binomial noise of the two means). ▲ a gain beyond that interval, ▼ a loss beyond "
            f"it, no mark: within noise (under 2 seeds a side: no interval). {FLAG_MARK}: a flag on either cell.",
            "",
            comparison_markdown(reference_comparison(head, reference), head, reference),
            "",
        ]
    return [
        f"### 0. Headline: standard strong evaluation ({markdown_code(head.attack_config)}, "
        f"{NORM_NAMES.get(head.norm, head.norm)}) at ε = {head.eps:g}",
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
        *versus,
    ]


__all__ = [
    "Headline",
    "headline",
    "headline_markdown",
    "headline_sections",
    "difference",
    "reference_comparison",
    "comparison_markdown",
    "comparison_columns",
    "difference_text",
    "masking_check",
    "masking_markdown",
    "masking_summary",
    "MASKING_TEST",
    "strong_rows",
    "headline_eps",
    "FLAG_MARK",
]
