"""A static HTML leaderboard and a JSON card per model (``reports.cards``), from result rows (``report --html``).

- ``cards/<dataset>/<entry>-seed<k>.json``: one per model (a checkpoint: entry × seed; cards of models the
  rows no longer hold are removed) — dataset,
  defense id, label, configuration hash and the full configuration from the checkpoint's
  ``config.json`` when the checkpoint directory is at hand, checkpoint sha256, clean accuracy,
  robust accuracy per threat (attack, configuration, modality, ε), the certificates with their kind
  (``kind`` column where present, else the certificate's label), and the environment of the rows
  (suite/library/torch versions, device, dtype, threads, … whatever the rows record) plus the
  command that wrote the card.
- ``leaderboard-<dataset>.html``: one self-contained page (inline CSS and a few lines of vanilla
  JavaScript, nothing fetched), one row per entry (defense label and configuration) under its display
  name (``reports.paper.display_name``), mean ± sample std over seeds with the seed count, a ⚑ on every
  cell whose rows carry validity flags (its tooltip names them and the seeds that raised them; a legend
  below the table explains each flag). Ranked by the headline (``reports.headline``: ``autoattack`` at
  the headline ε, ranked by ``any``) when the rows have ``autoattack`` rows, its columns first and the
  masking check below the table; otherwise in the paper's order, and the page says so. Then certified
  accuracy at one radius from ``certified.csv`` (randomized smoothing per noise setting, "sound (1−α)";
  the empirical certificates, "empirical"), the cells of Tables 1 and 2, and relative links to each
  model's card and to the figures, tables and findings found beside the page. The table scrolls
  sideways inside the page with the entry column fixed, so no column is cut off at any width. Click a
  header to sort; ``#sort=<column key>&dir=asc|desc`` in the address sorts on load.

File and folder names are slugs of the rows' names (``reports.paths``), never the raw names. The page is
rendered by Jinja2 with autoescape, so every name and value from the rows is text, never markup, and a
Content-Security-Policy lets only the page's own sort script (by its sha256) and style run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from ..bench.zoo_index import link_cards
from ..io import atomic_write_text
from .cards import CARD_SCHEMA, card_path, model_cards, prune_stale_cards, write_cards
from .certified_curves import certified_curve_data
from .entries import mixed_labels, resolve_entries
from .headline import ANY, STRONG, Headline, Z, headline, masking_check, strong_rows
from .leaderboard_page import CONTENT_SECURITY_POLICY, CSS, JS, TEMPLATE
from .paper import display_name
from .paths import output_path, slug
from .stats import SeedSummary, cell_key, modality_name, summarize
from .stats import slug as column_slug
from .tables import ALL, Column, _matches, cell_summary, choose_attack_configs, paper_row_order, single_modalities


def leaderboard_columns(data: pd.DataFrame) -> list[Column]:
    """Clean, the joint multi-modal attacks at ε 0.5, the uni-modal ones at ε 1.0, each modality missing —
    the cells of Tables 1 and 2 — where the rows have them."""
    mods = single_modalities(data)
    cols = [Column("clean", "none", 0.0)] + [Column(a, ALL, 0.5) for a in ("fgm", "pgd_l2")]
    cols += [Column(a, m, 1.0) for a in ("fgm", "pgd_l2") for m in mods] + [Column("missing", m, None) for m in mods]
    return [c for c in cols if not _matches(data, c).empty]


#: what each validity flag of ``bench.flags`` means, for the page's legend
FLAG_TEXT = {
    "non_monotone": "accuracy rises with ε by more than binomial noise (a bigger ball contains the smaller one)",
    "fgm_beats_pgd": "one gradient step (FGM) does better than the iterative attack at the same ε",
    "unbounded_not_zero": "the attack at a huge radius leaves more than 5% of a sample correct (a prompt to look)",
    "zero_gradients": "the input gradient of the attack loss is zero or not finite on more than 5% of a sample",
    "randomness": "two identical runs of the seeded attack, or two forward passes, disagree (a stochastic model)",
    "non_finite": "the model's logits are NaN or inf (such samples count as wrong)",
}
UNKNOWN_FLAG = "a flag this version of the suite does not describe (see bench/flags.py of the suite that wrote it)"
FLAG_MARK = "\u2691"
#: the radius of the certified-accuracy columns when the headline has no ε among the certificates' radii
CERT_RADIUS = 0.5
SOUND_LABEL = "sound (1−α)"
EMPIRICAL_LABEL = "empirical"
HEURISTIC_NOTE = (
    "heuristic: the model mixes its modalities before the head (MMT family), so the empirical radius "
    "is not even an estimated bound"
)


#: files beside a page that it links, by kind: (title, stem pattern without the dataset's slug)
FIGURE_FILES = (
    ("Figure 1", "figure1"),
    ("Figure 3", "figure3"),
    ("Figure 4", "figure4"),
    ("Figure 5", "figure5"),
    ("certified-accuracy curves", "certified-curves"),
)
DOCUMENT_FILES = (
    ("Table 1", "table1"),
    ("Table 2", "table2"),
    ("Table 3", "table3"),
    ("pivot", "pivot"),
    ("findings", "findings"),
)
FORMAT_ORDER = ("pdf", "png", "svg", "md", "csv", "tex")


def _files_beside(out_dir: Path, dataset: str, kinds: Sequence[tuple[str, str]]) -> list[str]:
    """The names of the files of ``kinds`` for ``dataset`` in ``out_dir`` (slugs: safe as relative links)."""
    found = []
    for _, stem in kinds:
        for fmt in FORMAT_ORDER:
            name = f"{stem}-{slug(dataset)}.{fmt}"
            if (Path(out_dir) / name).is_file():
                found.append(name)
    return found


def _figure_links(out_dir: Path, dataset: str) -> list[str]:
    return _files_beside(out_dir, dataset, FIGURE_FILES)


def _grouped(names: Sequence[str], dataset: str, kinds: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """``[{title: "Figure 1", files: [("PDF", "figure1-x.pdf"), ("PNG", …)]}, …]`` for the page; a name of no known
    kind is listed under its own name."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        stem, _, fmt = str(name).rpartition(".")
        title = next((t for t, s in kinds if stem == f"{s}-{slug(dataset)}"), stem or str(name))
        groups.setdefault(title, []).append((fmt.upper() or str(name), str(name)))
    return [{"title": title, "files": files} for title, files in groups.items()]


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


def _plain_cell(value: Any, shown: Any, title: str = "", note: str = "", note_title: str = "") -> dict[str, Any]:
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
class _Column:
    """One column of the page: its header and how to fill a row's cell from that entry's rows."""

    key: str
    label: str
    cell: Callable[[str], dict[str, Any]]
    sub: str = ""
    title: str = ""
    cls: str = ""
    sorted: str = ""
    kind: str = "num"


def _short(modality: str) -> str:
    """A modality's name for a narrow header: "visual", "audio", "all (joint)", "any"."""
    return {ALL: "all (joint)", ANY: "any"}.get(modality) or modality_name(modality)


def _headline_columns(data: pd.DataFrame) -> tuple[Headline | None, list[_Column]]:
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
            _Column(
                key=cell_key(STRONG, mod, head.eps),
                label=f"AA {'any' if is_any else _short(mod)}",
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


def _certified_columns(
    certified: pd.DataFrame | None, dataset: str, preferred: float | None
) -> tuple[float | None, list[_Column]]:
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
                    return _plain_cell(
                        "",
                        "—",
                        "no smoothing certificate at this radius (none run, or beyond the largest certifiable radius)",
                    )
                value, seeds = float(mine["certified_accuracy"].mean()), int(mine["seeds"].max())
                return _plain_cell(f"{value:.6f}", f"{value:.3f}", f"{line}: mean over {seeds} seeds")

            columns.append(
                _Column(
                    key=f"cert_{column_slug(line)}_{column_slug(panel)}",
                    label=f"Smoothed {_short(panel)}",
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
                return _plain_cell("", "—", "no empirical certificate for this entry")
            value, seeds = float(mine["certified_accuracy"].mean()), int(mine["seeds"].max())
            heuristic = any(str(k).startswith("heuristic") for k in mine["kind"])
            return _plain_cell(
                f"{value:.6f}",
                f"{value:.3f}",
                f"{mine['line'].iloc[0]}: mean over {seeds} seeds",
                note="heuristic" if heuristic else "",
                note_title=HEURISTIC_NOTE if heuristic else "",
            )

        columns.append(
            _Column(
                key=f"cert_empirical_{column_slug(panel)}",
                label=f"Cert. {_short(panel)}",
                sub=f"r={radius:g} · {EMPIRICAL_LABEL}",
                cell=cell,
                cls="cert",
                title=f"certified accuracy at radius {radius:g} from the empirical "
                "certificate (Lipschitz estimates; can overclaim)",
            )
        )
    return radius, columns


def _table_columns(data: pd.DataFrame) -> list[_Column]:
    """The cells of Tables 1 and 2 (clean first)."""
    out = []
    for col in leaderboard_columns(data):

        def cell(entry: str, col: Column = col) -> dict[str, Any]:
            part = data[data["entry"].astype(str) == entry]
            return _stat_cell(cell_summary(part, col), _cell_flags(_matches(part, col)))

        title = col.title.replace(" ε=", " all ε=") if col.modality == ALL else col.title
        out.append(_Column(key=col.key, label=title, cell=cell, title="mean ± sample std over seeds"))
    return out


def _masking_rows(data: pd.DataFrame) -> tuple[str, list[dict[str, Any]]]:
    """The masking check (``reports.headline.masking_check``): a summary line and the cells PGD overstated."""
    check = masking_check(data)
    if check.empty:
        return "No cell was measured by both pgd_l2 and autoattack.", []
    flagged = check[check["masking"]].sort_values("gap", ascending=False)
    summary = (
        f"{len(flagged)} of {len(check)} cells measured by both attacks: the paper's ℓ2-PGD overstates "
        f"robustness beyond {Z:g} binomial standard deviations there (the PGD number was gradient masking, not "
        "robustness)." + ("" if len(flagged) else " No PGD number of this page is masked.")
    )
    rows = [
        {
            "entry": str(r.entry),
            "name": display_name(r.entry),
            "modality": modality_name(str(r.modality)),
            "eps": f"{r.eps:g}",
            "pgd": f"{r.pgd_l2:.3f}",
            "strong": f"{r.autoattack:.3f}",
            "gap": f"{r.gap:+.3f}",
            "flags": r.pgd_flags or "—",
            "seeds": int(r.seeds),
        }
        for r in flagged.itertuples()
    ]
    return summary, rows


def leaderboard_html(
    rows: pd.DataFrame,
    dataset: str,
    *,
    cards: Sequence[dict[str, Any]] = (),
    figures: Sequence[str] = (),
    documents: Sequence[str] = (),
    command: str = "",
    notes: Sequence[str] = (),
    certified: pd.DataFrame | None = None,
) -> str:
    """The page for one dataset: ranked by the headline's ``any`` when ``autoattack`` rows exist (else in the
    paper's order, and it says so), the headline columns first with the masking check below, certified accuracy
    from ``certified`` (certified.csv rows), the cells of Tables 1 and 2, and relative links to the ``figures`` and
    ``documents`` (file names beside the page) and to every model's card."""
    rows, _ = resolve_entries(rows)
    data = rows[rows["dataset"].astype(str) == dataset]
    if data.empty:
        raise ValueError(f"no rows for dataset {dataset!r}")
    head, headline_cols = _headline_columns(data)
    others, config_notes = choose_attack_configs(data[data["attack"].astype(str) != STRONG])
    table_cols = _table_columns(others)
    clean = [c for c in table_cols if c.key == "clean"]
    radius, cert_cols = _certified_columns(certified, dataset, head.eps if head is not None else None)
    entries = paper_row_order(list(dict.fromkeys(data["entry"].astype(str))))
    ranked = [] if head is None else [e for e in head.table["entry"].astype(str) if e in entries]
    order = ranked + [e for e in entries if e not in ranked]
    rank = {entry: i for i, entry in enumerate(ranked, 1)}
    columns = (
        [
            _Column(
                key="rank",
                label="rank",
                sub=f"by {_short(rank_modality(head))}",
                cell=lambda e: _plain_cell(rank.get(e, ""), rank.get(e, "—")),
            )
        ]
        if head is not None
        else []
    )
    columns += clean + headline_cols + cert_cols + [c for c in table_cols if c.key != "clean"]
    seeds = data.groupby(data["entry"].astype(str))["seed"].nunique()
    columns.append(_Column(key="seeds", label="seeds", cell=lambda e: _plain_cell(int(seeds[e]), int(seeds[e]))))
    by_entry: dict[str, list[dict[str, Any]]] = {}
    for card in cards:
        if card["dataset"] == dataset:
            by_entry.setdefault(card["entry"], []).append(card)
    head_cells = [
        {"key": "entry", "type": "text", "cls": "text", "title": "", "label": "entry", "sub": "", "sorted": ""}
    ]
    head_cells += [
        {
            "key": c.key,
            "type": c.kind,
            "cls": c.cls,
            "title": c.title,
            "label": c.label,
            "sub": c.sub,
            "sorted": c.sorted if head is not None else "",
        }
        for c in columns
    ]
    head_cells += [
        {
            "key": "config",
            "type": "text",
            "cls": "text",
            "title": "",
            "label": "configuration",
            "sub": "",
            "sorted": "",
        },
        {"key": "cards", "type": "text", "cls": "text", "title": "", "label": "model cards", "sub": "", "sorted": ""},
    ]
    body, seen = [], set()
    for entry in order:
        part = data[data["entry"].astype(str) == entry]
        cells = [c.cell(entry) for c in columns]
        seen.update(name for cell in cells for name in cell["flags"].split(";") if name)
        hashes = sorted(set(part["config_hash"].astype(str))) if "config_hash" in part else []
        body.append(
            {
                "entry": entry,
                "name": display_name(entry),
                "cells": cells,
                "config": ", ".join(hashes),
                "config_shown": ", ".join(h[:8] for h in hashes),
                "cards": [
                    {"href": card_path(c["dataset"], c["entry"], c["seed"]), "seed": c["seed"]}
                    for c in sorted(by_entry.get(entry, []), key=lambda c: c["seed"])
                ],
            }
        )
    legend = list(FLAG_TEXT.items()) + [(name, UNKNOWN_FLAG) for name in sorted(seen - set(FLAG_TEXT))]
    masking_summary, masking = _masking_rows(data) if head is not None else ("", [])
    return TEMPLATE.render(
        csp=CONTENT_SECURITY_POLICY,
        css=Markup(CSS),
        js=Markup(JS),
        mark=FLAG_MARK,
        dataset=dataset,
        command=command,
        figures=_grouped(figures, dataset, FIGURE_FILES),
        documents=_grouped(documents, dataset, DOCUMENT_FILES),
        head=head_cells,
        rows=body,
        legend=legend,
        flags_seen=bool(seen),
        notes=list(notes) + config_notes,
        ranked=head is not None,
        rank_title=(
            ""
            if head is None
            else "any (the worst case per sample)"
            if rank_modality(head) == ANY
            else f"{modality_name(rank_modality(head))} (no any rows)"
        ),
        strong_config=head.attack_config if head is not None else "",
        rank_is_any=head is not None and rank_modality(head) == ANY,
        strong_eps=f"{head.eps:g}" if head is not None else "",
        unranked=len(ranked) < len(order),
        certified=bool(cert_cols),
        cert_radius=f"{radius:g}" if radius is not None else "",
        sound=SOUND_LABEL,
        empirical=EMPIRICAL_LABEL,
        masking_summary=masking_summary,
        masking=masking,
        cards_dir=f"cards/{slug(dataset)}/" if by_entry else "",
    )


def write_leaderboard(
    rows: pd.DataFrame,
    out_dir: str | Path,
    *,
    command: str,
    certified: pd.DataFrame | None = None,
    checkpoints: Path | None = None,
    datasets: Sequence[str] | None = None,
    notes: Sequence[str] = (),
) -> list[Path]:
    """Cards for every model and ``leaderboard-<dataset>.html`` per dataset; returns the files written."""
    out_dir = Path(out_dir)
    split = mixed_labels(rows, certified)
    rows, entry_notes = resolve_entries(rows, checkpoints=checkpoints, split=split)
    if certified is not None and not certified.empty:
        certified, _ = resolve_entries(certified, split=split)
    cards = model_cards(rows, certified=certified, checkpoints=checkpoints, command=command)
    link_cards(cards, out_dir / "zoo")  # a model in the leaderboard's zoo: its card names the committed file and sha256
    written = write_cards(cards, out_dir)
    prune_stale_cards(out_dir, sorted({str(c["dataset"]) for c in cards}), written)
    for dataset in datasets or sorted(rows["dataset"].astype(str).unique()):
        page = leaderboard_html(
            rows,
            dataset,
            cards=cards,
            figures=_figure_links(out_dir, dataset),
            documents=_files_beside(out_dir, dataset, DOCUMENT_FILES),
            command=command,
            notes=[n for n in list(notes) + entry_notes if n.startswith(f"{dataset}:")],
            certified=certified,
        )
        path = output_path(out_dir, f"leaderboard-{slug(dataset)}.html")
        atomic_write_text(path, page)
        written.append(path)
    return written


__all__ = [
    "CARD_SCHEMA",
    "CONTENT_SECURITY_POLICY",
    "FLAG_TEXT",
    "card_path",
    "leaderboard_columns",
    "leaderboard_html",
    "model_cards",
    "prune_stale_cards",
    "write_cards",
    "write_leaderboard",
]
