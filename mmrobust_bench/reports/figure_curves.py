"""Figures 1 and 4: accuracy against the ℓ2 radius, per attacked modality (Figure 1) and uni-modal per entry with the
gap between the modalities shaded (Figure 4); conventions in ``reports.figures``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .figure_style import (
    FLAG_NOTE,
    FULL_WIDTH,
    LEGEND_CHARS,
    LEGEND_RATIO,
    MIN_FONT_PT,
    MODALITY_COLOURS,
    PANELS_PER_ROW,
    ROW_HEIGHT,
    TITLE_PT,
    attacked_title,
    band_text,
    check_band,
    dataset_rows,
    defense_ids,
    draw_command,
    entry_labels,
    entry_styles,
    family_groups,
    family_order,
    flag_handle,
    flagged_eps,
    legend_beside,
    plot_text,
    reference_entry,
    ring_flagged,
    seed_curve,
    sized_ticks,
)
from .paper import display_name
from .stats import modality_name
from .table_cells import ALL, single_modalities


def figure1(
    rows: pd.DataFrame,
    *,
    command: str = "",
    attack: str = "pgd_l2",
    dataset: str | None = None,
    defenses: Sequence[str] | None = None,
    band: str = "std",
    stamp: bool = False,
) -> Figure:
    """Accuracy vs radius of ``attack``, full width: a column per attacked modality (single ones, then ``all``),
    a row per family panel (:func:`family_groups`) with JT dashed in black as the reference, each row's legend
    beside it; a point resting on a flagged row is ringed (:func:`ring_flagged`)."""
    check_band(band)
    data, dataset = dataset_rows(rows, dataset)
    attacked = data[data["attack"] == attack]
    if attacked.empty:
        raise ValueError(f"no {attack} rows for dataset {dataset!r}")
    mods = single_modalities(attacked) + ([ALL] if (attacked["modality"] == ALL).any() else [])
    labels = entry_labels(attacked, defenses)
    ids = defense_ids(data)
    styles = entry_styles(labels, ids)
    groups = family_groups(labels, ids)
    reference = reference_entry(labels)
    fig, axes = plt.subplots(
        len(groups),
        len(mods) + 1,
        figsize=(FULL_WIDTH, ROW_HEIGHT * len(groups) + 0.7),
        squeeze=False,
        sharex="col",
        sharey=True,
        layout="constrained",
        width_ratios=[1.0] * len(mods) + [LEGEND_RATIO],
    )
    name = "ℓ2-PGD" if attack == "pgd_l2" else plot_text(attack)
    seeds: list[int] = []
    ringed = False
    for r, (row, (group, members)) in enumerate(zip(axes, groups)):
        shown = members + ([reference] if reference is not None and reference not in members else [])
        handles: dict[str, Any] = {}
        for ax, mod in zip(row, mods):
            for label in shown:
                part = attacked[(attacked["defense"].astype(str) == label) & (attacked["modality"] == mod)]
                if part.empty:
                    continue
                clean = data[(data["defense"].astype(str) == label) & (data["attack"] == "clean")]
                stats = seed_curve(part, clean, band)
                st = styles[label]
                if label in members:
                    seeds += list(stats["n"])
                    (line,) = ax.plot(stats["eps"], stats["mean"], ms=3, lw=1.2, label=label, **st)
                    ax.fill_between(stats["eps"], stats["lo"], stats["hi"], color=st["color"], alpha=0.12, lw=0)
                else:  # the reference: dashed, no band, under the family's lines
                    (line,) = ax.plot(
                        stats["eps"],
                        stats["mean"],
                        ms=2.5,
                        lw=1.0,
                        zorder=1.5,
                        label=label,
                        **{**st, "linestyle": "--"},
                    )
                ringed |= ring_flagged(ax, stats, flagged_eps(part, clean))
                handles.setdefault(label, line)
            if r == 0:
                ax.set_title(f"{name} on {attacked_title(mod)}", fontsize=TITLE_PT)
            ax.grid(alpha=0.3)
            ax.set_ylim(-0.02, 1.02)
            sized_ticks(ax)
        row[0].set_ylabel("accuracy", fontsize=MIN_FONT_PT)
        names = [
            plot_text(display_name(lab), LEGEND_CHARS) + ("" if lab in members else " (reference)") for lab in handles
        ]
        legend_beside(row[-1], list(handles.values()), names, title=plot_text(group))
    for ax in axes[-1][:-1]:
        ax.set_xlabel("ℓ2 radius ε", fontsize=MIN_FONT_PT)
    rings = f"\n{FLAG_NOTE}: a number an attack may overstate" if ringed else ""
    fig.supxlabel(
        f"ε in model-input space; line: mean over seeds; {band_text(band, seeds)}{rings}", fontsize=MIN_FONT_PT
    )
    fig.suptitle(f"{plot_text(dataset)}: accuracy vs {name} radius", fontsize=TITLE_PT)
    if stamp:
        draw_command(fig, command)
    return fig


def figure4(
    rows: pd.DataFrame,
    *,
    command: str = "",
    attack: str = "pgd_l2",
    dataset: str | None = None,
    defenses: Sequence[str] | None = None,
    band: str = "std",
    stamp: bool = False,
) -> Figure:
    """Uni-modal robust accuracy vs radius per entry (full width, entries by family), a seed band per modality, the
    gap between them shaded, points on flagged rows ringed; the legend below the panels. A panel's title gives the
    mean gap over the radii both modalities were attacked at, or "no common ε" when there is none."""
    check_band(band)
    data, dataset = dataset_rows(rows, dataset)
    attacked = data[data["attack"] == attack]
    mods = single_modalities(attacked)
    if len(mods) < 2:
        raise ValueError(f"Figure 4 needs {attack} rows on at least two single modalities for {dataset!r}")
    mods = mods[:2]
    labels = entry_labels(attacked[attacked["modality"].isin(mods)], defenses)
    labels = labels if defenses else family_order(labels, defense_ids(data))
    cols = min(PANELS_PER_ROW, len(labels))
    nrows = math.ceil(len(labels) / cols)
    fig, axes = plt.subplots(
        nrows,
        cols,
        figsize=(FULL_WIDTH, 1.45 * nrows + 0.9),
        squeeze=False,
        sharey=True,
        sharex=True,
        layout="constrained",
    )
    for ax in axes.flat[len(labels) :]:
        ax.set_visible(False)
    colours = {m: MODALITY_COLOURS.get(m, c) for m, c in zip(mods, ("#0072B2", "#D55E00"))}
    markers = dict(zip(mods, ("o", "s")))
    seeds: list[int] = []
    ringed = False
    for ax, label in zip(axes.flat, labels):
        clean = data[(data["defense"].astype(str) == label) & (data["attack"] == "clean")]
        curves, measured = {}, {}
        for mod in mods:
            part = attacked[(attacked["defense"].astype(str) == label) & (attacked["modality"] == mod)]
            if part.empty:
                continue
            c = curves[mod] = seed_curve(part, clean, band)
            measured[mod] = set(part["eps"].astype(float))
            seeds += list(c["n"])
            ax.plot(c["eps"], c["mean"], color=colours[mod], marker=markers[mod], ms=2.5, lw=1.1)
            ax.fill_between(c["eps"], c["lo"], c["hi"], color=colours[mod], alpha=0.18, lw=0)
            ringed |= ring_flagged(ax, c, flagged_eps(part, clean))
        if len(curves) == 2:
            a, b = (curves[m].set_index("eps")["mean"] for m in mods)
            common = a.index.intersection(b.index)
            ax.fill_between(
                common, a[common], b[common], facecolor="none", edgecolor="gray", hatch="///", lw=0, alpha=0.5
            )
            # the gap over radii both modalities were attacked at: ε = 0 filled in from the clean rows is the same
            # number on both curves, a gap of 0 by construction
            shared = [e for e in common if all(e in measured[m] for m in mods)]
            gap = f"mean gap {(a[shared] - b[shared]).abs().mean():.2f}" if shared else "no common ε"
            ax.set_title(f"{plot_text(display_name(label), LEGEND_CHARS)}\n{gap}", fontsize=MIN_FONT_PT)
        else:
            ax.set_title(f"{plot_text(display_name(label), LEGEND_CHARS)}\n(one modality only)", fontsize=MIN_FONT_PT)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        sized_ticks(ax)
    for col in range(cols):  # the lowest panel of each column carries its x axis, also above an empty cell
        lowest = [ax for ax in axes[:, col] if ax.get_visible()][-1]
        lowest.xaxis.set_tick_params(labelbottom=True)
        lowest.set_xlabel("ℓ2 radius ε", fontsize=MIN_FONT_PT)
    for row in axes:
        row[0].set_ylabel("accuracy", fontsize=MIN_FONT_PT)
    handles = [Line2D([], [], color=colours[m], marker=markers[m], ms=3) for m in mods]
    handles += [Patch(color="gray", alpha=0.25), Patch(facecolor="none", edgecolor="gray", hatch="///")]
    names = [f"attack on {plot_text(modality_name(m))} (mean)" for m in mods]
    names += [band_text(band, seeds), "gap between the modalities"]
    if ringed:
        handles.append(flag_handle())
        names.append(FLAG_NOTE)
    fig.legend(handles, names, loc="outside lower center", ncol=2, fontsize=MIN_FONT_PT, frameon=False)
    name = "ℓ2-PGD" if attack == "pgd_l2" else plot_text(attack)
    fig.suptitle(
        f"{plot_text(dataset)}: uni-modal {name} robust accuracy per entry and the gap between modalities",
        fontsize=TITLE_PT,
    )
    if stamp:
        draw_command(fig, command)
    return fig
