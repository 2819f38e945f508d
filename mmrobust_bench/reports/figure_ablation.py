"""Figure 5: the CRMT ablation (JT, head only, step 1 only, step 2 only, full CRMT), with the head-only stage named
after the head its rows were trained with (``crmt_heads``); conventions in ``reports.figures``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..bench.naming import label_series
from ..bench.sweep_config import parse_defense_entry
from ..defenses import build_defense
from .entries import base_label, find_checkpoint_configs
from .figure_style import (
    FLAG_NOTE,
    FLAG_RING,
    FULL_WIDTH,
    MAX_TITLE,
    MIN_FONT_PT,
    TITLE_PT,
    band_text,
    check_band,
    dataset_rows,
    draw_command,
    entry_styles,
    flag_handle,
    flagged_rows,
    plot_text,
    sized_ticks,
)
from .stats import summarize
from .table_cells import ALL

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


def crmt_heads(
    rows: pd.DataFrame,
    *,
    dataset: str | None = None,
    checkpoints: Path | None = None,
    sweep: Mapping[str, Any] | None = None,
) -> dict[str, tuple[str, str]]:
    """``{label: (own_groups, source)}`` for the labels whose CRMT head is known: from the checkpoints'
    ``config.json`` (matched by the rows' checkpoint sha256; every model of the label must agree), else from an
    explicit ``own_groups`` in the sweep YAML's entry for the label (or its top-level ``set``), else the default
    the YAML's entry resolves to, when the YAML's dataset is the rows'. Labels with none are left out (their
    head is unknown)."""
    out: dict[str, tuple[str, str]] = {}
    if rows.empty:
        return out
    data = rows if dataset is None else rows[rows["dataset"].astype(str) == dataset]
    labels = label_series(data).map(base_label)
    if checkpoints is not None and "checkpoint_sha256" in data:
        known = find_checkpoint_configs(Path(checkpoints), dataset)
        for label, shas in data["checkpoint_sha256"].astype(str).groupby(labels):
            values = {
                str((known[s].get("defense_config") or {}).get("own_groups")) if s in known else None for s in set(shas)
            }
            if len(values) == 1 and None not in values and values != {"None"}:
                out[label] = (values.pop(), "checkpoint config.json")
    if sweep and (dataset is None or str(sweep.get("dataset", dataset)) == dataset):
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
    try:
        defense_obj, _ = build_defense(defense, overrides)
    except (LookupError, ValueError, TypeError):
        return None
    own = getattr(defense_obj.config, "own_groups", None)
    return None if own is None else str(own)


def stage_names(
    ablation: Sequence[tuple[str, str]], heads: Mapping[str, tuple[str, str]] | None
) -> list[tuple[str, str]]:
    """The head-only stage named after its head when ``heads`` knows it (``"unit-row head only"``)."""
    out = []
    for name, label in ablation:
        own = (heads or {}).get(label)
        if name == HEAD_ONLY_STAGE and own is not None and own[0] in HEAD_NAMES:
            name = f"{HEAD_NAMES[own[0]]} only"
        out.append((name, label))
    return out


def figure5(
    rows: pd.DataFrame,
    *,
    command: str = "",
    dataset: str | None = None,
    ablation: Sequence[tuple[str, str]] = DEFAULT_ABLATION,
    eps: float = 0.5,
    band: str = "std",
    stamp: bool = False,
    heads: Mapping[str, tuple[str, str]] | None = None,
) -> Figure:
    """One panel per setting (clean, FGM and ℓ2-PGD on all modalities at ``eps``), the ablation stages on x:
    each seed a dot (ringed when its row is flagged), the mean ± band as an error bar, each panel's y axis zoomed to
    its values. ``heads`` (:func:`crmt_heads`) names the head-only stage after its head and the title says which
    head."""
    check_band(band)
    data, dataset = dataset_rows(rows, dataset)
    present = set(data["defense"].astype(str))
    ablation = stage_names(ablation, heads)
    stages = [(name, label) for name, label in ablation if label in present]
    missing = [label for _, label in ablation if label not in present]
    if len(stages) < 2:
        raise ValueError(
            f"no ablation rows for {dataset!r}: needs at least two of the labels "
            f"{', '.join(lab for _, lab in ablation)}; have {', '.join(lab for _, lab in stages) or 'none'}"
        )
    settings = [
        ("clean", "clean", "none", 0.0),
        (f"FGM, all modalities, ε={eps:g}", "fgm", ALL, eps),
        (f"ℓ2-PGD, all modalities, ε={eps:g}", "pgd_l2", ALL, eps),
    ]
    fig, axes = plt.subplots(1, len(settings), figsize=(FULL_WIDTH, 4.0), squeeze=False, layout="constrained")
    styles = entry_styles([label for _, label in stages])
    x = np.arange(len(stages))
    seeds: list[int] = []
    drawn = 0
    ringed = False
    for ax, (title, attack, mod, e) in zip(axes[0], settings):
        values = []
        for i, (_, label) in enumerate(stages):
            part = data[
                (data["defense"].astype(str) == label)
                & (data["attack"] == attack)
                & (data["modality"].astype(str) == mod)
                & np.isclose(data["eps"].astype(float), e)
            ]
            per_seed = part.groupby("seed")["accuracy"].mean()
            if per_seed.empty:
                continue
            s = summarize(per_seed)
            seeds.append(s.n)
            st = styles[label]
            lo, hi = (
                ((s.ci_low, s.ci_high) if band == "ci95" else (s.mean - s.std, s.mean + s.std))
                if s.n > 1
                else (s.mean, s.mean)
            )
            ax.errorbar(
                [i],
                [s.mean],
                yerr=[[s.mean - lo], [hi - s.mean]],
                color=st["color"],
                marker=st["marker"],
                ms=5,
                capsize=3,
                lw=1.2,
            )
            dots = np.full(len(per_seed), i) + np.linspace(-0.12, 0.12, len(per_seed))
            ax.scatter(dots, per_seed.values, s=9, color="black", alpha=0.55, zorder=3)
            flagged = per_seed.index.isin(part.loc[flagged_rows(part), "seed"])
            if flagged.any():
                ax.scatter(dots[flagged], per_seed.values[flagged], **FLAG_RING)
                ringed = True
            values += [lo, hi, *per_seed.values]
            drawn += 1
        if values:
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            pad = max(0.01, 0.12 * (high - low))
            # headroom past 0 and 1 (a quarter pad) so that markers at an accuracy of 0 or 1 are not cut
            ax.set_ylim(max(-pad / 4, low - pad), min(1.0 + pad / 4, high + pad))
        else:
            ax.text(0.5, 0.5, "no rows", transform=ax.transAxes, ha="center", va="center", color="gray")
        ticks = [plot_text(name) + (f"\n({plot_text(label)})" if name != label else "") for name, label in stages]
        ax.set_xticks(x, ticks, fontsize=MIN_FONT_PT, rotation=90, ha="center", linespacing=1.0)
        ax.set_xlim(-0.5, len(stages) - 0.5)
        ax.set_title(title, fontsize=TITLE_PT)
        ax.grid(alpha=0.3, axis="y")
        sized_ticks(ax)
    if not drawn:
        plt.close(fig)
        raise ValueError(f"no clean / FGM / PGD rows at ε={eps:g} for the ablation stages of {dataset!r}")
    axes[0][0].set_ylabel("accuracy (axis zoomed per panel)", fontsize=MIN_FONT_PT)
    handles = [Line2D([], [], color="gray", marker="o", ms=5), Line2D([], [], ls="", color="black", marker=".")]
    names = [band_text(band, seeds).removeprefix("band: "), "one seed"]
    if ringed:
        handles.append(flag_handle())
        names.append(FLAG_NOTE)
    fig.legend(
        handles,
        names,
        loc="outside lower center",
        ncol=len(handles),
        fontsize=MIN_FONT_PT,
        frameon=False,
    )
    note = f" (not in the rows: {plot_text(', '.join(missing), MAX_TITLE)})" if missing else ""
    shown = {(heads or {})[label] for _, label in stages if label in (heads or {})}
    if len({own for own, _ in shown}) == 1:
        own, source = sorted(shown)[0]
        own = plot_text(own)
        note += f"\nthe CRMT stages use the {HEAD_NAMES.get(own, own)} (own_groups={own}, {source})"
    fig.suptitle(f"{plot_text(dataset)}: CRMT ablation{note}", fontsize=TITLE_PT)
    if stamp:
        draw_command(fig, command)
    return fig


def parse_ablation(text: str) -> list[tuple[str, str]]:
    """``"JT=jt,Head only=crmt_jt_orth_only"`` → [(stage, label), ...]."""
    out = []
    for part in [p for p in text.split(",") if p.strip()]:
        if "=" not in part:
            raise ValueError(f"--ablation expects STAGE=LABEL pairs separated by commas, got {part!r}")
        name, label = part.split("=", 1)
        out.append((name.strip(), label.strip()))
    return out
