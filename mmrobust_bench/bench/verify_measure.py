"""What ``verify`` checks and how it re-measures it: the stored rows of each (label, seed)'s newest model, a seeded
draw of models and cells, a scratch root that never touches the sweep's, and each re-measured value paired with
its stored one (results, and with ``certificates`` the certified accuracies and η). Both modes (``bench.verify``,
``bench.verify_retrain``) share it; they differ only in how a model is obtained and a difference judged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .cell_journal import JOURNAL_DIR
from .certification import CERTIFIED_CSV, ETA_PAIRS_CSV, read_certified, with_provenance_defaults
from .environment import PROVENANCE_COLUMNS
from .result_readers import read_rows, read_table
from .result_rows import complete, eps_key
from .sweep_plan import SweepPlan, unit_cells, validate_plan
from .sweep_units import certify_unit, earlier_cell_keys, run_cell
from .train import TrainedModel, select_device

log = logging.getLogger("mmrobust_bench.bench.verify")  # the name the CLI's log lines show for every verify warning

CERT_KEY = ("method", "certificate", "variant", "modality", "radius")
ETA_KEY = ("modality", "class_y", "class_j")
RESULT_KEY = ("attack", "attack_config", "modality", "eps", "norm")
# Recorded provenance shown beside a difference (device and dtype besides the columns of bench.environment).
SHOWN = ("device", *PROVENANCE_COLUMNS, "batch_size")  # what a value records of how it was measured


# ----------------------------------------------------------------------------------------------- stored rows


def newest_models(frame: pd.DataFrame, label_column: str) -> pd.DataFrame:
    """The rows of each (label, seed)'s newest model (the checkpoint of its last row): a retrained model's rows
    replace the earlier model's."""
    if frame.empty:
        return frame
    last = frame.groupby([frame[label_column].astype(str), frame["seed"].astype(int)])["checkpoint_sha256"].last()
    keys = list(zip(frame[label_column].astype(str), frame["seed"].astype(int)))
    return frame[[str(sha) == str(last[k]) for sha, k in zip(frame["checkpoint_sha256"], keys)]]


def stored_results(plan: SweepPlan, results_path: Path) -> pd.DataFrame:
    """Finished rows of the plan's dataset and entries (every seed: the spread needs them), newest models only."""
    stored = read_rows(results_path)
    stored = stored[complete(stored)]
    labels = {e.label for e in plan.defenses}
    stored = stored[(stored["dataset"].astype(str) == plan.dataset) & stored["label"].astype(str).isin(labels)]
    return newest_models(stored, "label")


def choose_units(units: list[tuple[str, int]], n: int, rng: random.Random) -> list[tuple[str, int]]:
    return sorted(units) if n <= 0 else sorted(rng.sample(units, min(n, len(units))))


def recorded_threads(rows: pd.DataFrame) -> int | None:
    if "threads" not in rows:
        return None
    threads = pd.to_numeric(rows["threads"], errors="coerce").fillna(0).astype(int)
    threads = threads[threads > 0]
    return int(threads.mode().iloc[0]) if not threads.empty else None


SCRATCH_MARK = ".mmrobust-verify-scratch"  # what makes a folder one verify may clear and write again


def check_scratch(scratch: Path, root: Path, results_path: Path | None = None) -> None:
    """Refuse a ``--scratch`` that is, holds or lies inside the sweep's root (or holds its results CSV), and one
    holding result stores verify did not write there: verify clears its scratch's stores before measuring."""
    here, sweep = scratch.resolve(), root.resolve()
    if here == sweep or here.is_relative_to(sweep) or sweep.is_relative_to(here):
        raise ValueError(
            f"verify: --scratch {scratch} is, holds or lies inside the sweep root {root}, which verify only "
            f"reads; give a folder outside it"
        )
    if results_path is not None and results_path.resolve().is_relative_to(here):
        raise ValueError(f"verify: --scratch {scratch} holds the results CSV {results_path}; give a folder outside it")
    stores = [n for n in ("results.csv", CERTIFIED_CSV, ETA_PAIRS_CSV) if (scratch / n).exists()]
    if stores and not (scratch / SCRATCH_MARK).exists():
        raise ValueError(
            f"verify: --scratch {scratch} already holds {', '.join(stores)} that verify did not write; "
            f"give an empty or new folder"
        )


def share_datasets(root: Path, scratch: Path) -> None:
    """Give ``scratch`` the sweep's dataset cache file by file (hard links, else symbolic links): caches are
    written atomically (a new file renamed into place), so a rebuilt or new entry lands in the scratch and the
    sweep's root is never written through."""
    source = root / "datasets"
    if (scratch / "datasets").is_symlink():
        (scratch / "datasets").unlink()  # a whole-folder link would write new entries into the sweep's root
    if not source.is_dir():
        return
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        target = scratch / "datasets" / path.relative_to(source)
        if target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            target.symlink_to(path.resolve())


@contextlib.contextmanager
def scratch_root(
    plan: SweepPlan, root: Path, scratch: Path | None, results_path: Path | None = None
) -> Iterator[tuple[Path, Any]]:
    """(scratch root, the plan's dataset): a temporary folder unless ``scratch`` is given (checked by
    :func:`check_scratch`), with the sweep's dataset cache shared read only; the thread count is restored after."""
    made = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="mmrobust-verify-")) if scratch is None else Path(scratch)
    if not made:
        check_scratch(scratch, root, results_path)
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / SCRATCH_MARK).touch()
    for name in ("results.csv", CERTIFIED_CSV, ETA_PAIRS_CSV):
        (scratch / name).unlink(missing_ok=True)
    shutil.rmtree(scratch / JOURNAL_DIR, ignore_errors=True)  # an interrupted verify's batches: measured again
    threads_before = torch.get_num_threads()
    try:
        share_datasets(root, scratch)
        yield scratch, validate_plan(plan, scratch)
    finally:
        torch.set_num_threads(threads_before)
        if made:
            shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- re-measuring


def result_key(row: Any) -> tuple[str, ...]:
    """A result row's cell within its model (:data:`RESULT_KEY`): one attack can run under several norms at one ε,
    so the norm is part of it."""
    return tuple(eps_key(getattr(row, c)) if c == "eps" else str(getattr(row, c)) for c in RESULT_KEY)


def _provenance(row: Any) -> dict[str, Any]:
    values = {k: getattr(row, k, "") if not isinstance(row, dict) else row.get(k, "") for k in SHOWN}
    try:  # a whole number however the CSV typed it (a column with blanks reads as float); 0 = not recorded
        size = float(values["batch_size"])
        values["batch_size"] = int(size) if math.isfinite(size) else 0
    except (TypeError, ValueError):
        values["batch_size"] = 0
    return values


def unstored_line(unstored: list[str]) -> list[str]:
    """The report's line for the re-measured values that had no stored row to compare with (none: no line)."""
    if not unstored:
        return []
    return [
        f"{len(unstored)} re-measured value(s) have no stored row and are not checked: {'; '.join(unstored)} (the "
        "YAML's grid holds cells the rows lack: give the sweep YAML that made the rows, or run the sweep)"
    ]


def measure_cells(
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
    unstored: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Re-measure ``cells`` random cells of one model (each as the sweep ran it: without the rows an earlier
    cell of the unit owns) and pair every re-measured row with its stored row; a re-measured value whose cell the
    stored rows lack (a grid newer than the rows) is named in ``unstored`` instead, for the report to say."""
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
    recorded: dict[tuple[str, ...], Any] = {}
    for r in rows.itertuples(index=False):
        stored_key = result_key(r)
        if stored_key in recorded:  # one cell stored twice: no way to tell which value a re-measurement checks
            raise ValueError(
                f"verify: the stored rows of {entry.label} seed {seed} hold {stored_key[1]} on {stored_key[2]} at "
                f"ε {stored_key[3]} ({stored_key[4]}) twice (a damaged results CSV); restore it"
            )
        recorded[stored_key] = r
    fresh = read_rows(results_path)
    fresh = fresh[
        (fresh["label"].astype(str) == entry.label)
        & (fresh["seed"].astype(int) == seed)
        & (fresh["checkpoint_sha256"].astype(str) == trained.sha256)
    ]
    out = []
    for r in fresh.itertuples(index=False):
        key = result_key(r)
        old = recorded.get(key)
        if old is None:  # a cell of the current grid that the stored rows do not have: reported, not compared
            if unstored is not None:
                at = "" if key[3] == "-" else f" at ε {key[3]}"
                unstored.append(f"{entry.label} seed {seed} {key[1]} on {key[2]}{at}")
            continue
        out.append(
            {
                "kind": "result",
                "label": entry.label,
                "seed": seed,
                "what": key[1],
                "modality": key[2],
                "at": "—" if key[3] == "-" else key[3],
                "spread_key": ("result", *key),
                "recorded": float(old.accuracy),
                "reproduced": float(r.accuracy),
                "n": int(r.n),
                "recorded_n": int(old.n),
                "recorded_sha256": str(old.checkpoint_sha256),
                "reproduced_sha256": trained.sha256,
                "relative": False,
                **{f"recorded_{k}": v for k, v in _provenance(old).items()},
                "here": _provenance(r),  # where the fresh row says it was measured
            }
        )
    if not out:
        log.warning("verify: none of the re-measured cells of %s seed %d is in the stored rows", entry.label, seed)
    return out


def certificate_values(
    plan: SweepPlan, trained: TrainedModel, entry: Any, seed: int, *, root: Path, scratch: Path, dev: torch.device
) -> tuple[list[dict[str, Any]], int]:
    """Certify the model again into ``scratch`` and pair its certified accuracies and η with the stored ones of
    the same dataset, configuration and checkpoint (rows the sweep's root holds for it); also returns how many
    stored values there were to compare, so a check that compared none can say so."""
    if plan.certify_for(entry) is None:
        raise ValueError("verify --certificates: the sweep YAML has no certify: block")
    ds = trained.dataset  # type: ignore[attr-defined]
    config_hash = str(trained.key.config_hash)

    def this_model(frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of this dataset and configuration: a shared root holds other datasets' models of the same label
        and seed, and ``newest_models`` must not pick one of them."""
        if frame.empty:
            return frame
        return frame[
            (frame["dataset"].astype(str) == ds.name)
            & (frame["config_hash"].astype(str) == config_hash)
            & (frame["defense"].astype(str) == entry.label)
            & (frame["seed"].astype(int) == seed)
        ]

    stored_cert = this_model(read_certified(root / CERTIFIED_CSV))
    stored_eta = this_model(with_provenance_defaults(read_table(root / ETA_PAIRS_CSV)))

    def mine(frame: pd.DataFrame, sha: str) -> pd.DataFrame:
        return frame if frame.empty else frame[frame["checkpoint_sha256"].astype(str) == sha]

    rows_sha = None
    for frame in (stored_cert, stored_eta):  # the stored certificates of this unit's newest certified model
        if not frame.empty:
            rows_sha = str(newest_models(frame, "defense")["checkpoint_sha256"].iloc[-1])
            break
    if rows_sha is None:
        log.warning(
            "verify: %s seed %d has no stored certificate rows of %s (config %s); nothing to compare",
            entry.label,
            seed,
            ds.name,
            config_hash,
        )
        return [], 0
    expected = len(mine(stored_cert, rows_sha)) + len(mine(stored_eta, rows_sha))
    certify_unit(plan, trained, entry, seed, root=scratch, dev=dev, command="mmrobust-bench verify --certificates")
    out = []
    for kind, stored, fresh, key, value, relative in (
        (
            "certificate",
            mine(stored_cert, rows_sha),
            mine(this_model(read_certified(scratch / CERTIFIED_CSV)), trained.sha256),
            CERT_KEY,
            "certified_accuracy",
            False,
        ),
        (
            "eta",
            mine(stored_eta, rows_sha),
            mine(this_model(with_provenance_defaults(read_table(scratch / ETA_PAIRS_CSV))), trained.sha256),
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
                    "here": _provenance(r),  # where the fresh row says it was measured
                }
            )
    if not out:
        log.warning(
            "verify: 0 of %d stored certificate and η values of %s seed %d compared (no re-certified value has "
            "their key)",
            expected,
            entry.label,
            seed,
        )
    return out, expected


def difference(item: dict[str, Any], reference: float) -> float:
    """reproduced − reference (relative to |reference| for η)."""
    diff = item["reproduced"] - reference
    return diff / max(abs(reference), 1e-12) if item["relative"] and diff else diff


def measure_device(device: str | None, rows: pd.DataFrame) -> torch.device:
    """The device asked for, else the rows' when this machine has it, else the CPU."""
    if device is not None:
        return select_device(device)
    recorded = str(rows["device"].iloc[-1]) if len(rows) else "cpu"
    try:
        return select_device(recorded)
    except ValueError:
        return torch.device("cpu")


__all__ = [
    "CERT_KEY",
    "ETA_KEY",
    "RESULT_KEY",
    "result_key",
    "SHOWN",
    "newest_models",
    "stored_results",
    "choose_units",
    "recorded_threads",
    "scratch_root",
    "check_scratch",
    "share_datasets",
    "SCRATCH_MARK",
    "measure_device",
    "measure_cells",
    "unstored_line",
    "certificate_values",
    "difference",
]
