"""Figure 3: heat maps of the vulnerability-indicator ratio η^(a)/η^(v) per class pair, one panel per entry, from
``certify``'s ``eta_pairs.csv`` (conventions in ``reports.figures``)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..certify.eta import ETA_RATIO_AGGREGATION, eta_ratio_modalities, eta_ratio_per_defense
from .entries import base_label, resolve_entries
from .figure_style import (
    FULL_WIDTH,
    HEATMAPS_PER_ROW,
    LEGEND_CHARS,
    MAX_SHOWN,
    MIN_FONT_PT,
    TITLE_PT,
    draw_command,
    plot_text,
)
from .paper import display_name
from .stats import modality_name
from .table_cells import paper_row_order

FIGURE3_DEFENSES = ("jt", "mmat", "crmt_jt", "crmt_at", "crmt_mix")


def eta_ratio_matrix(pairs: pd.DataFrame, numerator: str, denominator: str, column: str = "eta_pair") -> np.ndarray:
    """K × K matrix of mean-over-seeds η^(num)_{y,j} / η^(den)_{y,j}; NaN on the diagonal and where absent."""
    wide = pairs.pivot_table(index=["seed", "class_y", "class_j"], columns="modality", values=column, aggfunc="mean")
    ratio = (
        (wide[numerator] / wide[denominator]).replace([np.inf, -np.inf], np.nan).groupby(["class_y", "class_j"]).mean()
    )
    k = int(max(pairs["class_y"].max(), pairs["class_j"].max())) + 1
    mat = np.full((k, k), np.nan)
    for (y, j), v in ratio.items():
        mat[int(y), int(j)] = v
    return mat


def _eta_symbol(modality: str) -> str:
    """η of a modality in mathtext; a name with characters mathtext would parse is shown by its letters and digits."""
    name = re.sub(r"[^A-Za-z0-9]", "", str(modality))[:MAX_SHOWN] or "?"
    return rf"\eta^{{(\mathrm{{{name}}})}}"


def figure3(
    pairs: pd.DataFrame,
    *,
    command: str = "",
    dataset: str | None = None,
    defenses: Sequence[str] | None = None,
    column: str = "eta_pair",
    modalities: tuple[str, str] | None = None,
    stamp: bool = False,
) -> Figure:
    """Heat maps of the η ratio per class pair, one panel per entry: η^(a)/η^(v) on every dataset, the paper's
    Figure 3 (``certify.eta.eta_ratio_modalities``: never by spec order or fragility). Cells: per-pair ratio, mean
    over seeds; panel titles: the findings' number (mean over class pairs of η per modality, then the ratio, then
    mean ± std over seeds).

    ``column``: ``eta_pair`` (global pair constant of each modality's share of the margin, any head),
    ``eta_eq10`` (|a_y|τ_y + |a_j|τ_j, CRMT heads only) or ``eta_local_mean`` (mean over test samples).
    ``modalities``: which two modalities when the rows have more (their order does not change the ratio's).
    Log colour scale: ``viridis`` when every ratio lies on one side of 1, ``RdBu_r`` centred on 1 otherwise.
    """
    if pairs is None or pairs.empty:
        raise ValueError("no η rows (run `mmrobust-bench certify` or a sweep with certify: to make eta_pairs.csv)")
    if column not in pairs:
        raise ValueError(f"η rows have no column {column!r}")
    pairs, _ = resolve_entries(pairs)
    datasets = sorted(pairs["dataset"].astype(str).unique())
    dataset = dataset or datasets[0]
    data = pairs[pairs["dataset"].astype(str) == dataset]
    if data.empty:
        raise ValueError(f"no η rows for dataset {dataset!r}")
    present = list(dict.fromkeys(data["defense"].astype(str)))
    if defenses:
        labels = [d for d in defenses if d in present]
    else:
        labels = [p for d in FIGURE3_DEFENSES for p in present if base_label(p) == d] or paper_row_order(present)
    mods = (
        modalities or tuple([m for m in ("v", "a") if m in set(data["modality"])] or sorted(set(data["modality"])))[:2]
    )
    if len(mods) != 2:
        raise ValueError(f"Figure 3 needs two modalities, have {', '.join(map(str, mods))}")
    num, den = eta_ratio_modalities(mods)
    mats = [eta_ratio_matrix(data[data["defense"].astype(str) == lab], num, den, column) for lab in labels]
    keep = [(lab, m) for lab, m in zip(labels, mats) if np.isfinite(m).any()]
    if not keep:
        raise ValueError(f"no finite {column} ratios for dataset {dataset!r}")
    labels, mats = [k[0] for k in keep], [k[1] for k in keep]
    finite = np.concatenate([m[np.isfinite(m) & (m > 0)] for m in mats])
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 1.0 or hi <= 1.0:  # one-sided: a sequential map over the range
        norm, cmap = LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 1.01), "viridis"
    else:  # both sides of 1: diverging, symmetric in log so 1 sits in the middle
        m = max(hi, 1.0 / lo)
        norm, cmap = LogNorm(vmin=1.0 / m, vmax=m), "RdBu_r"
    cols = min(HEATMAPS_PER_ROW, len(labels))
    nrows = math.ceil(len(labels) / cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(FULL_WIDTH, FULL_WIDTH / (cols + 0.6) * nrows + 1.1), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[len(labels) :]:
        ax.set_visible(False)
    image = None
    k = mats[0].shape[0]
    summary = eta_ratio_per_defense(data, num, den, column).set_index("defense")
    for ax, lab, mat in zip(axes.flat, labels, mats):
        image = ax.imshow(np.where(mat > 0, mat, np.nan), cmap=cmap, norm=norm)
        mean, std, seeds = (
            summary.loc[lab, c] if lab in summary.index else math.nan for c in ("ratio_mean", "ratio_std", "seeds")
        )
        spread = "" if not np.isfinite(std) else f" ± {std:#.2g}"
        ax.set_title(
            f"{plot_text(display_name(lab), LEGEND_CHARS)}\nratio {mean:#.3g}{spread}, "
            f"{0 if not np.isfinite(seeds) else int(seeds)} seeds",
            fontsize=MIN_FONT_PT,
        )
        ticks = list(range(0, k, math.ceil(k / 6)))  # integers, at most 6 per axis: readable at 7 pt
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.tick_params(labelsize=MIN_FONT_PT)
        ax.set_xlabel("class j", fontsize=8)
        ax.set_ylabel("class y", fontsize=8)
    symbol = rf"${_eta_symbol(num)} / {_eta_symbol(den)}$"
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85)
        bar.set_label(
            f"{symbol}  ({plot_text(modality_name(num))} / {plot_text(modality_name(den))})\n"
            "the paper's Figure 3 orientation, log scale",
            fontsize=8,
        )
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if hi / lo < 20 else ""))
        bar.ax.tick_params(labelsize=MIN_FONT_PT, which="both")
    fig.suptitle(
        f"{plot_text(dataset)}: vulnerability ratio {symbol} (the paper's Figure 3 orientation) per class "
        f"pair (y, j), mean over seeds\npanel titles: {ETA_RATIO_AGGREGATION} (± std)\nempirical "
        f"(gradient-based Lipschitz estimates, {column}); 1 = balanced",
        fontsize=TITLE_PT,
    )
    if stamp:
        draw_command(fig, command)
    return fig
