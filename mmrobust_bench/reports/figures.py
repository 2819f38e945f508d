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
- a point that rests on a row with a validity flag (a seed's row at that radius; in Figure 5 a seed's dot) is
  ringed (``figure_style.FLAG_RING``), and the legend or caption explains the ring when one is drawn: the ⚑ of
  the tables, on the curves;
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

The rooms: ``figure_style`` (sizes, colours, panels, bands, saving), ``figure_curves`` (Figures 1 and 4),
``figure_eta`` (Figure 3), ``figure_ablation`` (Figure 5); this module draws them all (:func:`plot_figures`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .entries import mixed_labels, resolve_entries
from .figure_ablation import (
    DEFAULT_ABLATION,
    HEAD_NAMES,
    HEAD_ONLY_STAGE,
    crmt_heads,
    figure5,
    parse_ablation,
    stage_names,
)
from .figure_curves import figure1, figure4
from .figure_eta import FIGURE3_DEFENSES, eta_ratio_matrix, figure3
from .figure_style import (
    BANDS,
    DPI,
    FORMATS,
    FULL_WIDTH,
    IMAGE_FORMATS,
    LEGEND_CHARS,
    LEGEND_RATIO,
    MAX_PER_PANEL,
    MAX_SHOWN,
    MAX_TITLE,
    MIN_FONT_PT,
    OKABE_ITO,
    REFERENCE_COLOUR,
    ROW_HEIGHT,
    SINGLE_COLUMN,
    TITLE_PT,
    SavedFigure,
    band_text,
    check_band,
    entry_styles,
    family_groups,
    family_order,
    figure_formats,
    figure_metadata,
    plot_text,
    reference_entry,
    save_figure,
)
from .paths import output_path, slug

DESCRIPTIONS = {
    1: "Figure 1: accuracy vs ℓ2-PGD radius on each attacked modality, per entry "
    "(line: mean over seeds; band: see legend)",
    3: "Figure 3: vulnerability-indicator ratio between modalities per class pair (y, j), per entry, mean over seeds; "
    "empirical (gradient-based Lipschitz estimates)",
    4: "Figure 4: uni-modal robust accuracy vs radius, per entry, with seed bands "
    "and the gap between modalities shaded",
    5: "Figure 5: CRMT ablation — clean and multi-modal FGM / ℓ2-PGD accuracy at ε = 0.5 "
    "(dots: seeds; bar: mean ± band)",
}


def plot_figures(
    rows: pd.DataFrame,
    out_dir: str | Path,
    *,
    command: str,
    eta_pairs: pd.DataFrame | None = None,
    figures: Sequence[int] = (1, 3, 4, 5),
    attack: str = "pgd_l2",
    ablation: Sequence[tuple[str, str]] = DEFAULT_ABLATION,
    fmt: str | Sequence[str] = FORMATS,
    datasets: Sequence[str] | None = None,
    band: str = "std",
    stamp: bool = False,
    checkpoints: Path | None = None,
    sweep: Mapping[str, Any] | None = None,
) -> tuple[list[SavedFigure], list[str]]:
    """Draw every requested figure for every dataset, in every format of ``fmt`` (default PDF and PNG); returns
    (saved files, notes on figures skipped). ``checkpoints`` / ``sweep`` (a loaded sweep YAML) tell Figure 5 which
    CRMT head its rows have."""
    unknown = sorted(set(figures) - set(DESCRIPTIONS))
    if unknown:
        raise ValueError(f"unknown figure {', '.join(map(str, unknown))}; valid: {', '.join(map(str, DESCRIPTIONS))}")
    check_band(band)
    formats = figure_formats(fmt)
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
                    fig = figure3(
                        eta_pairs if eta_pairs is not None else pd.DataFrame(), command=command, dataset=dataset
                    )
                elif number == 4:
                    fig = figure4(rows, command=command, attack=attack, dataset=dataset, band=band)
                else:
                    heads = crmt_heads(rows, dataset=dataset, checkpoints=checkpoints, sweep=sweep)
                    fig = figure5(rows, command=command, dataset=dataset, ablation=ablation, band=band, heads=heads)
            except (ValueError, KeyError) as exc:
                notes.append(f"figure {number} ({dataset}) skipped: {exc}")
                continue
            item = save_figure(
                fig,
                output_path(out_dir, f"figure{number}-{slug(dataset)}.{formats[0]}"),
                command=command,
                description=f"{DESCRIPTIONS[number]} — {dataset}",
                stamp=stamp,
                formats=formats[1:],
            )
            item.number = number
            saved.append(item)
    return saved, notes


__all__ = [
    "BANDS",
    "DEFAULT_ABLATION",
    "DESCRIPTIONS",
    "DPI",
    "FIGURE3_DEFENSES",
    "FORMATS",
    "FULL_WIDTH",
    "HEAD_NAMES",
    "HEAD_ONLY_STAGE",
    "IMAGE_FORMATS",
    "LEGEND_CHARS",
    "LEGEND_RATIO",
    "MAX_PER_PANEL",
    "MAX_SHOWN",
    "MAX_TITLE",
    "MIN_FONT_PT",
    "OKABE_ITO",
    "REFERENCE_COLOUR",
    "ROW_HEIGHT",
    "SINGLE_COLUMN",
    "TITLE_PT",
    "SavedFigure",
    "band_text",
    "check_band",
    "crmt_heads",
    "entry_styles",
    "eta_ratio_matrix",
    "family_groups",
    "family_order",
    "figure1",
    "figure3",
    "figure4",
    "figure5",
    "figure_formats",
    "figure_metadata",
    "parse_ablation",
    "plot_figures",
    "plot_text",
    "reference_entry",
    "save_figure",
    "stage_names",
]
