"""The sweep YAML's parts and their parsing: defense entries, grid blocks, the ``certify:`` block, seeds, shards.

Every value is checked here, with one line naming the key, before anything is built or trained; the manual of the
file is docs/sweeps.md. Nothing here trains or evaluates, so the reports may read a sweep's entries too.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..attacks import default_eps
from ..certify.honesty import HonestyConfig
from ..certify.radii import DEFAULT_RADII
from ..certify.smoothing import SmoothingConfig
from ..contracts import ALL_MODALITIES
from ..data.base import leading
from ..hints import did_you_mean
from ..safe_yaml import preview
from .certified_rows import METHODS as CERTIFY_METHODS
from .configs import CertifyConfig
from .validate import check_eps, check_name, read_yaml_mapping

DEFAULT_ATTACKS = ("fgm", "pgd_l2")
DEFAULT_MODALITIES = ("v", "a", ALL_MODALITIES)
DEFAULT_SWEEP_EPS = (0.5, 1.0)
SWEEP_KEYS = ("dataset", "dataset_set", "seeds", "set", "defenses", "grid", "batch_size", "certify", "threads")
ENTRY_KEYS = ("defense", "label", "set", "certify")
BLOCK_KEYS = ("attacks", "modalities", "eps", "attack_set", "norm", "samples")
CERTIFY_KEYS = (
    "radii",
    "honesty_steps",
    "train_samples",
    "batch_size",
    "method",
    "sigma",
    "n0",
    "n",
    "alpha",
    "modalities",
    "noise_batch",
    "test_samples",
    "n_attack",
    "attack_steps",
    "attack_samples",
    "honesty_restarts",
    "honesty_targets",
    "honesty_loss",
    "honesty_legacy",
)


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
        return leading(test, self.samples)


@dataclass(frozen=True)
class CertifySpec(CertifyConfig):
    """A sweep's ``certify:`` block: the :class:`~mmrobust_bench.bench.configs.CertifyConfig` of every method it
    runs (``methods``: ``empirical``, ``smoothing``), with the block's defaults filled in; the inherited ``method``
    is set per method by :meth:`for_method`."""

    radii: tuple[float, ...] = DEFAULT_RADII
    honesty: HonestyConfig = field(default_factory=HonestyConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    modalities: tuple[str, ...] = (ALL_MODALITIES,)  # smoothing noise sets: "a", "a,v", "all"
    methods: tuple[str, ...] = ("empirical",)

    def for_method(self, method: str, *, seed: int, modalities: Sequence[str] | None = None) -> CertifyConfig:
        """The :class:`~mmrobust_bench.bench.configs.CertifyConfig` of one of the block's methods for one seed's
        model (smoothing's noise seeded by it), on ``modalities`` or the block's noise sets."""
        shared = {f.name: getattr(self, f.name) for f in fields(CertifyConfig)}
        return CertifyConfig(
            **{
                **shared,
                "method": method,
                "smoothing": replace(self.smoothing, seed=seed),
                "modalities": tuple(modalities) if modalities else self.modalities,
            }
        )


def parse_certify_block(cert: Mapping[str, Any], radii: Sequence[float]) -> CertifySpec:
    """The sweep's ``certify:`` block (keys ``CERTIFY_KEYS``) as a :class:`CertifySpec`."""
    methods = tuple(str(m) for m in as_list(cert.get("method", "empirical")))
    unknown = [m for m in methods if m not in CERTIFY_METHODS]
    if unknown or not methods:
        raise ValueError(
            f"sweep: certify method {', '.join(unknown) or '(none)'} unknown; valid: {', '.join(CERTIFY_METHODS)}"
        )

    def whole(key: str, default: int) -> int:
        return _certify_number(cert, key, default, integer=True)  # type: ignore[return-value]

    steps = whole("honesty_steps", 100)
    targets = whole("honesty_targets", -1)
    if bool(cert.get("honesty_legacy", False)):
        honesty = HonestyConfig.legacy_check(steps)
    else:
        honesty = HonestyConfig(
            steps=max(steps, 0),
            restarts=whole("honesty_restarts", 0),
            targeted=targets != 0,
            targeted_classes=targets,
            loss=str(cert.get("honesty_loss", "margin")),
        )
    smoothing = SmoothingConfig(
        sigma=_certify_number(cert, "sigma", 0.25),
        n0=whole("n0", 100),
        n=whole("n", 10000),
        alpha=_certify_number(cert, "alpha", 0.001),
        batch=whole("noise_batch", 1000),
    )
    return CertifySpec(
        radii=_radii(radii),
        honesty_steps=steps,
        train_samples=whole("train_samples", -1),
        batch_size=whole("batch_size", 64),
        methods=methods,
        honesty=honesty,
        smoothing=smoothing,
        modalities=tuple(str(m) for m in as_list(cert.get("modalities", ALL_MODALITIES))),
        test_samples=whole("test_samples", -1),
        n_attack=whole("n_attack", 16),
        attack_steps=whole("attack_steps", 20),
        attack_samples=whole("attack_samples", -1),
    )


def _certify_number(cert: Mapping[str, Any], key: str, default: float, *, integer: bool = False) -> float | int:
    """``cert[key]`` as an integer (``integer``) or a finite number, or a one-line error naming the key (ranges
    are the certification settings' own checks)."""
    value = cert.get(key, default)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"sweep: certify {key} must be {kind}, got {preview(value)}")
    return value if integer else float(value)


def _radii(radii: Any) -> tuple[float, ...]:
    """Certification radii: numbers, finite, >= 0 (and at most ``bench.validate.MAX_EPS``), sorted; a one-line
    error naming ``radii`` otherwise."""
    values = as_list(radii)
    for r in values:
        if isinstance(r, bool) or not isinstance(r, (int, float, str)):
            raise ValueError(f"sweep: certify radii must be numbers >= 0 such as [0, 0.25, 0.5], got {preview(r)}")
    try:
        return tuple(check_eps(values, "certify radii"))
    except ValueError as exc:
        raise ValueError(f"sweep: {exc}") from None


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


def as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def yaml_mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"sweep: {what} must be a mapping of key: value, got {preview(value)}")
    return dict(value)


def check_keys(given: Mapping[str, Any], valid: Sequence[str], what: str) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        named = ", ".join(f"{k}{did_you_mean(k, valid)}" for k in unknown)
        raise ValueError(f"sweep: unknown key {named} in {what}; valid: {', '.join(valid)}")


def parse_defense_entry(item: Any) -> DefenseEntry:
    """``jt`` or ``{defense: crmt_jt, label: crmt_jt_step1_only, set: {step2: false}}``."""
    if isinstance(item, str):
        return DefenseEntry(item, item, {})
    if not isinstance(item, Mapping) or "defense" not in item:
        raise ValueError(
            f"sweep: a defense entry is an id or a mapping with 'defense' (and 'label', 'set'), got {preview(item)}"
        )
    check_keys(item, ENTRY_KEYS, f"defense entry {preview(item)}")
    if not isinstance(item["defense"], str):
        raise ValueError(
            f"sweep: defense in a defense entry must be a defense id such as jt, got {preview(item['defense'])}"
        )
    defense = item["defense"]
    given_label = item.get("label")
    if given_label is not None and (isinstance(given_label, bool) or not isinstance(given_label, (str, int))):
        raise ValueError(
            f"sweep: label of defense entry {preview(defense)} must be a name such as jt_v2, got {preview(given_label)}"
        )
    label = check_name(str(given_label or defense), f"sweep: label of defense entry {preview(defense)}")
    cert = yaml_mapping(item.get("certify"), f"certify of {preview(label)}")
    check_keys(cert, CERTIFY_KEYS, f"certify of defense entry {preview(label)}")
    return DefenseEntry(defense, label, yaml_mapping(item.get("set"), f"set of {preview(defense)}"), cert)


def parse_block(item: Any) -> GridBlock:
    if not isinstance(item, Mapping):
        raise ValueError(f"sweep: a grid block is a mapping with attacks, modalities and eps, got {preview(item)}")
    shown = preview(dict(item))
    check_keys(item, BLOCK_KEYS, f"grid block {shown}")
    attacks = tuple(str(a) for a in as_list(item.get("attacks")))
    modalities = tuple(str(m) for m in as_list(item.get("modalities")))
    if not attacks or not modalities:
        raise ValueError(f"sweep: grid block {shown} needs at least one attack and one modality")
    raw_eps = as_list(item.get("eps"))
    for e in raw_eps:
        if isinstance(e, bool) or not isinstance(e, (int, float, str)):
            raise ValueError(f"sweep: grid block {shown}: eps must be numbers >= 0 such as [0.5, 1], got {preview(e)}")
    try:
        eps = tuple(check_eps(raw_eps)) if raw_eps else ()
    except ValueError as exc:
        raise ValueError(f"sweep: grid block {shown}: {exc}") from exc
    norm = str(item.get("norm", "l2"))
    try:
        default_eps(norm)  # an unknown norm says so, with "did you mean"
    except ValueError as exc:
        raise ValueError(f"sweep: grid block {shown}: {exc}") from exc
    samples = item.get("samples", 0)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ValueError(
            f"sweep: grid block {shown}: samples must be a whole number >= 0 (0: every test sample), got "
            f"{preview(samples)}"
        )
    return GridBlock(attacks, modalities, eps, yaml_mapping(item.get("attack_set"), "attack_set"), norm, samples)


def seed_list(value: Any) -> list[int]:
    """Seeds as non-negative integers (``0.5`` is not seed 0, ``true`` not seed 1; ``run --seed`` refuses -1
    alike), first occurrence kept; a one-line error naming ``seeds`` otherwise."""
    seeds = []
    for s in as_list(value):
        if (isinstance(s, str) and s.strip().isdigit()) or (isinstance(s, float) and s.is_integer()):
            s = int(s)
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"sweep: seeds must be integers >= 0 such as 0,1,2, got {preview(s)}")
        seeds.append(int(s))
    if not seeds:
        raise ValueError("sweep: give at least one seed")
    return sorted(set(seeds), key=seeds.index)


def load_sweep_config(path: str | Path) -> dict[str, Any]:
    """The sweep YAML file as a mapping (``bench.validate.read_yaml_mapping``: one line naming the problem)."""
    return read_yaml_mapping(path, "sweep config")


def set_spelling(noise_set: str) -> str:
    """One spelling per smoothing noise set, for matching ``--certify-sets`` against the block without the
    dataset's modality order: ``all``, or the names sorted and joined by ``+`` (the block's ``"v,a"`` and the
    command line's ``"a+v"`` or ``"v+a"`` are one set; a comma on the command line separates sets)."""
    text = str(noise_set).strip()
    if text == ALL_MODALITIES:
        return text
    return "+".join(sorted(part.strip() for part in text.replace(",", "+").split("+") if part.strip()))


def yaml_threads(value: Any) -> int | None:
    if value is None:
        return None
    try:
        threads = int(value)
    except (TypeError, ValueError):
        threads = 0
    if threads < 1 or str(value).strip() not in (str(threads), f"{threads}.0"):
        raise ValueError(f"sweep: threads must be a positive integer such as 1, got {preview(value)}")
    return threads


__all__ = [
    "BLOCK_KEYS",
    "CERTIFY_KEYS",
    "DEFAULT_ATTACKS",
    "DEFAULT_MODALITIES",
    "DEFAULT_SWEEP_EPS",
    "ENTRY_KEYS",
    "SWEEP_KEYS",
    "CertifySpec",
    "DefenseEntry",
    "GridBlock",
    "load_sweep_config",
    "parse_block",
    "parse_certify_block",
    "parse_defense_entry",
    "parse_shard",
    "set_spelling",
]
