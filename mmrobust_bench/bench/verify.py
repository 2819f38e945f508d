"""Are these numbers right? Re-measure stored rows of a sweep and say how far each one moved, and why.

Two ways, both drawing ``n`` (label, seed) models with rows (seeded, so a check can be repeated) and ``cells``
of each model's cells, re-measuring them as the sweep did (same ε grids, batches and thread count) in a
scratch root, never writing the sweep's root:

- ``verify_zoo`` (the default of ``mmrobust-bench verify``) loads the committed zoo checkpoints
  (``bench.zoo``) and re-evaluates them, no training. A value passes when it equals the stored one or differs
  by at most the tolerance: the caller's, else 0 where the row was recorded with this machine's CPU
  capability, torch version and build and device, else :data:`CROSS_MACHINE_TOLERANCE` (kernels of another
  CPU capability order float sums differently, which moves a few samples across a decision boundary).
- ``verify_sweep`` (``--retrain``) re-trains each model from scratch at the recorded settings and asks
  whether each re-measured value lies within the committed seed spread: the stored mean over seeds ± k
  sample standard deviations (at least ``floor``, which also stands in for the spread of a single seed). A
  value that comes back with the recorded checkpoint and the recorded number is reported bit-identical.

With ``certificates`` each model is also certified again (``bench.sweep.certify_unit``: its empirical and
randomized-smoothing certificates, the η pairs) and its certified accuracies and η compared the same way (η
by relative difference). Each difference is printed beside the provenance recorded with the row and this
machine's (``bench.environment``), so a difference explains itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .api import train_defense
from .certification import CERTIFIED_CSV, ETA_PAIRS_CSV, read_certified, with_provenance_defaults
from .environment import PROVENANCE_COLUMNS, row_provenance, same_software
from .results import complete, eps_key, read_rows, read_table
from .sweep_plan import SweepPlan, unit_cells, validate_plan
from .sweep_units import certify_unit, earlier_cell_keys, run_cell, set_threads
from .train import TrainedModel, select_device
from .zoo import load_trained, read_zoo

log = logging.getLogger(__name__)

CROSS_MACHINE_TOLERANCE = 0.01  # accuracy: 10 of 1000 test samples
SEED_SPREAD_K = 3.0
SPREAD_FLOOR = 0.01
CERT_KEY = ("method", "certificate", "variant", "modality", "radius")
ETA_KEY = ("modality", "class_y", "class_j")
RESULT_KEY = ("attack", "attack_config", "modality", "eps", "norm")
# Recorded provenance shown beside a difference (device and dtype besides the columns of bench.environment).
SHOWN = ("device", *PROVENANCE_COLUMNS)


@dataclass
class VerifyOutcome:
    rows: pd.DataFrame  # one per re-measured value: recorded vs reproduced, allowed difference, verdict
    table: str
    ok: bool  # every re-measured value passes
    scratch: Path | None  # the scratch root (None once removed)
    mode: str = "retrain"  # "zoo" or "retrain"
    report: list[str] = field(default_factory=list)  # the summary: tolerance or spread, largest difference, provenance


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


# ----------------------------------------------------------------------------------------------- stored rows


def _newest(frame: pd.DataFrame, label_column: str) -> pd.DataFrame:
    """The rows of each (label, seed)'s newest model (the checkpoint of its last row): a retrained model's rows
    replace the earlier model's."""
    if frame.empty:
        return frame
    last = frame.groupby([frame[label_column].astype(str), frame["seed"].astype(int)])["checkpoint_sha256"].last()
    keys = list(zip(frame[label_column].astype(str), frame["seed"].astype(int)))
    return frame[[str(sha) == str(last[k]) for sha, k in zip(frame["checkpoint_sha256"], keys)]]


def _stored_results(plan: SweepPlan, results_path: Path) -> pd.DataFrame:
    """Finished rows of the plan's dataset and entries (every seed: the spread needs them), newest models only."""
    stored = read_rows(results_path)
    stored = stored[complete(stored)]
    labels = {e.label for e in plan.defenses}
    stored = stored[(stored["dataset"].astype(str) == plan.dataset) & stored["label"].astype(str).isin(labels)]
    return _newest(stored, "label")


def _choose(units: list[tuple[str, int]], n: int, rng: random.Random) -> list[tuple[str, int]]:
    return sorted(units) if n <= 0 else sorted(rng.sample(units, min(n, len(units))))


def _recorded_threads(rows: pd.DataFrame) -> int | None:
    if "threads" not in rows:
        return None
    threads = pd.to_numeric(rows["threads"], errors="coerce").fillna(0).astype(int)
    threads = threads[threads > 0]
    return int(threads.mode().iloc[0]) if not threads.empty else None


@contextlib.contextmanager
def _scratch_root(plan: SweepPlan, root: Path, scratch: Path | None) -> Iterator[tuple[Path, Any]]:
    """(scratch root, the plan's dataset): a temporary folder unless ``scratch`` is given, sharing the sweep's
    dataset cache (read only); the thread count is restored afterwards."""
    made = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="mmrobust-verify-")) if scratch is None else Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    if (root / "datasets").exists() and not (scratch / "datasets").exists():
        (scratch / "datasets").symlink_to((root / "datasets").resolve(), target_is_directory=True)
    for name in ("results.csv", CERTIFIED_CSV, ETA_PAIRS_CSV):
        (scratch / name).unlink(missing_ok=True)
    threads_before = torch.get_num_threads()
    try:
        yield scratch, validate_plan(plan, scratch)
    finally:
        torch.set_num_threads(threads_before)
        if made:
            shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- re-measuring


def _provenance(row: Any) -> dict[str, Any]:
    return {k: getattr(row, k, "") if not isinstance(row, dict) else row.get(k, "") for k in SHOWN}


def _measure(
    plan: SweepPlan,
    trained: TrainedModel,
    entry: Any,
    seed: int,
    rows: pd.DataFrame,
    *,
    scratch: Path,
    cells: int,
    rng: random.Random,
    dev: torch.device,
) -> list[dict[str, Any]]:
    """Re-measure ``cells`` random cells of one model (each as the sweep ran it: without the rows an earlier
    cell of the unit owns) and pair every re-measured row with its stored row."""
    results_path = scratch / "results.csv"
    all_cells = unit_cells(plan)
    count = len(all_cells) if cells <= 0 else min(cells, len(all_cells))
    for index in sorted(rng.sample(range(len(all_cells)), count)):
        run_cell(
            plan,
            trained,
            entry,
            seed,
            all_cells[index],
            dev=dev,
            done=set(),
            results_path=results_path,
            claimed=earlier_cell_keys(plan, trained, entry, seed, index, dev),
        )
    recorded = {
        (str(r.attack), str(r.attack_config), str(r.modality), eps_key(r.eps)): r for r in rows.itertuples(index=False)
    }
    fresh = read_rows(results_path)
    fresh = fresh[
        (fresh["label"].astype(str) == entry.label)
        & (fresh["seed"].astype(int) == seed)
        & (fresh["checkpoint_sha256"].astype(str) == trained.sha256)
    ]
    out = []
    for r in fresh.itertuples(index=False):
        key = (str(r.attack), str(r.attack_config), str(r.modality), eps_key(r.eps))
        old = recorded.get(key)
        if old is None:
            continue  # a cell of the current grid that the stored rows do not have
        out.append(
            {
                "kind": "result",
                "label": entry.label,
                "seed": seed,
                "what": key[1],
                "modality": key[2],
                "at": "—" if key[3] == "-" else key[3],
                "spread_key": ("result", *key, str(old.norm)),
                "recorded": float(old.accuracy),
                "reproduced": float(r.accuracy),
                "n": int(r.n),
                "recorded_n": int(old.n),
                "recorded_sha256": str(old.checkpoint_sha256),
                "reproduced_sha256": trained.sha256,
                "relative": False,
                **{f"recorded_{k}": v for k, v in _provenance(old).items()},
            }
        )
    if not out:
        log.warning("verify: none of the re-measured cells of %s seed %d is in the stored rows", entry.label, seed)
    return out


def _certificate_values(
    plan: SweepPlan, trained: TrainedModel, entry: Any, seed: int, *, root: Path, scratch: Path, dev: torch.device
) -> list[dict[str, Any]]:
    """Certify the model again into ``scratch`` and pair its certified accuracies and η with the stored ones of
    the same checkpoint (rows the sweep's root holds for it)."""
    if plan.certify_for(entry) is None:
        raise ValueError("verify --certificates: the sweep YAML has no certify: block")
    ds = trained.dataset  # type: ignore[attr-defined]
    model = (ds.name, entry.label, seed, trained.sha256)
    stored_cert = read_certified(root / CERTIFIED_CSV)
    stored_eta = with_provenance_defaults(read_table(root / ETA_PAIRS_CSV))

    def mine(frame: pd.DataFrame, sha: str) -> pd.DataFrame:
        if frame.empty:
            return frame
        return frame[
            (frame["dataset"].astype(str) == model[0])
            & (frame["defense"].astype(str) == model[1])
            & (frame["seed"].astype(int) == seed)
            & (frame["checkpoint_sha256"].astype(str) == sha)
        ]

    rows_sha = None
    for frame in (stored_cert, stored_eta):  # the stored certificates of this unit's newest certified model
        newest = _newest(frame, "defense") if not frame.empty else frame
        newest = (
            newest[(newest["defense"].astype(str) == entry.label) & (newest["seed"].astype(int) == seed)]
            if not newest.empty
            else newest
        )
        if not newest.empty:
            rows_sha = str(newest["checkpoint_sha256"].iloc[-1])
            break
    if rows_sha is None:
        log.warning("verify: %s seed %d has no stored certificate rows; nothing to compare", entry.label, seed)
        return []
    certify_unit(plan, trained, entry, seed, root=scratch, dev=dev, command="mmrobust-bench verify --certificates")
    out = []
    for kind, stored, fresh, key, value, relative in (
        (
            "certificate",
            mine(stored_cert, rows_sha),
            mine(read_certified(scratch / CERTIFIED_CSV), trained.sha256),
            CERT_KEY,
            "certified_accuracy",
            False,
        ),
        (
            "eta",
            mine(stored_eta, rows_sha),
            mine(with_provenance_defaults(read_table(scratch / ETA_PAIRS_CSV)), trained.sha256),
            ETA_KEY,
            "eta_pair",
            True,
        ),
    ):
        if stored.empty or fresh.empty:
            continue
        recorded = {
            tuple(str(v) for v in k): r
            for k, r in zip(stored[list(key)].itertuples(index=False, name=None), stored.to_dict("records"))
        }
        for k, r in zip(fresh[list(key)].itertuples(index=False, name=None), fresh.to_dict("records")):
            k = tuple(str(v) for v in k)
            old = recorded.get(k)
            if old is None:
                continue
            if kind == "certificate":
                what, modality, at = f"{old['method']} {old['certificate']} {old['variant']}", k[3], k[4]
            else:
                what, modality, at = "η pair", k[0], f"{k[1]}→{k[2]}"
            out.append(
                {
                    "kind": kind,
                    "label": entry.label,
                    "seed": seed,
                    "what": what,
                    "modality": modality,
                    "at": at,
                    "spread_key": (kind, *k),
                    "recorded": float(old[value]),
                    "reproduced": float(r[value]),
                    "n": int(r.get("n", 0) or 0),
                    "recorded_n": int(old.get("n", 0) or 0),
                    "recorded_sha256": rows_sha,
                    "reproduced_sha256": trained.sha256,
                    "relative": relative,
                    **{f"recorded_{p}": v for p, v in _provenance(old).items()},
                }
            )
    return out


def _difference(item: dict[str, Any], reference: float) -> float:
    """reproduced − reference (relative to |reference| for η)."""
    diff = item["reproduced"] - reference
    return diff / max(abs(reference), 1e-12) if item["relative"] and diff else diff


# ----------------------------------------------------------------------------------------------- the zoo


def verify_zoo(
    plan: SweepPlan,
    *,
    root: Path,
    zoo: Path,
    results: Path | None = None,
    n: int = 2,
    seed: int = 0,
    cells: int = 3,
    tolerance: float | None = None,
    certificates: bool = False,
    scratch: Path | None = None,
    device: str | None = None,
    progress: bool = False,
) -> VerifyOutcome:
    """Re-evaluate ``n`` random zoo models of ``plan`` (all when ``n`` <= 0) on ``cells`` random cells each (all when
    <= 0) and compare with the rows of ``results`` (default ``<root>/results.csv``); see the module docstring."""
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"verify: --tolerance must be a number >= 0, got {tolerance!r}")
    root = Path(root)
    results_path = Path(results) if results is not None else root / "results.csv"
    stored = _stored_results(plan, results_path)
    mine = stored[stored["seed"].astype(int).isin(plan.seeds)]
    found = read_zoo(zoo)
    if found.dataset != plan.dataset:
        raise ValueError(
            f"verify: the zoo at {found.directory} holds {found.dataset!r} models, the sweep is {plan.dataset!r}"
        )
    in_zoo = {(e.entry, e.seed): e for e in found.entries}
    units = sorted({(str(label), int(s)) for label, s in zip(mine["label"], mine["seed"])})
    if not units:
        raise ValueError(f"verify: {results_path} holds no rows of this sweep's entries; run the sweep first")
    checkable = [u for u in units if u in in_zoo]
    if not checkable:
        raise ValueError(
            f"verify: the zoo at {found.directory} has none of the {len(units)} models with rows; "
            f"export it (`mmrobust-bench zoo export`) or re-train with --retrain"
        )
    for label, s in checkable:
        sha = str(
            mine[(mine["label"].astype(str) == label) & (mine["seed"].astype(int) == s)]["checkpoint_sha256"].iloc[-1]
        )
        if in_zoo[(label, s)].sha256 != sha:
            raise ValueError(
                f"verify: the zoo's {label} seed {s} ({in_zoo[(label, s)].sha256[:12]}…) is not the model "
                f"the rows were measured with ({sha[:12]}…); re-export the zoo"
            )
    rng = random.Random(seed)
    chosen = _choose(checkable, n, rng)
    entries = {e.label: e for e in plan.defenses}
    items: list[dict[str, Any]] = []
    with _scratch_root(plan, root, scratch) as (scratch_dir, ds):
        differ = _config_difference(found.dataset_config, ds.config)
        if differ:
            raise ValueError(
                f"verify: the {plan.dataset} built from the sweep's options is not the data the zoo's "
                f"models were measured on ({', '.join(differ)} differ); check dataset_set and the data"
            )
        for label, unit_seed in chosen:
            rows = mine[(mine["label"].astype(str) == label) & (mine["seed"].astype(int) == unit_seed)]
            dev = _device(device, rows)
            set_threads(_recorded_threads(rows) or plan.threads or torch.get_num_threads())
            trained = load_trained(found, label, unit_seed, device=dev, dataset=ds)
            items.extend(
                _measure(
                    plan, trained, entries[label], unit_seed, rows, scratch=scratch_dir, cells=cells, rng=rng, dev=dev
                )
            )
            if certificates:
                items.extend(
                    _certificate_values(
                        plan, trained, entries[label], unit_seed, root=root, scratch=scratch_dir, dev=dev
                    )
                )
        current = {**row_provenance(dev if chosen else None), "device": str(dev if chosen else "cpu")}
    frame = _judge_tolerance(items, tolerance, current)
    skipped = len(units) - len(checkable)
    report = _tolerance_report(frame, tolerance)
    if skipped:
        report.append(f"{skipped} model(s) with rows are not in the zoo (not checked)")
    return _outcome(frame, "zoo", current, report, None if scratch is None else Path(scratch))


def _config_difference(recorded: dict[str, Any], built: dict[str, Any]) -> list[str]:
    """The keys on which two dataset configs differ (compared as JSON reads them back)."""
    a, b = (json.loads(json.dumps(c, sort_keys=True, default=str)) for c in (recorded, built))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _device(device: str | None, rows: pd.DataFrame) -> torch.device:
    """The device asked for, else the rows' when this machine has it, else the CPU."""
    if device is not None:
        return select_device(device)
    recorded = str(rows["device"].iloc[-1]) if len(rows) else "cpu"
    try:
        return select_device(recorded)
    except ValueError:
        return torch.device("cpu")


def _exact_expected(item: dict[str, Any], current: dict[str, Any]) -> bool:
    recorded = {k: item.get(f"recorded_{k}", "") for k in SHOWN}
    return same_software(recorded, current) and str(recorded["device"]) == str(current["device"])


def _judge_tolerance(items: list[dict[str, Any]], tolerance: float | None, current: dict[str, Any]) -> pd.DataFrame:
    for item in items:
        allowed = (
            tolerance if tolerance is not None else (0.0 if _exact_expected(item, current) else CROSS_MACHINE_TOLERANCE)
        )
        diff = _difference(item, item["recorded"])
        item.update(
            difference=diff,
            allowed=allowed,
            reference=item["recorded"],
            passes=abs(diff) <= allowed + 1e-12 and item["n"] == item["recorded_n"],
            status=(
                "exact"
                if diff == 0 and item["n"] == item["recorded_n"]
                else "within"
                if abs(diff) <= allowed + 1e-12 and item["n"] == item["recorded_n"]
                else "FAILS"
            ),
        )
    return pd.DataFrame(items)


def _tolerance_report(frame: pd.DataFrame, tolerance: float | None) -> list[str]:
    if frame.empty:
        return []
    if tolerance is not None:
        lines = [f"tolerance: {tolerance:g} (--tolerance), accuracy as a fraction; η relative"]
    else:
        same = int((frame["allowed"] == 0).sum())
        lines = [
            f"tolerance: 0 for the {same} value(s) recorded with this machine's CPU capability, torch version "
            f"and build and device; {CROSS_MACHINE_TOLERANCE:g} for the {len(frame) - same} others "
            f"(accuracy as a fraction; η relative; --tolerance sets it)"
        ]
    return lines + _largest(frame)


def _largest(frame: pd.DataFrame) -> list[str]:
    size = frame["difference"].abs()
    top = float(size.max()) if len(size) else 0.0
    if top == 0:
        return ["largest difference: 0 (every value reproduced exactly)"]
    reached = frame[size == top]
    names = [_name(r) for r in reached.itertuples(index=False)]
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return [f"largest difference: {top:.6g}, reached by {'; '.join(names[:5])}{more}"]


def _name(r: Any) -> str:
    at = "" if r.at in ("—", "") else f" at {r.at}"
    return f"{r.label} seed {r.seed} {r.what} on {r.modality}{at}"


# ----------------------------------------------------------------------------------------------- re-training


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
    stored = _stored_results(plan, results_path)
    mine = stored[stored["seed"].astype(int).isin(plan.seeds)]
    entries = {e.label: e for e in plan.defenses}
    units = sorted({(str(label), int(s)) for label, s in zip(mine["label"], mine["seed"])})
    if not units:
        raise ValueError(
            f"verify: {results_path} holds no rows of this sweep's entries "
            f"({', '.join(entries)} × seeds {', '.join(map(str, plan.seeds))}); run the sweep first"
        )
    rng = random.Random(seed)
    chosen = _choose(units, n, rng)
    items: list[dict[str, Any]] = []
    with _scratch_root(plan, root, scratch) as (scratch_dir, _):
        for label, unit_seed in chosen:
            entry = entries[label]
            rows = mine[(mine["label"].astype(str) == label) & (mine["seed"].astype(int) == unit_seed)]
            sha = str(rows["checkpoint_sha256"].iloc[-1])
            eval_threads = _recorded_threads(rows)
            train_threads = (
                checkpoint_threads(root, plan.dataset, entry.defense, sha)
                or eval_threads
                or plan.threads
                or torch.get_num_threads()
            )
            dev = _device(device, rows)
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
                _measure(plan, trained, entry, unit_seed, rows, scratch=scratch_dir, cells=cells, rng=rng, dev=dev)
            )
            if certificates:
                items.extend(
                    _certificate_values(plan, trained, entry, unit_seed, root=root, scratch=scratch_dir, dev=dev)
                )
        current = {**row_provenance(dev if chosen else None), "device": str(dev if chosen else "cpu")}
    spread = _seed_spread(stored, root, items)
    frame = _judge_spread(items, spread, k, floor)
    report = [f"seed spread: stored mean over seeds ± max({k:g} × sample std, {floor:g}) (--k, --floor; η relative)"]
    if not frame.empty:
        bits = int((frame["status"] == "bit-identical").sum())
        report.append(f"bit-identical: {bits} of {len(frame)} value(s) (same checkpoint sha256 and number)")
        report += _largest(frame.assign(difference=frame["reproduced"] - frame["recorded"]))
    return _outcome(frame, "retrain", current, report, None if scratch is None else Path(scratch))


def _seed_spread(stored: pd.DataFrame, root: Path, items: list[dict[str, Any]]) -> dict[tuple, list[float]]:
    """(label, spread key) -> the stored value of every seed (the newest model of each)."""
    out: dict[tuple, list[float]] = {}
    for r in stored.itertuples(index=False):
        key = ("result", str(r.attack), str(r.attack_config), str(r.modality), eps_key(r.eps), str(r.norm))
        out.setdefault((str(r.label), key), []).append(float(r.accuracy))
    if any(i["kind"] != "result" for i in items):
        for kind, frame, key, value in (
            ("certificate", read_certified(root / CERTIFIED_CSV), CERT_KEY, "certified_accuracy"),
            ("eta", read_table(root / ETA_PAIRS_CSV), ETA_KEY, "eta_pair"),
        ):
            if frame.empty:
                continue
            newest = _newest(frame, "defense")
            for label, k, v in zip(
                newest["defense"].astype(str), newest[list(key)].itertuples(index=False, name=None), newest[value]
            ):
                out.setdefault((label, (kind, *(str(x) for x in k))), []).append(float(v))
    return out


def _judge_spread(
    items: list[dict[str, Any]], spread: dict[tuple, list[float]], k: float, floor: float
) -> pd.DataFrame:
    for item in items:
        values = spread.get((item["label"], item["spread_key"]), [item["recorded"]])
        mean = sum(values) / len(values)
        std = pd.Series(values).std(ddof=1) if len(values) > 1 else float("nan")
        scale = max(abs(mean), 1e-12) if item["relative"] else 1.0
        allowed = max(k * std if std == std else 0.0, floor * scale)
        diff = _difference(item, mean)
        inside = abs(item["reproduced"] - mean) <= allowed + 1e-12
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


# ----------------------------------------------------------------------------------------------- output


def _outcome(
    frame: pd.DataFrame, mode: str, current: dict[str, Any], report: list[str], scratch: Path | None
) -> VerifyOutcome:
    ok = bool(len(frame)) and bool(frame["passes"].all())
    if len(frame):
        report = report + _provenance_lines(frame, current)
    return VerifyOutcome(frame, format_verify_table(frame, mode), ok, scratch, mode, report)


def _describe(values: dict[str, Any]) -> str:
    def text(key: str) -> str:
        value = values.get(key, "")
        return "not recorded" if str(value) in ("", "nan", "0", "None") else str(value)

    return (
        f"{text('cpu_capability')}, torch {text('torch_version')} build {text('torch_build')}, "
        f"{text('threads')} thread(s), {text('device')} ({text('device_name')})"
    )


def _provenance_lines(frame: pd.DataFrame, current: dict[str, Any]) -> list[str]:
    """Recorded vs this machine's provenance, once per distinct recorded provenance among values that moved."""
    moved = frame[frame["reproduced"] != frame["recorded"]]
    if moved.empty:
        return []
    lines = []
    here = _describe(current)
    seen: dict[str, int] = {}
    for r in moved.to_dict("records"):
        recorded = _describe({k: r.get(f"recorded_{k}", "") for k in SHOWN})
        seen[recorded] = seen.get(recorded, 0) + 1
    for recorded, count in seen.items():
        lines.append(f"{count} value(s) that moved were recorded on: {recorded}; re-measured here on: {here}")
    return lines


def format_verify_table(frame: pd.DataFrame, mode: str = "zoo") -> str:
    """Markdown table: one line per re-measured value, recorded vs reproduced, the allowed difference, verdict.
    Certificate and η values (hundreds per model) are listed only when they are not exactly equal."""
    reference = "recorded" if mode == "zoo" else "seed mean"
    lines = [
        f"| kind | label | seed | measure | modality | ε / r / pair | {reference} | reproduced | difference | "
        f"allowed | checkpoint | verdict |",
        "|---|---|---:|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    if frame.empty:
        return "\n".join(lines)
    hidden = (frame["kind"] != "result") & (frame["reproduced"] == frame["recorded"])
    for r in frame[~hidden].to_dict("records"):
        sha = r["recorded_sha256"][:12] + (
            " =" if r["reproduced_sha256"] == r["recorded_sha256"] else f" → {r['reproduced_sha256'][:12]}"
        )
        lines.append(
            f"| {r['kind']} | {r['label']} | {r['seed']} | {r['what']} | {r['modality']} | {r['at']} | "
            f"{r['reference']:.6g} | {r['reproduced']:.6g} | {r['difference']:+.6g} | {r['allowed']:.6g} | "
            f"{sha} | {r['status']} |"
        )
    if hidden.any():
        lines.append(f"({int(hidden.sum())} certificate and η values reproduced exactly are not listed)")
    return "\n".join(lines)


__all__ = [
    "VerifyOutcome",
    "verify_zoo",
    "verify_sweep",
    "checkpoint_threads",
    "format_verify_table",
    "CROSS_MACHINE_TOLERANCE",
    "SEED_SPREAD_K",
    "SPREAD_FLOOR",
]
