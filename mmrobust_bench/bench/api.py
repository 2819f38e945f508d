"""The public Python API: ``run(...)`` is what ``mmrobust-bench run`` calls.

Train (or load) a defense on a dataset, measure clean accuracy and an attack over an ε grid (one
attack per ε, or the whole curve from one minimal-norm run), check the numbers for signs of
gradient masking (``bench.flags``), append tidy rows to a CSV, draw the curve, and return everything.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from .._version import __version__
from ..attacks import build_attack, default_eps, validate_attack_options
from ..attacks.native import FGM
from ..contracts import ThreatModel
from ..data import build_dataset
from ..data.base import TensorSplit
from ..defenses import build_defense, dataset_schedule
from ..io import default_root
from . import distributed
from .busy_cores import warn_api_busy_cores
from .configs import EvalConfig, ModelConfig
from .evaluate import Measurement, clean_accuracy, minimal_norm_curve, robust_accuracy
from .flags import Flag, check_attack, clean_row_flags, row_flags, warn_flags
from .naming import modality_name, run_plot_name
from .result_readers import read_rows
from .result_rows import attack_rows, clean_row, frame_keys, recorded_batch_sizes, rows_frame
from .results import append_rows, stored_run
from .threat_sets import ANY, any_flags, combine_any, modality_label, threat_sets
from .train import TrainedModel, model_dtype, select_device, train
from .validate import check_eps, check_run_settings

log = logging.getLogger(__name__)

DEFAULT_EPS = (0.25, 0.5, 1.0, 1.5, 2.0)
# "sweep": the attack at every ε of the grid; "minimal": one run of a minimal-norm attack gives every ε.
CURVES = ("sweep", "minimal")
# Attacks whose rows get FGM evaluated alongside, for the fgm_beats_pgd flag.
FGM_CHECKED = ("pgd_l2",)


@dataclass
class RunResult:
    """What :func:`run` measured. The bench draws nothing (it sits below the reports): ``plot_path`` is where the
    run's robust-accuracy curve belongs (``<root>/plots/<run_plot_name>``; None for a reused run, whose curve was
    drawn when its rows were measured, and on the non-main ranks of torchrun), and
    ``reports.curves.plot_robust_curve(result.rows, result.plot_path, title=result.plot_title, command=...)``
    draws it there, as ``mmrobust-bench run`` does."""

    rows: pd.DataFrame
    trained: TrainedModel
    results_path: Path
    plot_path: Path | None
    table: str
    notes: list[str] = field(default_factory=list)
    reused: bool = False  # the rows were already stored (nothing evaluated); ``force=True`` re-evaluates
    plot_title: str = ""  # the curve's title: dataset, label, configuration, attack and modality


def invoked_command() -> str:
    """This process's command line as ``mmrobust-bench …``, for the "made by" stamps of files and figures."""
    return "mmrobust-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def validate_eps(eps: Sequence[float]) -> list[float]:
    """A non-empty, sorted grid of finite ε in [0, MAX_EPS] (``bench.validate.check_eps``)."""
    return check_eps(eps)


def train_defense(
    defense: str,
    *,
    dataset: str = "synthav",
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    root: Path | None = None,
    device: str = "auto",
    progress: bool = True,
    force: bool = False,
    sync_batchnorm: bool = False,
    built: Any = None,
) -> TrainedModel:
    """Build the dataset and train (or load) ``defense`` with the dataset's schedule and ``overrides``
    (data-parallel under torchrun; ``sync_batchnorm`` then converts BatchNorm to SyncBatchNorm).

    ``built``: the dataset already built from ``dataset`` and ``dataset_options`` (``run`` builds it first to
    check the attack against its modalities), so its cache is not read twice."""
    root = Path(root) if root is not None else default_root()
    if built is not None and built.name != dataset:
        raise ValueError(f"train_defense: built dataset {built.name!r} is not {dataset!r}")
    ds = (
        built
        if built is not None
        else build_dataset(dataset, cache_dir=root / "datasets", **dict(dataset_options or {}))
    )
    defense_obj, train_cfg = build_defense(defense, overrides, dataset_schedule(ds))
    trained = train(
        defense_obj,
        ds,
        train_cfg,
        seed=seed,
        root=root,
        device=device,
        progress=progress,
        force=force,
        sync_batchnorm=sync_batchnorm,
    )
    trained.dataset = ds  # type: ignore[attr-defined]
    return trained


def train_means(split: TensorSplit, batch_size: int = 256) -> dict[str, Any]:
    """Per-feature mean of every modality over a split (streamed batch by batch, so it also serves splits that
    load from disk): the ``mean`` fill of a missing modality."""
    sums: dict[str, Any] = {}
    for batch, _ in split.batches(batch_size):
        for m, x in batch.items():
            total = x.double().sum(0)
            sums[m] = total if m not in sums else sums[m] + total
    return {m: (total / max(len(split), 1)).float() for m, total in sums.items()}


def attack_options_for(attack: str, options: Mapping[str, Any] | None, dataset: Any) -> dict[str, Any]:
    """The attack's options completed from the dataset: ``missing`` with ``fill=mean`` gets the train-split
    mean of each modality as ``fill_values`` unless the caller gave its own."""
    out = dict(options or {})
    if attack == "missing" and out.get("fill") == "mean" and "fill_values" not in out:
        out["fill_values"] = train_means(dataset.train)
    return out


def run(
    defense: str = "crmt_at",
    attack: str = "pgd_l2",
    modality: str = "a",
    *,
    dataset: str = "synthav",
    eps: Sequence[float] | None = None,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    attack_options: Mapping[str, Any] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    root: Path | None = None,
    results: Path | None = None,
    device: str = "auto",
    batch_size: int = 500,
    progress: bool = True,
    curve: str = "sweep",
    check_flags: bool = True,
    sync_batchnorm: bool = False,
    label: str | None = None,
    force: bool = False,
    norm: str = "l2",
) -> RunResult:
    """Train/load ``defense``, attack ``modality`` (a name, comma list or ``all``) over ``eps``.

    ``norm`` is the threat norm (l2, linf, l1, l0); ``eps`` defaults to that norm's grid
    (``attacks.default_eps``: ``DEFAULT_EPS`` for l2). The attack, its options and the norm are checked
    before anything is built or trained (``attacks.validate_attack_options``).

    The rows carry ``label`` (default: the defense id), so two configurations of one defense stay apart.
    When every cell of the run is already stored for this checkpoint, nothing is evaluated and the stored
    rows are returned (``RunResult.reused``); ``force=True`` re-evaluates and replaces them.

    ``curve="sweep"`` runs the attack at every ε (batched for native attacks); ``curve="minimal"`` runs a
    minimal-norm attack (``fmn_l2``, torchattacks FAB/DeepFool/CW, ART DeepFool/CarliniL2Method/ElasticNet)
    once and reads robust accuracy at every ε off the per-sample norms. ``check_flags`` runs the validity
    checks of ``bench.flags``: raised flags go into the rows' ``flags`` column and ``RunResult.notes``.

    Nothing is drawn here: ``RunResult.plot_path`` and ``plot_title`` say where and how the CLI (or the caller,
    with ``reports.curves.plot_robust_curve``) draws the run's curve.

    Training and attacks run at torch's current thread count (the caller's to set; recorded in the rows), with a
    warning when those threads would share busy cores (``bench.busy_cores``).
    """
    import torch

    warn_api_busy_cores("mmr.run", select_device(device).type == "cpu", torch.get_num_threads(), log)
    return run_model(
        ModelConfig(
            defense=defense,
            dataset=dataset,
            seed=seed,
            overrides=dict(overrides or {}),
            dataset_options=dict(dataset_options or {}),
            label=label,
        ),
        EvalConfig(
            attack=attack,
            modality=modality,
            eps=eps,
            norm=norm,
            attack_options=dict(attack_options or {}),
            batch_size=batch_size,
            curve=curve,
            check_flags=check_flags,
        ),
        root=root,
        results=results,
        device=device,
        progress=progress,
        force=force,
        sync_batchnorm=sync_batchnorm,
    )


def run_model(
    model: ModelConfig,
    evaluation: EvalConfig,
    *,
    root: Path | None = None,
    results: Path | None = None,
    device: str = "auto",
    progress: bool = True,
    force: bool = False,
    sync_batchnorm: bool = False,
) -> RunResult:
    """:func:`run` with its settings as the config objects the CLI and the sweep share (``bench.configs``)."""
    defense, dataset, seed, label = model.defense, model.dataset, model.seed, model.label
    overrides, dataset_options = model.overrides, model.dataset_options
    attack, modality, eps, norm = evaluation.attack, evaluation.modality, evaluation.eps, evaluation.norm
    attack_options, batch_size = evaluation.attack_options, evaluation.batch_size
    curve, check_flags = evaluation.curve, evaluation.check_flags
    eps_grid = validate_eps(default_eps(norm) if eps is None else eps)
    if curve not in CURVES:
        raise ValueError(f"unknown curve {curve!r}; valid: {', '.join(CURVES)}")
    root = Path(root) if root is not None else default_root()
    results_path = Path(results) if results is not None else root / "results.csv"
    dev = select_device(device)
    # every setting and output location first: a typo or an unwritable --results costs a line, not a training
    check_run_settings(
        defense=defense,
        overrides=overrides,
        dataset=dataset,
        dataset_options=dataset_options,
        batch_size=batch_size,
        seed=seed,
        root=root,
        results=results_path,
        modality=modality,
        label=label,
    )
    # validate the cheap things before any training starts: the attack, its options and the norm first
    validate_attack_options(attack, attack_options, norm, eps=eps_grid)
    probe = build_dataset(dataset, cache_dir=root / "datasets", **dict(dataset_options or {}))
    specs = probe.specs
    atk = build_attack(attack, specs, seed=seed, **attack_options_for(attack, attack_options, probe))
    choices = threat_sets([s.name for s in specs]) if modality == ANY else [modality]
    threats = {choice: ThreatModel.parse(choice, eps_grid[0], specs, norm=norm) for choice in choices}
    for threat in threats.values():
        atk.validate(threat)
    if curve == "minimal" and modality == ANY:
        raise ValueError("curve='minimal' measures one modality choice; give a modality, not 'any'")
    if curve == "minimal" and not getattr(atk, "minimal_norm", False):
        raise ValueError(
            f"curve='minimal' needs a minimal-norm attack (fmn_l2, torchattacks:FAB, torchattacks:DeepFool, "
            f"torchattacks:CW, art:DeepFool, art:CarliniL2Method, art:ElasticNet), not {attack!r}"
        )
    if curve == "minimal" and max(eps_grid) <= 0:
        raise ValueError("curve='minimal' needs an ε grid with a positive value")
    trained = train_defense(
        defense,
        dataset=dataset,
        seed=seed,
        overrides=overrides,
        dataset_options=dataset_options,
        root=root,
        device=str(dev),
        progress=progress,
        sync_batchnorm=sync_batchnorm,
        built=probe,
    )
    main_rank = distributed.current().main  # under torchrun every rank measures its share; rank 0 writes
    ds = trained.dataset  # type: ignore[attr-defined]
    run_label = label or defense
    common = dict(
        dataset=ds.name,
        defense=defense,
        label=run_label,
        seed=seed,
        checkpoint_sha256=trained.sha256,
        config_hash=trained.key.config_hash,
        device=str(dev),
        suite_version=__version__,
        dtype=model_dtype(trained.model),
        batch_size=batch_size,
    )
    label = ANY if modality == ANY else modality_label(modality, threats[modality])
    existing = read_rows(results_path)
    stored = (
        None
        if force
        else stored_run(
            existing,
            dataset=ds.name,
            label=run_label,
            seed=seed,
            sha=trained.sha256,
            attack=attack,
            attack_config=atk.describe() + (" [minimal-norm curve" if curve == "minimal" else ""),
            modality=label,
            eps=eps_grid,
            norm_bounded=atk.norm_bounded,
            prefix=curve == "minimal",
            norm=norm,
        )
    )
    if recorded_batch_sizes(stored, other_than=batch_size):  # another measurement: see below
        stored = None
    if stored is not None:  # its curve was drawn when the rows were measured
        return RunResult(
            stored,
            trained,
            results_path,
            None,
            format_table(stored, trained),
            reused=True,
            notes=[
                f"reused {len(stored)} stored rows of {results_path} for this checkpoint "
                "(nothing evaluated; --force re-evaluates)"
            ],
        )
    clean = clean_accuracy(trained.model, ds.test, batch_size, dev)
    rows = [clean_row(clean, norm=norm, flags=clean_row_flags(clean), common=common)]
    config = atk.describe()
    notes: list[str] = []
    per_set: dict[str, list[Measurement]] = {}
    set_flags: dict[str, list[Flag]] = {}
    for choice, threat in threats.items():
        set_label = modality_label(choice, threat)
        if curve == "minimal":
            found = minimal_norm_curve(
                trained.model, ds.test, atk, threat, eps_grid, batch_size, dev, progress=progress
            )
            measured = found.measurements
            config = f"{config} [minimal-norm curve, radius {found.radius:g}]"
        else:
            measured = robust_accuracy(trained.model, ds.test, atk, threat, eps_grid, batch_size, dev, progress)
        flags: list[Flag] = []
        if check_flags:
            fgm = None
            if attack in FGM_CHECKED and curve == "sweep":
                fgm = robust_accuracy(trained.model, ds.test, FGM(specs, seed=seed), threat, eps_grid, batch_size, dev)
            flags = check_attack(trained.model, ds.test, atk, threat, eps_grid, measured, dev, fgm=fgm)
        per_set[set_label], set_flags[set_label] = measured, flags
        notes += warn_flags(flags, log, modality_name(set_label) if modality == ANY else "")
        rows += attack_rows(
            measured,
            attack=attack,
            attack_config=config,
            library=atk.library,
            library_version=atk.library_version,
            modality=set_label,
            norm=norm,
            norm_bounded=atk.norm_bounded,
            flags_at=partial(row_flags, flags),
            common=common,
        )
    if modality == ANY:
        rows += attack_rows(
            combine_any(per_set),
            attack=attack,
            attack_config=config,
            library=atk.library,
            library_version=atk.library_version,
            modality=ANY,
            norm=norm,
            norm_bounded=atk.norm_bounded,
            common=common,
            flags_at=lambda e: any_flags({s: row_flags(f, e) for s, f in set_flags.items()}),
        )
    # a randomized attack is reseeded per batch, so stored rows of these cells made at another batch size are
    # another measurement: they are replaced, not kept beside (or instead of) this one
    frame = rows_frame(rows)
    new_keys = set(frame_keys(frame))
    other_sizes = recorded_batch_sizes(
        existing[[k in new_keys for k in frame_keys(existing)]] if not existing.empty else existing,
        other_than=batch_size,
    )
    if other_sizes:
        notes.append(
            f"stored rows of these cells were measured at batch size {', '.join(map(str, other_sizes))}; "
            f"they are replaced by this run's, at {batch_size}"
        )
        log.warning(notes[-1])
    if main_rank:
        # ``any`` is combined from this call's set measurements: they replace stored set rows, so a stored any
        # never sits above a stored single set measured another time (another batch size, machine)
        append_rows(results_path, rows, replace=force or modality == ANY or bool(other_sizes))
    plot_path = (
        root / "plots" / run_plot_name(ds.name, run_label, attack, label, seed, trained.key.config_hash)
        if main_rank
        else None
    )
    title = f"{ds.name}: {run_label} [cfg {trained.key.config_hash[:8]}], {atk.describe()} on {modality_name(label)}"
    table = format_table(frame, trained)
    return RunResult(frame, trained, results_path, plot_path, table, notes=notes, plot_title=title)


def format_table(frame: pd.DataFrame, trained: TrainedModel | None = None, *, model_column: bool = False) -> str:
    """Markdown table of the rows; a ``flags`` column appears when any row carries a validity flag, and a
    ``model`` column (the rows' ``defense``) with ``model_column`` (the public API's evaluate tables)."""
    flagged = "flags" in frame and bool((frame["flags"].fillna("") != "").any())
    lines = [
        "|"
        + (" model |" if model_column else "")
        + " attack | modality | eps | accuracy | n |"
        + (" flags |" if flagged else ""),
        "|" + ("---|" if model_column else "") + "---|---|---:|---:|---:|" + ("---|" if flagged else ""),
    ]
    for row in frame.itertuples():
        eps = "—" if pd.isna(row.eps) else f"{row.eps:g}"
        line = (
            f"|{f' {row.defense} |' if model_column else ''} {row.attack_config} | {row.modality} | {eps} | "
            f"{row.accuracy:.3f} | {row.n} |"
        )
        lines.append(line + (f" {row.flags or ''} |" if flagged else ""))
    return "\n".join(lines)


__all__ = [
    "run",
    "run_model",
    "ModelConfig",
    "EvalConfig",
    "train_defense",
    "RunResult",
    "DEFAULT_EPS",
    "CURVES",
    "validate_eps",
    "train_means",
    "attack_options_for",
    "invoked_command",
]
