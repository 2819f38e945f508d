"""The public Python API: ``run(...)`` is what ``mmrobust-bench run`` calls.

Train (or load) a defense on a dataset, measure clean accuracy and an attack over an ε grid,
append tidy rows to a CSV, draw the curve, and return everything.
"""
from __future__ import annotations

import logging
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .. import __version__
from ..attacks import build_attack
from ..contracts import ALL_MODALITIES, ThreatModel
from ..data import build_dataset
from ..defenses import TrainConfig, apply_overrides, build_defense
from ..io import default_root
from ..reports.curves import plot_robust_curve
from .evaluate import clean_accuracy, robust_accuracy
from .results import CLEAN, NO_MODALITY, ResultRow, append_rows, rows_frame
from .train import TrainedModel, select_device, train

log = logging.getLogger(__name__)

DEFAULT_EPS = (0.25, 0.5, 1.0, 1.5, 2.0)


@dataclass
class RunResult:
    rows: pd.DataFrame
    trained: TrainedModel
    results_path: Path
    plot_path: Path | None
    table: str
    notes: list[str] = field(default_factory=list)


def validate_eps(eps: Sequence[float]) -> list[float]:
    values = [float(e) for e in eps]
    bad = [e for e in values if not math.isfinite(e) or e < 0]
    if bad or not values:
        raise ValueError(f"eps must be finite numbers >= 0, got {', '.join(map(str, bad)) or 'nothing'}")
    return sorted(set(values))


def train_defense(defense: str, *, dataset: str = "synthav", seed: int = 0, overrides: Mapping[str, Any] | None = None,
                  dataset_options: Mapping[str, Any] | None = None, root: Path | None = None,
                  device: str = "auto", progress: bool = True, force: bool = False) -> TrainedModel:
    """Build the dataset and train (or load) ``defense`` with the dataset's schedule and ``overrides``."""
    root = Path(root) if root is not None else default_root()
    ds = build_dataset(dataset, cache_dir=root / "datasets", **dict(dataset_options or {}))
    base_train, _ = apply_overrides(TrainConfig(), getattr(ds, "train_defaults", {}), f"dataset {dataset!r} defaults")
    defense_obj, train_cfg = build_defense(defense, overrides, base_train)
    trained = train(defense_obj, ds, train_cfg, seed=seed, root=root, device=device, progress=progress, force=force)
    trained.dataset = ds  # type: ignore[attr-defined]
    return trained


def run(defense: str = "crmt_at", attack: str = "pgd_l2", modality: str = "a", *, dataset: str = "synthav",
        eps: Sequence[float] = DEFAULT_EPS, seed: int = 0, overrides: Mapping[str, Any] | None = None,
        attack_options: Mapping[str, Any] | None = None, dataset_options: Mapping[str, Any] | None = None,
        root: Path | None = None, results: Path | None = None, device: str = "auto", batch_size: int = 500,
        progress: bool = True, plot: bool = True, command: str | None = None) -> RunResult:
    """Train/load ``defense``, attack ``modality`` (a name, comma list or ``all``) over ``eps``."""
    eps_grid = validate_eps(eps)
    root = Path(root) if root is not None else default_root()
    results_path = Path(results) if results is not None else root / "results.csv"
    command = command or "mmrobust-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    dev = select_device(device)
    # validate the cheap things before any training starts
    specs = _specs_of(dataset, dataset_options, root)
    atk = build_attack(attack, specs, seed=seed, **dict(attack_options or {}))
    threat = ThreatModel.parse(modality, eps_grid[0], specs)
    trained = train_defense(defense, dataset=dataset, seed=seed, overrides=overrides, dataset_options=dataset_options,
                            root=root, device=str(dev), progress=progress)
    ds = trained.dataset  # type: ignore[attr-defined]
    common = dict(dataset=ds.name, defense=defense, seed=seed, checkpoint_sha256=trained.sha256,
                  config_hash=trained.key.config_hash, device=str(dev), suite_version=__version__)
    clean = clean_accuracy(trained.model, ds.test, batch_size, dev)
    rows = [ResultRow(attack=CLEAN, attack_config=CLEAN, library="native", library_version=__version__,
                      modality=NO_MODALITY, norm=threat.norm, eps=0.0, n=clean.n, accuracy=clean.accuracy,
                      wall_seconds=clean.seconds, **common)]
    measured = robust_accuracy(trained.model, ds.test, atk, threat, eps_grid, batch_size, dev, progress)
    label = "+".join(threat.modalities) if modality != ALL_MODALITIES else ALL_MODALITIES
    for m in measured:
        rows.append(ResultRow(attack=attack, attack_config=atk.describe(), library=atk.library,
                              library_version=atk.library_version, modality=label, norm=threat.norm,
                              eps=m.eps if atk.norm_bounded else float("nan"), n=m.n, accuracy=m.accuracy,
                              wall_seconds=m.seconds, **common))
    append_rows(results_path, rows)
    frame = rows_frame(rows)
    plot_path = None
    if plot:
        name = f"{ds.name}-{defense}-{attack.replace(':', '_')}-{label}-seed{seed}.png"
        plot_path = plot_robust_curve(frame, root / "plots" / name, command=command,
                                      title=f"{ds.name}: {defense}, {atk.describe()} on {label}")
    table = format_table(frame, trained)
    return RunResult(frame, trained, results_path, plot_path, table)


def _specs_of(dataset: str, options: Mapping[str, Any] | None, root: Path):
    return build_dataset(dataset, cache_dir=root / "datasets", **dict(options or {})).specs


def format_table(frame: pd.DataFrame, trained: TrainedModel) -> str:
    lines = ["| attack | modality | eps | accuracy | n |", "|---|---|---:|---:|---:|"]
    for row in frame.itertuples():
        eps = "—" if pd.isna(row.eps) else f"{row.eps:g}"
        lines.append(f"| {row.attack_config} | {row.modality} | {eps} | {row.accuracy:.3f} | {row.n} |")
    return "\n".join(lines)


__all__ = ["run", "train_defense", "RunResult", "DEFAULT_EPS", "validate_eps"]
