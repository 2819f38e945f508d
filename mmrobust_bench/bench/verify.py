"""Does a stored row reproduce? Re-train sampled (defense, seed) entries of a sweep and re-measure cells.

``verify_sweep`` draws ``n`` (label, seed) units that have rows in the results CSV (seeded, so a
verification can be repeated), re-trains each into a scratch root at the settings the rows and the
checkpoint's ``config.json`` recorded (intra-op thread count, device), re-evaluates ``cells`` of its
cells drawn at random, and compares: a row reproduces when the re-trained checkpoint has the recorded
sha256 and the re-measured accuracy (and sample count) equals the stored one exactly. Nothing in the
original root is written; the dataset cache is shared with it (read only).
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .api import train_defense
from .results import complete, eps_key, read_rows
from .sweep import SweepPlan, earlier_cell_keys, run_cell, set_threads, unit_cells, validate_plan
from .train import select_device

log = logging.getLogger(__name__)

MATCH = ("attack", "attack_config", "modality")


@dataclass
class VerifyOutcome:
    rows: pd.DataFrame  # one per re-measured row: recorded vs reproduced
    table: str
    ok: bool  # every re-measured row reproduces
    scratch: Path | None  # the scratch root (None once removed)


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


def _recorded_threads(rows: pd.DataFrame) -> int | None:
    threads = pd.to_numeric(rows["threads"], errors="coerce").fillna(0).astype(int)
    threads = threads[threads > 0]
    return int(threads.mode().iloc[0]) if not threads.empty else None


def verify_sweep(plan: SweepPlan, *, root: Path, results: Path | None = None, n: int = 2, seed: int = 0,
                 cells: int = 3, scratch: Path | None = None, device: str | None = None,
                 progress: bool = False) -> VerifyOutcome:
    """Re-train ``n`` random (label, seed) units of ``plan`` with rows in ``results`` and re-measure ``cells``
    of each; see the module docstring. ``scratch`` (default: a temporary folder, removed after) receives
    the re-trained checkpoints and re-measured rows."""
    if n < 1 or cells < 1:
        raise ValueError(f"verify: --n and --cells must be at least 1, got {n} and {cells}")
    results_path = Path(results) if results is not None else root / "results.csv"
    stored = read_rows(results_path)
    stored = stored[complete(stored)]
    entries = {e.label: e for e in plan.defenses}
    mine = stored[(stored["dataset"].astype(str) == plan.dataset) & stored["label"].astype(str).isin(entries)
                  & stored["seed"].astype(int).isin(plan.seeds)]
    units = sorted({(str(label), int(s)) for label, s in zip(mine["label"], mine["seed"])})
    if not units:
        raise ValueError(f"verify: {results_path} holds no rows of this sweep's entries "
                         f"({', '.join(entries)} × seeds {', '.join(map(str, plan.seeds))}); run the sweep first")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(units, min(n, len(units))))
    made_scratch = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="mmrobust-verify-")) if scratch is None else Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    if (root / "datasets").exists() and not (scratch / "datasets").exists():
        (scratch / "datasets").symlink_to((root / "datasets").resolve(), target_is_directory=True)
    scratch_results = scratch / "results.csv"
    scratch_results.unlink(missing_ok=True)
    validate_plan(plan, scratch)
    threads_before = torch.get_num_threads()
    report: list[dict[str, Any]] = []
    try:
        for label, unit_seed in chosen:
            report.extend(_verify_unit(plan, entries[label], unit_seed, mine, root=root, scratch=scratch,
                                       scratch_results=scratch_results, cells=cells, rng=rng, device=device,
                                       progress=progress))
    finally:
        torch.set_num_threads(threads_before)
        if made_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    frame = pd.DataFrame(report)
    ok = bool(len(frame)) and bool(frame["reproduces"].all())
    return VerifyOutcome(frame, format_verify_table(frame), ok, None if made_scratch else scratch)


def _verify_unit(plan: SweepPlan, entry: Any, seed: int, stored: pd.DataFrame, *, root: Path, scratch: Path,
                 scratch_results: Path, cells: int, rng: random.Random, device: str | None,
                 progress: bool) -> list[dict[str, Any]]:
    rows = stored[(stored["label"].astype(str) == entry.label) & (stored["seed"].astype(int) == seed)]
    sha = str(rows["checkpoint_sha256"].iloc[-1])  # the newest model of this unit, if it was ever retrained
    rows = rows[rows["checkpoint_sha256"].astype(str) == sha]
    eval_threads = _recorded_threads(rows)
    train_threads = (checkpoint_threads(root, str(rows["dataset"].iloc[-1]), entry.defense, sha) or eval_threads
                     or plan.threads or torch.get_num_threads())
    dev = select_device(device or str(rows["device"].iloc[-1]))
    set_threads(train_threads)
    trained = train_defense(entry.defense, dataset=plan.dataset, seed=seed,
                            overrides={**plan.common_overrides, **entry.overrides},
                            dataset_options=plan.dataset_options, root=scratch, device=str(dev), progress=progress,
                            force=True)
    set_threads(eval_threads or train_threads)
    recorded = {(str(r.attack), str(r.attack_config), str(r.modality), eps_key(r.eps)): r
                for r in rows.itertuples(index=False)}
    all_cells = unit_cells(plan)
    picked = sorted(rng.sample(range(len(all_cells)), min(cells, len(all_cells))))
    for index in picked:  # each cell as the sweep ran it: without the rows an earlier cell of the unit owns
        run_cell(plan, trained, entry, seed, all_cells[index], dev=dev, done=set(), results_path=scratch_results,
                 claimed=earlier_cell_keys(plan, trained, entry, seed, index, dev))
    fresh = read_rows(scratch_results)
    fresh = fresh[(fresh["label"].astype(str) == entry.label) & (fresh["seed"].astype(int) == seed)
                  & (fresh["checkpoint_sha256"].astype(str) == trained.sha256)]
    out = []
    for r in fresh.itertuples(index=False):
        key = (str(r.attack), str(r.attack_config), str(r.modality), eps_key(r.eps))
        old = recorded.get(key)
        if old is None:
            continue  # a cell of the current grid that the stored rows do not have
        same_sha = trained.sha256 == sha
        same = same_sha and float(old.accuracy) == float(r.accuracy) and int(old.n) == int(r.n)
        out.append({"label": entry.label, "seed": seed, "attack": key[0], "attack_config": key[1],
                    "modality": key[2], "eps": r.eps, "recorded_accuracy": float(old.accuracy),
                    "reproduced_accuracy": float(r.accuracy), "recorded_sha256": sha,
                    "reproduced_sha256": trained.sha256, "sha_equal": same_sha, "train_threads": train_threads,
                    "eval_threads": eval_threads or train_threads, "device": str(dev), "reproduces": same})
    if not out:
        log.warning("verify: none of the re-measured cells of %s seed %d is in the stored rows", entry.label, seed)
    return out


def format_verify_table(frame: pd.DataFrame) -> str:
    """Markdown table: one line per re-measured row, recorded vs reproduced."""
    lines = ["| label | seed | attack | modality | eps | recorded | reproduced | sha256 (recorded → re-trained) | "
             "threads | reproduces |", "|---|---:|---|---|---:|---:|---:|---|---:|---|"]
    for r in frame.itertuples(index=False):
        eps = "—" if pd.isna(r.eps) else f"{r.eps:g}"
        sha = r.recorded_sha256[:12] + (" =" if r.sha_equal else f" → {r.reproduced_sha256[:12]}")
        lines.append(f"| {r.label} | {r.seed} | {r.attack_config} | {r.modality} | {eps} | {r.recorded_accuracy:.4f} | "
                     f"{r.reproduced_accuracy:.4f} | {sha} | {r.train_threads} | {'yes' if r.reproduces else 'NO'} |")
    return "\n".join(lines)


__all__ = ["VerifyOutcome", "verify_sweep", "checkpoint_threads", "format_verify_table"]
