"""Robust-accuracy-vs-ε curves drawn from result rows (a pure function of the rows)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_path  # noqa: E402


def plot_robust_curve(rows: pd.DataFrame, path: str | Path, *, title: str, command: str) -> Path:
    """One line per (defense, attack, modality) of ``rows``: accuracy against ε; clean at ε = 0."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    clean = rows[rows["attack"] == "clean"]
    attacked = rows[rows["attack"] != "clean"]
    for (defense, attack, modality), group in attacked.groupby(["defense", "attack", "modality"], sort=True):
        group = group.groupby("eps", as_index=False)["accuracy"].mean().sort_values("eps")
        base = clean[clean["defense"] == defense]["accuracy"].mean()
        xs, ys = list(group["eps"]), list(group["accuracy"])
        if xs and xs[0] > 0 and pd.notna(base):
            xs, ys = [0.0] + xs, [base] + ys
        ax.plot(xs, ys, marker="o", label=f"{defense} · {attack} · {modality}")
    ax.set_xlabel("ε (ℓ2, model-input space)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.text(0.01, 0.005, f"made by: {command}", fontsize=6, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return path
