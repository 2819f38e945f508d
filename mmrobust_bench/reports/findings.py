"""The numbers behind a leaderboard's findings, straight from its CSVs (``mmrobust-bench report --findings``).

Four questions of the paper, each answered by a table of mean ± sample std over seeds:

1. *Preference*: which modality JT leans on — accuracy with each modality missing (zero-filled).
2. *Fragility*: which modality's uni-modal ℓ2-PGD hurts more, over the radius grid.
3. *Robustness and imbalance*: per defense, clean and robust accuracy at chosen cells, and the
   empirical vulnerability-indicator ratio in one orientation on every dataset, η^(a)/η^(v) as the paper's
   Figure 3, and one aggregation (``certify.eta``: mean over class pairs of η per modality, then the ratio, then
   mean over seeds; from ``eta_pairs.csv``).
4. *Ablation*: the same cells for the CRMT stages (Figure 5 labels).

Plus the honesty check of every empirical certificate (claims broken by an attack inside the claimed radius:
lower bounds, "≥ N found"; runner-up radii labelled **not a bound**) and, when certified.csv has them, the
randomized-smoothing certificates (sound with probability 1 − α).
The prose that interprets these tables is written by people; these are only the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..bench.certified_rows import EMPIRICAL_METHOD, with_certificate_kinds
from ..certify.eta import ETA_RATIO_AGGREGATION, eta_ratio_modalities, eta_ratio_per_defense
from .entries import ENTRY, base_label, mixed_labels, resolve_entries
from .headline import STRONG, headline_sections
from .safe_text import markdown_cell, markdown_code
from .table_cells import cell_flags, choose_attack_configs, flagged, fmt, number, paper_row_order


@dataclass(frozen=True)
class Cell:
    """One measured quantity: attack on modality at ε (``None`` for unbounded attacks and clean)."""

    title: str
    attack: str
    modality: str
    eps: float | None = None


def _cell_rows(rows: pd.DataFrame, defense: str, cell: Cell) -> pd.DataFrame:
    """The rows of one cell for one defense label."""
    sel = (
        (rows["defense"] == defense) & (rows["attack"] == cell.attack) & (rows["modality"].astype(str) == cell.modality)
    )
    if cell.eps is not None:
        sel &= np.isclose(rows["eps"].astype(float), cell.eps)
    return rows[sel]


def seed_stats(rows: pd.DataFrame, defense: str, cell: Cell) -> tuple[float, float, int]:
    """(mean, sample std, seeds) of one cell's accuracy for one defense label."""
    per_seed = _cell_rows(rows, defense, cell).groupby("seed")["accuracy"].mean()
    if per_seed.empty:
        return math.nan, math.nan, 0
    return float(per_seed.mean()), float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan, len(per_seed)


def cell_table(rows: pd.DataFrame, defenses: Sequence[str], cells: Sequence[Cell]) -> str:
    lines = [
        "| defense | " + " | ".join(markdown_cell(c.title) for c in cells) + " | seeds |",
        "|---|" + "---:|" * (len(cells) + 1),
    ]
    for d in defenses:
        stats = [seed_stats(rows, d, c) for c in cells]
        seeds = max((s[2] for s in stats), default=0)
        if seeds == 0:
            continue
        marks = [cell_flags(_cell_rows(rows, d, c)) for c in cells]
        lines.append(
            f"| {markdown_code(d)} | "
            + " | ".join(flagged(fmt(m, s), f) for (m, s, _), f in zip(stats, marks))
            + f" | {seeds} |"
        )
    return "\n".join(lines)


eta_ratio = eta_ratio_per_defense  # the aggregation every report uses (certify.eta)


SMOOTHING_METHOD = "smoothing"
NOT_A_BOUND = "not a bound"
SOUND_TEXT = "sound (probabilistic, 1−α)"
LOWER_BOUND_HEADING = "≥ violations found (lower bound) / certified (all seeds)"


def certificate_kinds(certified: pd.DataFrame | None) -> pd.DataFrame:
    """certified.csv rows with ``method``/``kind`` filled as :func:`bench.certified_rows.with_certificate_kinds`
    reads rows written before those columns existed (empirical; runner-up rows "not a bound")."""
    if certified is None or certified.empty:
        return pd.DataFrame() if certified is None else certified
    return with_certificate_kinds(certified)


def _kind_text(kind: str) -> str:
    kind = str(kind)
    return f"**{markdown_cell(kind)}**" if kind.startswith(NOT_A_BOUND) else markdown_cell(kind)


def honesty_table(certified: pd.DataFrame | None, defenses: Sequence[str], *, runner_up: bool = False) -> str:
    """Per defense and *empirical* certificate (``method == "empirical"``; min over j, or with ``runner_up`` the
    runner-up radii, which are **not bounds**): certified samples and the violations the honesty check found
    inside the claim — a lower bound, since an attack can miss adversarial examples."""
    frame = certificate_kinds(certified)
    if frame.empty:
        return "_no certificates_"
    frame = frame[frame["method"].astype(str) == EMPIRICAL_METHOD]
    variant = frame["variant"].astype(str)
    frame = frame[variant == "runner_up"] if runner_up else frame[variant != "runner_up"]
    if frame.empty:
        return "_no empirical certificates_"
    # one row per model and certificate (the honesty counts repeat on every radius of the grid)
    keys = [c for c in ("defense", "seed", "checkpoint_sha256", "certificate", "variant") if c in frame]
    frame = frame.drop_duplicates(keys)
    lines = [
        "| defense | certificate | kind | median certified radius | " + LOWER_BOUND_HEADING + " |",
        "|---|---|---|---:|---:|",
    ]
    for d in defenses:
        for (cert, kind), group in frame[frame["defense"] == d].groupby(["certificate", "kind"], sort=True):
            ran = group[group["honesty_violations"].astype(float) >= 0]
            if ran.empty:
                counts = "not run"
            else:
                broken, total = int(ran["honesty_violations"].sum()), int(ran["honesty_certified"].sum())
                counts = f"≥ {broken} / {total} (≥ {broken / max(total, 1):.1%})"
            lines.append(
                f"| {markdown_code(d)} | {markdown_cell(cert)} | {_kind_text(kind)} | "
                f"{number(group['median_certified_radius'].astype(float).mean())} | {counts} |"
            )
    checks = frame["honesty_attack"].dropna().astype(str) if "honesty_attack" in frame else pd.Series(dtype=str)
    checks = checks[checks != ""].value_counts()
    if not checks.empty:
        lines += [
            "",
            "Honesty check used: "
            + "; ".join(f"{markdown_code(c)} ({n} certificates)" for c, n in checks.items())
            + ". Counts are lower bounds: a stronger check can only find more.",
        ]
    return "\n".join(lines)


def smoothing_table(certified: pd.DataFrame | None, defenses: Sequence[str]) -> str:
    """Randomized-smoothing rows (``method == "smoothing"``): certified accuracy (mean ± std over seeds) per noise
    set and radius, with σ, the Monte-Carlo sample size n, α and the kind, sound with probability 1 − α."""
    frame = certificate_kinds(certified)
    if frame.empty or "method" not in frame:
        return ""
    frame = frame[frame["method"].astype(str) == SMOOTHING_METHOD]
    if frame.empty:
        return ""
    for column in ("sigma", "n_noise", "alpha", "abstained", "n"):
        if column not in frame:
            frame = frame.assign(**{column: math.nan})
    radii = sorted(float(r) for r in frame["radius"].dropna().unique())
    lines = [
        "| defense | noise on | σ | n (noise draws) | α | kind | "
        + " | ".join(f"cert. acc @ {r:.3g}" for r in radii)
        + " | abstained | honesty: ≥ violations found (lower bound) / checked | samples | seeds |",
        "|---|---|---:|---:|---:|---|" + "---:|" * (len(radii) + 4),
    ]
    for d in defenses:
        part = frame[frame["defense"] == d]
        for (mod, sigma, n_noise, alpha), group in part.groupby(
            ["modality", "sigma", "n_noise", "alpha"], sort=True, dropna=False
        ):
            accs = []
            for r in radii:
                per_seed = (
                    group[np.isclose(group["radius"].astype(float), r)].groupby("seed")["certified_accuracy"].mean()
                )
                accs.append(
                    fmt(float(per_seed.mean()), float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan)
                    if len(per_seed)
                    else "—"
                )
            models = group.drop_duplicates([c for c in ("seed", "checkpoint_sha256") if c in group])
            ran = (
                models[models["honesty_violations"].astype(float) >= 0]
                if "honesty_violations" in models
                else models[:0]
            )
            honesty = (
                f"≥ {int(ran['honesty_violations'].sum())} / {int(ran['honesty_certified'].sum())}"
                if not ran.empty
                else "not run"
            )
            n_text = "—" if pd.isna(n_noise) else f"{int(n_noise)}"
            lines.append(
                f"| {markdown_code(d)} | {markdown_cell(mod)} | {number(sigma, 'g')} | {n_text} | "
                f"{number(alpha, 'g')} | {SOUND_TEXT} | "
                + " | ".join(accs)
                + f" | {number(models['abstained'].astype(float).mean(), '.1%')} | {honesty} | "
                f"{'/'.join(str(int(n)) for n in sorted(models['n'].dropna().unique()))} | {models['seed'].nunique()} |"
            )
    return "\n".join(lines)


def reference_entries(rows: pd.DataFrame, reference: str = "jt") -> list[str]:
    """The entries that stand for the reference defense: those whose label is ``reference`` (split by
    configuration: ``jt [cfg …]``), else those whose defense id is ``reference``; most seeds first."""
    entries = rows["defense"].astype(str)
    chosen = sorted({e for e in entries.unique() if base_label(e) == reference})
    if not chosen and "defense_id" in rows:
        chosen = sorted(set(entries[rows["defense_id"].astype(str) == reference]))
    seeds = rows.groupby(entries)["seed"].nunique()
    return sorted(chosen, key=lambda e: (-int(seeds.get(e, 0)), e))


def _expand(labels: Sequence[str], entries: Sequence[str], references: Sequence[str], reference: str) -> list[str]:
    """Ablation labels as entries: a label split by configuration becomes each of its entries."""
    out: list[str] = []
    for label in labels:
        hits = list(references) if label == reference else [e for e in entries if base_label(e) == label]
        out += [h for h in hits if h not in out]
    return out


def findings_markdown(
    rows: pd.DataFrame,
    *,
    pairs: pd.DataFrame | None = None,
    certified: pd.DataFrame | None = None,
    reference: str = "jt",
    ablation: Sequence[str] = ("jt", "crmt_jt_orth_only", "crmt_jt_step1_only", "crmt_jt_step2_only", "crmt_jt"),
    grid: Sequence[float] | None = None,
    command: str = "",
) -> str:
    """Markdown with the four tables, the honesty check of the empirical certificates and the smoothing
    certificates, for one dataset's rows.

    ``reference`` is the defense the preference / fragility sections describe (label, or defense id when no
    entry carries that label). When its rows are split by configuration (``jt [cfg …]``) every configuration
    gets its own tables. Section 3b's η ratio has one orientation on every dataset (``certify.eta``).
    """
    if ENTRY not in rows:  # not yet grouped by configuration: group results, η pairs and certificates alike
        split = mixed_labels(rows, pairs, certified)
        rows = resolve_entries(rows, split=split)[0]
        pairs = None if pairs is None or pairs.empty else resolve_entries(pairs, split=split)[0]
        certified = None if certified is None or certified.empty else resolve_entries(certified, split=split)[0]
    # one setting per attack in every cell (configuration and norm; the strong evaluation's is the headline's)
    others, config_notes = choose_attack_configs(rows[rows["attack"].astype(str) != STRONG])
    rows = pd.concat([others, rows[rows["attack"].astype(str) == STRONG]])
    modalities = sorted({str(m) for m in rows["modality"].dropna().unique()} - {"none", "all", "any"} - {""})
    modalities = [m for m in modalities if "+" not in m]
    defenses = paper_row_order(sorted(rows["defense"].unique()))
    references = reference_entries(rows, reference)
    if grid is None:
        pgd = rows[(rows["attack"] == "pgd_l2") & rows["modality"].isin(modalities)]
        grid = sorted(float(e) for e in pgd["eps"].dropna().unique())
    out = [f"made by: {markdown_code(command)}" if command else "", ""]
    out += [f"_{markdown_cell(note)}._" for note in config_notes] + ([""] if config_notes else [])
    if not references:
        out += [
            f"_No entry is the reference {markdown_code(reference)} (by label or defense id): sections 1 and 2 are "
            "skipped._",
            "",
        ]
    elif len(references) > 1:
        out += [
            f"_The reference {markdown_code(reference)} is split by configuration into {len(references)} "
            f"entries ({', '.join(markdown_code(r) for r in references)}): sections 1, 2 and 4 show each._",
            "",
        ]
    out += headline_sections(rows, references[0] if len(references) == 1 else None)
    ref_text = ", ".join(markdown_code(r) for r in references)
    if references:
        out += [
            f"### 1. Preference: {ref_text} with one modality missing ({_configs(rows, 'missing')})",
            "",
            cell_table(
                rows,
                references,
                [Cell("clean", "clean", "none")] + [Cell(f"{m} missing", "missing", m) for m in modalities],
            ),
            "",
        ]
        for i, ref in enumerate(references):
            part = "" if len(references) == 1 else chr(ord("a") + i)
            out += [
                f"### 2{part}. Fragility: {markdown_code(ref)} under uni-modal ℓ2-PGD ({_configs(rows, 'pgd_l2')})",
                "",
                _modality_grid(rows, ref, modalities, grid),
                "",
            ]
    cells = (
        [Cell("clean", "clean", "none")]
        + [Cell(f"PGD {m} ε={e:g}", "pgd_l2", m, e) for m in modalities for e in _pick(grid)]
        + [Cell("PGD all ε=0.5", "pgd_l2", "all", 0.5)]
        + [Cell(f"{m} missing", "missing", m) for m in modalities]
    )
    out += ["### 3. Robust accuracy per defense", "", cell_table(rows, defenses, cells), ""]
    if pairs is not None and not pairs.empty and len(modalities) == 2:
        num, den = eta_ratio_modalities(modalities)
        ratios = eta_ratio(pairs, num, den)
        order = {d: i for i, d in enumerate(defenses)}
        ratios = ratios.sort_values("defense", key=lambda s: s.map(lambda d: order.get(d, len(order))))
        out += [
            f"### 3b. Imbalance: empirical η^({markdown_cell(num)}) / η^({markdown_cell(den)}) (the paper's "
            f"Figure 3 orientation; {ETA_RATIO_AGGREGATION}; 1 = balanced)",
            "",
            "| defense | ratio | seeds |",
            "|---|---:|---:|",
        ]
        out += [
            f"| {markdown_code(r.defense)} | {fmt(r.ratio_mean, r.ratio_std)} | {r.seeds} |"
            for r in ratios.itertuples()
        ]
        out += [""]
    present = _expand(ablation, defenses, references, reference)
    if len(present) > 1:
        out += ["### 4. CRMT ablation (Figure 5 stages)", "", cell_table(rows, present, cells), ""]
    if certified is not None and not certified.empty:
        out += [
            "### Honesty check of the empirical certificates",
            "",
            "Empirical certificates only (`method = empirical`); each count is the number of claims the check "
            "broke, a **lower bound** on the true number.",
            "",
            honesty_table(certified, defenses),
            "",
        ]
        frame = certificate_kinds(certified)
        if (frame["variant"].astype(str) == "runner_up").any():
            out += [
                "#### Runner-up radii — **not a bound**",
                "",
                "They compare y with the runner-up class only (another class may be closer): **not a bound** on "
                "the distance to a misclassification, shown for comparison with CRMT's step-2 objective.",
                "",
                honesty_table(certified, defenses, runner_up=True),
                "",
            ]
        smoothing = smoothing_table(certified, defenses)
        if smoothing:
            out += [
                f"### Randomized smoothing — {SOUND_TEXT}",
                "",
                "Certified accuracy: the fraction of the certified test samples (the first of the split; how many: "
                "column *samples*) certified correct with a radius ≥ ε (ℓ2 over the noised modalities); each radius "
                "holds with probability ≥ 1 − α over the noise draws; mean ± std over seeds.",
                "",
                smoothing,
                "",
            ]
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
        cells = [Cell("", "pgd_l2", m, e) for e in grid]
        lines.append(
            f"| {markdown_cell(m)} | "
            + " | ".join(
                flagged(fmt(*seed_stats(rows, defense, c)[:2]), cell_flags(_cell_rows(rows, defense, c))) for c in cells
            )
            + " |"
        )
    return "\n".join(lines)


def _configs(rows: pd.DataFrame, attack: str) -> str:
    """The configuration(s) of ``attack`` behind a section, as its heading names them."""
    configs = sorted(set(rows.loc[rows["attack"].astype(str) == attack, "attack_config"].astype(str)))
    return ", ".join(markdown_code(c) for c in configs) or "not measured"


__all__ = [
    "Cell",
    "seed_stats",
    "cell_table",
    "certificate_kinds",
    "eta_ratio",
    "honesty_table",
    "findings_markdown",
    "reference_entries",
    "smoothing_table",
]
