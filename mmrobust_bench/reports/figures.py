"""Figures 1, 3, 4 and 5 of the paper from result rows (and, for Figure 3, certification η rows).

Each ``figure*`` function is a pure function of its DataFrame that returns a matplotlib figure;
:func:`save_figure` writes it atomically, puts the command that made it into the file's metadata
(PNG text chunks, PDF Subject, SVG Description) and into a sidecar ``.txt``, and draws it on the
canvas only when asked (``stamp=True``, ``plot --stamp``).

Conventions every figure follows (so a reviewer can take it as it is):

- one *entry* per defense label and configuration (``reports.entries``): configurations are never
  averaged together;
- sized for a paper: :data:`FULL_WIDTH` (7 in, the text width) or :data:`SINGLE_COLUMN` (3.3 in), every
  text at least :data:`MIN_FONT_PT` (7 pt) at that size, saved at :data:`DPI` (300) as PDF and PNG
  (:data:`FORMATS`), at exactly that size (no tight cropping);
- entries are named by ``reports.paper.display_name`` (the names of the page and the tables) and drawn in
  family panels (:func:`family_groups`: baselines, CRMT variants, transformers, other entries; at most
  :data:`MAX_PER_PANEL` per panel), each beside JT as the reference; colours are Okabe–Ito (colour-blind
  safe), distinct within a panel, with a distinct marker per entry (:func:`entry_styles`); JT is black;
  legends sit outside the data;
- lines are the mean over seeds; bands and error bars say what they are — ``band="std"``: ± one
  sample std over the N seeds, ``band="ci95"``: the 95% t-interval of the mean;
- modalities are named (audio, visual), y axes zoom to the values that differ (Figure 5), class
  axes are integers (Figure 3), and what is missing is skipped with a note rather than drawn empty.

- Figure 1: accuracy vs ℓ2-PGD radius, a column per attacked modality, a row per family panel, one line
  per entry.
- Figure 3: heat maps of the vulnerability-indicator ratio η^(a)/η^(v) per class pair (y, j), one
  panel per entry, from ``certify``'s ``eta_pairs.csv``, in the orientation and with the aggregation every
  report uses (``certify.eta``); log colour scale (a sequential map when every ratio is on one side of 1, a
  diverging map centred on 1 otherwise).
- Figure 4: uni-modal robust accuracy vs radius, one panel per entry, seed bands, the gap between
  the modalities shaded.
- Figure 5: the CRMT ablation — JT, CRMT head only (no step 1/2), CRMT step 1 only, step 2 only,
  full CRMT — clean and multi-modal FGM / ℓ2-PGD accuracy at ε = 0.5, one panel per setting with its
  own zoomed axis, each seed a dot and the mean ± band as an error bar. The variants are defense
  labels of the rows (a sweep YAML gives them with a ``label`` per defense entry). The head-only stage
  is named after the head the rows were trained with (``own_groups``: "orthogonal head only" for the
  paper's ``full``, "unit-row head only" for the reference code's ``per_class_unit_rows``), read from
  the checkpoints' ``config.json`` or an explicit pin in the sweep YAML (:func:`crmt_heads`); when
  neither says, it stays "head only (no step 1/2)".

Names from the rows are drawn as literal text (:func:`plot_text`: no mathtext, one line, cut to a length a legend
holds) and files are named by their slugs (``reports.paths``), never by the raw names.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .._version import __version__  # noqa: E402
from ..certify.eta import ETA_RATIO_AGGREGATION, eta_ratio_modalities, eta_ratio_per_defense  # noqa: E402
from ..io import atomic_path, atomic_write_text  # noqa: E402
from .entries import resolve_entries  # noqa: E402
from .paper import FAMILIES, REFERENCE, display_name, family  # noqa: E402
from .paths import output_path, slug  # noqa: E402
from .stats import modality_name, summarize  # noqa: E402
from .tables import ALL, choose_attack_configs, paper_row_order, single_modalities  # noqa: E402

# Figure 5: (stage shown, defense label in the rows). The head-only stage's name is neutral unless the head of
# its rows is known (crmt_heads): "crmt_jt_orth_only" is a historical label, the committed synthav rows of it
# use the reference code's unit-row head, not the paper's orthogonal one.
HEAD_ONLY_STAGE = "head only (no step 1/2)"
# own_groups (and its legacy spelling) -> what the head is
HEAD_NAMES = {"full": "orthogonal head", "per_class_unit_rows": "unit-row head", "per_class": "unit-row head"}
DEFAULT_ABLATION: tuple[tuple[str, str], ...] = (
    ("JT", "jt"),
    (HEAD_ONLY_STAGE, "crmt_jt_orth_only"),
    ("CRMT-JT step 1 only", "crmt_jt_step1_only"),
    ("CRMT-JT step 2 only", "crmt_jt_step2_only"),
    ("CRMT-JT (full)", "crmt_jt"),
)
FIGURE3_DEFENSES = ("jt", "mmat", "crmt_jt", "crmt_at", "crmt_mix")
PANELS_PER_ROW = 5
HEATMAPS_PER_ROW = 3  # Figure 3 at full width: square panels large enough for a 10 × 10 class grid
BANDS = ("std", "ci95")


DESCRIPTIONS = {
    1: "Figure 1: accuracy vs ℓ2-PGD radius on each attacked modality, per entry (line: mean over seeds; band: see legend)",
    3: "Figure 3: vulnerability-indicator ratio between modalities per class pair (y, j), per entry, mean over seeds; "
       "empirical (gradient-based Lipschitz estimates)",
    4: "Figure 4: uni-modal robust accuracy vs radius, per entry, with seed bands and the gap between modalities shaded",
    5: "Figure 5: CRMT ablation — clean and multi-modal FGM / ℓ2-PGD accuracy at ε = 0.5 (dots: seeds; bar: mean ± band)",
}

# sizes for a paper: a two-column page's column and text width (inches), the smallest text (points) at that size
SINGLE_COLUMN = 3.3
FULL_WIDTH = 7.0
MIN_FONT_PT = 7.0
TITLE_PT = 8.0
DPI = 300
FORMATS = ("pdf", "png")
IMAGE_FORMATS = ("pdf", "png", "svg")
ROW_HEIGHT = 1.75  # inches per row of panels
LEGEND_RATIO = 1.0  # width of a row's legend column, relative to a panel

# Okabe & Ito's colour-blind-safe palette without its black, which is JT's (the reference in every panel)
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
REFERENCE_COLOUR = "#000000"
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
MAX_PER_PANEL = len(OKABE_ITO)
# the two modalities of Figure 4 (and the per-run curves) get fixed, colour-blind-safe colours
_MODALITY_COLOURS = {"a": "#D55E00", "v": "#0072B2"}


# longest name a legend, title or tick shows (longer ones end in "…"); a title holds more
MAX_SHOWN = 48
LEGEND_CHARS = 28  # a name in a legend or panel title beside full-width panels (at 7 pt)
MAX_TITLE = 160
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def plot_text(text: object, limit: int = MAX_SHOWN) -> str:
    """A name from the rows as matplotlib should draw it: literally (``$`` escaped, so never parsed as mathtext),
    on one line, at most ``limit`` characters."""
    shown = _CONTROL.sub(" ", str(text))
    if len(shown) > limit:
        shown = shown[:limit - 1] + "…"
    return shown.replace("$", r"\$")


@dataclass
class SavedFigure:
    """One figure as written: ``path`` and its ``sidecar`` in the first format, ``paths`` in every format."""

    number: int
    path: Path
    sidecar: Path
    paths: list[Path] = field(default_factory=list)


def reference_entry(labels: Sequence[str]) -> str | None:
    """The entry every family panel shows for reference: the first JT entry, or None without one."""
    from .entries import base_label

    return next((label for label in labels if base_label(label) == REFERENCE), None)


def defense_ids(data: pd.DataFrame) -> dict[str, str]:
    """``{entry: registry id}`` where the rows say it (a label such as ``jt_long`` of defense ``jt``)."""
    if "defense_id" not in data or "defense" not in data:
        return {}
    pairs = data[["defense", "defense_id"]].astype(str).drop_duplicates("defense")
    return dict(zip(pairs["defense"], pairs["defense_id"]))


def entry_styles(labels: Sequence[str], ids: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """A (colour, marker, line style) per entry, stable in the order given. The reference (JT) is black; the
    i-th entry of a family gets Okabe–Ito colour i mod 7 and marker i + 1 mod 10, so the entries of one family
    panel (at most :data:`MAX_PER_PANEL`, consecutive in their family) differ in colour, and any 70 entries of a
    family differ in (colour, marker)."""
    out: dict[str, dict[str, Any]] = {}
    reference = reference_entry(labels)
    seen: dict[str, int] = {}
    for label in labels:
        if label == reference:
            out[label] = {"color": REFERENCE_COLOUR, "marker": _MARKERS[0], "linestyle": "-"}
            continue
        group = family(label, (ids or {}).get(label))
        i = seen[group] = seen.get(group, -1) + 1
        out[label] = {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": _MARKERS[(i + 1) % len(_MARKERS)],
                      "linestyle": "-"}
    return out


def family_groups(labels: Sequence[str], ids: Mapping[str, str] | None = None) -> list[tuple[str, list[str]]]:
    """The entries as family panels, in :data:`reports.paper.FAMILIES` order (each family in the order given), at
    most :data:`MAX_PER_PANEL` per panel: a larger family becomes numbered parts, "other entries (2/3)"."""
    members: dict[str, list[str]] = {}
    for label in labels:
        members.setdefault(family(label, (ids or {}).get(label)), []).append(label)
    out = []
    for name in FAMILIES:
        group = members.get(name, [])
        parts = [group[i:i + MAX_PER_PANEL] for i in range(0, len(group), MAX_PER_PANEL)]
        out += [(name if len(parts) == 1 else f"{name} ({k}/{len(parts)})", part) for k, part in enumerate(parts, 1)]
    return out


def family_order(labels: Sequence[str], ids: Mapping[str, str] | None = None) -> list[str]:
    """``labels`` grouped by family (:func:`family_groups`), each family in the order given."""
    return [label for _, group in family_groups(labels, ids) for label in group]


def _legend_beside(ax: Any, handles: list, names: list[str], title: str) -> None:
    """A row's legend in its own (axis-less) cell right of the row's panels: never over the data."""
    ax.axis("off")
    ax.legend(handles, names, loc="center left", fontsize=MIN_FONT_PT, title=title, title_fontsize=MIN_FONT_PT,
              frameon=False, borderaxespad=0.0, handlelength=1.8, alignment="left")


def _sized_ticks(ax: Any) -> None:
    ax.tick_params(labelsize=MIN_FONT_PT, which="both")


def band_text(band: str, seeds: Sequence[int]) -> str:
    """What a band is, with the seed counts it rests on: "band: ± 1 sample std over 3 seeds"."""
    counts = sorted({int(n) for n in seeds if n})
    n = "?" if not counts else (str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}")
    if band == "ci95":
        return f"band: 95% t-interval of the mean over {n} seeds"
    return f"band: mean ± 1 sample std over {n} seeds"


def _check_band(band: str) -> None:
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; valid: {', '.join(BANDS)}")


def _stamp(fig: Figure, command: str) -> None:
    fig.text(0.005, 0.003, f"made by: {command}", fontsize=MIN_FONT_PT, color="gray", ha="left", va="bottom")


def _curve(rows: pd.DataFrame, clean: pd.DataFrame, band: str = "std") -> pd.DataFrame:
    """Per ε: mean over seeds, band edges (``lo``/``hi``) and seed count; clean accuracy at ε = 0 when absent."""
    per_seed = rows.groupby(["eps", "seed"])["accuracy"].mean().reset_index()
    if not clean.empty and not np.isclose(per_seed["eps"], 0).any():
        base = clean.groupby("seed")["accuracy"].mean().reset_index().assign(eps=0.0)
        per_seed = pd.concat([per_seed, base[["eps", "seed", "accuracy"]]], ignore_index=True)
    out = []
    for eps, group in per_seed.groupby("eps"):
        s = summarize(group["accuracy"])
        if band == "ci95":
            lo, hi = (s.ci_low, s.ci_high) if s.n > 1 else (s.mean, s.mean)
        else:
            spread = s.std if s.n > 1 else 0.0
            lo, hi = s.mean - spread, s.mean + spread
        out.append({"eps": float(eps), "mean": s.mean, "lo": lo, "hi": hi, "n": s.n})
    return pd.DataFrame(out, columns=["eps", "mean", "lo", "hi", "n"]).sort_values("eps")


def _prepare(rows: pd.DataFrame, dataset: str | None) -> tuple[pd.DataFrame, str]:
    if rows.empty:
        raise ValueError("no result rows to plot")
    rows, _ = resolve_entries(rows)
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


def _where(mod: str) -> str:
    return "all modalities\n(joint ℓ2 ball)" if mod == ALL else plot_text(modality_name(mod))


def figure1(rows: pd.DataFrame, *, command: str = "", attack: str = "pgd_l2", dataset: str | None = None,
            defenses: Sequence[str] | None = None, band: str = "std", stamp: bool = False) -> Figure:
    """Accuracy vs radius of ``attack``, full width: a column per attacked modality (single ones, then ``all``),
    a row per family panel (:func:`family_groups`) with JT dashed in black as the reference, each row's legend
    beside it."""
    _check_band(band)
    data, dataset = _prepare(rows, dataset)
    attacked = data[data["attack"] == attack]
    if attacked.empty:
        raise ValueError(f"no {attack} rows for dataset {dataset!r}")
    mods = single_modalities(attacked) + ([ALL] if (attacked["modality"] == ALL).any() else [])
    labels = _labels(attacked, defenses)
    ids = defense_ids(data)
    styles = entry_styles(labels, ids)
    groups = family_groups(labels, ids)
    reference = reference_entry(labels)
    fig, axes = plt.subplots(len(groups), len(mods) + 1, figsize=(FULL_WIDTH, ROW_HEIGHT * len(groups) + 0.7),
                             squeeze=False, sharex="col", sharey=True, layout="constrained",
                             width_ratios=[1.0] * len(mods) + [LEGEND_RATIO])
    name = "ℓ2-PGD" if attack == "pgd_l2" else plot_text(attack)
    seeds: list[int] = []
    for r, (row, (group, members)) in enumerate(zip(axes, groups)):
        shown = members + ([reference] if reference is not None and reference not in members else [])
        handles: dict[str, Any] = {}
        for ax, mod in zip(row, mods):
            for label in shown:
                part = attacked[(attacked["defense"].astype(str) == label) & (attacked["modality"] == mod)]
                if part.empty:
                    continue
                clean = data[(data["defense"].astype(str) == label) & (data["attack"] == "clean")]
                stats = _curve(part, clean, band)
                st = styles[label]
                if label in members:
                    seeds += list(stats["n"])
                    (line,) = ax.plot(stats["eps"], stats["mean"], ms=3, lw=1.2, label=label, **st)
                    ax.fill_between(stats["eps"], stats["lo"], stats["hi"], color=st["color"], alpha=0.12, lw=0)
                else:  # the reference: dashed, no band, under the family's lines
                    (line,) = ax.plot(stats["eps"], stats["mean"], ms=2.5, lw=1.0, zorder=1.5, label=label,
                                      **{**st, "linestyle": "--"})
                handles.setdefault(label, line)
            if r == 0:
                ax.set_title(f"{name} on {_where(mod)}", fontsize=TITLE_PT)
            ax.grid(alpha=0.3)
            ax.set_ylim(-0.02, 1.02)
            _sized_ticks(ax)
        row[0].set_ylabel("accuracy", fontsize=MIN_FONT_PT)
        names = [plot_text(display_name(lab), LEGEND_CHARS) + ("" if lab in members else " (reference)")
                 for lab in handles]
        _legend_beside(row[-1], list(handles.values()), names, title=plot_text(group))
    for ax in axes[-1][:-1]:
        ax.set_xlabel("ℓ2 radius ε", fontsize=MIN_FONT_PT)
    fig.supxlabel(f"ε in model-input space; line: mean over seeds; {band_text(band, seeds)}", fontsize=MIN_FONT_PT)
    fig.suptitle(f"{plot_text(dataset)}: accuracy vs {name} radius", fontsize=TITLE_PT)
    if stamp:
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


def _eta_symbol(modality: str) -> str:
    """η of a modality in mathtext; a name with characters mathtext would parse is shown by its letters and digits."""
    name = re.sub(r"[^A-Za-z0-9]", "", str(modality))[:MAX_SHOWN] or "?"
    return rf"\eta^{{(\mathrm{{{name}}})}}"


def figure3(pairs: pd.DataFrame, *, command: str = "", dataset: str | None = None,
            defenses: Sequence[str] | None = None, column: str = "eta_pair", modalities: tuple[str, str] | None = None,
            stamp: bool = False) -> Figure:
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
        from .entries import base_label
        labels = [p for d in FIGURE3_DEFENSES for p in present if base_label(p) == d] or paper_row_order(present)
    mods = modalities or tuple([m for m in ("v", "a") if m in set(data["modality"])] or sorted(set(data["modality"])))[:2]
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
    fig, axes = plt.subplots(nrows, cols, figsize=(FULL_WIDTH, FULL_WIDTH / (cols + 0.6) * nrows + 1.1),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(labels):]:
        ax.set_visible(False)
    image = None
    k = mats[0].shape[0]
    summary = eta_ratio_per_defense(data, num, den, column).set_index("defense")
    for ax, lab, mat in zip(axes.flat, labels, mats):
        image = ax.imshow(np.where(mat > 0, mat, np.nan), cmap=cmap, norm=norm)
        mean, std, seeds = (summary.loc[lab, c] if lab in summary.index else math.nan
                            for c in ("ratio_mean", "ratio_std", "seeds"))
        spread = "" if not np.isfinite(std) else f" ± {std:#.2g}"
        ax.set_title(f"{plot_text(display_name(lab), LEGEND_CHARS)}\nratio {mean:#.3g}{spread}, "
                     f"{0 if not np.isfinite(seeds) else int(seeds)} seeds", fontsize=MIN_FONT_PT)
        ticks = list(range(0, k, math.ceil(k / 6)))  # integers, at most 6 per axis: readable at 7 pt
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.tick_params(labelsize=MIN_FONT_PT)
        ax.set_xlabel("class j", fontsize=8)
        ax.set_ylabel("class y", fontsize=8)
    symbol = rf"${_eta_symbol(num)} / {_eta_symbol(den)}$"
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85)
        bar.set_label(f"{symbol}  ({plot_text(modality_name(num))} / {plot_text(modality_name(den))})\n"
                      "the paper's Figure 3 orientation, log scale", fontsize=8)
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if hi / lo < 20 else ""))
        bar.ax.tick_params(labelsize=MIN_FONT_PT, which="both")
    fig.suptitle(f"{plot_text(dataset)}: vulnerability ratio {symbol} (the paper's Figure 3 orientation) per class "
                 f"pair (y, j), mean over seeds\npanel titles: {ETA_RATIO_AGGREGATION} (± std)\nempirical "
                 f"(gradient-based Lipschitz estimates, {column}); 1 = balanced", fontsize=TITLE_PT)
    if stamp:
        _stamp(fig, command)
    return fig


def figure4(rows: pd.DataFrame, *, command: str = "", attack: str = "pgd_l2", dataset: str | None = None,
            defenses: Sequence[str] | None = None, band: str = "std", stamp: bool = False) -> Figure:
    """Uni-modal robust accuracy vs radius per entry (full width, entries by family), a seed band per modality, the
    gap between them shaded; the legend below the panels."""
    _check_band(band)
    data, dataset = _prepare(rows, dataset)
    attacked = data[data["attack"] == attack]
    mods = single_modalities(attacked)
    if len(mods) < 2:
        raise ValueError(f"Figure 4 needs {attack} rows on at least two single modalities for {dataset!r}")
    mods = mods[:2]
    labels = _labels(attacked[attacked["modality"].isin(mods)], defenses)
    labels = labels if defenses else family_order(labels, defense_ids(data))
    cols = min(PANELS_PER_ROW, len(labels))
    nrows = math.ceil(len(labels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(FULL_WIDTH, 1.45 * nrows + 0.9), squeeze=False, sharey=True,
                             sharex=True, layout="constrained")
    for ax in axes.flat[len(labels):]:
        ax.set_visible(False)
    colours = {m: _MODALITY_COLOURS.get(m, c) for m, c in zip(mods, ("#0072B2", "#D55E00"))}
    markers = dict(zip(mods, ("o", "s")))
    seeds: list[int] = []
    for ax, label in zip(axes.flat, labels):
        clean = data[(data["defense"].astype(str) == label) & (data["attack"] == "clean")]
        curves = {}
        for mod in mods:
            part = attacked[(attacked["defense"].astype(str) == label) & (attacked["modality"] == mod)]
            if part.empty:
                continue
            c = curves[mod] = _curve(part, clean, band)
            seeds += list(c["n"])
            ax.plot(c["eps"], c["mean"], color=colours[mod], marker=markers[mod], ms=2.5, lw=1.1)
            ax.fill_between(c["eps"], c["lo"], c["hi"], color=colours[mod], alpha=0.18, lw=0)
        if len(curves) == 2:
            a, b = (curves[m].set_index("eps")["mean"] for m in mods)
            common = a.index.intersection(b.index)
            ax.fill_between(common, a[common], b[common], facecolor="none", edgecolor="gray", hatch="///", lw=0,
                            alpha=0.5)
            gap = float((a[common] - b[common]).abs().mean()) if len(common) else math.nan
            ax.set_title(f"{plot_text(display_name(label), LEGEND_CHARS)}\nmean gap {gap:.2f}", fontsize=MIN_FONT_PT)
        else:
            ax.set_title(f"{plot_text(display_name(label), LEGEND_CHARS)}\n(one modality only)", fontsize=MIN_FONT_PT)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        _sized_ticks(ax)
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
    fig.legend(handles, names, loc="outside lower center", ncol=2, fontsize=MIN_FONT_PT, frameon=False)
    name = "ℓ2-PGD" if attack == "pgd_l2" else plot_text(attack)
    fig.suptitle(f"{plot_text(dataset)}: uni-modal {name} robust accuracy per entry and the gap between modalities",
                 fontsize=TITLE_PT)
    if stamp:
        _stamp(fig, command)
    return fig


def crmt_heads(rows: pd.DataFrame, *, dataset: str | None = None, checkpoints: Path | None = None,
               sweep: Mapping[str, Any] | None = None) -> dict[str, tuple[str, str]]:
    """``{label: (own_groups, source)}`` for the labels whose CRMT head is known: from the checkpoints'
    ``config.json`` (matched by the rows' checkpoint sha256; every model of the label must agree), else from an
    explicit ``own_groups`` in the sweep YAML's entry for the label (or its top-level ``set``), else the default
    the YAML's entry resolves to, when the YAML's dataset is the rows'. Labels with none are left out (their
    head is unknown)."""
    from .entries import base_label, find_checkpoint_configs, label_series

    out: dict[str, tuple[str, str]] = {}
    if rows.empty:
        return out
    data = rows if dataset is None else rows[rows["dataset"].astype(str) == dataset]
    labels = label_series(data).map(base_label)
    if checkpoints is not None and "checkpoint_sha256" in data:
        known = find_checkpoint_configs(Path(checkpoints), dataset)
        for label, shas in data["checkpoint_sha256"].astype(str).groupby(labels):
            values = {str((known[s].get("defense_config") or {}).get("own_groups")) if s in known else None
                      for s in set(shas)}
            if len(values) == 1 and None not in values and values != {"None"}:
                out[label] = (values.pop(), "checkpoint config.json")
    if sweep and (dataset is None or str(sweep.get("dataset", dataset)) == dataset):
        from ..bench.sweep import parse_defense_entry

        common = sweep.get("set") or {}
        present = set(labels)
        for item in sweep.get("defenses") or []:
            try:
                entry = parse_defense_entry(item)
            except ValueError:  # a malformed entry (the sweep itself refuses it) says nothing about a head
                continue
            if entry.label in out or entry.label not in present:
                continue
            pinned = {**(common if isinstance(common, Mapping) else {}), **entry.overrides}
            if "own_groups" in pinned:
                out[entry.label] = (str(pinned["own_groups"]), "pinned in the sweep YAML")
            elif (default := _default_own_groups(entry.defense, pinned)) is not None:
                out[entry.label] = (default, "the defense's default; the sweep YAML pins none")
    return out


def _default_own_groups(defense: str, overrides: Mapping[str, Any]) -> str | None:
    """The ``own_groups`` a sweep entry trains with when it pins none (the registered defense's default, as the
    installed suite resolves it), or None for a defense without a CRMT head or an entry the suite cannot build."""
    from ..defenses import build_defense

    try:
        defense_obj, _ = build_defense(defense, overrides)
    except (LookupError, ValueError, TypeError):
        return None
    own = getattr(defense_obj.config, "own_groups", None)
    return None if own is None else str(own)


def stage_names(ablation: Sequence[tuple[str, str]], heads: Mapping[str, tuple[str, str]] | None
                ) -> list[tuple[str, str]]:
    """The head-only stage named after its head when ``heads`` knows it (``"unit-row head only"``)."""
    out = []
    for name, label in ablation:
        own = (heads or {}).get(label)
        if name == HEAD_ONLY_STAGE and own is not None and own[0] in HEAD_NAMES:
            name = f"{HEAD_NAMES[own[0]]} only"
        out.append((name, label))
    return out


def figure5(rows: pd.DataFrame, *, command: str = "", dataset: str | None = None,
            ablation: Sequence[tuple[str, str]] = DEFAULT_ABLATION, eps: float = 0.5, band: str = "std",
            stamp: bool = False, heads: Mapping[str, tuple[str, str]] | None = None) -> Figure:
    """One panel per setting (clean, FGM and ℓ2-PGD on all modalities at ``eps``), the ablation stages on x:
    each seed a dot, the mean ± band as an error bar, each panel's y axis zoomed to its values. ``heads``
    (:func:`crmt_heads`) names the head-only stage after its head and the title says which head."""
    _check_band(band)
    data, dataset = _prepare(rows, dataset)
    present = set(data["defense"].astype(str))
    ablation = stage_names(ablation, heads)
    stages = [(name, label) for name, label in ablation if label in present]
    missing = [label for _, label in ablation if label not in present]
    if len(stages) < 2:
        raise ValueError(f"no ablation rows for {dataset!r}: needs at least two of the labels "
                         f"{', '.join(lab for _, lab in ablation)}; have {', '.join(lab for _, lab in stages) or 'none'}")
    settings = [("clean", "clean", "none", 0.0), (f"FGM, all modalities, ε={eps:g}", "fgm", ALL, eps),
                (f"ℓ2-PGD, all modalities, ε={eps:g}", "pgd_l2", ALL, eps)]
    fig, axes = plt.subplots(1, len(settings), figsize=(FULL_WIDTH, 4.0), squeeze=False, layout="constrained")
    styles = entry_styles([label for _, label in stages])
    x = np.arange(len(stages))
    seeds: list[int] = []
    drawn = 0
    for ax, (title, attack, mod, e) in zip(axes[0], settings):
        values = []
        for i, (_, label) in enumerate(stages):
            part = data[(data["defense"].astype(str) == label) & (data["attack"] == attack)
                        & (data["modality"].astype(str) == mod) & np.isclose(data["eps"].astype(float), e)]
            per_seed = part.groupby("seed")["accuracy"].mean()
            if per_seed.empty:
                continue
            s = summarize(per_seed)
            seeds.append(s.n)
            st = styles[label]
            lo, hi = ((s.ci_low, s.ci_high) if band == "ci95" else (s.mean - s.std, s.mean + s.std)) if s.n > 1 \
                else (s.mean, s.mean)
            ax.errorbar([i], [s.mean], yerr=[[s.mean - lo], [hi - s.mean]], color=st["color"], marker=st["marker"],
                        ms=5, capsize=3, lw=1.2)
            ax.scatter(np.full(len(per_seed), i) + np.linspace(-0.12, 0.12, len(per_seed)), per_seed.values,
                       s=9, color="black", alpha=0.55, zorder=3)
            values += [lo, hi, *per_seed.values]
            drawn += 1
        if values:
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            pad = max(0.01, 0.12 * (high - low))
            ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
        else:
            ax.text(0.5, 0.5, "no rows", transform=ax.transAxes, ha="center", va="center", color="gray")
        ticks = [plot_text(name) + (f"\n({plot_text(label)})" if name != label else "") for name, label in stages]
        ax.set_xticks(x, ticks, fontsize=MIN_FONT_PT, rotation=90, ha="center", linespacing=1.0)
        ax.set_xlim(-0.5, len(stages) - 0.5)
        ax.set_title(title, fontsize=TITLE_PT)
        ax.grid(alpha=0.3, axis="y")
        _sized_ticks(ax)
    if not drawn:
        plt.close(fig)
        raise ValueError(f"no clean / FGM / PGD rows at ε={eps:g} for the ablation stages of {dataset!r}")
    axes[0][0].set_ylabel("accuracy (axis zoomed per panel)", fontsize=MIN_FONT_PT)
    handles = [Line2D([], [], color="gray", marker="o", ms=5), Line2D([], [], ls="", color="black", marker=".")]
    fig.legend(handles, [band_text(band, seeds).removeprefix("band: "), "one seed"], loc="outside lower center",
               ncol=2, fontsize=MIN_FONT_PT, frameon=False)
    note = f" (not in the rows: {plot_text(', '.join(missing), MAX_TITLE)})" if missing else ""
    shown = {(heads or {})[label] for _, label in stages if label in (heads or {})}
    if len({own for own, _ in shown}) == 1:
        own, source = sorted(shown)[0]
        own = plot_text(own)
        note += f"\nthe CRMT stages use the {HEAD_NAMES.get(own, own)} (own_groups={own}, {source})"
    fig.suptitle(f"{plot_text(dataset)}: CRMT ablation{note}", fontsize=TITLE_PT)
    if stamp:
        _stamp(fig, command)
    return fig


def figure_metadata(fmt: str, *, command: str, description: str) -> dict[str, str]:
    """What each format can hold: PNG text chunks, PDF info dictionary, SVG Dublin Core."""
    made = f"made by: {command}"
    if fmt == "png":
        return {"Title": description, "Software": f"mmrobust-bench {__version__}", "Source": command,
                "Comment": made}
    if fmt == "pdf":
        return {"Title": description, "Subject": made, "Creator": f"mmrobust-bench {__version__}"}
    if fmt == "svg":
        return {"Title": description, "Description": made, "Creator": f"mmrobust-bench {__version__}"}
    return {}


def figure_formats(fmt: str | Sequence[str]) -> list[str]:
    """``"pdf,png"`` or ``["pdf", "png"]`` → the formats, checked against :data:`IMAGE_FORMATS`."""
    names = [f.strip().lower() for f in (fmt.split(",") if isinstance(fmt, str) else fmt) if f.strip()]
    unknown = [f for f in names if f not in IMAGE_FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown figure format {', '.join(unknown) or repr(fmt)}; valid: {', '.join(IMAGE_FORMATS)} "
                         "(comma-separated, e.g. pdf,png)")
    return list(dict.fromkeys(names))


def save_figure(fig: Figure, path: str | Path, *, command: str, description: str, stamp: bool = False,
                formats: Sequence[str] = ()) -> SavedFigure:
    """Write ``fig`` to ``path`` (format from the suffix) and beside it in each of ``formats`` (same stem), each with
    the command in its metadata and a ``<file>.txt`` naming the command and what the figure shows; all atomic.
    At :data:`DPI` and the figure's own size, never cropped: a figure made :data:`FULL_WIDTH` wide is that wide
    on the page. ``stamp`` also draws the command on the canvas."""
    path = Path(path)
    first = path.suffix.lstrip(".") or "png"
    if stamp and not any(t.get_text().startswith("made by:") for t in fig.texts):
        _stamp(fig, command)
    written, sidecars = [], []
    for fmt in dict.fromkeys([first, *formats]):
        target = path if fmt == first else path.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=figure_metadata(fmt, command=command,
                                                                           description=description))
        sidecar = target.with_name(target.name + ".txt")
        atomic_write_text(sidecar, f"{description}\nmade by: {command}\n")
        written.append(target)
        sidecars.append(sidecar)
    plt.close(fig)
    return SavedFigure(0, written[0], sidecars[0], written)


def plot_figures(rows: pd.DataFrame, out_dir: str | Path, *, command: str, eta_pairs: pd.DataFrame | None = None,
                 figures: Sequence[int] = (1, 3, 4, 5), attack: str = "pgd_l2",
                 ablation: Sequence[tuple[str, str]] = DEFAULT_ABLATION, fmt: str | Sequence[str] = FORMATS,
                 datasets: Sequence[str] | None = None, band: str = "std", stamp: bool = False,
                 checkpoints: Path | None = None,
                 sweep: Mapping[str, Any] | None = None) -> tuple[list[SavedFigure], list[str]]:
    """Draw every requested figure for every dataset, in every format of ``fmt`` (default PDF and PNG); returns
    (saved files, notes on figures skipped). ``checkpoints`` / ``sweep`` (a loaded sweep YAML) tell Figure 5 which
    CRMT head its rows have."""
    unknown = sorted(set(figures) - set(DESCRIPTIONS))
    if unknown:
        raise ValueError(f"unknown figure {', '.join(map(str, unknown))}; valid: {', '.join(map(str, DESCRIPTIONS))}")
    _check_band(band)
    formats = figure_formats(fmt)
    from .entries import mixed_labels

    split = mixed_labels(rows, eta_pairs)
    rows, _ = resolve_entries(rows, split=split)
    if eta_pairs is not None:
        eta_pairs, _ = resolve_entries(eta_pairs, split=split)
    out_dir = Path(out_dir)
    saved, notes = [], []
    names = list(datasets or sorted(set(rows["dataset"].astype(str)) if not rows.empty else []))
    if 3 in figures and eta_pairs is not None and not eta_pairs.empty and not datasets:
        names += [d for d in sorted(eta_pairs["dataset"].astype(str).unique()) if d not in names]
    for dataset in names:
        for number in figures:
            try:
                if number == 1:
                    fig = figure1(rows, command=command, attack=attack, dataset=dataset, band=band)
                elif number == 3:
                    fig = figure3(eta_pairs if eta_pairs is not None else pd.DataFrame(), command=command,
                                  dataset=dataset)
                elif number == 4:
                    fig = figure4(rows, command=command, attack=attack, dataset=dataset, band=band)
                else:
                    heads = crmt_heads(rows, dataset=dataset, checkpoints=checkpoints, sweep=sweep)
                    fig = figure5(rows, command=command, dataset=dataset, ablation=ablation, band=band, heads=heads)
            except (ValueError, KeyError) as exc:
                notes.append(f"figure {number} ({dataset}) skipped: {exc}")
                continue
            item = save_figure(fig, output_path(out_dir, f"figure{number}-{slug(dataset)}.{formats[0]}"),
                               command=command, description=f"{DESCRIPTIONS[number]} — {dataset}", stamp=stamp,
                               formats=formats[1:])
            item.number = number
            saved.append(item)
    return saved, notes


def parse_ablation(text: str) -> list[tuple[str, str]]:
    """``"JT=jt,Head only=crmt_jt_orth_only"`` → [(stage, label), ...]."""
    out = []
    for part in [p for p in text.split(",") if p.strip()]:
        if "=" not in part:
            raise ValueError(f"--ablation expects STAGE=LABEL pairs separated by commas, got {part!r}")
        name, label = part.split("=", 1)
        out.append((name.strip(), label.strip()))
    return out


__all__ = ["BANDS", "DEFAULT_ABLATION", "DESCRIPTIONS", "DPI", "FIGURE3_DEFENSES", "FORMATS", "FULL_WIDTH",
           "HEAD_NAMES", "HEAD_ONLY_STAGE", "MAX_PER_PANEL", "MIN_FONT_PT", "OKABE_ITO", "SINGLE_COLUMN", "SavedFigure",
           "band_text", "crmt_heads", "defense_ids", "entry_styles", "family_groups", "family_order", "figure_formats",
           "plot_text", "reference_entry", "stage_names",
           "eta_ratio_matrix", "figure1", "figure3", "figure4", "figure5", "figure_metadata", "parse_ablation",
           "plot_figures", "save_figure"]
