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
      - {attacks: [pgd_linf, "torchattacks:PGD"], modalities: [v], eps: [0.01, 0.02], norm: linf}
    certify: {radii: [0, 0.25, 0.5, 1.0], honesty_steps: 20, train_samples: -1}
    threads: 1                            # torch.set_num_threads before any work (recorded in every row)

Certification (the sweep's ``certify:`` block) runs ``bench.certification.certify_defense`` per model and
method: ``method: [empirical, smoothing]`` (default empirical), the honesty check's strength
(``honesty_steps``, ``honesty_restarts``, ``honesty_targets``, ``honesty_loss``, ``honesty_legacy``) and
randomized smoothing (``sigma``, ``n0``, ``n``, ``alpha``, ``noise_batch``, ``modalities: [a, v, all]``,
``n_attack``, ``attack_steps``, ``attack_samples``; ``test_samples`` for both). A defense entry may carry its
own ``certify:`` mapping, merged over the sweep's block for that entry only (e.g. a slow defense certified on
fewer test samples: ``{defense: msefm, certify: {test_samples: 300}}``); ``--certify`` radii and
``--certify-method`` on the command line replace those keys everywhere, the entries' too.

Fanning out: the work unit is a (defense label, seed) — its training, its cells, its certificate.
``shard=(i, n)`` runs the units of shard ``i`` of ``n`` (assigned deterministically from a stable
hash of the unit, so independent processes agree without talking); any number of shards, Slurm array
tasks or shells can run against one root on a shared filesystem: rows go through the locked result
store (``bench.results``) and each checkpoint is trained under a lock on its folder, so nothing is
trained twice or written twice. ``bench.executors`` runs the units on Ray instead. The rows of all
shards together are exactly the rows of one unsharded run.
"""
from __future__ import annotations

import hashlib
import logging
import math
import numbers
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import yaml

from .._version import __version__
from ..attacks import build_attack, default_eps, validate_attack_options
from ..certify.radii import DEFAULT_RADII
from ..contracts import ALL_MODALITIES, ThreatModel
from ..data import build_dataset
from ..defenses import DEFENSES, build_defense, dataset_schedule
from ..io import default_root
from ..safe_yaml import preview
from . import distributed
from .api import attack_options_for, invoked_command, train_defense, validate_eps
from ..certify.honesty import HonestyConfig
from ..certify.smoothing import SmoothingConfig
from .certification import METHODS as CERTIFY_METHODS
from .certification import has_certificate, noise_set, smoothed_label
from .certification import (CERTIFIED_CSV, ETA_PAIRS_CSV, CertifyOutcome, certify_defense,
                            model_keys, read_table, replace_model_rows)
from .evaluate import Measurement, clean_accuracy, robust_accuracy
from .flags import check_attack, clean_row_flags, flag_rows, row_flags
from .results import (CELL_COLUMNS, CLEAN, NO_MODALITY, ResultRow, append_rows, attack_rows, cell_key,
                      decode_outcomes, done_cells, eps_key, frame_keys, read_rows, rewrite_rows)
from .threat_sets import ANY, any_flags, combine_any, modality_label, threat_sets
from .train import TrainedModel, model_dtype, select_device
from .retire import RetireOutcome, retire_stale
from .validate import check_name

log = logging.getLogger(__name__)

DEFAULT_ATTACKS = ("fgm", "pgd_l2")
DEFAULT_MODALITIES = ("v", "a", ALL_MODALITIES)
DEFAULT_SWEEP_EPS = (0.5, 1.0)
SWEEP_KEYS = ("dataset", "dataset_set", "seeds", "set", "defenses", "grid", "batch_size", "certify", "threads")
ENTRY_KEYS = ("defense", "label", "set", "certify")
BLOCK_KEYS = ("attacks", "modalities", "eps", "attack_set", "norm", "samples")
CERTIFY_KEYS = ("radii", "honesty_steps", "train_samples", "batch_size", "method", "sigma", "n0", "n", "alpha",
                "modalities", "noise_batch", "test_samples", "n_attack", "attack_steps", "attack_samples",
                "honesty_restarts", "honesty_targets", "honesty_loss", "honesty_legacy")


@dataclass(frozen=True)
class DefenseEntry:
    """A defense id, the label its rows carry, overrides of its hyperparameters/schedule, and of the sweep's
    ``certify:`` block for this entry (``certify``; certification settings never enter the config hash)."""

    defense: str
    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    certify: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GridBlock:
    """attacks × modalities × ε, all attacks built with ``attack_set`` under threat ``norm`` (l2, linf, l1, l0;
    ε is ignored by ``missing``)."""

    attacks: tuple[str, ...]
    modalities: tuple[str, ...]
    eps: tuple[float, ...]
    attack_set: Mapping[str, Any] = field(default_factory=dict)
    norm: str = "l2"
    # > 0: the block's cells attack only the first that many test samples (the same samples as a certificate's
    # ``test_samples``), for attacks too costly for the whole split; the rows' attack_config says so
    samples: int = 0

    def config(self, describe: str) -> str:
        """The rows' ``attack_config`` of an attack of this block: its description, and the test subset when there
        is one (so subset rows never share a cell with whole-split rows)."""
        return f"{describe} [first {self.samples} test samples]" if self.samples > 0 else describe

    def split(self, test: Any) -> Any:
        """The test samples this block's cells attack."""
        return test.subset(torch.arange(self.samples)) if 0 < self.samples < len(test) else test


@dataclass(frozen=True)
class CertifySpec:
    radii: tuple[float, ...] = DEFAULT_RADII
    honesty_steps: int = 100
    train_samples: int = -1
    batch_size: int = 64
    # certification methods (``empirical``, ``smoothing``), the honesty check's strength, randomized smoothing
    methods: tuple[str, ...] = ("empirical",)
    honesty: HonestyConfig = field(default_factory=HonestyConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    modalities: tuple[str, ...] = (ALL_MODALITIES,)  # smoothing noise sets: "a", "a,v", "all"
    test_samples: int = -1
    n_attack: int = 16
    attack_steps: int = 20
    attack_samples: int = -1


def parse_certify_block(cert: Mapping[str, Any], radii: Sequence[float]) -> CertifySpec:
    """The sweep's ``certify:`` block (keys ``CERTIFY_KEYS``) as a :class:`CertifySpec`."""
    methods = tuple(str(m) for m in _as_list(cert.get("method", "empirical")))
    unknown = [m for m in methods if m not in CERTIFY_METHODS]
    if unknown or not methods:
        raise ValueError(f"sweep: certify method {', '.join(unknown) or '(none)'} unknown; valid: "
                         f"{', '.join(CERTIFY_METHODS)}")

    def whole(key: str, default: int) -> int:
        return _certify_number(cert, key, default, integer=True)  # type: ignore[return-value]

    steps = whole("honesty_steps", 100)
    targets = whole("honesty_targets", -1)
    if bool(cert.get("honesty_legacy", False)):
        honesty = HonestyConfig.legacy_check(steps)
    else:
        honesty = HonestyConfig(steps=max(steps, 0), restarts=whole("honesty_restarts", 0),
                                targeted=targets != 0, targeted_classes=targets,
                                loss=str(cert.get("honesty_loss", "margin")))
    smoothing = SmoothingConfig(sigma=_certify_number(cert, "sigma", 0.25), n0=whole("n0", 100),
                                n=whole("n", 10000), alpha=_certify_number(cert, "alpha", 0.001),
                                batch=whole("noise_batch", 1000))
    return CertifySpec(_radii(radii), steps,
                       whole("train_samples", -1), whole("batch_size", 64), methods, honesty, smoothing,
                       tuple(str(m) for m in _as_list(cert.get("modalities", ALL_MODALITIES))),
                       whole("test_samples", -1), whole("n_attack", 16),
                       whole("attack_steps", 20), whole("attack_samples", -1))


def _certify_number(cert: Mapping[str, Any], key: str, default: float, *, integer: bool = False) -> float | int:
    """``cert[key]`` as an integer (``integer``) or a finite number, or a one-line error naming the key (ranges
    are the certification settings' own checks)."""
    value = cert.get(key, default)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
            or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"sweep: certify {key} must be {kind}, got {preview(value)}")
    return value if integer else float(value)


def _radii(radii: Any) -> tuple[float, ...]:
    """Certification radii: numbers, finite, >= 0 (and at most ``bench.validate.MAX_EPS``), sorted; a one-line
    error naming ``radii`` otherwise."""
    from .validate import check_eps

    values = _as_list(radii)
    for r in values:
        if isinstance(r, bool) or not isinstance(r, (int, float, str)):
            raise ValueError(f"sweep: certify radii must be numbers >= 0 such as [0, 0.25, 0.5], got {preview(r)}")
    try:
        return tuple(check_eps(values, "certify radii"))
    except ValueError as exc:
        raise ValueError(f"sweep: {exc}") from None


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
    threads: int | None = None  # intra-op threads (torch.set_num_threads) for all work; None: torch's default
    entry_certify: dict[str, CertifySpec] = field(default_factory=dict)  # by label: entries with their own certify:

    def certify_for(self, entry: DefenseEntry) -> CertifySpec | None:
        """The certification settings of one entry: its own (merged over the sweep's block) or the sweep's."""
        return self.entry_certify.get(entry.label, self.certify)

    def work_units(self, shard: tuple[int, int] | None = None) -> list[tuple[DefenseEntry, int]]:
        """The (defense entry, seed) units in plan order; with ``shard=(i, n)`` only those of shard ``i``."""
        units = [(entry, seed) for entry in self.defenses for seed in self.seeds]
        return units if shard is None else shard_units(units, *shard)

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
    retired: RetireOutcome | None = None  # stale rows found (or moved, with --retire-stale) before the work

    def add(self, other: "SweepOutcome") -> None:
        self.evaluated_rows += other.evaluated_rows
        self.skipped_rows += other.skipped_rows
        self.models += other.models
        self.certified += other.certified


def unit_hash(label: str, seed: int) -> int:
    """A hash of a (label, seed) unit that every process, machine and Python version computes alike."""
    return int(hashlib.sha256(f"{label}\0{int(seed)}".encode()).hexdigest()[:16], 16)


def shard_units(units: Sequence[tuple[DefenseEntry, int]], index: int, count: int) -> list[tuple[DefenseEntry, int]]:
    """Units of shard ``index`` of ``count``: the units ordered by their stable hash, dealt round robin.

    Dealing (rather than hash mod n) keeps shards within one unit of each other in size; the order by
    hash keeps one defense's seeds (often similar cost) apart. Depends only on the set of units, so
    every shard started from the same sweep YAML agrees on the partition."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: give I/N with 0 <= I < N, e.g. --shard 0/4 … --shard 3/4")
    order = sorted(units, key=lambda u: (unit_hash(u[0].label, u[1]), u[0].label, u[1]))
    mine = {(u[0].label, u[1]) for u in order[index::count]}
    return [u for u in units if (u[0].label, u[1]) in mine]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``I/N`` (0-based, e.g. Slurm's ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``) into (I, N)."""
    if text is None:
        return None
    try:
        index, count = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard expects I/N such as 0/4 (shard I of N, counted from 0), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: give I/N with 0 <= I < N, e.g. 0/{max(count, 2)}")
    return index, count


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` (intra-op, also OpenMP/MKL) when a count is given; recorded in every row."""
    if threads is None:
        return
    if int(threads) < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(int(threads))


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
        raise ValueError(f"sweep: {what} must be a mapping of key: value, got {preview(value)}")
    return dict(value)


def _check_keys(given: Mapping[str, Any], valid: Sequence[str], what: str) -> None:
    from ..hints import did_you_mean

    unknown = sorted(set(given) - set(valid))
    if unknown:
        named = ", ".join(f"{k}{did_you_mean(k, valid)}" for k in unknown)
        raise ValueError(f"sweep: unknown key {named} in {what}; valid: {', '.join(valid)}")


def parse_defense_entry(item: Any) -> DefenseEntry:
    """``jt`` or ``{defense: crmt_jt, label: crmt_jt_step1_only, set: {step2: false}}``."""
    if isinstance(item, str):
        return DefenseEntry(item, item, {})
    if not isinstance(item, Mapping) or "defense" not in item:
        raise ValueError(f"sweep: a defense entry is an id or a mapping with 'defense' (and 'label', 'set'), got "
                         f"{preview(item)}")
    _check_keys(item, ENTRY_KEYS, f"defense entry {preview(item)}")
    if not isinstance(item["defense"], str):
        raise ValueError(f"sweep: defense in a defense entry must be a defense id such as jt, got "
                         f"{preview(item['defense'])}")
    defense = item["defense"]
    given_label = item.get("label")
    if given_label is not None and (isinstance(given_label, bool) or not isinstance(given_label, (str, int))):
        raise ValueError(f"sweep: label of defense entry {preview(defense)} must be a name such as jt_v2, got "
                         f"{preview(given_label)}")
    label = check_name(str(given_label or defense), f"sweep: label of defense entry {preview(defense)}")
    cert = _mapping(item.get("certify"), f"certify of {preview(label)}")
    _check_keys(cert, CERTIFY_KEYS, f"certify of defense entry {preview(label)}")
    return DefenseEntry(defense, label, _mapping(item.get("set"), f"set of {preview(defense)}"), cert)


def parse_block(item: Any) -> GridBlock:
    if not isinstance(item, Mapping):
        raise ValueError(f"sweep: a grid block is a mapping with attacks, modalities and eps, got {preview(item)}")
    shown = preview(dict(item))
    _check_keys(item, BLOCK_KEYS, f"grid block {shown}")
    attacks = tuple(str(a) for a in _as_list(item.get("attacks")))
    modalities = tuple(str(m) for m in _as_list(item.get("modalities")))
    if not attacks or not modalities:
        raise ValueError(f"sweep: grid block {shown} needs at least one attack and one modality")
    raw_eps = _as_list(item.get("eps"))
    for e in raw_eps:
        if isinstance(e, bool) or not isinstance(e, (int, float, str)):
            raise ValueError(f"sweep: grid block {shown}: eps must be numbers >= 0 such as [0.5, 1], got {preview(e)}")
    try:
        eps = tuple(validate_eps(raw_eps)) if raw_eps else ()
    except ValueError as exc:
        raise ValueError(f"sweep: grid block {shown}: {exc}") from exc
    norm = str(item.get("norm", "l2"))
    try:
        default_eps(norm)  # an unknown norm says so, with "did you mean"
    except ValueError as exc:
        raise ValueError(f"sweep: grid block {shown}: {exc}") from exc
    samples = item.get("samples", 0)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ValueError(f"sweep: grid block {shown}: samples must be a whole number >= 0 (0: every test sample), got "
                         f"{preview(samples)}")
    return GridBlock(attacks, modalities, eps, _mapping(item.get("attack_set"), "attack_set"), norm, samples)


def _seed_list(value: Any) -> list[int]:
    """Seeds as non-negative integers (``0.5`` is not seed 0, ``true`` not seed 1; ``run --seed`` refuses -1
    alike), first occurrence kept; a one-line error naming ``seeds`` otherwise."""
    seeds = []
    for s in _as_list(value):
        if isinstance(s, str) and s.strip().isdigit():
            s = int(s)
        elif isinstance(s, float) and s.is_integer():
            s = int(s)
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"sweep: seeds must be integers >= 0 such as 0,1,2, got {preview(s)}")
        seeds.append(int(s))
    if not seeds:
        raise ValueError("sweep: give at least one seed")
    return sorted(set(seeds), key=seeds.index)


def load_sweep_config(path: str | Path) -> dict[str, Any]:
    from .validate import read_yaml_mapping

    return read_yaml_mapping(path, "sweep config")


def build_plan(config: Mapping[str, Any] | None = None, *, defenses: Sequence[str] | None = None,
               seeds: Sequence[int] | None = None, attacks: Sequence[str] | None = None,
               modalities: Sequence[str] | None = None, eps: Sequence[float] | None = None,
               dataset: str | None = None, dataset_options: Mapping[str, Any] | None = None,
               overrides: Mapping[str, Any] | None = None, batch_size: int | None = None,
               certify_radii: Sequence[float] | None = None, threads: int | None = None,
               norm: str | None = None, only: Sequence[str] | None = None,
               skip: Sequence[str] | None = None, certify_methods: Sequence[str] | None = None,
               certify: bool = True, certify_sets: Sequence[str] | None = None) -> SweepPlan:
    """A plan from a YAML mapping and command-line values; the command line wins.

    Any of ``attacks``/``modalities``/``eps`` replaces the YAML grid by one block (the ones not given
    take the defaults fgm,pgd_l2 × v,a,all × 0.5,1). ``defenses`` replaces the YAML entries by plain ids.
    ``overrides`` are added to every entry's common ``set``; ``certify_radii`` turns certification on;
    ``threads`` replaces the YAML's ``threads``. ``norm`` sets the threat norm of every block (a block's
    own ``norm`` otherwise, default l2); a command-line block without ``eps`` under a norm other than l2
    takes that norm's default grid (``attacks.default_eps``). ``only`` keeps, ``skip`` drops, the entries
    with these labels, each with its own settings (to run part of a leaderboard's YAML first, e.g. all
    but a slow defense; the entries' config hashes, hence their rows, are those of the full YAML).
    ``certify_methods`` replaces the ``certify:`` block's ``method`` list (and turns certification on), e.g.
    the quick empirical certificates of every model before the slower smoothing ones. ``certify_sets`` keeps only
    these of the ``certify:`` block's smoothing noise sets (``modalities``), so that the sets of one slow model can
    run in separate processes at once (each set's rows are those of the full run). ``certify=False`` leaves
    certification out whatever the YAML says (every cell first, the certificates by a later run).
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
    entries = _select_entries(list(seen.values()), only, skip)
    if norm is not None:
        default_eps(norm)  # an unknown norm says so, with "did you mean"
    cli_eps = DEFAULT_SWEEP_EPS if norm in (None, "l2") else default_eps(norm)
    if "grid" in config and not _as_list(config["grid"]):
        raise ValueError("sweep: grid is empty; give at least one block such as {attacks: [pgd_l2], modalities: [v], "
                         "eps: [0.5]}, or leave grid out for the default grid")
    if attacks or modalities or eps:
        grid = [GridBlock(tuple(attacks or DEFAULT_ATTACKS), tuple(modalities or DEFAULT_MODALITIES),
                          tuple(validate_eps(eps)) if eps else cli_eps)]
    elif config.get("grid"):
        grid = [parse_block(b) for b in _as_list(config["grid"])]
    else:
        grid = [GridBlock(DEFAULT_ATTACKS, DEFAULT_MODALITIES, cli_eps)]
    if norm is not None:
        grid = [replace(block, norm=norm) for block in grid]
    spec = None
    entry_specs: dict[str, CertifySpec] = {}
    raw_cert = config.get("certify")
    if raw_cert or certify_radii or certify_methods:
        cert = _mapping(raw_cert if isinstance(raw_cert, Mapping) else {}, "certify")
        _check_keys(cert, CERTIFY_KEYS, "certify")
        # --certify-sets applies to the blocks the selected entries use: the sweep's own (if an entry has no
        # certify: of its own) and each entry's
        uses_top = any(not e.certify for e in entries)
        spec = _certify_spec(cert, certify_radii, certify_methods, certify_sets if uses_top else None)
        for e in entries:
            if e.certify:
                try:
                    entry_specs[e.label] = _certify_spec({**cert, **e.certify}, certify_radii, certify_methods,
                                                         certify_sets)
                except (TypeError, ValueError) as exc:
                    reason = str(exc).removeprefix("sweep: ")
                    raise ValueError(f"sweep: certify of defense entry {e.label!r}: {reason}") from exc
    elif certify_sets:
        raise ValueError("sweep: --certify-sets picks smoothing noise sets of the certify: block, which is missing")
    else:
        own = [e.label for e in entries if e.certify]
        if own:
            raise ValueError(f"sweep: defense entr{'ies' if len(own) > 1 else 'y'} {', '.join(own)} adjust the "
                             "sweep's certify: block, which is missing; add a certify: block (or --certify RADII)")
    if not certify:  # checked all the same, so that a later run with certification finds no typo
        spec, entry_specs = None, {}
    return SweepPlan(
        defenses=entries,
        seeds=_seed_list(seeds if seeds else config.get("seeds", [0])),
        grid=grid,
        dataset=str(dataset or config.get("dataset", "synthav")),
        dataset_options={**_mapping(config.get("dataset_set"), "dataset_set"), **dict(dataset_options or {})},
        common_overrides={**_mapping(config.get("set"), "set"), **dict(overrides or {})},
        batch_size=int(batch_size or config.get("batch_size", 500)),
        certify=spec,
        threads=_threads(threads if threads is not None else config.get("threads")),
        entry_certify=entry_specs,
    )


def _certify_spec(cert: Mapping[str, Any], certify_radii: Sequence[float] | None,
                  certify_methods: Sequence[str] | None, certify_sets: Sequence[str] | None = None) -> CertifySpec:
    """A ``certify:`` mapping with the command line's radii and methods (they win) as a :class:`CertifySpec`,
    keeping only the smoothing noise sets in ``certify_sets`` (each must be one of the block's)."""
    if certify_methods:
        cert = {**cert, "method": list(certify_methods)}
    spec = parse_certify_block(cert, certify_radii or cert.get("radii") or DEFAULT_RADII)
    if not certify_sets:
        return spec
    if "smoothing" not in spec.methods:
        raise ValueError(f"sweep: --certify-sets picks smoothing noise sets, but the certify methods are "
                         f"{', '.join(spec.methods)}; add --certify-method smoothing")
    wanted = {set_spelling(m) for m in certify_sets}
    known = [set_spelling(m) for m in spec.modalities]
    unknown = sorted(wanted - set(known))
    if unknown:
        raise ValueError(f"sweep: --certify-sets {', '.join(unknown)} is not a noise set of the certify: block; "
                         f"its sets: {', '.join(known)}")
    return replace(spec, modalities=tuple(m for m, k in zip(spec.modalities, known) if k in wanted))


def set_spelling(noise_set: str) -> str:
    """One spelling per smoothing noise set, for matching ``--certify-sets`` against the block without the
    dataset's modality order: ``all``, or the names sorted and joined by ``+`` (the block's ``"v,a"`` and the
    command line's ``"a+v"`` or ``"v+a"`` are one set; a comma on the command line separates sets)."""
    text = str(noise_set).strip()
    if text == ALL_MODALITIES:
        return text
    return "+".join(sorted(part.strip() for part in text.replace(",", "+").split("+") if part.strip()))


def _select_entries(entries: list[DefenseEntry], only: Sequence[str] | None,
                    skip: Sequence[str] | None) -> list[DefenseEntry]:
    """The entries whose labels are in ``only`` (all if None) and not in ``skip``; unknown labels refused."""
    from ..hints import did_you_mean

    labels = [e.label for e in entries]
    for flag, names in (("--only", only), ("--skip", skip)):
        for name in names or ():
            if name not in labels:
                raise ValueError(f"sweep {flag}: no defense entry is labelled {name!r}{did_you_mean(name, labels)}; "
                                 f"labels: {', '.join(labels)}")
    kept = [e for e in entries if (only is None or e.label in only) and e.label not in (skip or ())]
    if not kept:
        raise ValueError(f"sweep: --only/--skip leave no defense entry (labels: {', '.join(labels)})")
    return kept


def _threads(value: Any) -> int | None:
    if value is None:
        return None
    try:
        threads = int(value)
    except (TypeError, ValueError):
        threads = 0
    if threads < 1 or str(value).strip() not in (str(threads), f"{threads}.0"):
        raise ValueError(f"sweep: threads must be a positive integer such as 1, got {preview(value)}")
    return threads


def validate_plan(plan: SweepPlan, root: Path) -> Any:
    """Fail before any training on unknown defenses, settings, attacks, attack options or modalities; returns
    the plan's dataset (built, or loaded from its cache) for the checks that follow."""
    from .validate import check_certify_settings, check_run_settings

    # names, types and ranges of every setting before the dataset is generated (it can take minutes)
    check_run_settings(dataset=plan.dataset, dataset_options=plan.dataset_options, batch_size=plan.batch_size)
    for entry in plan.defenses:
        build_defense(entry.defense, {**plan.common_overrides, **entry.overrides})
    for spec in ([plan.certify] if plan.certify is not None else []) + list(plan.entry_certify.values()):
        check_certify_settings(train_samples=spec.train_samples, honesty_steps=spec.honesty_steps,
                               batch_size=spec.batch_size)
    ds = build_dataset(plan.dataset, cache_dir=root / "datasets", **plan.dataset_options)
    base = dataset_schedule(ds)
    for entry in plan.defenses:
        build_defense(entry.defense, {**plan.common_overrides, **entry.overrides}, base)
    for block in plan.grid:
        for attack in block.attacks:
            atk = validate_attack_options(attack, block.attack_set, block.norm, eps=block.eps, specs=ds.specs)
            if atk.norm_bounded and not block.eps:
                raise ValueError(f"sweep: attack {attack!r} needs an eps list in its grid block")
        for modality in block.modalities:
            if modality != ANY:
                ThreatModel.parse(modality, 0.0, ds.specs)
    return ds


def run_sweep(plan: SweepPlan, *, root: Path | None = None, results: Path | None = None, device: str = "auto",
              progress: bool = True, command: str | None = None, sync_batchnorm: bool = False,
              shard: tuple[int, int] | None = None, executor: str = "local", address: str | None = None,
              workers: int | None = None, retire: bool = False) -> SweepOutcome:
    """Run every cell of ``plan`` that is not yet in ``results``; append each cell's rows when it finishes.

    ``shard=(i, n)`` restricts the run to shard ``i``'s (label, seed) units. ``executor="ray"`` runs the
    units as Ray tasks (``bench.executors``; ``address`` of an existing cluster, else a local one with
    ``workers`` workers). Under torchrun every rank trains and measures its share of each cell; rank 0
    appends the rows and certifies (certification is not sharded) while the others wait.

    Stored rows of the plan's entries made under another configuration are reported (a warning), and with
    ``retire`` moved to ``<root>/retired/`` before any work (``bench.retire``)."""
    from .executors import EXECUTORS, run_units

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if executor == "local" and (address is not None or workers is not None):
        raise ValueError("--address and --workers apply to --executor ray; drop them or add --executor ray")
    root = Path(root) if root is not None else default_root()
    results_path = Path(results) if results is not None else root / "results.csv"
    command = command or invoked_command()
    set_threads(plan.threads)
    dev = select_device(device)
    from .validate import check_run_settings

    # before any work: rows are never lost to an unwritable location or a damaged results file
    check_run_settings(root=root, results=results_path)
    ds = validate_plan(plan, root)
    if retire and distributed.current().active:
        raise ValueError("--retire-stale rewrites the result tables: run it in one process, not under torchrun")
    retired = retire_stale(plan, ds, root=root, results_path=results_path, apply=retire) \
        if distributed.current().main else None
    units = plan.work_units(shard)
    outcome = run_units(executor, plan, units, root=root, results_path=results_path, device=str(dev),
                        progress=progress, command=command, sync_batchnorm=sync_batchnorm, address=address,
                        workers=workers)
    if distributed.current().main:
        mark_row_flags(results_path)
        outcome.retired = retired
    return outcome


def unit_cells(plan: SweepPlan) -> list[tuple[GridBlock, str, str] | None]:
    """The cells of one (defense, seed) unit: None for the clean cell, then (block, attack, modality)."""
    return [None, *plan.units()]


def train_unit(plan: SweepPlan, entry: DefenseEntry, seed: int, *, root: Path, device: str, progress: bool = False,
               sync_batchnorm: bool = False) -> TrainedModel:
    """Train (or load) the model of one unit (under the checkpoint folder's lock, see ``bench.train``)."""
    return train_defense(entry.defense, dataset=plan.dataset, seed=seed,
                         overrides={**plan.common_overrides, **entry.overrides}, dataset_options=plan.dataset_options,
                         root=root, device=device, progress=progress, sync_batchnorm=sync_batchnorm)


def unit_common(trained: TrainedModel, entry: DefenseEntry, seed: int, dev: torch.device) -> dict[str, Any]:
    """The columns every row of a unit shares (identity and provenance)."""
    ds = trained.dataset  # type: ignore[attr-defined]
    return dict(dataset=ds.name, defense=entry.defense, label=entry.label, seed=seed,
                checkpoint_sha256=trained.sha256, config_hash=trained.key.config_hash, device=str(dev),
                suite_version=__version__, dtype=model_dtype(trained.model))


def run_cell(plan: SweepPlan, trained: TrainedModel, entry: DefenseEntry, seed: int,
             cell: tuple[GridBlock, str, str] | None, *, dev: torch.device, done: set[tuple],
             results_path: Path, claimed: set[tuple] | None = None) -> tuple[int, int]:
    """Evaluate one cell of a unit unless its rows are stored: (rows evaluated, rows skipped).

    ``claimed``: the row keys of the unit's earlier cells. Grid blocks may overlap (a uni-modal block at ε = 1 and
    a radius grid through 1): such a row belongs to its first cell, so a later cell neither evaluates nor counts it
    and each stored row is counted once. The cell's own keys are added to it. None: every ε of the cell."""
    common = unit_common(trained, entry, seed, dev)
    if cell is None:
        return _clean_cell(trained, common, plan.batch_size, dev, done, results_path)
    block, attack, modality = cell
    return _attack_cell(trained, common, block, attack, modality, plan.batch_size, dev, done, results_path,
                        claimed=claimed)


def earlier_cell_keys(plan: SweepPlan, trained: TrainedModel, entry: DefenseEntry, seed: int, index: int,
                      dev: torch.device) -> set[tuple]:
    """The row keys of the attack cells before ``unit_cells(plan)[index]``: ``claimed`` for a cell run on its own
    (a Ray task), so it counts and evaluates what it would in the sequential sweep."""
    common = unit_common(trained, entry, seed, dev)
    keys: set[tuple] = set()
    for cell in unit_cells(plan)[:index]:
        if cell is not None:
            keys.update(_cell_plan(trained, common, *cell)[3].values())
    return keys


def certify_unit(plan: SweepPlan, trained: TrainedModel, entry: DefenseEntry, seed: int, *, root: Path, dev: torch.device,
                 command: str) -> int:
    """Certify a unit's model unless its certificate rows are stored; 1 if it certified, else 0."""
    spec = plan.certify_for(entry)
    assert spec is not None
    ds = trained.dataset  # type: ignore[attr-defined]
    stored = read_table(root / CERTIFIED_CSV)
    model = (ds.name, entry.label, seed, trained.sha256)
    names = [s.name for s in ds.specs]
    done = 0
    for method in spec.methods:
        sets: Sequence[str] = ()
        if method == "smoothing":  # only the noise sets (at this σ) not yet stored
            sets = [m for m in spec.modalities
                    if not has_certificate(stored, model, method, smoothed_label(noise_set(m, names), names),
                                           spec.smoothing.sigma)]
            if not sets:
                continue
        elif has_certificate(stored, model, method):
            continue
        certify_defense(entry.defense, dataset=plan.dataset, seed=seed, label=entry.label,
                        overrides={**plan.common_overrides, **entry.overrides}, dataset_options=plan.dataset_options,
                        root=root, device=str(dev), radii=spec.radii, honesty_steps=spec.honesty_steps,
                        train_samples=spec.train_samples, batch_size=spec.batch_size, progress=False,
                        trained=trained, command=command, method=method, honesty=spec.honesty,
                        smoothing=replace(spec.smoothing, seed=seed), modalities=sets or spec.modalities,
                        test_samples=spec.test_samples, n_attack=spec.n_attack, attack_steps=spec.attack_steps,
                        attack_samples=spec.attack_samples)
        done = 1
    return done


def run_unit(plan: SweepPlan, entry: DefenseEntry, seed: int, *, root: Path, results_path: Path, device: str,
             progress: bool = False, command: str, sync_batchnorm: bool = False, bar: Any = None) -> SweepOutcome:
    """One (defense, seed) unit start to end: train or load, every cell not yet stored, the certificate."""
    outcome = SweepOutcome(results_path)
    dev = select_device(device)
    main_rank = distributed.current().main
    trained = train_unit(plan, entry, seed, root=root, device=str(dev), progress=progress,
                         sync_batchnorm=sync_batchnorm)
    outcome.models += 1
    done = done_cells(read_rows(results_path))  # read per unit: other shards/processes may have added cells
    claimed: set[tuple] = set()
    for cell in unit_cells(plan):
        if bar is not None:  # names the cell on the bar while it runs, and in its log line once done
            what = "clean" if cell is None else f"{cell[1]} on {cell[2]}"
            bar.set_postfix_str(f"{entry.label} seed {seed}: {what}")
        evaluated, skipped = run_cell(plan, trained, entry, seed, cell, dev=dev, done=done, results_path=results_path,
                                      claimed=claimed)
        outcome.evaluated_rows += evaluated
        outcome.skipped_rows += skipped
        if bar is not None:
            bar.update(1)
    if plan.certify is not None:
        if bar is not None:
            bar.set_postfix_str(f"{entry.label} seed {seed}: certificate")
        if main_rank:
            outcome.certified += certify_unit(plan, trained, entry, seed, root=root, dev=dev, command=command)
        distributed.barrier()
        if bar is not None:
            bar.update(1)
    return outcome


def mark_row_flags(results_path: Path) -> pd.DataFrame:
    """Add the flags that need rows of several cells (``non_monotone`` along an ε curve assembled from several
    grid blocks, ``fgm_beats_pgd`` between the fgm and pgd_l2 cells of one model) to the results CSV, atomically
    and under the store's lock. Idempotent: flags already present stay, nothing is duplicated."""

    def update(frame: pd.DataFrame) -> pd.DataFrame | None:
        if frame.empty:
            return None
        flags = flag_rows(frame)
        if flags.astype(str).tolist() == frame["flags"].astype(str).tolist():
            return None
        frame["flags"] = flags
        return frame

    return rewrite_rows(results_path, update)


def _clean_cell(trained: TrainedModel, common: dict[str, Any], batch_size: int, dev: torch.device,
                done: set[tuple], results_path: Path) -> tuple[int, int]:
    """The clean-accuracy row of one model, unless present: (rows evaluated, rows skipped)."""
    key = cell_key(common["dataset"], common["label"], common["seed"], common["checkpoint_sha256"],
                   CLEAN, CLEAN, NO_MODALITY, 0.0)
    if key in done:
        return 0, 1
    clean = clean_accuracy(trained.model, trained.dataset.test, batch_size, dev)  # type: ignore[attr-defined]
    _append_on_main(results_path, [ResultRow(attack=CLEAN, attack_config=CLEAN, library="native",
                                         library_version=__version__, modality=NO_MODALITY, norm="l2", eps=0.0,
                                         n=clean.n, accuracy=clean.accuracy, wall_seconds=clean.seconds,
                                         flags=clean_row_flags(clean), **common)])
    done.add(key)
    return 1, 0


def _cell_plan(trained: TrainedModel, common: dict[str, Any], block: GridBlock, attack: str,
               modality: str) -> tuple[Any, ThreatModel, str, dict[float, tuple]]:
    """One attack cell's attack, threat, modality label and row key per ε (NaN for ``missing``)."""
    ds = trained.dataset  # type: ignore[attr-defined]
    atk = build_attack(attack, ds.specs, seed=common["seed"], **attack_options_for(attack, block.attack_set, ds))
    grid = list(block.eps) if atk.norm_bounded else [math.nan]
    choice = ALL_MODALITIES if modality == ANY else modality  # ``any``'s threat stands for its norm only
    threat = ThreatModel.parse(choice, 0.0 if math.isnan(grid[0]) else grid[0], ds.specs, norm=block.norm)
    label = ANY if modality == ANY else modality_label(modality, threat)
    keys = {e: cell_key(common["dataset"], common["label"], common["seed"], common["checkpoint_sha256"], attack,
                        block.config(atk.describe()), label, e, threat.norm) for e in grid}
    return atk, threat, label, keys


def _attack_cell(trained: TrainedModel, common: dict[str, Any], block: GridBlock, attack: str, modality: str,
                 batch_size: int, dev: torch.device, done: set[tuple], results_path: Path,
                 claimed: set[tuple] | None = None) -> tuple[int, int]:
    """One attack on one modality at the block's ε values not yet present, batched over ε, rows appended at once."""
    ds = trained.dataset  # type: ignore[attr-defined]
    atk, threat, label, keys = _cell_plan(trained, common, block, attack, modality)
    grid = list(keys)
    if claimed is not None:  # rows an earlier cell of this unit owns: not this cell's to evaluate or count
        grid = [e for e in grid if keys[e] not in claimed]
        claimed.update(keys.values())
        if not grid:
            return 0, 0
    todo = [e for e in grid if keys[e] not in done]
    if not todo:
        return 0, len(grid)
    if modality == ANY:
        return _any_cell(trained, common, block, attack, atk, todo, batch_size, dev, done, results_path, keys,
                         len(grid))
    measured, cells, rows = _measure_set(trained, common, block, attack, modality, todo, batch_size, dev)
    _append_on_main(results_path, rows)
    done.update(keys[e] for e in todo)
    return len(rows), len(grid) - len(todo)


def _measure_set(trained: TrainedModel, common: dict[str, Any], block: GridBlock, attack: str, modality: str,
                 todo: Sequence[float], batch_size: int,
                 dev: torch.device) -> tuple[list[Measurement], dict[float, str], list[ResultRow]]:
    """One attack on one modality choice at the ε values ``todo``: its measurements, each ε's flags cell, its rows."""
    ds = trained.dataset  # type: ignore[attr-defined]
    atk, threat, label, _ = _cell_plan(trained, common, block, attack, modality)
    eps_grid = list(todo) if atk.norm_bounded else [0.0]
    test = block.split(ds.test)
    measured = robust_accuracy(trained.model, test, atk, threat, eps_grid, batch_size, dev, progress=False)
    flags = check_attack(trained.model, test, atk, threat, eps_grid, measured, dev)
    for flag in flags:
        log.warning("%s %s seed %s, %s on %s: %s", common["dataset"], common["label"], common["seed"], attack,
                    label, flag.note())
    rows = attack_rows(measured, attack=attack, attack_config=block.config(atk.describe()), library=atk.library,
                       library_version=atk.library_version, modality=label, norm=threat.norm,
                       norm_bounded=atk.norm_bounded, flags_at=partial(row_flags, flags), common=common)
    cells = {m.eps if atk.norm_bounded else math.nan: row.flags for m, row in zip(measured, rows)}
    return measured, cells, rows


def _any_cell(trained: TrainedModel, common: dict[str, Any], block: GridBlock, attack: str, atk: Any,
              todo: list[float], batch_size: int, dev: torch.device, done: set[tuple], results_path: Path,
              keys: dict[float, tuple], planned: int) -> tuple[int, int]:
    """The ``any`` rows at ``todo``: each threat set's stored per-sample outcomes where its row has them, the set
    measured (and its rows stored) where not, then the per-sample worst case (``bench.threat_sets``)."""
    ds = trained.dataset  # type: ignore[attr-defined]
    stored = read_rows(results_path)
    by_key = dict(zip(frame_keys(stored), stored.itertuples(index=False))) if not stored.empty else {}
    per_set: dict[str, list[Measurement]] = {}
    set_cells: dict[str, dict[float, str]] = {}
    evaluated = 0
    for choice in threat_sets([s.name for s in ds.specs]):
        _, _, label, set_keys = _cell_plan(trained, common, block, attack, choice)
        found = {e: by_key.get(set_keys[e]) for e in todo}
        need = [e for e in todo if found[e] is None or not str(getattr(found[e], "outcomes", "") or "")]
        measured_at: dict[float, Measurement] = {}
        cells: dict[float, str] = {}
        if need:
            measured, new_cells, rows = _measure_set(trained, common, block, attack, choice, need, batch_size, dev)
            fresh = [row for e, row in zip(need, rows) if set_keys[e] not in done]
            _append_on_main(results_path, fresh)
            done.update(set_keys[e] for e in need)
            evaluated += len(fresh)
            measured_at.update(zip(need, measured))
            cells.update(new_cells)
        for e in todo:
            if e not in measured_at:
                row = found[e]
                measured_at[e] = Measurement(e, round(row.accuracy * row.n), int(row.n), float(row.wall_seconds),
                                             decode_outcomes(row.outcomes, int(row.n)))
                cells[e] = "" if pd.isna(row.flags) else str(row.flags)
        per_set[label] = [measured_at[e] for e in todo]
        set_cells[label] = cells
    rows = attack_rows(combine_any(per_set), attack=attack, attack_config=block.config(atk.describe()),
                       library=atk.library, library_version=atk.library_version, modality=ANY, norm=block.norm,
                       norm_bounded=atk.norm_bounded, common=common,
                       flags_at=lambda e: any_flags({s: c.get(e, "") for s, c in set_cells.items()}))
    _append_on_main(results_path, rows)
    done.update(keys[e] for e in todo)
    return evaluated + len(rows), planned - len(todo)


def _append_on_main(results_path: Path, rows: list[ResultRow]) -> None:
    """Rank 0 writes (every rank measured its share and holds the merged numbers)."""
    if distributed.current().main:
        append_rows(results_path, rows)


__all__ = ["DefenseEntry", "GridBlock", "CertifySpec", "SweepPlan", "SweepOutcome", "CertifyOutcome", "build_plan",
           "load_sweep_config", "parse_defense_entry", "parse_block", "run_sweep", "certify_defense", "cell_key",
           "done_cells", "eps_key", "replace_model_rows", "mark_row_flags", "CERTIFIED_CSV", "ETA_PAIRS_CSV",
           "CELL_COLUMNS", "parse_shard", "shard_units", "unit_hash", "set_threads", "run_unit", "train_unit",
           "run_cell", "earlier_cell_keys", "certify_unit", "unit_cells", "unit_common"]
