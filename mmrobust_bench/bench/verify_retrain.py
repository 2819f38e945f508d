"""``verify --retrain``: re-train sampled models from scratch at their recorded settings (training thread count
from the checkpoint's provenance) and ask whether each re-measured value lies within the committed seed spread, the
stored mean over seeds ± max(k sample standard deviations, ``floor``). See ``bench.verify`` for the whole check.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..defenses import build_defense, dataset_schedule
from ..defenses.base import key_dict
from .api import train_defense
from .certification import CERTIFIED_CSV, ETA_PAIRS_CSV, read_certified
from .checkpoints import CheckpointKey
from .result_readers import read_table
from .sweep_plan import SweepPlan
from .sweep_units import set_threads
from .verify_measure import (
    CERT_KEY,
    ETA_KEY,
    certificate_values,
    choose_units,
    difference,
    measure_cells,
    measure_device,
    newest_models,
    recorded_threads,
    result_key,
    scratch_root,
    stored_results,
    unstored_line,
)
from .verify_output import VerifyOutcome, certificate_problems, largest_difference, make_outcome

SEED_SPREAD_K = 3.0
SPREAD_FLOOR = 0.01


def checkpoint_threads(root: Path, dataset: str, defense: str, sha: str) -> int | None:
    """The intra-op thread count the checkpoint with final sha256 ``sha`` was trained with (its config.json
    ``provenance``), or None when it is not in ``root`` or predates provenance."""
    for config_path in sorted((root / "checkpoints" / dataset / defense).glob("*/config.json")):
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(config, dict) or (config.get("stages") or {}).get("final", {}).get("sha256") != sha:
            continue
        recorded = config.get("provenance") or {}
        for stage in ("stage1", "final"):
            threads = (recorded.get(stage) or {}).get("threads")
            if isinstance(threads, int) and threads > 0:
                return threads
    return None


def verify_sweep(
    plan: SweepPlan,
    *,
    root: Path,
    results: Path | None = None,
    n: int = 2,
    seed: int = 0,
    cells: int = 3,
    scratch: Path | None = None,
    device: str | None = None,
    progress: bool = False,
    k: float = SEED_SPREAD_K,
    floor: float = SPREAD_FLOOR,
    certificates: bool = False,
) -> VerifyOutcome:
    """Re-train ``n`` random (label, seed) models of ``plan`` with rows in ``results`` (all when ``n`` <= 0) and
    re-measure ``cells`` of each; a value passes inside the stored mean ± max(k·std, floor) over seeds."""
    if not (math.isfinite(k) and k >= 0 and math.isfinite(floor) and floor >= 0):
        raise ValueError(f"verify: --k and --floor must be numbers >= 0, got {k!r} and {floor!r}")
    root = Path(root)
    results_path = Path(results) if results is not None else root / "results.csv"
    stored = stored_results(plan, results_path)
    mine = stored[stored["seed"].astype(int).isin(plan.seeds)]
    entries = {e.label: e for e in plan.defenses}
    units = sorted({(str(label), int(s)) for label, s in zip(mine["label"], mine["seed"])})
    if not units:
        raise ValueError(
            f"verify: {results_path} holds no rows of this sweep's entries "
            f"({', '.join(entries)} × seeds {', '.join(map(str, plan.seeds))}); run the sweep first"
        )
    rng = random.Random(seed)
    chosen = choose_units(units, n, rng)
    items: list[dict[str, Any]] = []
    unstored: list[str] = []  # re-measured values whose cell the stored rows lack
    compared: dict[tuple[str, int], tuple[int, int]] = {}
    with scratch_root(plan, root, scratch, results_path) as (scratch_dir, ds):
        config_hashes = _check_configs(plan, ds, mine, chosen, entries)
        for label, unit_seed in chosen:
            entry = entries[label]
            rows = mine[(mine["label"].astype(str) == label) & (mine["seed"].astype(int) == unit_seed)]
            start = len(items)
            sha = str(rows["checkpoint_sha256"].iloc[-1])
            eval_threads = recorded_threads(rows)
            train_threads = (
                checkpoint_threads(root, plan.dataset, entry.defense, sha)
                or eval_threads
                or plan.threads
                or torch.get_num_threads()
            )
            dev = measure_device(device, rows)
            set_threads(train_threads)
            trained = train_defense(
                entry.defense,
                dataset=plan.dataset,
                seed=unit_seed,
                overrides={**plan.common_overrides, **entry.overrides},
                dataset_options=plan.dataset_options,
                root=scratch_dir,
                device=str(dev),
                progress=progress,
                force=True,
            )
            set_threads(eval_threads or train_threads)
            items.extend(
                measure_cells(
                    plan,
                    trained,
                    entry,
                    unit_seed,
                    rows,
                    scratch=scratch_dir,
                    cells=cells,
                    rng=rng,
                    dev=dev,
                    unstored=unstored,
                )
            )
            if certificates:
                values, expected = certificate_values(
                    plan, trained, entry, unit_seed, root=root, scratch=scratch_dir, dev=dev
                )
                items.extend(values)
                compared[(label, unit_seed)] = (len(values), expected)
            for item in items[start:]:
                item["config_hash"] = config_hashes[(label, unit_seed)]
    spread = _seed_spread(stored, root, plan.dataset, items)
    frame = _judge_spread(items, spread, k, floor)
    report = [f"seed spread: stored mean over seeds ± max({k:g} × sample std, {floor:g}) (--k, --floor; η relative)"]
    if not frame.empty:
        bits = int((frame["status"] == "bit-identical").sum())
        report.append(f"bit-identical: {bits} of {len(frame)} value(s) (same checkpoint sha256 and number)")
        own_seed = [difference(item, item["recorded"]) for item in frame.to_dict("records")]
        report += largest_difference(frame.assign(difference=own_seed))
    report += unstored_line(unstored)
    return make_outcome(
        frame,
        "retrain",
        report,
        None if scratch is None else Path(scratch),
        problems=certificate_problems(compared) if certificates else [],
        models=len(chosen),
    )


def _check_configs(
    plan: SweepPlan, ds: Any, rows: pd.DataFrame, chosen: list[tuple[str, int]], entries: dict[str, Any]
) -> dict[tuple[str, int], str]:
    """(label, seed) -> config hash, after checking that re-training from the YAML as it is now gives the config
    the stored rows were made with: a setting changed since would re-train and judge another model."""
    out = {}
    for label, unit_seed in chosen:
        entry = entries[label]
        defense, train_cfg = build_defense(
            entry.defense, {**plan.common_overrides, **entry.overrides}, dataset_schedule(ds)
        )
        now = CheckpointKey(
            ds.name, ds.config, defense.name, defense.config_dict(), key_dict(train_cfg), unit_seed
        ).config_hash
        mine = rows[(rows["label"].astype(str) == label) & (rows["seed"].astype(int) == unit_seed)]
        recorded = str(mine["config_hash"].iloc[-1])
        if recorded != now:
            raise ValueError(
                f"verify --retrain: the rows of {label} seed {unit_seed} were made with config {recorded}, the "
                f"sweep YAML now trains config {now} (a setting changed since); give the YAML that made the rows, "
                f"or rerun the sweep"
            )
        out[(label, unit_seed)] = now
    return out


def _seed_spread(
    stored: pd.DataFrame, root: Path, dataset: str, items: list[dict[str, Any]]
) -> dict[tuple, list[float]]:
    """(label, config hash, spread key) -> the stored value of every seed (the newest model of each) of this
    dataset: seeds of another configuration (one seed re-run after a change) or dataset are not one spread."""
    out: dict[tuple, list[float]] = {}
    for r in stored.itertuples(index=False):
        out.setdefault((str(r.label), str(r.config_hash), ("result", *result_key(r))), []).append(float(r.accuracy))
    if any(i["kind"] != "result" for i in items):
        for kind, frame, key, value in (
            ("certificate", read_certified(root / CERTIFIED_CSV), CERT_KEY, "certified_accuracy"),
            ("eta", read_table(root / ETA_PAIRS_CSV), ETA_KEY, "eta_pair"),
        ):
            if frame.empty:
                continue
            frame = frame[frame["dataset"].astype(str) == dataset]
            newest = newest_models(frame, "defense")
            for label, config, k, v in zip(
                newest["defense"].astype(str),
                newest["config_hash"].astype(str),
                newest[list(key)].itertuples(index=False, name=None),
                newest[value],
            ):
                out.setdefault((label, config, (kind, *(str(x) for x in k))), []).append(float(v))
    return out


def _judge_spread(
    items: list[dict[str, Any]], spread: dict[tuple, list[float]], k: float, floor: float
) -> pd.DataFrame:
    for item in items:
        values = spread.get((item["label"], item.get("config_hash", ""), item["spread_key"]), [item["recorded"]])
        mean = sum(values) / len(values)
        std = pd.Series(values).std(ddof=1) if len(values) > 1 else float("nan")
        # η is compared relative to the mean: its allowance is stated in the same units as its difference
        scale = max(abs(mean), 1e-12) if item["relative"] else 1.0
        allowed = max(k * std if std == std else 0.0, floor * scale) / scale
        diff = difference(item, mean)
        inside = abs(diff) <= allowed + 1e-12
        identical = (
            item["reproduced_sha256"] == item["recorded_sha256"]
            and item["reproduced"] == item["recorded"]
            and item["n"] == item["recorded_n"]
        )
        item.update(
            reference=mean,
            seeds=len(values),
            std=std,
            allowed=allowed,
            difference=diff,
            passes=bool(inside or identical),
            status="bit-identical" if identical else "within spread" if inside else "OUTSIDE",
        )
    return pd.DataFrame(items)


__all__ = ["verify_sweep", "checkpoint_threads", "SEED_SPREAD_K", "SPREAD_FLOOR"]
