"""A static HTML leaderboard and a JSON card per model, from result rows (``report --html``).

- ``cards/<dataset>/<entry>-seed<k>.json``: one per model (a checkpoint: entry × seed; cards of models the
  rows no longer hold are removed) — dataset,
  defense id, label, configuration hash and the full configuration from the checkpoint's
  ``config.json`` when the checkpoint directory is at hand, checkpoint sha256, clean accuracy,
  robust accuracy per threat (attack, configuration, modality, ε), the certificates with their kind
  (``kind`` column where present, else the certificate's label), and the environment of the rows
  (suite/library/torch versions, device, dtype, threads, … whatever the rows record) plus the
  command that wrote the card.
- ``leaderboard-<dataset>.html``: one self-contained page (inline CSS and a few lines of vanilla
  JavaScript, nothing fetched), one row per entry (defense label and configuration), mean ± sample
  std over seeds with the seed count, links to each model's card and to the figures found beside
  it. Click a header to sort; ``#sort=<column key>&dir=asc|desc`` in the address sorts on load.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..io import atomic_write_text
from .entries import find_checkpoint_configs, resolve_entries
from .paper import method_name
from .stats import slug
from .tables import ALL, Column, cell_summary, choose_attack_configs, paper_row_order, single_modalities

CARD_SCHEMA = "mmrobust-bench/model-card/1"
# columns of the rows that describe how a measurement was made (kept when present)
ENVIRONMENT_COLUMNS = ("suite_version", "library", "library_version", "torch_version", "device", "dtype", "threads",
                       "cpu_capability", "torch_build", "device_name",
                       "world_size", "python_version", "platform", "hostname", "command")
THREAT_FIELDS = ("attack", "attack_config", "library", "library_version", "modality", "norm", "eps", "n", "accuracy",
                 "flags")
CERT_FIELDS = ("certificate", "kind", "method", "equation", "variant", "modality", "radius", "n", "certified_accuracy",
               "median_certified_radius", "honesty_attack", "honesty_certified", "honesty_violations",
               "honesty_fraction", "tau_source", "certificate_label")


def _clean(value: Any) -> Any:
    """JSON-safe scalar: NaN → None, numpy scalars → Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _unique(frame: pd.DataFrame, column: str) -> Any:
    values = [v for v in dict.fromkeys(_clean(v) for v in frame[column]) if v not in (None, "")]
    return values[0] if len(values) == 1 else (values or None)


def card_path(dataset: str, entry: str, seed: Any) -> str:
    """Relative path of a model's card under the output directory."""
    return f"cards/{slug(dataset)}/{slug(entry)}-seed{int(seed)}.json"


def model_cards(rows: pd.DataFrame, *, certified: pd.DataFrame | None = None, checkpoints: Path | None = None,
                command: str = "") -> list[dict[str, Any]]:
    """One card per (dataset, entry, seed) of ``rows`` (entries as in ``reports.entries``)."""
    from .entries import mixed_labels

    split = mixed_labels(rows, certified)
    rows, _ = resolve_entries(rows, checkpoints=checkpoints, split=split)
    if certified is not None and not certified.empty:
        certified, _ = resolve_entries(certified, split=split)
    cards = []
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for (dataset, entry, seed), part in rows.groupby(["dataset", "entry", "seed"], sort=True):
        if dataset not in found:
            found[dataset] = find_checkpoint_configs(checkpoints, str(dataset))
        shas = [s for s in dict.fromkeys(part["checkpoint_sha256"].astype(str)) if s and s != "nan"]
        config = next((found[dataset][s] for s in shas if s in found[dataset]), None)
        clean = part[part["attack"] == "clean"]["accuracy"]
        threats = part[part["attack"] != "clean"]
        card: dict[str, Any] = {
            "schema": CARD_SCHEMA,
            "dataset": str(dataset),
            "defense": _unique(part, "defense_id") if "defense_id" in part else str(entry),
            "label": _unique(part, "label") if "label" in part else str(entry).split(" [cfg ")[0],
            "entry": str(entry),
            "method": method_name(str(entry)),
            "seed": int(seed),
            "config_hash": _unique(part, "config_hash") if "config_hash" in part else None,
            "checkpoint_sha256": shas[0] if len(shas) == 1 else shas,
            "config": None if config is None else {k: v for k, v in config.items() if k != "_dir"},
            "config_source": (f"{config['_dir']}/config.json" if config is not None else
                              "not found: no checkpoint directory with this sha256"
                              + (f" under {checkpoints}" if checkpoints else "")),
            "clean_accuracy": _clean(float(clean.mean())) if len(clean) else None,
            "robust_accuracy": [{k: _clean(r[k]) for k in THREAT_FIELDS if k in r}
                                for _, r in threats.sort_values(["attack", "modality", "eps"]).iterrows()],
            "certificates": [],
            "environment": {c: _unique(part, c) for c in ENVIRONMENT_COLUMNS if c in part},
            "card_made_by": command,
        }
        if certified is not None and not certified.empty:
            mine = certified[(certified["dataset"].astype(str) == str(dataset))
                             & (certified["entry"].astype(str) == str(entry)) & (certified["seed"] == seed)]
            card["certificates"] = _certificates(mine)
        cards.append(card)
    return cards


def _certificates(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per certificate (kind, equation, variant, modality …) with its certified-accuracy curve
    ``[[radius, certified accuracy], …]`` rather than one entry per radius."""
    fields = [k for k in CERT_FIELDS if k in rows and k not in ("radius", "certified_accuracy")]
    out = []
    if rows.empty:
        return out
    keyed = rows.assign(**{k: rows[k].astype(object).where(rows[k].notna(), None) for k in fields})
    for _, group in keyed.groupby(fields, sort=False, dropna=False):
        first = group.iloc[0]
        cert = {k: _clean(first[k]) for k in fields}
        if not cert.get("kind"):
            cert["kind"] = _clean(first.get("certificate_label")) or "unknown"
        if "radius" in group and "certified_accuracy" in group:
            curve = group.sort_values("radius")[["radius", "certified_accuracy"]]
            cert["certified_accuracy_by_radius"] = [[_clean(r), _clean(a)] for r, a in curve.itertuples(index=False)]
        out.append(cert)
    return out


def write_cards(cards: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    paths = []
    for card in cards:
        path = Path(out_dir) / card_path(card["dataset"], card["entry"], card["seed"])
        atomic_write_text(path, json.dumps(card, indent=1, sort_keys=False, default=str) + "\n")
        paths.append(path)
    return paths


def prune_stale_cards(out_dir: Path, datasets: Sequence[str], keep: Sequence[Path]) -> list[Path]:
    """Remove the model cards under ``cards/<dataset>/`` that describe no model of the current rows (a model
    re-trained into another checkpoint, an entry dropped from the sweep), so the folder never shows a model the
    results no longer hold. Only files that parse as this suite's cards (``schema`` = :data:`CARD_SCHEMA`) are
    removed; anything else in the folder stays. Returns the removed paths."""
    kept = {Path(p).resolve() for p in keep}
    removed = []
    for dataset in datasets:
        folder = Path(out_dir) / "cards" / slug(dataset)
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            if path.resolve() in kept:
                continue
            try:
                is_card = json.loads(path.read_text(encoding="utf-8")).get("schema") == CARD_SCHEMA
            except (OSError, UnicodeDecodeError, ValueError, AttributeError):
                is_card = False
            if is_card:
                path.unlink()
                removed.append(path)
    return removed


def leaderboard_columns(data: pd.DataFrame) -> list[Column]:
    """Clean, the joint multi-modal attacks at ε 0.5, the uni-modal ones at ε 1.0, each modality missing —
    the cells of Tables 1 and 2 — where the rows have them."""
    mods = single_modalities(data)
    cols = [Column("clean", "none", 0.0)] + [Column(a, ALL, 0.5) for a in ("fgm", "pgd_l2")]
    cols += [Column(a, m, 1.0) for a in ("fgm", "pgd_l2") for m in mods] + [Column("missing", m, None) for m in mods]
    from .tables import _matches

    return [c for c in cols if not _matches(data, c).empty]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} p.meta{color:#555;font-size:12px;margin:2px 0 12px}
table{border-collapse:collapse;font-size:13px} th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right;
white-space:nowrap}
th{background:#1f4e79;color:#fff;cursor:pointer;position:sticky;top:0;white-space:nowrap;user-select:none}
th.text,td.text{text-align:left} th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"} tr:nth-child(even) td{background:#f3f6fa}
td .sd{color:#777;font-size:11px} a{color:#1f4e79} ul.notes{font-size:12px;color:#444}
"""

_JS = """
(function(){
  var table=document.getElementById('leaderboard'), body=table.tBodies[0];
  function sortBy(key, dir){
    var th=table.querySelector('th[data-key="'+key+'"]'); if(!th){return;}
    var idx=Array.prototype.indexOf.call(th.parentNode.children, th), num=th.dataset.type==='num';
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[idx].dataset.value, y=b.cells[idx].dataset.value;
      if(num){x=x===''?NaN:parseFloat(x); y=y===''?NaN:parseFloat(y);
        if(isNaN(x)&&isNaN(y)){return 0;} if(isNaN(x)){return 1;} if(isNaN(y)){return -1;}
        return dir==='asc'?x-y:y-x;}
      return dir==='asc'?x.localeCompare(y):y.localeCompare(x);});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.querySelectorAll('th'),function(h){h.removeAttribute('aria-sort');});
    th.setAttribute('aria-sort', dir==='asc'?'ascending':'descending');
    table.dataset.sortKey=key; table.dataset.sortDir=dir;
  }
  Array.prototype.forEach.call(table.querySelectorAll('th'),function(th){
    th.addEventListener('click',function(){
      var dir=th.getAttribute('aria-sort')==='descending'?'asc':'desc';
      if(th.dataset.type!=='num'&&!th.getAttribute('aria-sort')){dir='asc';}
      sortBy(th.dataset.key, dir); history.replaceState(null,'','#sort='+th.dataset.key+'&dir='+dir);});});
  var m=/sort=([^&]+)(?:&dir=(asc|desc))?/.exec(location.hash.slice(1)||location.search.slice(1));
  if(m){sortBy(decodeURIComponent(m[1]), m[2]||'desc');}
})();
"""


def _figure_links(out_dir: Path, dataset: str) -> list[str]:
    return [p.name for p in sorted(Path(out_dir).glob(f"figure*-{dataset}.*")) if p.suffix in (".png", ".svg", ".pdf")]


def leaderboard_html(rows: pd.DataFrame, dataset: str, *, cards: Sequence[dict[str, Any]] = (),
                     figures: Sequence[str] = (), command: str = "", notes: Sequence[str] = ()) -> str:
    """The page for one dataset (rows already resolved into entries)."""
    rows, _ = resolve_entries(rows)
    data = rows[rows["dataset"].astype(str) == dataset]
    if data.empty:
        raise ValueError(f"no rows for dataset {dataset!r}")
    data, config_notes = choose_attack_configs(data)
    columns = leaderboard_columns(data)
    entries = paper_row_order(list(dict.fromkeys(data["entry"].astype(str))))
    by_entry: dict[str, list[dict[str, Any]]] = {}
    for card in cards:
        if card["dataset"] == dataset:
            by_entry.setdefault(card["entry"], []).append(card)
    esc = html.escape
    head = ['<th class="text" data-key="entry" data-type="text">entry</th>',
            '<th class="text" data-key="config" data-type="text">configuration</th>',
            '<th data-key="seeds" data-type="num">seeds</th>']
    head += [f'<th data-key="{esc(c.key)}" data-type="num" title="mean ± sample std over seeds">'
             f'{esc(c.title.replace(" ε=", " all ε=") if c.modality == ALL else c.title)}</th>' for c in columns]
    head += ['<th class="text" data-key="cards" data-type="text">model cards</th>']
    body = []
    for entry in entries:
        part = data[data["entry"].astype(str) == entry]
        cfg = ", ".join(sorted(set(part["config_hash"].astype(str)))) if "config_hash" in part else ""
        stats = [cell_summary(part, c) for c in columns]
        seeds = max((s.n for s in stats), default=0)
        name = method_name(entry)
        label = entry if name == entry else f"{name} <code>{esc(entry)}</code>"
        cells = [f'<td class="text" data-value="{esc(name)}">{label if name != entry else esc(name)}</td>',
                 f'<td class="text" data-value="{esc(cfg)}"><code>{esc(cfg)}</code></td>',
                 f'<td data-value="{seeds}">{seeds}</td>']
        for s in stats:
            value = "" if math.isnan(s.mean) else f"{s.mean:.6f}"
            shown = "—" if math.isnan(s.mean) else (f"{s.mean:.3f}" + ("" if math.isnan(s.std) else
                                                                         f' <span class="sd">± {s.std:.3f}</span>'))
            title = "" if math.isnan(s.ci_low) else f' title="95% t-interval [{s.ci_low:.3f}, {s.ci_high:.3f}], n={s.n}"'
            cells.append(f'<td data-value="{value}"{title}>{shown}</td>')
        links = " · ".join(f'<a href="{esc(card_path(c["dataset"], c["entry"], c["seed"]))}">seed {c["seed"]}</a>'
                           for c in sorted(by_entry.get(entry, []), key=lambda c: c["seed"]))
        cells.append(f'<td class="text" data-value="{esc(entry)}">{links or "—"}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    figs = " · ".join(f'<a href="{esc(f)}">{esc(f)}</a>' for f in figures) or "none beside this page"
    note_items = "".join(f"<li>{esc(n)}</li>" for n in list(notes) + config_notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="mmrobust-bench">
<meta name="made-by" content="{esc(command)}">
<title>mmrobust-bench leaderboard — {esc(dataset)}</title><style>{_CSS}</style></head>
<body><h1>Leaderboard — {esc(dataset)}</h1>
<p class="meta">Accuracy on the test split, mean <span class="sd">± sample std</span> over seeds (hover a cell for the
95% t-interval). One row per defense label and configuration. ε in model-input space (ℓ2); “all” = one joint
ℓ2 ball over every modality. Click a header to sort.</p>
<p class="meta">Figures: {figs}</p>
<table id="leaderboard"><thead><tr>{''.join(head)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<ul class="notes">{note_items}</ul>
<p class="meta">made by: <code>{esc(command)}</code></p>
<script>{_JS}</script>
</body></html>
"""


def write_leaderboard(rows: pd.DataFrame, out_dir: str | Path, *, command: str, certified: pd.DataFrame | None = None,
                      checkpoints: Path | None = None, datasets: Sequence[str] | None = None,
                      notes: Sequence[str] = ()) -> list[Path]:
    """Cards for every model and ``leaderboard-<dataset>.html`` per dataset; returns the files written."""
    out_dir = Path(out_dir)
    from .entries import mixed_labels

    split = mixed_labels(rows, certified)
    rows, entry_notes = resolve_entries(rows, checkpoints=checkpoints, split=split)
    cards = model_cards(rows, certified=certified, checkpoints=checkpoints, command=command)
    from ..bench.zoo import link_cards

    link_cards(cards, out_dir / "zoo")  # a model in the leaderboard's zoo: its card names the committed file and sha256
    written = write_cards(cards, out_dir)
    prune_stale_cards(out_dir, sorted({str(c["dataset"]) for c in cards}), written)
    for dataset in datasets or sorted(rows["dataset"].astype(str).unique()):
        page = leaderboard_html(rows, dataset, cards=cards, figures=_figure_links(out_dir, dataset), command=command,
                                notes=[n for n in list(notes) + entry_notes if n.startswith(f"{dataset}:")])
        path = out_dir / f"leaderboard-{dataset}.html"
        atomic_write_text(path, page)
        written.append(path)
    return written


__all__ = ["CARD_SCHEMA", "card_path", "leaderboard_columns", "leaderboard_html", "model_cards", "prune_stale_cards",
           "write_cards", "write_leaderboard"]
