"""Sweeps over defenses × seeds × attacks × modalities × ε, resumable cell by cell; certification runs.

A sweep expands its grid, trains (or loads: training is cached and resumable) every (defense entry,
seed) and evaluates every cell whose rows are not yet in the results CSV. A cell is identified by
(dataset, defense label, seed, checkpoint sha256, attack, attack config, modality, ε); rows of a
cell are appended atomically as soon as it finishes, so a sweep killed at any moment loses at most
the cell under way and a rerun completes it without duplicating anything.

Defense entries carry a ``label`` (the ``defense`` column of the rows) and their own ``set``
overrides, so one sweep can hold variants of a defense (the Figure-5 ablation: ``crmt_jt`` with
ρ = 0 and/or step 2 off) under distinct names. The YAML file reads::

    dataset: synthav
    dataset_set: {n_train: 4000}
    seeds: [0, 1, 2]
    set: {epochs: 6}                      # for every defense
    defenses:
      - jt
      - {defense: crmt_jt, label: crmt_jt_step1_only, set: {step2: false}}
    grid:
      - {attacks: [fgm, pgd_l2], modalities: [v, a], eps: [1.0]}
      - {attacks: [pgd_l2], modalities: [v, a], eps: [0.25, 0.5], attack_set: {steps: 4}}
      - {attacks: [missing], modalities: [v, a]}
    certify: {radii: [0, 0.25, 0.5, 1.0], honesty_steps: 20, train_samples: -1}

Certification (the sweep's ``certify:`` block) runs ``bench.certification.certify_defense`` per model.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from .. import __version__
from ..attacks import build_attack
from ..certify.radii import DEFAULT_RADII
from ..contracts import ALL_MODALITIES, ThreatModel
from ..data import build_dataset
from ..defenses import DEFENSES, TrainConfig, apply_overrides, build_defense
from ..io import atomic_path, default_root
from . import distributed
from .api import attack_options_for, invoked_command, train_defense, validate_eps
from .certification import (CERTIFIED_CSV, ETA_PAIRS_CSV, CertifyOutcome, certify_defense,
                            model_keys, read_table, replace_model_rows)
from .evaluate import clean_accuracy, robust_accuracy
from .flags import check_attack, flag_rows, row_flags
from .results import CLEAN, NO_MODALITY, ResultRow, append_rows, read_rows
from .train import TrainedModel, select_device

log = logging.getLogger(__name__)

DEFAULT_ATTACKS = ("fgm", "pgd_l2")
DEFAULT_MODALITIES = ("v", "a", ALL_MODALITIES)
DEFAULT_SWEEP_EPS = (0.5, 1.0)
SWEEP_KEYS = ("dataset", "dataset_set", "seeds", "set", "defenses", "grid", "batch_size", "certify")
ENTRY_KEYS = ("defense", "label", "set")
BLOCK_KEYS = ("attacks", "modalities", "eps", "attack_set")
CERTIFY_KEYS = ("radii", "honesty_steps", "train_samples", "batch_size")
CELL_COLUMNS = ("dataset", "defense", "seed", "checkpoint_sha256", "attack", "attack_config", "modality", "eps")


@dataclass(frozen=True)
class DefenseEntry:
    """A defense id, the label its rows carry, and overrides of its hyperparameters/schedule."""

    defense: str
    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GridBlock:
    """attacks × modalities × ε, all attacks built with ``attack_set`` (ε is ignored by ``missing``)."""

    attacks: tuple[str, ...]
    modalities: tuple[str, ...]
    eps: tuple[float, ...]
    attack_set: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CertifySpec:
    radii: tuple[float, ...] = DEFAULT_RADII
    honesty_steps: int = 20
    train_samples: int = -1
    batch_size: int = 64


@dataclass
class SweepPlan:
    defenses: list[DefenseEntry]
    seeds: list[int]
    grid: list[GridBlock]
    dataset: str = "synthav"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    common_overrides: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 500
    certify: CertifySpec | None = None

    def units(self) -> list[tuple[GridBlock, str, str]]:
        """(block, attack, modality) work units of one (defense, seed), in grid order."""
        return [(b, a, m) for b in self.grid for a in b.attacks for m in b.modalities]


@dataclass
class SweepOutcome:
    results_path: Path
    evaluated_rows: int = 0
    skipped_rows: int = 0
    models: int = 0
    certified: int = 0


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"sweep: {what} must be a mapping of key: value, got {value!r}")
    return dict(value)


def _check_keys(given: Mapping[str, Any], valid: Sequence[str], what: str) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"sweep: unknown key {', '.join(unknown)} in {what}; valid: {', '.join(valid)}")


def parse_defense_entry(item: Any) -> DefenseEntry:
    """``jt`` or ``{defense: crmt_jt, label: crmt_jt_step1_only, set: {step2: false}}``."""
    if isinstance(item, str):
        return DefenseEntry(item, item, {})
    if not isinstance(item, Mapping) or "defense" not in item:
        raise ValueError(f"sweep: a defense entry is an id or a mapping with 'defense' (and 'label', 'set'), got {item!r}")
    _check_keys(item, ENTRY_KEYS, f"defense entry {item!r}")
    defense = str(item["defense"])
    return DefenseEntry(defense, str(item.get("label") or defense), _mapping(item.get("set"), f"set of {defense!r}"))


def parse_block(item: Any) -> GridBlock:
    if not isinstance(item, Mapping):
        raise ValueError(f"sweep: a grid block is a mapping with attacks, modalities and eps, got {item!r}")
    _check_keys(item, BLOCK_KEYS, f"grid block {dict(item)!r}")
    attacks = tuple(str(a) for a in _as_list(item.get("attacks")))
    modalities = tuple(str(m) for m in _as_list(item.get("modalities")))
    if not attacks or not modalities:
        raise ValueError(f"sweep: grid block {dict(item)!r} needs at least one attack and one modality")
    raw_eps = _as_list(item.get("eps"))
    try:
        eps = tuple(validate_eps([float(e) for e in raw_eps])) if raw_eps else ()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sweep: grid block {dict(item)!r}: {exc}") from exc
    return GridBlock(attacks, modalities, eps, _mapping(item.get("attack_set"), "attack_set"))


def _seed_list(value: Any) -> list[int]:
    try:
        seeds = [int(s) for s in _as_list(value)]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sweep: seeds must be integers such as 0,1,2, got {value!r}") from exc
    if not seeds:
        raise ValueError("sweep: give at least one seed")
    return sorted(set(seeds), key=seeds.index)


def load_sweep_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"sweep config {path} does not exist")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"sweep config {path} must hold a mapping (dataset, seeds, defenses, grid, ...)")
    return loaded


def build_plan(config: Mapping[str, Any] | None = None, *, defenses: Sequence[str] | None = None,
               seeds: Sequence[int] | None = None, attacks: Sequence[str] | None = None,
               modalities: Sequence[str] | None = None, eps: Sequence[float] | None = None,
               dataset: str | None = None, dataset_options: Mapping[str, Any] | None = None,
               overrides: Mapping[str, Any] | None = None, batch_size: int | None = None,
               certify_radii: Sequence[float] | None = None) -> SweepPlan:
    """A plan from a YAML mapping and command-line values; the command line wins.

    Any of ``attacks``/``modalities``/``eps`` replaces the YAML grid by one block (the ones not given
    take the defaults fgm,pgd_l2 × v,a,all × 0.5,1). ``defenses`` replaces the YAML entries by plain ids.
    ``overrides`` are added to every entry's common ``set``; ``certify_radii`` turns certification on.
    """
    config = dict(config or {})
    _check_keys(config, SWEEP_KEYS, "the sweep config")
    entries = [parse_defense_entry(d) for d in (_as_list(defenses) if defenses else
                                                _as_list(config.get("defenses")))]
    if not entries:
        raise ValueError("sweep: no defenses given (use --defenses a,b or a 'defenses' list in --config)")
    seen: dict[str, DefenseEntry] = {}
    for e in entries:
        if e.label in seen and seen[e.label] != e:
            raise ValueError(f"sweep: label {e.label!r} is used by two different defense entries; give each its own label")
        seen[e.label] = e
    entries = list(seen.values())
    if attacks or modalities or eps:
        grid = [GridBlock(tuple(attacks or DEFAULT_ATTACKS), tuple(modalities or DEFAULT_MODALITIES),
                          tuple(validate_eps(eps)) if eps else DEFAULT_SWEEP_EPS)]
    elif config.get("grid"):
        grid = [parse_block(b) for b in _as_list(config["grid"])]
    else:
        grid = [GridBlock(DEFAULT_ATTACKS, DEFAULT_MODALITIES, DEFAULT_SWEEP_EPS)]
    spec = None
    raw_cert = config.get("certify")
    if raw_cert or certify_radii:
        cert = _mapping(raw_cert if isinstance(raw_cert, Mapping) else {}, "certify")
        _check_keys(cert, CERTIFY_KEYS, "certify")
        radii = certify_radii or cert.get("radii") or DEFAULT_RADII
        spec = CertifySpec(tuple(validate_eps([float(r) for r in _as_list(radii)])),
                           int(cert.get("honesty_steps", 20)), int(cert.get("train_samples", -1)),
                           int(cert.get("batch_size", 64)))
    return SweepPlan(
        defenses=entries,
        seeds=_seed_list(seeds if seeds else config.get("seeds", [0])),
        grid=grid,
        dataset=str(dataset or config.get("dataset", "synthav")),
        dataset_options={**_mapping(config.get("dataset_set"), "dataset_set"), **dict(dataset_options or {})},
        common_overrides={**_mapping(config.get("set"), "set"), **dict(overrides or {})},
        batch_size=int(batch_size or config.get("batch_size", 500)),
        certify=spec,
    )


def eps_key(eps: Any) -> str:
    """ε as it identifies a cell: ``-`` for unbounded attacks (NaN in the rows), else 10 significant digits."""
    value = float(eps)
    return "-" if math.isnan(value) else f"{value:.10g}"


def cell_key(dataset: Any, defense: Any, seed: Any, sha: Any, attack: Any, attack_config: Any, modality: Any,
             eps: Any) -> tuple:
    return (str(dataset), str(defense), int(seed), str(sha), str(attack), str(attack_config), str(modality),
            eps_key(eps))


def done_cells(frame: pd.DataFrame) -> set[tuple]:
    """Keys of the cells already in a results frame."""
    if frame.empty:
        return set()
    return {cell_key(*values) for values in frame[list(CELL_COLUMNS)].itertuples(index=False, name=None)}


def modality_label(modality: str, threat: ThreatModel) -> str:
    """How rows name attacked modalities: ``all`` for the joint attack on all, else names joined by ``+``."""
    return ALL_MODALITIES if modality == ALL_MODALITIES else "+".join(threat.modalities)


def validate_plan(plan: SweepPlan, root: Path) -> None:
    """Fail before any training on unknown defenses, settings, attacks, attack options or modalities."""
    for entry in plan.defenses:
        DEFENSES.get(entry.defense)
    ds = build_dataset(plan.dataset, cache_dir=root / "datasets", **plan.dataset_options)
    base, _ = apply_overrides(TrainConfig(), getattr(ds, "train_defaults", {}), f"dataset {plan.dataset!r} defaults")
    for entry in plan.defenses:
        build_defense(entry.defense, {**plan.common_overrides, **entry.overrides}, base)
    for block in plan.grid:
        for attack in block.attacks:
            atk = build_attack(attack, ds.specs, **attack_options_for(attack, block.attack_set, ds))
            if atk.norm_bounded and not block.eps:
                raise ValueError(f"sweep: attack {attack!r} needs an eps list in its grid block")
        for modality in block.modalities:
            ThreatModel.parse(modality, 0.0, ds.specs)


def run_sweep(plan: SweepPlan, *, root: Path | None = None, results: Path | None = None, device: str = "auto",
              progress: bool = True, command: str | None = None, sync_batchnorm: bool = False) -> SweepOutcome:
    """Run every cell of ``plan`` that is not yet in ``results``; append each cell's rows when it finishes.

    Under torchrun every rank trains and measures its share of each cell; rank 0 appends the rows and
    certifies (certification is not sharded) while the others wait."""
    root = Path(root) if root is not None else default_root()
    results_path = Path(results) if results is not None else root / "results.csv"
    command = command or invoked_command()
    dev = select_device(device)
    validate_plan(plan, root)
    done = done_cells(read_rows(results_path))
    outcome = SweepOutcome(results_path)
    units = plan.units()
    per_model = 1 + len(units) + (1 if plan.certify else 0)
    main_rank = distributed.current().main
    bar = tqdm(total=len(plan.defenses) * len(plan.seeds) * per_model, desc="sweep", disable=not (progress and main_rank))
    for entry in plan.defenses:
        for seed in plan.seeds:
            bar.set_postfix_str(f"{entry.label} seed {seed}")
            trained = train_defense(entry.defense, dataset=plan.dataset, seed=seed,
                                    overrides={**plan.common_overrides, **entry.overrides},
                                    dataset_options=plan.dataset_options, root=root, device=str(dev), progress=progress,
                                    sync_batchnorm=sync_batchnorm)
            outcome.models += 1
            ds = trained.dataset  # type: ignore[attr-defined]
            common = dict(dataset=ds.name, defense=entry.label, seed=seed, checkpoint_sha256=trained.sha256,
                          config_hash=trained.key.config_hash, device=str(dev), suite_version=__version__)
            evaluated, skipped = _clean_cell(trained, common, plan.batch_size, dev, done, results_path)
            outcome.evaluated_rows += evaluated
            outcome.skipped_rows += skipped
            bar.update(1)
            for block, attack, modality in units:
                evaluated, skipped = _attack_cell(trained, common, block, attack, modality, plan.batch_size, dev,
                                                  done, results_path)
                outcome.evaluated_rows += evaluated
                outcome.skipped_rows += skipped
                bar.update(1)
            if plan.certify is not None and main_rank:
                certified_path = root / CERTIFIED_CSV
                have = model_keys(read_table(certified_path))
                if (ds.name, entry.label, seed, trained.sha256) not in have:
                    certify_defense(entry.defense, dataset=plan.dataset, seed=seed, label=entry.label,
                                    overrides={**plan.common_overrides, **entry.overrides},
                                    dataset_options=plan.dataset_options, root=root, device=str(dev),
                                    radii=plan.certify.radii, honesty_steps=plan.certify.honesty_steps,
                                    train_samples=plan.certify.train_samples, batch_size=plan.certify.batch_size,
                                    progress=False, trained=trained, command=command)
                    outcome.certified += 1
            if plan.certify is not None:
                distributed.barrier()
                bar.update(1)
    bar.close()
    if main_rank:
        mark_row_flags(results_path)
    return outcome


def mark_row_flags(results_path: Path) -> pd.DataFrame:
    """Add the flags that need rows of several cells (``non_monotone`` along an ε curve assembled from several
    grid blocks, ``fgm_beats_pgd`` between the fgm and pgd_l2 cells of one model) to the results CSV, atomically.
    Idempotent: flags already present stay, nothing is duplicated."""
    frame = read_rows(results_path)
    if frame.empty:
        return frame
    flags = flag_rows(frame)
    if flags.equals(frame["flags"]):
        return frame
    frame["flags"] = flags
    with atomic_path(results_path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def _clean_cell(trained: TrainedModel, common: dict[str, Any], batch_size: int, dev: torch.device,
                done: set[tuple], results_path: Path) -> tuple[int, int]:
    """The clean-accuracy row of one model, unless present: (rows evaluated, rows skipped)."""
    key = cell_key(common["dataset"], common["defense"], common["seed"], common["checkpoint_sha256"],
                   CLEAN, CLEAN, NO_MODALITY, 0.0)
    if key in done:
        return 0, 1
    clean = clean_accuracy(trained.model, trained.dataset.test, batch_size, dev)  # type: ignore[attr-defined]
    _append_on_main(results_path, [ResultRow(attack=CLEAN, attack_config=CLEAN, library="native",
                                         library_version=__version__, modality=NO_MODALITY, norm="l2", eps=0.0,
                                         n=clean.n, accuracy=clean.accuracy, wall_seconds=clean.seconds, **common)])
    done.add(key)
    return 1, 0


def _attack_cell(trained: TrainedModel, common: dict[str, Any], block: GridBlock, attack: str, modality: str,
                 batch_size: int, dev: torch.device, done: set[tuple], results_path: Path) -> tuple[int, int]:
    """One attack on one modality at the block's ε values not yet present, batched over ε, rows appended at once."""
    ds = trained.dataset  # type: ignore[attr-defined]
    atk = build_attack(attack, ds.specs, seed=common["seed"], **attack_options_for(attack, block.attack_set, ds))
    grid = list(block.eps) if atk.norm_bounded else [math.nan]
    threat = ThreatModel.parse(modality, 0.0 if math.isnan(grid[0]) else grid[0], ds.specs)
    label = modality_label(modality, threat)
    keys = {e: cell_key(common["dataset"], common["defense"], common["seed"], common["checkpoint_sha256"], attack,
                        atk.describe(), label, e) for e in grid}
    todo = [e for e in grid if keys[e] not in done]
    if not todo:
        return 0, len(grid)
    eps_grid = todo if atk.norm_bounded else [0.0]
    measured = robust_accuracy(trained.model, ds.test, atk, threat, eps_grid, batch_size, dev, progress=False)
    flags = check_attack(trained.model, ds.test, atk, threat, eps_grid, measured, dev)
    for flag in flags:
        log.warning("%s %s seed %s, %s on %s: %s", common["dataset"], common["defense"], common["seed"], attack,
                    label, flag.note())
    rows = [ResultRow(attack=attack, attack_config=atk.describe(), library=atk.library,
                      library_version=atk.library_version, modality=label, norm=threat.norm,
                      eps=m.eps if atk.norm_bounded else math.nan, n=m.n, accuracy=m.accuracy,
                      wall_seconds=m.seconds, flags=row_flags(flags, m.eps if atk.norm_bounded else None), **common)
            for m in measured]
    _append_on_main(results_path, rows)
    done.update(keys[e] for e in todo)
    return len(rows), len(grid) - len(todo)


def _append_on_main(results_path: Path, rows: list[ResultRow]) -> None:
    """Rank 0 writes (every rank measured its share and holds the merged numbers)."""
    if distributed.current().main:
        append_rows(results_path, rows)


__all__ = ["DefenseEntry", "GridBlock", "CertifySpec", "SweepPlan", "SweepOutcome", "CertifyOutcome", "build_plan",
           "load_sweep_config", "parse_defense_entry", "parse_block", "run_sweep", "certify_defense", "cell_key",
           "done_cells", "eps_key", "replace_model_rows", "mark_row_flags", "CERTIFIED_CSV", "ETA_PAIRS_CSV"]
