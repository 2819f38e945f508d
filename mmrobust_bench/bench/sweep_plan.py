"""A sweep's plan: its defense entries × seeds (the work units, dealt into shards) × grid cells, built from the
YAML mapping and the command line, and checked against the dataset before any training."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..attacks import default_eps, validate_attack_options
from ..certify.radii import DEFAULT_RADII
from ..contracts import ThreatModel
from ..data import build_dataset
from ..defenses import build_defense, dataset_schedule
from ..defenses.base import key_dict
from ..hints import did_you_mean
from .checkpoints import CheckpointKey
from .sweep_config import (
    CERTIFY_KEYS,
    DEFAULT_ATTACKS,
    DEFAULT_MODALITIES,
    DEFAULT_SWEEP_EPS,
    SWEEP_KEYS,
    CertifySpec,
    DefenseEntry,
    GridBlock,
    as_list,
    check_keys,
    parse_block,
    parse_certify_block,
    parse_defense_entry,
    seed_list,
    set_spelling,
    yaml_mapping,
    yaml_threads,
)
from .threat_sets import ANY
from .validate import check_certify_settings, check_eps, check_run_settings


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


def build_plan(
    config: Mapping[str, Any] | None = None,
    *,
    defenses: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    attacks: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    eps: Sequence[float] | None = None,
    dataset: str | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    certify_radii: Sequence[float] | None = None,
    threads: int | None = None,
    norm: str | None = None,
    only: Sequence[str] | None = None,
    skip: Sequence[str] | None = None,
    certify_methods: Sequence[str] | None = None,
    certify: bool = True,
    certify_sets: Sequence[str] | None = None,
) -> SweepPlan:
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
    check_keys(config, SWEEP_KEYS, "the sweep config")
    entries = [parse_defense_entry(d) for d in (as_list(defenses) if defenses else as_list(config.get("defenses")))]
    if not entries:
        raise ValueError("sweep: no defenses given (use --defenses a,b or a 'defenses' list in --config)")
    seen: dict[str, DefenseEntry] = {}
    for e in entries:
        if e.label in seen and seen[e.label] != e:
            raise ValueError(
                f"sweep: label {e.label!r} is used by two different defense entries; give each its own label"
            )
        seen[e.label] = e
    entries = _select_entries(list(seen.values()), only, skip)
    if norm is not None:
        default_eps(norm)  # an unknown norm says so, with "did you mean"
    cli_eps = DEFAULT_SWEEP_EPS if norm in (None, "l2") else default_eps(norm)
    if "grid" in config and not as_list(config["grid"]):
        raise ValueError(
            "sweep: grid is empty; give at least one block such as {attacks: [pgd_l2], modalities: [v], "
            "eps: [0.5]}, or leave grid out for the default grid"
        )
    if attacks or modalities or eps:
        grid = [
            GridBlock(
                tuple(attacks or DEFAULT_ATTACKS),
                tuple(modalities or DEFAULT_MODALITIES),
                tuple(check_eps(eps)) if eps else cli_eps,
            )
        ]
    elif config.get("grid"):
        grid = [parse_block(b) for b in as_list(config["grid"])]
    else:
        grid = [GridBlock(DEFAULT_ATTACKS, DEFAULT_MODALITIES, cli_eps)]
    if norm is not None:
        grid = [replace(block, norm=norm) for block in grid]
    spec = None
    entry_specs: dict[str, CertifySpec] = {}
    raw_cert = config.get("certify")
    if raw_cert or certify_radii or certify_methods:
        cert = yaml_mapping(raw_cert if isinstance(raw_cert, Mapping) else {}, "certify")
        check_keys(cert, CERTIFY_KEYS, "certify")
        # --certify-sets applies to the blocks the selected entries use: the sweep's own (if an entry has no
        # certify: of its own) and each entry's
        uses_top = any(not e.certify for e in entries)
        spec = _certify_spec(cert, certify_radii, certify_methods, certify_sets if uses_top else None)
        for e in entries:
            if e.certify:
                try:
                    entry_specs[e.label] = _certify_spec(
                        {**cert, **e.certify}, certify_radii, certify_methods, certify_sets
                    )
                except (TypeError, ValueError) as exc:
                    reason = str(exc).removeprefix("sweep: ")
                    raise ValueError(f"sweep: certify of defense entry {e.label!r}: {reason}") from exc
    elif certify_sets:
        raise ValueError("sweep: --certify-sets picks smoothing noise sets of the certify: block, which is missing")
    else:
        own = [e.label for e in entries if e.certify]
        if own:
            raise ValueError(
                f"sweep: defense entr{'ies' if len(own) > 1 else 'y'} {', '.join(own)} adjust the "
                "sweep's certify: block, which is missing; add a certify: block (or --certify RADII)"
            )
    if not certify:  # checked all the same, so that a later run with certification finds no typo
        spec, entry_specs = None, {}
    return SweepPlan(
        defenses=entries,
        seeds=seed_list(seeds if seeds else config.get("seeds", [0])),
        grid=grid,
        dataset=str(dataset or config.get("dataset", "synthav")),
        dataset_options={**yaml_mapping(config.get("dataset_set"), "dataset_set"), **dict(dataset_options or {})},
        common_overrides={**yaml_mapping(config.get("set"), "set"), **dict(overrides or {})},
        batch_size=int(batch_size if batch_size is not None else config.get("batch_size", 500)),
        certify=spec,
        threads=yaml_threads(threads if threads is not None else config.get("threads")),
        entry_certify=entry_specs,
    )


def _certify_spec(
    cert: Mapping[str, Any],
    certify_radii: Sequence[float] | None,
    certify_methods: Sequence[str] | None,
    certify_sets: Sequence[str] | None = None,
) -> CertifySpec:
    """A ``certify:`` mapping with the command line's radii and methods (they win) as a :class:`CertifySpec`,
    keeping only the smoothing noise sets in ``certify_sets`` (each must be one of the block's)."""
    if certify_methods:
        cert = {**cert, "method": list(certify_methods)}
    spec = parse_certify_block(cert, certify_radii or cert.get("radii") or DEFAULT_RADII)
    if not certify_sets:
        return spec
    if "smoothing" not in spec.methods:
        raise ValueError(
            f"sweep: --certify-sets picks smoothing noise sets, but the certify methods are "
            f"{', '.join(spec.methods)}; add --certify-method smoothing"
        )
    wanted = {set_spelling(m) for m in certify_sets}
    known = [set_spelling(m) for m in spec.modalities]
    unknown = sorted(wanted - set(known))
    if unknown:
        raise ValueError(
            f"sweep: --certify-sets {', '.join(unknown)} is not a noise set of the certify: block; "
            f"its sets: {', '.join(known)}"
        )
    return replace(spec, modalities=tuple(m for m, k in zip(spec.modalities, known) if k in wanted))


def _select_entries(
    entries: list[DefenseEntry], only: Sequence[str] | None, skip: Sequence[str] | None
) -> list[DefenseEntry]:
    """The entries whose labels are in ``only`` (all if None) and not in ``skip``; unknown labels refused."""
    labels = [e.label for e in entries]
    for flag, names in (("--only", only), ("--skip", skip)):
        for name in names or ():
            if name not in labels:
                raise ValueError(
                    f"sweep {flag}: no defense entry is labelled {name!r}{did_you_mean(name, labels)}; "
                    f"labels: {', '.join(labels)}"
                )
    kept = [e for e in entries if (only is None or e.label in only) and e.label not in (skip or ())]
    if not kept:
        raise ValueError(f"sweep: --only/--skip leave no defense entry (labels: {', '.join(labels)})")
    return kept


def validate_plan(plan: SweepPlan, root: Path) -> Any:
    """Fail before any training on unknown defenses, settings, attacks, attack options or modalities; returns
    the plan's dataset (built, or loaded from its cache) for the checks that follow."""
    # names, types and ranges of every setting before the dataset is generated (it can take minutes)
    check_run_settings(dataset=plan.dataset, dataset_options=plan.dataset_options, batch_size=plan.batch_size)
    for entry in plan.defenses:
        build_defense(entry.defense, {**plan.common_overrides, **entry.overrides})
    for spec in ([plan.certify] if plan.certify is not None else []) + list(plan.entry_certify.values()):
        check_certify_settings(
            train_samples=spec.train_samples, honesty_steps=spec.honesty_steps, batch_size=spec.batch_size
        )
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


def unit_checkpoint(plan: SweepPlan, ds: Any, entry: DefenseEntry, seed: int) -> tuple[Any, Any, CheckpointKey]:
    """(defense, schedule, checkpoint key) of a unit on the built dataset ``ds``: the key under which the sweep
    trains and loads its model (``bench.train``), found without training (for ``zoo export`` and ``sweep --status``)."""
    overrides = {**plan.common_overrides, **entry.overrides}
    defense, train_cfg = build_defense(entry.defense, overrides, dataset_schedule(ds))
    key = CheckpointKey(ds.name, ds.config, defense.name, defense.config_dict(), key_dict(train_cfg), seed)
    return defense, train_cfg, key


def unit_cells(plan: SweepPlan) -> list[tuple[GridBlock, str, str] | None]:
    """The cells of one (defense, seed) unit: None for the clean cell, then (block, attack, modality)."""
    return [None, *plan.units()]


__all__ = ["SweepPlan", "build_plan", "shard_units", "unit_cells", "unit_checkpoint", "unit_hash", "validate_plan"]
