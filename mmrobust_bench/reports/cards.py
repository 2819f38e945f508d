"""One JSON card per model (``cards/<dataset>/<entry>-seed<k>.json``, ``report --html``): dataset, defense id,
label, configuration (hash, and the full settings from the checkpoint's ``config.json`` when at hand), checkpoint
sha256, clean accuracy with the clean rows' validity flags (``clean_flags``, as ``flags`` on each threat), robust
accuracy per threat, the certificates with their kind, and the environment of the rows; cards of models the rows no
longer hold are removed. ``reports.leaderboard`` links the page's rows to them.

Cards are strict JSON: NaN is written as ``null`` and ±inf (a legal ``median_certified_radius``) as the strings
``"inf"`` / ``"-inf"`` (in a checkpoint's config too), which every JSON parser reads."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_write_text
from .entries import find_checkpoint_configs, mixed_labels, resolve_entries
from .paper import method_name
from .paths import check_unique, output_path, slug
from .table_cells import cell_flags

CARD_SCHEMA = "mmrobust-bench/model-card/2"  # 2: clean_flags; infinite numbers as the strings "inf" / "-inf"
SCHEMAS = ("mmrobust-bench/model-card/1", CARD_SCHEMA)  # every version this suite wrote (pruning recognises them)
# columns of the rows that describe how a measurement was made (kept when present)
ENVIRONMENT_COLUMNS = (
    "suite_version",
    "library",
    "library_version",
    "torch_version",
    "device",
    "dtype",
    "threads",
    "cpu_capability",
    "torch_build",
    "device_name",
    "batch_size",
    "world_size",
    "python_version",
    "platform",
    "hostname",
    "command",
)
THREAT_FIELDS = (
    "attack",
    "attack_config",
    "library",
    "library_version",
    "modality",
    "norm",
    "eps",
    "n",
    "accuracy",
    "flags",
    "details",
)
CERT_FIELDS = (
    "certificate",
    "kind",
    "method",
    "equation",
    "variant",
    "modality",
    "radius",
    "n",
    "certified_accuracy",
    "median_certified_radius",
    "honesty_attack",
    "honesty_certified",
    "honesty_violations",
    "honesty_fraction",
    "tau_source",
    "certificate_label",
)


def _clean(value: Any) -> Any:
    """JSON-safe scalar: NaN → None, ±inf → "inf"/"-inf" (strict JSON has no literal for them), numpy scalars →
    Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _json_safe(value: Any) -> Any:
    """:func:`_clean` through nested dicts and lists: a config.json (read with Python's lenient parser) may hold
    ``Infinity`` or ``NaN``."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return _clean(value)


NOT_RECORDED_AS_ZERO = ("batch_size", "threads")  # columns whose 0 means "not recorded" (rows written before them)


def _unique(frame: pd.DataFrame, column: str) -> Any:
    empty: tuple[Any, ...] = (None, "", 0) if column in NOT_RECORDED_AS_ZERO else (None, "")
    values = [v for v in dict.fromkeys(_clean(v) for v in frame[column]) if v not in empty]
    return values[0] if len(values) == 1 else (values or None)


def card_path(dataset: str, entry: str, seed: Any) -> str:
    """Relative path of a model's card under the output directory (slugs of the names: ``reports.paths``)."""
    return f"cards/{slug(dataset)}/{slug(entry)}-seed{int(seed)}.json"


def model_cards(
    rows: pd.DataFrame, *, certified: pd.DataFrame | None = None, checkpoints: Path | None = None, command: str = ""
) -> list[dict[str, Any]]:
    """One card per (dataset, entry, seed) of ``rows`` (entries as in ``reports.entries``)."""
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
        clean_rows = part[part["attack"] == "clean"]
        clean = clean_rows["accuracy"]
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
            "config": None if config is None else _json_safe({k: v for k, v in config.items() if k != "_dir"}),
            "config_source": (
                f"{config['_dir']}/config.json"
                if config is not None
                else "not found: no checkpoint directory with this sha256"
                + (f" under {checkpoints}" if checkpoints else "")
            ),
            "clean_accuracy": _clean(float(clean.mean())) if len(clean) else None,
            "clean_flags": cell_flags(clean_rows),
            "robust_accuracy": [
                {k: _clean(r[k]) for k in THREAT_FIELDS if k in r}
                for _, r in threats.sort_values(["attack", "modality", "eps"]).iterrows()
            ],
            "certificates": [],
            "environment": {c: _unique(part, c) for c in ENVIRONMENT_COLUMNS if c in part},
            "card_made_by": command,
        }
        if certified is not None and not certified.empty:
            mine = certified[
                (certified["dataset"].astype(str) == str(dataset))
                & (certified["entry"].astype(str) == str(entry))
                & (certified["seed"] == seed)
            ]
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
    """One JSON file per card, at :func:`card_path` inside ``out_dir``; two models never share a file. Strict JSON
    (``allow_nan=False``): what was added to a card after :func:`model_cards` (a zoo's config) is cleaned too."""
    paths = [output_path(out_dir, card_path(c["dataset"], c["entry"], c["seed"])) for c in cards]
    check_unique((path, f"{c['dataset']} · {c['entry']} · seed {c['seed']}") for path, c in zip(paths, cards))
    for path, card in zip(paths, cards):
        text = json.dumps(_json_safe(card), indent=1, sort_keys=False, default=str, allow_nan=False)
        atomic_write_text(path, text + "\n")
    return paths


def prune_stale_cards(out_dir: Path, datasets: Sequence[str], keep: Sequence[Path]) -> list[Path]:
    """Remove the model cards under ``cards/<dataset>/`` that describe no model of the current rows (a model
    re-trained into another checkpoint, an entry dropped from the sweep), so the folder never shows a model the
    results no longer hold. Only files that parse as this suite's cards (``schema`` in :data:`SCHEMAS`) are
    removed; anything else in the folder stays. Returns the removed paths."""
    kept = {Path(p).resolve() for p in keep}
    removed = []
    for dataset in datasets:
        folder = output_path(out_dir, f"cards/{slug(dataset)}")
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            if path.resolve() in kept:
                continue
            try:
                is_card = json.loads(path.read_text(encoding="utf-8")).get("schema") in SCHEMAS
            except (OSError, UnicodeDecodeError, ValueError, AttributeError):
                is_card = False
            if is_card:
                path.unlink()
                removed.append(path)
    return removed


__all__ = ["CARD_SCHEMA", "card_path", "model_cards", "prune_stale_cards", "write_cards"]
