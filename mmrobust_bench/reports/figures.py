"""Figures 1, 3, 4 and 5 of the paper from result rows (and, for Figure 3, certification η rows).

Each ``figure*`` function is a pure function of its DataFrame that returns a matplotlib figure
carrying the command that made it; :func:`save_figure` writes it atomically with a sidecar
``.txt`` naming the command and what the figure shows.

- Figure 1: accuracy vs ℓ2-PGD radius, one panel per attacked modality, one line per defense.
- Figure 3: heat maps of the vulnerability-indicator ratio η^(a)/η^(v) per class pair (y, j), one
  panel per defense (JT / MMAT against the CRMT variants), from ``certify``'s ``eta_pairs.csv``.
- Figure 4: uni-modal robust accuracy vs radius, one panel per defense, the gap between the
  modalities shaded.
- Figure 5: the CRMT ablation — JT, orthogonal head only, CRMT step 1 only, step 2 only, full
  CRMT — as grouped bars of clean and multi-modal FGM / ℓ2-PGD accuracy at ε = 0.5. The variants
  are defense labels of the rows (a sweep YAML gives them with a ``label`` per defense entry).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..io import atomic_path, atomic_write_text  # noqa: E402
from .paper import method_name  # noqa: E402
from .tables import ALL, choose_attack_configs, paper_row_order, single_modalities  # noqa: E402

# Figure 5: (stage shown, defense label in the rows)
DEFAULT_ABLATION: tuple[tuple[str, str], ...] = (
    ("JT", "jt"),
    ("orth. head only", "crmt_jt_orth_only"),
    ("CRMT step 1 only", "crmt_jt_step1_only"),
    ("CRMT step 2 only", "crmt_jt_step2_only"),
    ("CRMT-JT (full)", "crmt_jt"),
)
FIGURE3_DEFENSES = ("jt", "mmat", "crmt_jt", "crmt_at", "crmt_mix")
PANELS_PER_ROW = 5

DESCRIPTIONS = {
    1: "Figure 1: accuracy vs ℓ2-PGD radius on each attacked modality, per defense (mean ± std over seeds)",
    3: "Figure 3: vulnerability-indicator ratio between modalities per class pair (y, j), per defense; "
       "empirical (gradient-based Lipschitz estimates)",
    4: "Figure 4: uni-modal robust accuracy vs radius, per defense, with the gap between modalities shaded",
    5: "Figure 5: CRMT ablation — clean and multi-modal FGM / ℓ2-PGD accuracy at ε = 0.5",
}


@dataclass
class SavedFigure:
    number: int
    path: Path
    sidecar: Path


def _stamp(fig: Figure, command: str) -> None:
    fig.text(0.005, 0.003, f"made by: {command}", fontsize=6, color="gray", ha="left", va="bottom")


def _curve(rows: pd.DataFrame, clean: pd.DataFrame) -> pd.DataFrame:
    """Per ε: mean and std over seeds of accuracy; clean accuracy added at ε = 0 when absent."""
    per_seed = rows.groupby(["eps", "seed"])["accuracy"].mean().reset_index()
    if not clean.empty and not np.isclose(per_seed["eps"], 0).any():
        base = clean.groupby("seed")["accuracy"].mean().reset_index().assign(eps=0.0)
        per_seed = pd.concat([per_seed, base[["eps", "seed", "accuracy"]]], ignore_index=True)
    stats = per_seed.groupby("eps")["accuracy"].agg(["mean", "std"]).reset_index().sort_values("eps")
    return stats.fillna({"std": 0.0})


def _prepare(rows: pd.DataFrame, dataset: str | None) -> tuple[pd.DataFrame, str]:
    if rows.empty:
        raise ValueError("no result rows to plot")
    datasets = sorted(rows["dataset"].astype(str).unique())
    if dataset is None:
        if len(datasets) > 1:
            raise ValueError(f"rows hold several datasets ({', '.join(datasets)}); choose one")
        dataset = datasets[0]
    data = rows[rows["dataset"].astype(str) == dataset]
    if data.empty:
        raise ValueError(f"no rows for dataset {dataset!r}; have {', '.join(datasets)}")
    data, _ = choose_attack_configs(data)
    return data, dataset


def _labels(data: pd.DataFrame, defenses: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(data["defense"].astype(str)))
    return [d for d in defenses if d in present] if defenses else paper_row_order(present)


def figure1(rows: pd.DataFrame, *, command: str, attack: str = "pgd_l2", dataset: str | None = None,
            defenses: Sequence[str] | None = None) -> Figure:
    """Accuracy vs radius of ``attack``; a panel per attacked modality (single ones, then ``all``)."""
    data, dataset = _prepare(rows, dataset)
    attacked = data[data["attack"] == attack]
    if attacked.empty:
        raise ValueError(f"no {attack} rows for dataset {dataset!r}")
    mods = single_modalities(attacked) + ([ALL] if (attacked["modality"] == ALL).any() else [])
    labels = _labels(attacked, defenses)
    fig, axes = plt.subplots(1, len(mods), figsize=(4.2 * len(mods), 3.8), squeeze=False, sharey=True)
    for ax, mod in zip(axes[0], mods):
        for label in labels:
            part = attacked[(attacked["defense"].astype(str) == label) & (attacked["modality"] == mod)]
            if part.empty:
                continue
            clean = data[(data["defense"].astype(str) == label) & (data["attack"] == "clean")]
            stats = _curve(part, clean)
            ax.plot(stats["eps"], stats["mean"], marker="o", ms=3, label=method_name(label))
            ax.fill_between(stats["eps"], stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.15)
        ax.set_title(f"{attack} on {'all modalities (joint)' if mod == ALL else '#' + mod}", fontsize=9)
        ax.set_xlabel("ℓ2 radius ε (model-input space)")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{dataset}: accuracy vs {attack} radius", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _stamp(fig, command)
    return fig


def eta_ratio_matrix(pairs: pd.DataFrame, numerator: str, denominator: str, column: str = "eta_pair") -> np.ndarray:
    """K × K matrix of mean-over-seeds η^(num)_{y,j} / η^(den)_{y,j}; NaN on the diagonal and where absent."""
    wide = pairs.pivot_table(index=["seed", "class_y", "class_j"], columns="modality", values=column, aggfunc="mean")
    ratio = (wide[numerator] / wide[denominator]).replace([np.inf, -np.inf], np.nan).groupby(["class_y", "class_j"]).mean()
    k = int(max(pairs["class_y"].max(), pairs["class_j"].max())) + 1
    mat = np.full((k, k), np.nan)
    for (y, j), v in ratio.items():
        mat[int(y), int(j)] = v
    return mat


def figure3(pairs: pd.DataFrame, *, command: str, dataset: str | None = None, defenses: Sequence[str] | None = None,
            column: str = "eta_pair", modalities: tuple[str, str] | None = None) -> Figure:
    """Heat maps of η^(second)/η^(first) per class pair (η^(a)/η^(v) on synthav), one panel per defense.

    ``column``: ``eta_pair`` (global pair constant of each modality's share of the margin, any head),
    ``eta_eq10`` (|a_y|τ_y + |a_j|τ_j, CRMT heads only) or ``eta_local_mean`` (mean over test samples).
    """
    if pairs.empty:
        raise ValueError("no η rows (run `mmrobust-bench certify` or a sweep with certify: to make eta_pairs.csv)")
    datasets = sorted(pairs["dataset"].astype(str).unique())
    dataset = dataset or datasets[0]
    data = pairs[pairs["dataset"].astype(str) == dataset]
    present = list(dict.fromkeys(data["defense"].astype(str)))
    labels = [d for d in (defenses or FIGURE3_DEFENSES) if d in present] or sorted(present)
    mods = modalities or tuple([m for m in ("v", "a") if m in set(data["modality"])] or sorted(set(data["modality"])))[:2]
    if len(mods) != 2:
        raise ValueError(f"Figure 3 needs two modalities, have {', '.join(map(str, mods))}")
    first, second = mods
    mats = [eta_ratio_matrix(data[data["defense"].astype(str) == lab], second, first, column) for lab in labels]
    finite = np.concatenate([m[np.isfinite(m)] for m in mats]) if mats else np.array([])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.5, 2.0)
    lo, hi = min(lo, 0.999), max(hi, 1.001)
    norm = TwoSlopeNorm(vcenter=1.0, vmin=lo, vmax=hi)
    fig, axes = plt.subplots(1, len(labels), figsize=(3.4 * len(labels) + 0.8, 3.6), squeeze=False)
    image = None
    for ax, lab, mat in zip(axes[0], labels, mats):
        image = ax.imshow(mat, cmap="coolwarm", norm=norm)
        ax.set_title(f"{method_name(lab)}\nmean {np.nanmean(mat):.2f}" if np.isfinite(mat).any() else method_name(lab),
                     fontsize=9)
        ax.set_xlabel("class j")
        ax.set_ylabel("class y")
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label=f"η^({second}) / η^({first})  [{column}]")
    fig.suptitle(f"{dataset}: vulnerability ratio η^({second})/η^({first}) per class pair — "
                 "empirical (gradient-based Lipschitz estimates)", fontsize=9)
    _stamp(fig, command)
    return fig


def figure4(rows: pd.DataFrame, *, command: str, attack: str = "pgd_l2", dataset: str | None = None,
            defenses: Sequence[str] | None = None) -> Figure:
    """Uni-modal robust accuracy vs radius per defense; the area between the modalities' curves shaded."""
    data, dataset = _prepare(rows, dataset)
    attacked = data[data["attack"] == attack]
    mods = single_modalities(attacked)
    if len(mods) < 2:
        raise ValueError(f"Figure 4 needs {attack} rows on at least two single modalities for {dataset!r}")
    labels = _labels(attacked[attacked["modality"].isin(mods)], defenses)
    cols = min(PANELS_PER_ROW, len(labels))
    nrows = math.ceil(len(labels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 3.2 * nrows + 0.4), squeeze=False, sharey=True)
    for ax in axes.flat[len(labels):]:
        ax.set_visible(False)
    for ax, label in zip(axes.flat, labels):
        clean = data[(data["defense"].astype(str) == label) & (data["attack"] == "clean")]
        curves = {}
        for mod in mods[:2]:
            part = attacked[(attacked["defense"].astype(str) == label) & (attacked["modality"] == mod)]
            if not part.empty:
                curves[mod] = _curve(part, clean)
                ax.plot(curves[mod]["eps"], curves[mod]["mean"], marker="o", ms=3, label=f"attack #{mod}")
        if len(curves) == 2:
            a, b = (curves[m].set_index("eps")["mean"] for m in mods[:2])
            common = a.index.intersection(b.index)
            ax.fill_between(common, a[common], b[common], alpha=0.25, color="gray", label="gap")
            gap = float((a[common] - b[common]).abs().mean()) if len(common) else math.nan
            ax.set_title(f"{method_name(label)} (mean gap {gap:.2f})", fontsize=9)
        else:
            ax.set_title(method_name(label), fontsize=9)
        ax.set_xlabel("ℓ2 radius ε")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{dataset}: uni-modal {attack} robust accuracy and the gap between modalities", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _stamp(fig, command)
    return fig


def figure5(rows: pd.DataFrame, *, command: str, dataset: str | None = None,
            ablation: Sequence[tuple[str, str]] = DEFAULT_ABLATION, eps: float = 0.5) -> Figure:
    """Grouped bars (clean, FGM and ℓ2-PGD on all modalities at ``eps``) for the ablation stages present."""
    data, dataset = _prepare(rows, dataset)
    present = set(data["defense"].astype(str))
    stages = [(name, label) for name, label in ablation if label in present]
    if not stages:
        raise ValueError(f"no ablation rows for {dataset!r}: expected labels {', '.join(lab for _, lab in ablation)}")
    settings = [("Clean", "clean", "none", 0.0), ("FGM", "fgm", ALL, eps), ("PGD-ℓ2", "pgd_l2", ALL, eps)]
    fig, ax = plt.subplots(figsize=(1.6 * len(stages) + 2.5, 3.8))
    width = 0.8 / len(settings)
    x = np.arange(len(stages))
    for i, (title, attack, mod, e) in enumerate(settings):
        means, stds = [], []
        for _, label in stages:
            part = data[(data["defense"].astype(str) == label) & (data["attack"] == attack)
                        & (data["modality"].astype(str) == mod) & np.isclose(data["eps"].astype(float), e)]
            per_seed = part.groupby("seed")["accuracy"].mean()
            means.append(per_seed.mean() if len(per_seed) else np.nan)
            stds.append(per_seed.std(ddof=1) if len(per_seed) > 1 else 0.0)
        ax.bar(x + (i - 1) * width, means, width, yerr=stds, capsize=2,
               label=title if attack == "clean" else f"{title} (all, ε={e:g})")
    ax.set_xticks(x, [f"{name}\n({label})" for name, label in stages], fontsize=7)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    ax.set_title(f"{dataset}: CRMT ablation (mean ± std over seeds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _stamp(fig, command)
    return fig


def save_figure(fig: Figure, path: str | Path, *, command: str, description: str) -> SavedFigure:
    """Write ``fig`` (format from the suffix) and ``<path>.txt`` naming the command; both atomic."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=130)
    plt.close(fig)
    sidecar = path.with_name(path.name + ".txt")
    atomic_write_text(sidecar, f"{description}\nmade by: {command}\n")
    return SavedFigure(0, path, sidecar)


def plot_figures(rows: pd.DataFrame, out_dir: str | Path, *, command: str, eta_pairs: pd.DataFrame | None = None,
                 figures: Sequence[int] = (1, 3, 4, 5), attack: str = "pgd_l2",
                 ablation: Sequence[tuple[str, str]] = DEFAULT_ABLATION, fmt: str = "png",
                 datasets: Sequence[str] | None = None) -> tuple[list[SavedFigure], list[str]]:
    """Draw every requested figure for every dataset; returns (saved files, notes on figures skipped)."""
    unknown = sorted(set(figures) - set(DESCRIPTIONS))
    if unknown:
        raise ValueError(f"unknown figure {', '.join(map(str, unknown))}; valid: {', '.join(map(str, DESCRIPTIONS))}")
    out_dir = Path(out_dir)
    saved, notes = [], []
    names = list(datasets or sorted(set(rows["dataset"].astype(str)) if not rows.empty else []))
    if 3 in figures and eta_pairs is not None and not eta_pairs.empty:
        names += [d for d in sorted(eta_pairs["dataset"].astype(str).unique()) if d not in names]
    for dataset in names:
        for number in figures:
            try:
                if number == 1:
                    fig = figure1(rows, command=command, attack=attack, dataset=dataset)
                elif number == 3:
                    fig = figure3(eta_pairs if eta_pairs is not None else pd.DataFrame(), command=command, dataset=dataset)
                elif number == 4:
                    fig = figure4(rows, command=command, attack=attack, dataset=dataset)
                else:
                    fig = figure5(rows, command=command, dataset=dataset, ablation=ablation)
            except (ValueError, KeyError) as exc:
                notes.append(f"figure {number} ({dataset}) skipped: {exc}")
                continue
            item = save_figure(fig, out_dir / f"figure{number}-{dataset}.{fmt}", command=command,
                               description=f"{DESCRIPTIONS[number]} — {dataset}")
            item.number = number
            saved.append(item)
    return saved, notes


def parse_ablation(text: str) -> list[tuple[str, str]]:
    """``"JT=jt,Orth=crmt_jt_orth_only"`` → [(stage, label), ...]."""
    out = []
    for part in [p for p in text.split(",") if p.strip()]:
        if "=" not in part:
            raise ValueError(f"--ablation expects STAGE=LABEL pairs separated by commas, got {part!r}")
        name, label = part.split("=", 1)
        out.append((name.strip(), label.strip()))
    return out


__all__ = ["DEFAULT_ABLATION", "DESCRIPTIONS", "FIGURE3_DEFENSES", "SavedFigure", "eta_ratio_matrix", "figure1",
           "figure3", "figure4", "figure5", "parse_ablation", "plot_figures", "save_figure"]
