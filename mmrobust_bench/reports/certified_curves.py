"""Certified accuracy vs radius per modality: sound randomized smoothing against the empirical Eq. 10 / 7 / 5
radii of the same models (rows of ``certified.csv``, written by ``mmrobust-bench certify``).

A column of panels per attacked modality (a modality alone, or ``all`` for the joint ball) and a row per family
panel of entries (``reports.figures.family_groups``, JT in each as the reference, each row's legend beside it),
sized for a paper like every figure (``reports.figures``). In each panel, per model entry (defense label; a label
with several configurations is split by config hash, never averaged):

- solid: randomized smoothing (kind ``sound (probabilistic, 1-alpha)``), one line per (σ, n, α), the noise
  on that panel's modalities, stopping at the largest certifiable radius σ·Φ⁻¹(α^{1/n})
  (``certify.smoothing.largest_certifiable_radius``: rows at larger radii are 0 by construction and are not
  drawn), which a dotted grey vertical line marks;
- dashed: the empirical certificate of the same modality set — Eq. 10[m] / Eq. 10 for CRMT heads,
  else Eq. 7[m] / Eq. 5 — min over j only (runner-up radii are not bounds and are never drawn);
  dotted and marked "heuristic" where the model mixes modalities before its head (MMT family).

Lines are the mean over seeds, drawn as steps (matplotlib's ``steps-pre``): certified accuracy falls with the
radius and is known only at the grid's radii, so between two of them the line shows the value at the larger
one, a lower bound there, never more than was certified. Empirical radii come from Lipschitz *estimates* and
can overclaim (see their honesty-check counts, lower bounds); smoothed radii hold with probability ≥ 1 − α each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..bench.certified_rows import with_certificate_kinds
from ..certify.smoothing import largest_certifiable_radius
from ..io import atomic_path, atomic_write_text
from .entries import resolve_entries
from .figure_style import (
    DPI,
    FULL_WIDTH,
    LEGEND_CHARS,
    LEGEND_RATIO,
    MAX_TITLE,
    MIN_FONT_PT,
    ROW_HEIGHT,
    TITLE_PT,
    entry_styles,
    family_groups,
    family_order,
    figure_metadata,
    plot_text,
    reference_entry,
)
from .paper import display_name
from .paths import output_path, slug
from .table_cells import paper_row_order

SOUND = "sound (probabilistic, 1-alpha)"
NOT_A_BOUND = "not a bound"
ALL = "all"


def _filled(frame: pd.DataFrame) -> pd.DataFrame:
    """``method``/``kind`` for rows that predate them (``bench.certified_rows.with_certificate_kinds``)."""
    return with_certificate_kinds(frame)


#: line style, width and legend label per kind of certificate, in legend order
LINE_STYLES = {
    "sound": ("-", 1.8, "randomized smoothing: sound (prob. ≥ 1−α)"),
    "empirical": ("--", 1.1, "Eq. 10[m] (CRMT heads) / Eq. 7[m]; joint: Eq. 10 / Eq. 5 — empirical"),
    "heuristic": (":", 1.1, "the same, heuristic (MMT family)"),
}
DRAWSTYLE = "steps-pre"  # each grid value held back to the previous radius: a lower bound between grid radii
CAP_LABEL = "largest certifiable radius"
CAP_STYLE = {"color": "0.45", "linestyle": (0, (1, 2)), "linewidth": 1.0}


def _line_kind(kind: str) -> str:
    """The ``LINE_STYLES`` key of a certificate's ``kind``."""
    if kind == SOUND:
        return "sound"
    return "heuristic" if kind.startswith("heuristic") else "empirical"


def _empirical_name(modality: str, certificates: set[str], names: Sequence[str]) -> str | None:
    """The empirical certificate matching a panel: Eq. 10 forms when present (CRMT head), else Eq. 7 / Eq. 5."""
    if modality == ALL or "+" in modality:
        for name in ("eq10", "eq5"):
            if name in certificates:
                return name
        return None
    for name in (f"eq10[{modality}]", f"eq7[{modality}]"):
        if name in certificates:
            return name
    return None


def certified_curve_data(
    certified: pd.DataFrame, *, dataset: str | None = None, defenses: Sequence[str] | None = None
) -> pd.DataFrame:
    """Tidy curve points: entry, panel modality, line (method, certificate, σ), kind, radius, mean certified
    accuracy over seeds, seeds. Runner-up rows ("not a bound") are dropped."""
    frame = _filled(certified)
    if frame.empty:
        return pd.DataFrame()
    if dataset is not None:
        frame = frame[frame["dataset"].astype(str) == dataset]
    if defenses:
        frame = frame[frame["defense"].astype(str).isin(list(defenses))]
    frame = frame[~frame["kind"].astype(str).str.startswith(NOT_A_BOUND)]
    if frame.empty:
        return pd.DataFrame()
    frame, _ = resolve_entries(frame)  # the entry names every other report uses (split by configuration)
    smooth = _below_cap(frame[frame["method"].astype(str) == "smoothing"])
    empirical = frame[frame["method"].astype(str) == "empirical"]
    panels = sorted(
        set(smooth["modality"].astype(str)) if not smooth.empty else set(empirical["modality"].astype(str)),
        key=lambda m: (m == ALL, m),
    )
    parts = []
    for panel in panels:
        s = smooth[smooth["modality"].astype(str) == panel]
        if not s.empty:
            parts.append(s.assign(panel=panel, line=s["line"]))
        for _entry, rows in empirical.groupby("entry"):
            name = _empirical_name(panel, set(rows["certificate"].astype(str)), [])
            if name is None:
                continue
            e = rows[rows["certificate"].astype(str) == name]
            parts.append(e.assign(panel=panel, line=str(e["equation"].iloc[0]) + f" ({name})"))
    if not parts:
        return pd.DataFrame()
    data = pd.concat(parts, ignore_index=True)
    if "cap" not in data:
        data["cap"] = math.nan
    out = (
        data.groupby(["entry", "panel", "line", "method", "kind", "radius"], dropna=False)
        .agg(certified_accuracy=("certified_accuracy", "mean"), seeds=("seed", "nunique"), cap=("cap", "min"))
        .reset_index()
    )
    return out.sort_values(["panel", "entry", "line", "radius"]).reset_index(drop=True)


def _below_cap(smooth: pd.DataFrame) -> pd.DataFrame:
    """Smoothing rows with their line (σ, n, α) and ``cap``, the largest certifiable radius σ·Φ⁻¹(α^{1/n}); rows
    at larger radii (0 by construction) are dropped. Rows without n or α keep every radius and no cap."""
    if smooth.empty:
        return smooth
    sigma = smooth["sigma"].astype(float)
    n = smooth["n_noise"].astype(float) if "n_noise" in smooth else pd.Series(math.nan, index=smooth.index)
    alpha = smooth["alpha"].astype(float) if "alpha" in smooth else pd.Series(math.nan, index=smooth.index)
    known = n.notna() & alpha.notna() & sigma.notna()
    cap = pd.Series(math.nan, index=smooth.index)
    for key in set(zip(sigma[known], n[known], alpha[known])):
        cap[known & (sigma == key[0]) & (n == key[1]) & (alpha == key[2])] = largest_certifiable_radius(
            key[0], int(key[1]), key[2]
        )
    line = "smoothing σ=" + sigma.map("{:g}".format)
    line = line.where(~known, line + " n=" + n.map(lambda v: f"{v:.0f}") + " α=" + alpha.map("{:g}".format))
    # a row exactly at the cap (a radius grid clipped to it) stays: its radius is σ·Φ⁻¹(α^{1/n}) itself
    keep = cap.isna() | (smooth["radius"].astype(float) <= cap * (1 + 1e-9))
    return smooth.assign(line=line, cap=cap)[keep]


def _panel_title(panel: str) -> str:
    names = {"a": "audio", "v": "visual", ALL: "all modalities\n(joint ℓ2 ball)"}
    return f"attack on {names.get(panel, plot_text(panel.replace('+', ' + '), MAX_TITLE))}"


def figure_certified_curves(
    certified: pd.DataFrame, *, dataset: str | None = None, defenses: Sequence[str] | None = None, command: str = ""
) -> Figure:
    """The figure (see the module docstring); raises ValueError when there is nothing to draw."""
    data = certified_curve_data(certified, dataset=dataset, defenses=defenses)
    if data.empty:
        raise ValueError(
            "no certified-accuracy rows to draw (run `mmrobust-bench certify`, e.g. with --method smoothing, first)"
        )
    panels = sorted(dict.fromkeys(data["panel"]), key=lambda m: (m == ALL, {"v": 0, "a": 1}.get(m, 2), m))
    entries = family_order(paper_row_order(list(dict.fromkeys(data["entry"]))))
    styles = entry_styles(entries)
    # sized for a paper (reports.figures): full width, a row per family panel with JT as the reference, each
    # row's entries in a legend beside it
    groups = family_groups(entries)
    reference = reference_entry(entries)
    shown = [
        members + ([reference] if reference is not None and reference not in members else []) for _, members in groups
    ]
    fig, axes = plt.subplots(
        len(groups),
        len(panels) + 1,
        figsize=(FULL_WIDTH, ROW_HEIGHT * len(groups) + 1.5),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
        width_ratios=[1.0] * len(panels) + [LEGEND_RATIO],
    )
    caps: dict[float, str] = {}
    for ax, panel, r in [(axes[r][c], panel, r) for r in range(len(groups)) for c, panel in enumerate(panels)]:
        rows = data[(data["panel"] == panel) & data["entry"].isin(shown[r])]
        for (entry, line), pts in rows.groupby(["entry", "line"], sort=False):
            linestyle, linewidth, _ = LINE_STYLES[_line_kind(str(pts["kind"].iloc[0]))]
            ax.plot(
                pts["radius"],
                pts["certified_accuracy"],
                linestyle=linestyle,
                marker=styles[entry]["marker"],
                color=styles[entry]["color"],
                markersize=4,
                linewidth=linewidth,
                drawstyle=DRAWSTYLE,
                label=f"{entry} · {line}",
            )
        for line, cap in rows.dropna(subset=["cap"]).groupby("line")["cap"].min().items():
            # named once, with its value, in the figure's key: a label in every panel would cross the curves
            ax.axvline(cap, label=f"{CAP_LABEL} ({line})", **CAP_STYLE)
            caps.setdefault(round(float(cap), 6), line)
        if r == 0:
            ax.set_title(_panel_title(panel), fontsize=TITLE_PT)
        if r == len(groups) - 1:
            ax.set_xlabel("ℓ2 radius ε (model-input space)", fontsize=MIN_FONT_PT)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=MIN_FONT_PT)
    seeds = data.groupby("entry")["seeds"].max()
    for row, (group, members), drawn_entries in zip(axes, groups, shown):
        row[0].set_ylabel("certified accuracy", fontsize=MIN_FONT_PT)
        row[-1].axis("off")
        handles = [
            Line2D([], [], color=styles[e]["color"], marker=styles[e]["marker"], linestyle="-", markersize=4)
            for e in drawn_entries
        ]
        labels = [
            f"{plot_text(display_name(e), LEGEND_CHARS)}{'' if e in members else ' (reference)'} "
            f"({int(seeds[e])} seed{'s' if int(seeds[e]) != 1 else ''})"
            for e in drawn_entries
        ]
        row[-1].legend(
            handles,
            labels,
            loc="center left",
            fontsize=MIN_FONT_PT,
            frameon=False,
            borderaxespad=0.0,
            title=f"{plot_text(group)} (colour, marker)",
            title_fontsize=MIN_FONT_PT,
            alignment="left",
        )
    # the line-style key names only the kinds of certificate drawn (no "smoothing" entry without smoothing rows)
    drawn = {_line_kind(str(k)) for k in data["kind"]}
    key = [
        Line2D([], [], color="0.2", linestyle=ls, linewidth=lw)
        for name, (ls, lw, _) in LINE_STYLES.items()
        if name in drawn
    ]
    key_labels = [label for name, (_, _, label) in LINE_STYLES.items() if name in drawn]
    if caps:  # the cap of each smoothing setting drawn: σ·Φ⁻¹(α^(1/n)), no certificate reaches past it
        key.append(Line2D([], [], **CAP_STYLE))
        key_labels.append(
            f"{CAP_LABEL} σ·Φ⁻¹(α^(1/n)): "
            + "; ".join(f"{cap:.3g} ({line.removeprefix('smoothing ')})" for cap, line in caps.items())
        )
    fig.legend(
        key,
        key_labels,
        loc="outside lower center",
        fontsize=MIN_FONT_PT,
        frameon=False,
        title="certificate (line style); lines: mean over seeds. Empirical radii use Lipschitz estimates and "
        "can overclaim\n(honesty-check counts are lower bounds); runner-up radii are not bounds and are "
        "not drawn.",
        title_fontsize=MIN_FONT_PT,
    )
    title = "Certified accuracy vs radius"
    if dataset:
        title = f"{plot_text(dataset)}: " + title
    fig.suptitle(title, fontsize=TITLE_PT)
    return fig


def plot_certified_curves(
    certified_frame: pd.DataFrame,
    out_dir: str | Path,
    *,
    command: str = "",
    datasets: Sequence[str] | None = None,
    defenses: Sequence[str] | None = None,
    fmt: str = "png",
) -> list[Path]:
    """Write ``certified-curves-<dataset>.<fmt>`` (and a ``.txt`` sidecar naming ``command``) per dataset of
    ``certified_frame`` (certified.csv rows); returns the figure paths. Datasets without drawable rows are skipped."""
    out_dir = Path(out_dir)
    frame = _filled(certified_frame)
    if frame.empty:
        return []
    chosen = list(datasets) if datasets else sorted(frame["dataset"].astype(str).unique())
    paths = []
    for ds in chosen:
        try:
            fig = figure_certified_curves(frame, dataset=ds, defenses=defenses, command=command)
        except ValueError:
            continue
        path = output_path(out_dir, f"certified-curves-{slug(ds)}.{fmt}")
        description = (
            f"{ds}: certified accuracy vs ℓ2 radius per attacked modality; randomized smoothing (sound, "
            "probabilistic 1-alpha, up to its largest certifiable radius sigma*Phi^-1(alpha^(1/n))) "
            "against the empirical Eq. 10 / Eq. 7 / Eq. 5 radii of the same models (min over j; runner-up "
            "radii are not bounds and are not drawn); steps: each value holds back to the previous radius"
        )
        with atomic_path(path) as tmp:
            meta = figure_metadata(fmt, command=command, description=description)
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=meta)
        plt.close(fig)
        atomic_write_text(path.with_name(path.name + ".txt"), f"{description}\nmade by: {command}\n")
        paths.append(path)
    return paths


__all__ = ["certified_curve_data", "figure_certified_curves", "plot_certified_curves"]
