"""Report entries: rows grouped by (dataset, defense label, configuration), never mixed.

A *label* is what the rows call a defense (the ``label`` column when the rows have one, else
``defense``). Two trainings under one label with different settings (say JT with ``epochs=1`` and
``epochs=3``) have different ``config_hash`` values; averaging them over seeds would report a
number no model has. So every report groups rows by ``(dataset, label, config_hash)``:

- a label with one configuration in a dataset keeps its name (``jt``);
- a label with several becomes one entry per configuration, named ``jt [cfg b30dba09]``
  (the first 8 hex digits of ``config_hash``), and a note names the settings that differ, read
  from each checkpoint's ``config.json`` when the checkpoint directory is at hand
  (``<root>/checkpoints/<dataset>/<defense>/<key>/config.json``; matched by the checkpoint sha256).

This module chose *separate entries* over refusal: a sweep that trained two schedules on purpose
still gets a report, and the note makes the split impossible to miss. ``strict=True`` refuses
instead (``report --refuse-mixed``), with the same message.

Rows written before the ``label`` / ``config_hash`` columns existed read with the defaults
(label = defense, configuration "unknown").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..bench.naming import UNKNOWN_CONFIG, config_series, label_series

ENTRY = "entry"
CFG_TAG = " [cfg "

log = logging.getLogger(__name__)


class MixedConfigurationError(ValueError):
    """Rows of one label come from several configurations and the caller asked to refuse them."""


def base_label(entry: str) -> str:
    """``"jt [cfg b30dba09]"`` → ``"jt"``; a plain label stays as it is."""
    entry = str(entry)
    return entry.split(CFG_TAG, 1)[0] if entry.endswith("]") and CFG_TAG in entry else entry


def entry_name(label: str, config_hash: str) -> str:
    return f"{label}{CFG_TAG}{str(config_hash)[:8]}]"


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


# keys of config.json that are bookkeeping, not settings
_NOT_SETTINGS = ("stages.", "seed", "provenance.", "created")


def config_differences(configs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Settings whose values differ between the configurations, as ``"train_config.epochs: 1 vs 3"``
    (values in the order of ``configs``)."""
    flat = {name: _flatten(cfg) for name, cfg in configs.items()}
    keys = sorted({k for f in flat.values() for k in f if not k.startswith(_NOT_SETTINGS)})
    out = []
    for key in keys:
        values = [f.get(key, "(absent)") for f in flat.values()]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            out.append(f"{key}: " + " vs ".join(json.dumps(v, default=str) for v in values))
    return out


def find_checkpoint_configs(checkpoints: Path | None, dataset: str | None = None) -> dict[str, dict[str, Any]]:
    """``{sha256 of a stage: (config.json, its directory)}`` for every checkpoint under ``checkpoints``.

    The directory is returned in the config under the key ``"_dir"`` (not a setting; it is dropped from
    comparisons). Unreadable files are skipped: a report must not fail over a half-written cache.

    ``dataset`` comes from the rows of a CSV, so it is used only as the one folder name ``bench.checkpoints``
    gives it (``<checkpoints>/<dataset>/…``, the name unchanged); a name that would lead elsewhere (``..``, a
    separator, an absolute path) finds nothing and is logged, so no config.json from outside ``checkpoints``
    reaches a card.
    """
    out: dict[str, dict[str, Any]] = {}
    if checkpoints is None or not Path(checkpoints).is_dir():
        return out
    base = Path(checkpoints)
    if dataset:
        if not _folder_name(dataset):
            log.warning("not reading checkpoint configs for dataset %r: not a folder name under %s", dataset, base)
            return out
        base = base / dataset
    for path in sorted(base.glob("**/config.json")):
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(config, dict):
            continue
        for stage in (config.get("stages") or {}).values():
            digest = stage.get("sha256") if isinstance(stage, dict) else None
            if digest:
                out[str(digest)] = {**config, "_dir": str(path.parent)}
    return out


def _folder_name(name: str) -> bool:
    """Whether ``name`` is one plain path component (so ``checkpoints / name`` stays inside ``checkpoints``)."""
    return name not in (".", "..") and "\x00" not in name and Path(name).name == name


def _settings(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("_dir", "stages", "seed")}


def mixed_labels(*frames: pd.DataFrame | None) -> set[tuple[str, str]]:
    """(dataset, label) pairs with more than one configuration over all ``frames`` together (results,
    η pairs, certificates), so the same entry names come out of each."""
    seen: dict[tuple[str, str], set[str]] = {}
    for frame in frames:
        if frame is None or frame.empty or ENTRY in frame or "config_hash" not in frame:
            continue  # a file without configurations cannot tell them apart
        keys = zip(frame["dataset"].astype(str), label_series(frame), config_series(frame))
        for dataset, label, cfg in set(keys):
            seen.setdefault((dataset, label), set()).add(cfg)
    return {key for key, cfgs in seen.items() if len(cfgs) > 1}


def resolve_entries(
    rows: pd.DataFrame,
    *,
    checkpoints: Path | None = None,
    strict: bool = False,
    split: set[tuple[str, str]] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Rows with an ``entry`` column (and ``defense`` set to it, so every report groups by it) plus notes
    on labels split by configuration; idempotent. ``strict`` raises :class:`MixedConfigurationError` instead.
    ``split``: (dataset, label) pairs to name by configuration even if these rows hold only one of them
    (from :func:`mixed_labels` over several files)."""
    if ENTRY in rows:
        return rows, list(rows.attrs.get("entry_notes", []))
    rows = rows.copy()
    if rows.empty:
        rows[ENTRY] = pd.Series(dtype=object)
        return rows, []
    labels, cfgs = label_series(rows), config_series(rows)
    datasets = rows["dataset"].astype(str) if "dataset" in rows else pd.Series("", index=rows.index)
    entries = labels.copy()
    notes, refusals = [], []
    found_cache: dict[str, dict[str, dict[str, Any]]] = {}
    for (dataset, label), idx in labels.groupby([datasets, labels]).groups.items():
        hashes = sorted(set(cfgs[idx]))
        if len(hashes) < 2:
            if split and (dataset, label) in split and hashes[0] != UNKNOWN_CONFIG:
                entries[list(idx)] = entry_name(label, hashes[0])
            continue
        for h in hashes:
            sel = [i for i in idx if cfgs[i] == h]
            entries[sel] = entry_name(label, h)
        if dataset not in found_cache:
            found_cache[dataset] = find_checkpoint_configs(checkpoints, dataset)
        known = found_cache[dataset]
        configs: dict[str, dict[str, Any]] = {}
        if "checkpoint_sha256" in rows:
            for h in hashes:
                shas = rows.loc[[i for i in idx if cfgs[i] == h], "checkpoint_sha256"].astype(str)
                hit = next((known[s] for s in shas if s in known), None)
                if hit is not None:
                    configs[h[:8]] = _settings(hit)
        if len(configs) == len(hashes):
            diff = config_differences(configs)
            what = "; ".join(diff) if diff else "no setting differs in config.json (only the configuration hash)"
        else:
            what = (
                "settings unknown: no config.json found for "
                + ", ".join(h[:8] for h in hashes if h[:8] not in configs)
                + (f" under {checkpoints}" if checkpoints else " (pass --checkpoints DIR to name them)")
            )
        message = (
            f"{dataset}: label {label!r} has {len(hashes)} configurations "
            f"({', '.join(h[:8] for h in hashes)}), reported as separate entries — differing: {what}"
        )
        (refusals if strict else notes).append(message)
    if refusals:
        raise MixedConfigurationError(
            "refusing to report mixed configurations: "
            + " | ".join(refusals)
            + "; give each configuration its own label (run --label NAME) or drop "
            "--refuse-mixed to report them as separate entries"
        )
    rows[ENTRY] = entries
    if "defense" in rows and "defense_id" not in rows:
        rows["defense_id"] = rows["defense"]
    rows["defense"] = entries
    rows.attrs["entry_notes"] = list(notes)  # so a later call on these rows hands the notes on
    return rows, notes


def entries_of(rows: pd.DataFrame) -> list[str]:
    """Entry names in order of first appearance."""
    return list(dict.fromkeys(resolve_entries(rows)[0][ENTRY].astype(str)))


def default_checkpoints(results: Path) -> Path:
    """Where a results CSV's checkpoints live: ``<root>/checkpoints`` beside ``<root>/results.csv``."""
    return Path(results).parent / "checkpoints"


__all__ = [
    "ENTRY",
    "MixedConfigurationError",
    "base_label",
    "config_differences",
    "default_checkpoints",
    "entries_of",
    "entry_name",
    "find_checkpoint_configs",
    "label_series",
    "mixed_labels",
    "resolve_entries",
]
