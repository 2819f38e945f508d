"""The registry of defenses (training recipes), built-in and from entry points."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..config import apply_overrides, check_fields
from ..hints import did_you_mean
from ..registry import Registry
from .base import Defense, TrainConfig, TrainContext, fold_noise_overrides

DEFENSES: Registry[type[Defense]] = Registry(
    "defense",
    "mmrobust_bench.defenses",
    builtin_package="mmrobust_bench.defenses",
)


def dataset_schedule(dataset: Any) -> TrainConfig:
    """The training schedule a dataset declares (its ``train_defaults`` over the suite's defaults)."""
    schedule, _ = apply_overrides(
        TrainConfig(), getattr(dataset, "train_defaults", {}), f"dataset {getattr(dataset, 'name', '?')!r} defaults"
    )
    return schedule


def build_defense(
    name: str, overrides: Mapping[str, Any] | None = None, train: TrainConfig | None = None
) -> tuple[Defense, TrainConfig]:
    """The defense ``name`` and training schedule with ``overrides`` (``--set``/``--config``) applied.

    Keys are looked up first in the defense's hyperparameters, then in the training schedule;
    an unknown key is an error that lists both. A defense class may declare ``train_defaults``
    (a dict, or a callable of the dataset's schedule returning one, for defaults that depend on
    it), applied after the dataset's defaults in ``train`` and before ``overrides``.
    """
    cls = DEFENSES.get(name)
    config, rest = apply_overrides(cls.Config(), overrides or {}, f"defense {name!r}")
    base = train or TrainConfig()
    defaults = getattr(cls, "train_defaults", {})
    base, unknown = apply_overrides(
        base, defaults(base) if callable(defaults) else defaults, f"defense {name!r} training defaults"
    )
    if unknown:
        raise ValueError(f"defense {name!r} declares unknown training defaults {', '.join(sorted(unknown))}")
    train_cfg, rest = apply_overrides(base, fold_noise_overrides(rest), "training schedule")
    if rest:
        valid = [f.name for f in dataclasses.fields(cls.Config)] + [f.name for f in dataclasses.fields(TrainConfig)]
        named = ", ".join(f"{k}{did_you_mean(k, valid)}" for k in sorted(rest))
        raise ValueError(f"unknown setting {named} for defense {name!r}; valid: {', '.join(valid)}")
    check_fields(config, f"defense {name!r}")
    check_fields(train_cfg, "training schedule")
    return cls(config), train_cfg


__all__ = ["DEFENSES", "Defense", "TrainConfig", "TrainContext", "build_defense", "apply_overrides", "dataset_schedule"]
