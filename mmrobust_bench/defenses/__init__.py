"""The registry of defenses (training recipes), built-in and from entry points."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

from ..registry import Registry
from ..safe_yaml import load_yaml, preview
from .base import Defense, TrainConfig, TrainContext, fold_noise_overrides

DEFENSES: Registry[type[Defense]] = Registry(
    "defense", "mmrobust_bench.defenses",
    builtin_package="mmrobust_bench.defenses",
)


def _coerce(field: dataclasses.Field, raw: Any, owner: str, hints: Mapping[str, Any]) -> Any:
    """Convert a CLI/YAML value to the field's declared type, with a clear error."""
    target = hints.get(field.name, field.type)
    if not isinstance(raw, str):
        value = raw
    elif target is bool:
        lowered = raw.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{owner}: {field.name} expects true/false, got {preview(raw)}")
        value = lowered in ("true", "1", "yes")
    else:
        value = load_yaml(raw, f"{owner}: {field.name}")
    origin = typing.get_origin(target)
    basic = target if origin is None else None
    if basic in (int, float, str, bool):
        if basic is float and isinstance(value, str):
            try:  # YAML 1.1 reads 5e-4 as a string; float() does not
                value = float(value)
            except ValueError:
                pass
        if basic is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, basic) or (basic is int and isinstance(value, bool)):
            raise ValueError(f"{owner}: {field.name} expects {basic.__name__}, got {preview(raw)}")
    return value


def apply_overrides(obj: Any, overrides: Mapping[str, Any], owner: str) -> tuple[Any, dict[str, Any]]:
    """Return (a copy of dataclass ``obj`` with the known keys replaced, the keys it did not know)."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    known = {k: _coerce(fields[k], v, owner, hints) for k, v in overrides.items() if k in fields}
    rest = {k: v for k, v in overrides.items() if k not in fields}
    return dataclasses.replace(obj, **known), rest


def dataset_schedule(dataset: Any) -> TrainConfig:
    """The training schedule a dataset declares (its ``train_defaults`` over the suite's defaults)."""
    schedule, _ = apply_overrides(TrainConfig(), getattr(dataset, "train_defaults", {}),
                                  f"dataset {getattr(dataset, 'name', '?')!r} defaults")
    return schedule


def build_defense(name: str, overrides: Mapping[str, Any] | None = None,
                  train: TrainConfig | None = None) -> tuple[Defense, TrainConfig]:
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
    base, unknown = apply_overrides(base, defaults(base) if callable(defaults) else defaults,
                                    f"defense {name!r} training defaults")
    if unknown:
        raise ValueError(f"defense {name!r} declares unknown training defaults {', '.join(sorted(unknown))}")
    train_cfg, rest = apply_overrides(base, fold_noise_overrides(rest), "training schedule")
    if rest:
        from ..hints import did_you_mean

        valid = [f.name for f in dataclasses.fields(cls.Config)] + [f.name for f in dataclasses.fields(TrainConfig)]
        named = ", ".join(f"{k}{did_you_mean(k, valid)}" for k in sorted(rest))
        raise ValueError(f"unknown setting {named} for defense {name!r}; valid: {', '.join(valid)}")
    from ..bench.validate import check_fields

    check_fields(config, f"defense {name!r}")
    check_fields(train_cfg, "training schedule")
    return cls(config), train_cfg


__all__ = ["DEFENSES", "Defense", "TrainConfig", "TrainContext", "build_defense", "apply_overrides", "dataset_schedule"]
