"""The columns of the leaderboard page and how each fills an entry's cell: the headline (``autoattack`` at the
headline ε, each modality, ``all``, ``any``), certified accuracy at one radius (smoothing, sound; the empirical
certificates), and the cells of Tables 1 and 2. A cell carries its value, what is shown, its 95% interval and its
validity flags with the seeds that raised them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .certified_curves import certified_curve_data
from .headline import ANY, STRONG, Headline, headline, strong_rows
from .stats import SeedSummary, cell_key, modality_name, summarize
from .stats import slug as column_slug
from .table_cells import ALL, Column, cell_summary, matching_rows, single_modalities


def leaderboard_columns(data: pd.DataFrame) -> list[Column]:
    """Clean, the joint multi-modal attacks at ε 0.5, the uni-modal ones at ε 1.0, each modality missing —
    the cells of Tables 1 and 2 — where the rows have them."""
    mods = single_modalities(data)
    cols = [Column("clean", "none", 0.0)] + [Column(a, ALL, 0.5) for a in ("fgm", "pgd_l2")]
    cols += [Column(a, m, 1.0) for a in ("fgm", "pgd_l2") for m in mods] + [Column("missing", m, None) for m in mods]
    return [c for c in cols if not matching_rows(data, c).empty]


#: the radius of the certified-accuracy columns when the headline has no ε among the certificates' radii
CERT_RADIUS = 0.5
SOUND_LABEL = "sound (1−α)"
EMPIRICAL_LABEL = "empirical"
HEURISTIC_NOTE = (
    "heuristic: the model mixes its modalities before the head (MMT family), so the empirical radius "
    "is not even an estimated bound"
)


def _cell_flags(rows: pd.DataFrame) -> dict[str, list[int]]:
    """``{flag name: seeds whose rows carry it}`` over the rows of one cell."""
    if "flags" not in rows:
        return {}
    found: dict[str, set[int]] = {}
    for cell, seed in zip(rows["flags"], rows["seed"]):
        for name in filter(None, (part.strip() for part in (cell if isinstance(cell, str) else "").split(";"))):
            found.setdefault(name, set()).add(int(seed))
    return {name: sorted(seeds) for name, seeds in sorted(found.items())}


def _flag_title(flags: dict[str, list[int]]) -> str:
    return "validity flags: " + "; ".join(
        f"{name} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})" for name, seeds in flags.items()
    )


def _stat_cell(s: SeedSummary, flags: dict[str, list[int]]) -> dict[str, Any]:
    """What the page shows in one accuracy cell: mean, std, its 95% interval on hover, its flags."""
    return {
        "value": "" if math.isnan(s.mean) else f"{s.mean:.6f}",
        "shown": "—" if math.isnan(s.mean) else f"{s.mean:.3f}",
        "std": "" if math.isnan(s.mean) or math.isnan(s.std) else f"{s.std:.3f}",
        "title": "" if math.isnan(s.ci_low) else f"95% t-interval [{s.ci_low:.3f}, {s.ci_high:.3f}], n={s.n}",
        "flags": ";".join(flags),
        "flag_title": _flag_title(flags) if flags else "",
        "note": "",
        "note_title": "",
    }


def plain_cell(value: Any, shown: Any, title: str = "", note: str = "", note_title: str = "") -> dict[str, Any]:
    return {
        "value": value,
        "shown": shown,
        "std": "",
        "title": title,
        "flags": "",
        "flag_title": "",
        "note": note,
        "note_title": note_title,
    }


@dataclass
class PageColumn:
    """One column of the page: its header and how to fill a row's cell from that entry's rows."""

    key: str
    label: str
    cell: Callable[[str], dict[str, Any]]
    sub: str = ""
    title: str = ""
    cls: str = ""
    sorted: str = ""
    kind: str = "num"


def short_modality(modality: str) -> str:
    """A modality's name for a narrow header: "visual", "audio", "all (joint)", "any"."""
    return {ALL: "all (joint)", ANY: "any"}.get(modality) or modality_name(modality)


def headline_columns(data: pd.DataFrame) -> tuple[Headline | None, list[PageColumn]]:
    """The headline's columns (``autoattack`` at the headline ε, each modality, ``all``, ``any``: the ranking
    one), read from the same rows as ``reports.headline``; none without ``autoattack`` rows."""
    head = headline(data)
    if head is None:
        return None, []
    strong, _ = strong_rows(data)
    strong = strong[np.isclose(strong["eps"].astype(float), head.eps)]
    columns = []
    rank_by = rank_modality(head)
    order = {m: i for i, m in enumerate(("v", "a"))}  # the page's modality order: visual, audio, others, all, any
    for mod in sorted(head.modalities, key=lambda m: (m == ANY, m == ALL, order.get(m, 2), m)):
        part = strong[strong["modality"].astype(str) == mod]

        def cell(entry: str, part: pd.DataFrame = part) -> dict[str, Any]:
            mine = part[part["entry"].astype(str) == entry]
            return _stat_cell(summarize(mine.groupby("seed")["accuracy"].mean()), _cell_flags(mine))

        is_any, ranks = mod == ANY, mod == rank_by
        columns.append(
            PageColumn(
                key=cell_key(STRONG, mod, head.eps),
                label=f"AA {'any' if is_any else short_modality(mod)}",
                sub=f"{'worst case' if is_any else ''}{', ranks' if ranks else ''}{' · ' if is_any or ranks else ''}"
                f"ε={head.eps:g}",
                cell=cell,
                title=f"{head.attack_config} on "
                f"{'the worst of every threat, per sample' if is_any else modality_name(mod)}"
                " — mean ± sample std over seeds",
                cls="headline rankkey" if ranks else "headline",
                sorted="descending" if ranks else "",
            )
        )
    return head, columns


def rank_modality(head: Headline) -> str:
    """The headline column the page ranks by: ``any`` when measured, else the last (as ``reports.headline``)."""
    return ANY if ANY in head.modalities else head.modalities[-1]


def _certified_radius(points: pd.DataFrame, preferred: float | None) -> float | None:
    radii = sorted({float(r) for r in points["radius"]})
    for want in (preferred, CERT_RADIUS):
        if want is not None and any(np.isclose(r, want) for r in radii):
            return float(want)
    positive = [r for r in radii if r > 0]
    return positive[0] if positive else None


def certified_columns(
    certified: pd.DataFrame | None, dataset: str, preferred: float | None
) -> tuple[float | None, list[PageColumn]]:
    """Certified accuracy at one radius: a column per smoothing noise setting and modality (sound, probability
    ≥ 1 − α) and per modality for the empirical Eq. 10 / 7 / 5 radii — the curves' own selection
    (``reports.certified_curves.certified_curve_data``), mean over seeds."""
    if certified is None or certified.empty:
        return None, []
    points = certified_curve_data(certified, dataset=dataset)
    if points.empty:
        return None, []
    radius = _certified_radius(points, preferred)
    if radius is None:
        return None, []
    at = points[np.isclose(points["radius"].astype(float), radius)]
    order = {m: i for i, m in enumerate(("v", "a"))}
    panels = sorted(set(points["panel"].astype(str)), key=lambda m: (m == ALL, order.get(m, 2), m))
    columns = []
    smooth = points[points["method"].astype(str) == "smoothing"]
    for line in sorted(set(smooth["line"].astype(str))):
        for panel in panels:
            if smooth[(smooth["line"] == line) & (smooth["panel"] == panel)].empty:
                continue
            part = at[(at["line"] == line) & (at["panel"] == panel)]

            def cell(entry: str, part: pd.DataFrame = part, line: str = line) -> dict[str, Any]:
                mine = part[part["entry"].astype(str) == entry]
                if mine.empty:
                    return plain_cell(
                        "",
                        "—",
                        "no smoothing certificate at this radius (none run, or beyond the largest certifiable radius)",
                    )
                value, seeds = float(mine["certified_accuracy"].mean()), int(mine["seeds"].max())
                return plain_cell(f"{value:.6f}", f"{value:.3f}", f"{line}: mean over {seeds} seeds")

            columns.append(
                PageColumn(
                    key=f"cert_{column_slug(line)}_{column_slug(panel)}",
                    label=f"Smoothed {short_modality(panel)}",
                    sub=f"r={radius:g} · {line.removeprefix('smoothing ')} · {SOUND_LABEL}",
                    cell=cell,
                    cls="cert",
                    title=f"certified accuracy at radius {radius:g}, randomized smoothing ({line}): "
                    "sound, each sample with probability ≥ 1 − α",
                )
            )
    empirical = at[at["method"].astype(str) == "empirical"]
    for panel in panels:
        if points[(points["method"].astype(str) == "empirical") & (points["panel"] == panel)].empty:
            continue
        part = empirical[empirical["panel"] == panel]

        def cell(entry: str, part: pd.DataFrame = part) -> dict[str, Any]:
            mine = part[part["entry"].astype(str) == entry]
            if mine.empty:
                return plain_cell("", "—", "no empirical certificate for this entry")
            value, seeds = float(mine["certified_accuracy"].mean()), int(mine["seeds"].max())
            heuristic = any(str(k).startswith("heuristic") for k in mine["kind"])
            return plain_cell(
                f"{value:.6f}",
                f"{value:.3f}",
                f"{mine['line'].iloc[0]}: mean over {seeds} seeds",
                note="heuristic" if heuristic else "",
                note_title=HEURISTIC_NOTE if heuristic else "",
            )

        columns.append(
            PageColumn(
                key=f"cert_empirical_{column_slug(panel)}",
                label=f"Cert. {short_modality(panel)}",
                sub=f"r={radius:g} · {EMPIRICAL_LABEL}",
                cell=cell,
                cls="cert",
                title=f"certified accuracy at radius {radius:g} from the empirical "
                "certificate (Lipschitz estimates; can overclaim)",
            )
        )
    return radius, columns


def paper_table_columns(data: pd.DataFrame) -> list[PageColumn]:
    """The cells of Tables 1 and 2 (clean first)."""
    out = []
    for col in leaderboard_columns(data):

        def cell(entry: str, col: Column = col) -> dict[str, Any]:
            part = data[data["entry"].astype(str) == entry]
            return _stat_cell(cell_summary(part, col), _cell_flags(matching_rows(part, col)))

        title = col.title.replace(" ε=", " all ε=") if col.modality == ALL else col.title
        protocol = "" if col.attack == "clean" else "paper's protocol"
        out.append(
            PageColumn(
                key=col.key,
                label=title,
                sub=protocol,
                cell=cell,
                title=f"{protocol + ' (Tables 1-2), ' if protocol else ''}mean ± sample std over seeds",
            )
        )
    return out


__all__ = [
    "CERT_RADIUS",
    "EMPIRICAL_LABEL",
    "HEURISTIC_NOTE",
    "SOUND_LABEL",
    "leaderboard_columns",
    "rank_modality",
]
