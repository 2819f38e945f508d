"""Robust-accuracy-vs-ε curves of one run, drawn from its rows (a pure function of the rows).

Same conventions as ``reports.figures``: one column of a paper wide (``SINGLE_COLUMN``, 3.3 in), text at
least 7 pt, 300 dpi, a distinct colour and marker per line, entries by their display names, the legend
outside the data, modalities by name, and the command in the file's metadata and a sidecar ``.txt`` (on the
canvas only with ``stamp=True``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ..bench.naming import modality_name, run_plot_name
from ..io import atomic_path, atomic_write_text
from .figure_style import (
    DPI,
    FLAG_NOTE,
    MIN_FONT_PT,
    SINGLE_COLUMN,
    entry_styles,
    figure_metadata,
    flag_handle,
    flagged_eps,
    plot_text,
    ring_flagged,
)
from .paper import display_name

LINE_CHARS = 48  # characters of a title or legend line at 7–8 pt in one column (3.3 in)


def _wrapped(text: str) -> str:
    """A name or title on lines that fit one column (never cut off: the figure is saved at its own size)."""
    return "\n".join(textwrap.wrap(plot_text(text, 3 * LINE_CHARS), LINE_CHARS)) or plot_text(text)


def plot_robust_curve(rows: pd.DataFrame, path: str | Path, *, title: str, command: str, stamp: bool = False) -> Path:
    """One line per (defense, attack, modality) of ``rows``: accuracy against ε; clean at ε = 0; points whose rows
    carry a validity flag ringed."""
    clean = rows[rows["attack"] == "clean"]
    attacked = rows[rows["attack"] != "clean"]
    groups = list(attacked.groupby(["defense", "attack", "modality"], sort=True))
    names = {key: _wrapped(f"{display_name(key[0])} · {key[1]} · {modality_name(key[2])}") for key, _ in groups}
    lines = sum(name.count("\n") + 1 for name in names.values()) + _wrapped(title).count("\n")
    fig, ax = plt.subplots(figsize=(SINGLE_COLUMN, 2.3 + 0.14 * lines), layout="constrained")  # legend below
    styles = entry_styles([str(key) for key, _ in groups])
    ringed = False
    for key, group in groups:
        defense, _attack, _modality = key
        flagged = flagged_eps(group)
        group = group.groupby("eps", as_index=False)["accuracy"].mean().sort_values("eps")
        base = clean[clean["defense"] == defense]["accuracy"].mean()
        xs, ys = list(group["eps"]), list(group["accuracy"])
        if xs and xs[0] > 0 and pd.notna(base):
            xs, ys = [0.0] + xs, [base] + ys
        ax.plot(xs, ys, label=names[key], ms=3, lw=1.2, **styles[str(key)])
        ringed |= ring_flagged(ax, group.rename(columns={"accuracy": "mean"}), flagged)
    ax.set_xlabel("ℓ2 radius ε (model-input space)", fontsize=MIN_FONT_PT)
    ax.set_ylabel("accuracy", fontsize=MIN_FONT_PT)
    ax.tick_params(labelsize=MIN_FONT_PT)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(_wrapped(title), fontsize=8)
    if groups:
        handles, labels = ax.get_legend_handles_labels()
        if ringed:
            handles, labels = handles + [flag_handle()], labels + [_wrapped(FLAG_NOTE)]
        fig.legend(handles, labels, loc="outside lower center", fontsize=MIN_FONT_PT, frameon=False, ncol=1)
    if stamp:
        fig.text(0.01, 0.005, f"made by: {command}", fontsize=MIN_FONT_PT, color="gray")
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI, metadata=figure_metadata(fmt, command=command, description=title))
    plt.close(fig)
    atomic_write_text(path.with_name(path.name + ".txt"), f"{title}\nmade by: {command}\n")
    return path


__all__ = ["LINE_CHARS", "plot_robust_curve", "run_plot_name"]
