"""Robust-accuracy-vs-ε curves of one run, drawn from its rows (a pure function of the rows).

Same conventions as ``reports.figures``: a distinct colour and marker per line, the legend outside
the data, modalities by name, and the command in the file's metadata and a sidecar ``.txt`` (on the
canvas only with ``stamp=True``).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_path, atomic_write_text  # noqa: E402
from .figures import entry_styles, figure_metadata  # noqa: E402
from .stats import modality_name  # noqa: E402


def plot_robust_curve(rows: pd.DataFrame, path: str | Path, *, title: str, command: str, stamp: bool = False) -> Path:
    """One line per (defense, attack, modality) of ``rows``: accuracy against ε; clean at ε = 0."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    clean = rows[rows["attack"] == "clean"]
    attacked = rows[rows["attack"] != "clean"]
    groups = list(attacked.groupby(["defense", "attack", "modality"], sort=True))
    styles = entry_styles([str(key) for key, _ in groups])
    for key, group in groups:
        defense, attack, modality = key
        group = group.groupby("eps", as_index=False)["accuracy"].mean().sort_values("eps")
        base = clean[clean["defense"] == defense]["accuracy"].mean()
        xs, ys = list(group["eps"]), list(group["accuracy"])
        if xs and xs[0] > 0 and pd.notna(base):
            xs, ys = [0.0] + xs, [base] + ys
        ax.plot(xs, ys, label=f"{defense} · {attack} · {modality_name(modality)}", ms=4, **styles[str(key)])
    ax.set_xlabel("ℓ2 radius ε (model-input space)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    if groups:
        fig.legend(loc="outside lower center", fontsize=7, frameon=False, ncol=1)
    if stamp:
        fig.text(0.01, 0.005, f"made by: {command}", fontsize=6, color="gray")
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight",
                    metadata=figure_metadata(fmt, command=command, description=title))
    plt.close(fig)
    atomic_write_text(path.with_name(path.name + ".txt"), f"{title}\nmade by: {command}\n")
    return path


def run_plot_name(dataset: str, label: str, attack: str, modality: str, seed: int, config_hash: str,
                  fmt: str = "png") -> str:
    """``synthav-jt-cfgb30dba09-pgd_l2-a-seed0.png``: the configuration is in the name, so runs of one label
    with different settings never overwrite each other's plots."""
    from .stats import slug

    cfg = f"cfg{str(config_hash)[:8]}" if config_hash else "cfgunknown"
    parts = [slug(dataset), slug(label), cfg, slug(attack.replace(":", "_")), slug(modality), f"seed{int(seed)}"]
    return "-".join(p for p in parts if p) + f".{fmt}"
