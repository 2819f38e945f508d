"""What every figure shares: sizes for a paper, colours and markers per entry, family panels, seed bands, literal
text, and saving with the command in the metadata and a sidecar (the conventions of ``reports.figures``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .._version import __version__
from ..io import atomic_path, atomic_write_text
from .entries import base_label, resolve_entries
from .paper import FAMILIES, REFERENCE, family
from .stats import modality_name, summarize
from .table_cells import ALL, choose_attack_configs, paper_row_order

PANELS_PER_ROW = 5
HEATMAPS_PER_ROW = 3  # Figure 3 at full width: square panels large enough for a 10 × 10 class grid
BANDS = ("std", "ci95")

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
MODALITY_COLOURS = {"a": "#D55E00", "v": "#0072B2"}
# a point resting on a row with a validity flag gets a ring (a shape, so it reads without colour): the alarm
# every table shows as ⚑ shows on the curves too
FLAG_RING: dict[str, Any] = {
    "marker": "o",
    "s": 42,
    "facecolors": "none",
    "edgecolors": "#C00000",
    "linewidths": 1.0,
    "zorder": 5,
}
FLAG_NOTE = "ring: a seed's row carries a validity flag (bench/flags.py)"


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
        shown = shown[: limit - 1] + "…"
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
        out[label] = {
            "color": OKABE_ITO[i % len(OKABE_ITO)],
            "marker": _MARKERS[(i + 1) % len(_MARKERS)],
            "linestyle": "-",
        }
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
        parts = [group[i : i + MAX_PER_PANEL] for i in range(0, len(group), MAX_PER_PANEL)]
        out += [(name if len(parts) == 1 else f"{name} ({k}/{len(parts)})", part) for k, part in enumerate(parts, 1)]
    return out


def family_order(labels: Sequence[str], ids: Mapping[str, str] | None = None) -> list[str]:
    """``labels`` grouped by family (:func:`family_groups`), each family in the order given."""
    return [label for _, group in family_groups(labels, ids) for label in group]


def legend_beside(ax: Any, handles: list, names: list[str], title: str) -> None:
    """A row's legend in its own (axis-less) cell right of the row's panels: never over the data."""
    ax.axis("off")
    ax.legend(
        handles,
        names,
        loc="center left",
        fontsize=MIN_FONT_PT,
        title=title,
        title_fontsize=MIN_FONT_PT,
        frameon=False,
        borderaxespad=0.0,
        handlelength=1.8,
        alignment="left",
    )


def sized_ticks(ax: Any) -> None:
    ax.tick_params(labelsize=MIN_FONT_PT, which="both")


def band_text(band: str, seeds: Sequence[int]) -> str:
    """What a band is, with the seed counts it rests on: "band: ± 1 sample std over 3 seeds"."""
    counts = sorted({int(n) for n in seeds if n})
    n = "?" if not counts else (str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}")
    if band == "ci95":
        return f"band: 95% t-interval of the mean over {n} seeds"
    return f"band: mean ± 1 sample std over {n} seeds"


def check_band(band: str) -> None:
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; valid: {', '.join(BANDS)}")


def draw_command(fig: Figure, command: str) -> None:
    fig.text(0.005, 0.003, f"made by: {command}", fontsize=MIN_FONT_PT, color="gray", ha="left", va="bottom")


def flagged_rows(rows: pd.DataFrame) -> pd.Series:
    """Whether each row carries a validity flag (a non-empty ``flags`` cell)."""
    if "flags" not in rows:
        return pd.Series(False, index=rows.index)
    return rows["flags"].map(lambda v: isinstance(v, str) and bool(v.strip()))


def flagged_eps(rows: pd.DataFrame, clean: pd.DataFrame | None = None) -> set[float]:
    """The radii at which a seed's row of ``rows`` is flagged; 0 too when a clean row is flagged and ``rows`` have
    no ε = 0 of their own (the curve takes its ε = 0 point from the clean rows, :func:`seed_curve`)."""
    out = {float(e) for e in rows.loc[flagged_rows(rows), "eps"]}
    if clean is not None and not np.isclose(rows["eps"].astype(float), 0).any() and flagged_rows(clean).any():
        out.add(0.0)
    return out


def ring_flagged(ax: Any, curve: pd.DataFrame, eps: set[float]) -> bool:
    """Ring the points of ``curve`` (``seed_curve``'s frame) at the flagged radii ``eps``; whether any was ringed."""
    at = curve[[any(np.isclose(e, f) for f in eps) for e in curve["eps"]]]
    if not at.empty:
        ax.scatter(at["eps"], at["mean"], **FLAG_RING)
    return not at.empty


def flag_handle() -> Any:
    """The legend's ring (:data:`FLAG_RING`)."""
    from matplotlib.lines import Line2D

    ring = FLAG_RING
    return Line2D(
        [], [], ls="", marker="o", ms=6.5, markerfacecolor="none", markeredgecolor=ring["edgecolors"], mew=1.0
    )


def seed_curve(rows: pd.DataFrame, clean: pd.DataFrame, band: str = "std") -> pd.DataFrame:
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


def dataset_rows(rows: pd.DataFrame, dataset: str | None) -> tuple[pd.DataFrame, str]:
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


def entry_labels(data: pd.DataFrame, defenses: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(data["defense"].astype(str)))
    return [d for d in defenses if d in present] if defenses else paper_row_order(present)


def attacked_title(mod: str) -> str:
    return "all modalities\n(joint ℓ2 ball)" if mod == ALL else plot_text(modality_name(mod))


def figure_metadata(fmt: str, *, command: str, description: str) -> dict[str, str | None]:
    """What each format can hold: PNG text chunks, PDF info dictionary, SVG Dublin Core. No creation date (a PDF
    would otherwise get one): the same rows and command give the same bytes, so a regenerated figure shows up as
    changed only when it is."""
    made = f"made by: {command}"
    if fmt == "png":
        return {"Title": description, "Software": f"mmrobust-bench {__version__}", "Source": command, "Comment": made}
    if fmt == "pdf":
        return {"Title": description, "Subject": made, "Creator": f"mmrobust-bench {__version__}", "CreationDate": None}
    if fmt == "svg":
        return {"Title": description, "Description": made, "Creator": f"mmrobust-bench {__version__}"}
    return {}


def figure_formats(fmt: str | Sequence[str]) -> list[str]:
    """``"pdf,png"`` or ``["pdf", "png"]`` → the formats, checked against :data:`IMAGE_FORMATS`."""
    names = [f.strip().lower() for f in (fmt.split(",") if isinstance(fmt, str) else fmt) if f.strip()]
    unknown = [f for f in names if f not in IMAGE_FORMATS]
    if unknown or not names:
        raise ValueError(
            f"unknown figure format {', '.join(unknown) or repr(fmt)}; valid: {', '.join(IMAGE_FORMATS)} "
            "(comma-separated, e.g. pdf,png)"
        )
    return list(dict.fromkeys(names))


def save_figure(
    fig: Figure, path: str | Path, *, command: str, description: str, stamp: bool = False, formats: Sequence[str] = ()
) -> SavedFigure:
    """Write ``fig`` to ``path`` (format from the suffix) and beside it in each of ``formats`` (same stem), each with
    the command in its metadata and a ``<file>.txt`` naming the command and what the figure shows; all atomic.
    At :data:`DPI` and the figure's own size, never cropped: a figure made :data:`FULL_WIDTH` wide is that wide
    on the page. ``stamp`` also draws the command on the canvas."""
    path = Path(path)
    first = path.suffix.lstrip(".") or "png"
    if stamp and not any(t.get_text().startswith("made by:") for t in fig.texts):
        draw_command(fig, command)
    written, sidecars = [], []
    for fmt in dict.fromkeys([first, *formats]):
        target = path if fmt == first else path.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            fig.savefig(
                tmp, format=fmt, dpi=DPI, metadata=figure_metadata(fmt, command=command, description=description)
            )
        sidecar = target.with_name(target.name + ".txt")
        atomic_write_text(sidecar, f"{description}\nmade by: {command}\n")
        written.append(target)
        sidecars.append(sidecar)
    plt.close(fig)
    return SavedFigure(0, written[0], sidecars[0], written)
