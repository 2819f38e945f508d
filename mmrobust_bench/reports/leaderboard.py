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

This module assembles and writes the page; its columns and cells are ``reports.leaderboard_columns``, the files it
links ``reports.leaderboard_links``, its template ``reports.leaderboard_page``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

from ..bench.zoo_index import link_cards
from ..io import atomic_write_text
from .cards import CARD_SCHEMA, card_path, model_cards, prune_stale_cards, write_cards
from .entries import mixed_labels, resolve_entries
from .headline import (
    ANY,
    STRONG,
    Headline,
    comparison_columns,
    difference_text,
    masking_check,
    masking_summary,
    reference_comparison,
)
from .leaderboard_columns import (
    EMPIRICAL_LABEL,
    SOUND_LABEL,
    PageColumn,
    certified_columns,
    headline_columns,
    leaderboard_columns,
    paper_table_columns,
    plain_cell,
    rank_modality,
    short_modality,
)
from .leaderboard_links import DOCUMENT_FILES, FIGURE_FILES, figure_links, files_beside, grouped_files
from .leaderboard_page import CONTENT_SECURITY_POLICY, CSS, JS, TEMPLATE
from .paper import display_name
from .paths import output_path, slug
from .stats import modality_name
from .table_cells import choose_attack_configs, number, paper_row_order

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


def _masking_rows(data: pd.DataFrame) -> tuple[str, list[dict[str, Any]]]:
    """The masking check (``reports.headline.masking_check``): a summary line and the cells PGD overstated, each
    number with its own cell's flags."""
    check = masking_check(data)
    if check.empty:
        return "No cell was measured by both pgd_l2 and autoattack.", []
    overstated = check[check["masking"]].sort_values("gap", ascending=False)
    rows = [
        {
            "entry": str(r.entry),
            "name": display_name(r.entry),
            "modality": modality_name(str(r.modality)),
            "eps": f"{r.eps:g}",
            "pgd": {"shown": number(r.pgd_l2), "flags": r.pgd_flags},
            "strong": {"shown": number(r.autoattack), "flags": r.strong_flags},
            "gap": number(r.gap, "+.3f"),
            "seeds": int(r.seeds),
        }
        for r in overstated.itertuples()
    ]
    return masking_summary(check, code=str), rows


REFERENCE = "jt"  # the entry the page compares every other with under the strong evaluation (findings' section 0c)


def _comparison_rows(data: pd.DataFrame, head: Headline) -> tuple[list[str], list[dict[str, Any]]]:
    """Every entry against :data:`REFERENCE` under the strong evaluation (``reports.headline.reference_comparison``):
    the column titles and one row per entry in the headline's order; nothing when the reference is not ranked."""
    if REFERENCE not in set(head.table["entry"].astype(str)):
        return [], []
    names, titles = comparison_columns(head)
    rows = [
        {
            "entry": r["entry"],
            "name": display_name(r["entry"]),
            "cells": [{"text": difference_text(r, m), "flags": r[f"{m}_flags"]} for m in names],
            "seeds": r["seeds"],
        }
        for r in reference_comparison(head, REFERENCE).to_dict("records")
    ]
    return titles, rows


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
    head, headline_cols = headline_columns(data)
    others, config_notes = choose_attack_configs(data[data["attack"].astype(str) != STRONG])
    table_cols = paper_table_columns(others)
    clean = [c for c in table_cols if c.key == "clean"]
    radius, cert_cols = certified_columns(certified, dataset, head.eps if head is not None else None)
    entries = paper_row_order(list(dict.fromkeys(data["entry"].astype(str))))
    ranked = [] if head is None else [e for e in head.table["entry"].astype(str) if e in entries]
    order = ranked + [e for e in entries if e not in ranked]
    rank = {entry: i for i, entry in enumerate(ranked, 1)}
    columns = (
        [
            PageColumn(
                key="rank",
                label="rank",
                sub=f"by {short_modality(rank_modality(head))}",
                cell=lambda e: plain_cell(rank.get(e, ""), rank.get(e, "—")),
            )
        ]
        if head is not None
        else []
    )
    columns += clean + headline_cols + cert_cols + [c for c in table_cols if c.key != "clean"]
    seeds = data.groupby(data["entry"].astype(str))["seed"].nunique()
    columns.append(PageColumn(key="seeds", label="seeds", cell=lambda e: plain_cell(int(seeds[e]), int(seeds[e]))))
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
    versus_titles, versus = _comparison_rows(data, head) if head is not None else ([], [])
    return TEMPLATE.render(
        csp=CONTENT_SECURITY_POLICY,
        css=Markup(CSS),
        js=Markup(JS),
        mark=FLAG_MARK,
        dataset=dataset,
        command=command,
        figures=grouped_files(figures, dataset, FIGURE_FILES),
        documents=grouped_files(documents, dataset, DOCUMENT_FILES),
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
        versus=versus,
        versus_titles=versus_titles,
        reference=display_name(REFERENCE),
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
    # a model in the leaderboard's zoo: its card names the committed file and sha256, relative to the card
    link_cards(cards, out_dir / "zoo", lambda c: (out_dir / card_path(c["dataset"], c["entry"], c["seed"])).parent)
    written = write_cards(cards, out_dir)
    prune_stale_cards(out_dir, sorted({str(c["dataset"]) for c in cards}), written)
    for dataset in datasets or sorted(rows["dataset"].astype(str).unique()):
        page = leaderboard_html(
            rows,
            dataset,
            cards=cards,
            figures=figure_links(out_dir, dataset),
            documents=files_beside(out_dir, dataset, DOCUMENT_FILES),
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
