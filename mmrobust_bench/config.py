"""Option values, read and checked in one place: overrides, coercion, unknown names, types and ranges, ε.

Every layer takes settings from a user: a defense's ``Config`` and the training schedule (``--set``,
``--config``), a dataset's options (``--dataset-set``), an attack's options (``--attack-set``) and the ε grid.
This module is the one system that turns those raw values into checked ones, so the same value is read the
same way everywhere and a bad one costs one line naming the fix:

* :func:`apply_overrides` / :func:`coerce_field` read a raw (CLI or YAML) value as a dataclass field's declared
  type; :func:`coerce_floats` reads the number strings YAML 1.1 leaves as text (``5e-4``);
* :func:`check_known` and :func:`unknown_option_message` refuse unknown names with "did you mean";
* :func:`check_fields` checks a settings dataclass (types, finite floats, counts >= 1);
  :func:`check_option_type` checks an option against its default's type;
* :func:`check_count`, :func:`check_nonnegative` and :func:`check_eps` check single numbers and the ε grid.

It imports nothing of the package but the dependency-free helpers (``hints``, ``safe_yaml``), so every layer
may use it (docs/design.md §2).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .hints import unknown_message
from .safe_yaml import load_yaml, preview

# Largest ε (and certification radius) accepted. Inputs live in normalised model-input space, where an
# element is O(1) and the ℓ2 norm of a whole 224×224 video clip is in the thousands; a radius beyond
# 1e4 describes no meaningful perturbation, and values such as 1e308 overflow the attack's step
# sizes (ε·α = inf) into NaN inputs.
MAX_EPS = 1e4

# int fields whose value is a size or a count (at least 1, or the field's negative "automatic" default)
_COUNT_NAME = re.compile(
    r"(^n_|_size$|^size$|^epochs$|_epochs$|steps$|_iter$|_bins$|_frames$|^super_epoch$|"
    r"_dim$|_classes$|_samples$)"
)

_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


# --- reading raw values ------------------------------------------------------------------------------------


def plain_type(hint: Any) -> tuple[type | None, bool]:
    """(int/float/str/bool, optional) for ``X`` or ``X | None``; (None, _) for anything else."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in (int, float, str, bool):
            return rest[0], True
        return None, False
    return (hint, False) if hint in (int, float, str, bool) else (None, False)


def _float_text(value: Any) -> Any:
    """A string that ``float()`` reads (YAML 1.1 leaves ``5e-4`` and ``1e3`` as text) as that float; anything
    else unchanged."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def coerce_field(field: dataclasses.Field, raw: Any, owner: str, hints: Mapping[str, Any]) -> Any:
    """A CLI/YAML value as the field's declared type (``hints``: the dataclass's resolved type hints): strings
    are read as YAML (bool fields: true/false, 1/0, yes/no); a plain int/float/str/bool field refuses a value
    of another type with one line naming ``owner`` and the field."""
    target = hints.get(field.name, field.type)
    if not isinstance(raw, str):
        value = raw
    elif target is bool:
        lowered = raw.lower()
        if lowered not in _BOOL_WORDS:
            raise ValueError(f"{owner}: {field.name} expects true/false, got {preview(raw)}")
        value = _BOOL_WORDS[lowered]
    else:
        value = load_yaml(raw, f"{owner}: {field.name}")
    basic = target if typing.get_origin(target) is None else None
    if basic in (int, float, str, bool):
        if basic is float:
            value = _float_text(value)
            if isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
        if not isinstance(value, basic) or (basic is int and isinstance(value, bool)):
            raise ValueError(f"{owner}: {field.name} expects {basic.__name__}, got {preview(raw)}")
    return value


def apply_overrides(obj: Any, overrides: Mapping[str, Any], owner: str) -> tuple[Any, dict[str, Any]]:
    """Return (a copy of dataclass ``obj`` with the known keys replaced, read by :func:`coerce_field`, the keys
    it did not know)."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    known = {k: coerce_field(fields[k], v, owner, hints) for k, v in overrides.items() if k in fields}
    rest = {k: v for k, v in overrides.items() if k not in fields}
    return dataclasses.replace(obj, **known), rest


def coerce_floats(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` for dataclass ``cls`` with strings of float fields read as numbers (YAML 1.1 reads
    ``5e-4`` and ``1e3`` as strings); anything else is left for :func:`check_fields` to judge."""
    hints = typing.get_type_hints(cls)
    return {
        name: _float_text(value) if plain_type(hints.get(name))[0] is float else value
        for name, value in options.items()
    }


# --- unknown names -----------------------------------------------------------------------------------------


def check_known(label: str, options: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Refuse options outside ``valid``, listing the valid ones with "did you mean" (``--dataset-set`` typos)."""
    valid = set(valid)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(unknown_message(label, unknown, valid))


def unknown_option_message(
    label: str,
    unknown: Sequence[str],
    valid: Sequence[str],
    values: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> str:
    """``"pgd_l2: unknown option(s) step (did you mean 'step_ratio'?); valid: ..."``: one line naming the fix.
    With the given ``values`` and the valid options' ``defaults``, a suggestion must take a value of that
    type (``step=0.1`` suggests the float ``step_ratio``, not the int ``steps``)."""

    def pool(name: str) -> list[str]:
        if values is None or defaults is None or name not in values:
            return list(valid)
        return [v for v in valid if _type_fits(values[name], defaults.get(v))] or list(valid)

    return unknown_message(label, unknown, valid, pool=pool, cutoff=0.5)


def _type_fits(value: Any, default: Any) -> bool:
    try:
        check_option_type("", "", value, default, strict=True)
    except ValueError:
        return False
    return True


# --- types and generic ranges ------------------------------------------------------------------------------


def check_fields(obj: Any, owner: str) -> None:
    """Types and generic ranges of a settings dataclass (a defense's Config, TrainConfig, a dataset's
    options): ints integral (``400.5`` and ``true`` refused), floats finite, sizes and counts ≥ 1
    (a field whose default is negative: that "automatic" value or >= 0; whose default is 0: >= 0)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        kind, optional = plain_type(hints.get(f.name, f.type))
        value = getattr(obj, f.name)
        if kind is None or (optional and value is None):
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            article = "an" if kind is int else "a"
            noun = {"int": "integer", "float": "number", "str": "string", "bool": "true/false"}[kind.__name__]
            raise ValueError(f"{owner}: {f.name} must be {article} {noun}, got {preview(value)}")
        if kind is float and not math.isfinite(value):
            raise ValueError(f"{owner}: {f.name} must be a finite number, got {value!r}")
        if kind is int and _COUNT_NAME.search(f.name):
            default = f.default if f.default is not dataclasses.MISSING else None
            if isinstance(default, int) and default < 0:
                if value != default and value < 0:
                    raise ValueError(f"{owner}: {f.name} must be >= 0 (or {default}: automatic), got {value}")
            elif value < (0 if default == 0 else 1):
                raise ValueError(f"{owner}: {f.name} must be >= {0 if default == 0 else 1}, got {value}")


def check_option_type(label: str, key: str, value: Any, default: Any, *, strict: bool = False) -> None:
    """Refuse a value whose type cannot stand for the default's (``steps='ten'``), with a one-line error; None
    stands for anything. Library defaults are loosely typed (torchattacks' CW ``c=1`` takes 0.5), so any number
    stands for a number; ``strict`` (the suite's own typed options) wants an integer where the default is one."""
    if value is None or default is None or default is inspect.Parameter.empty:
        return
    number = (int, float)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int) and strict:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, number) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        return
    if not ok:
        kind = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
        raise ValueError(
            f"{label} option {key} takes {kind[type(default).__name__]} like its default {default!r}, "
            f"got {preview(value)}"
        )


# --- single numbers and the ε grid -------------------------------------------------------------------------


def check_count(value: Any, flag: str, minimum: int = 1, *, sentinel: int | None = None) -> int:
    """An integer ``>= minimum`` (or exactly ``sentinel``), for ``--batch-size`` and the like."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{flag} must be an integer, got {preview(value)}")
    if value < minimum and value != sentinel:
        extra = f" (or {sentinel})" if sentinel is not None else ""
        raise ValueError(f"{flag} must be >= {minimum}{extra}, got {value}")
    return value


def check_nonnegative(value: Any, what: str, *, plural: bool = False) -> float:
    """``value`` as a finite float >= 0 (ε, noise σ), or a one-line error naming ``what`` (in the plural for
    one value of a list)."""
    number = "numbers" if plural else "a number"
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be {number} >= 0, got {preview(value)}") from None
    if not math.isfinite(out) or out < 0:
        finite = "finite numbers" if plural else "a finite number"
        raise ValueError(f"{what} must be {finite} >= 0, got {value!r}")
    return out


def check_eps(values: Sequence[Any], what: str = "eps") -> list[float]:
    """A non-empty grid of finite ε in [0, MAX_EPS], sorted and without repeats."""
    out = []
    for v in values:
        e = check_nonnegative(v, what, plural=True)
        if e > MAX_EPS:
            raise ValueError(
                f"{what} {e:g} is above {MAX_EPS:g}: no meaningful perturbation of normalised inputs is "
                f"that large (and such values overflow the attack's step sizes)"
            )
        out.append(e)
    if not out:
        raise ValueError(f"{what} is empty: give at least one value, e.g. 0.5,1")
    return sorted(set(out))


__all__ = [
    "MAX_EPS",
    "plain_type",
    "coerce_field",
    "apply_overrides",
    "coerce_floats",
    "check_known",
    "unknown_option_message",
    "check_fields",
    "check_option_type",
    "check_count",
    "check_nonnegative",
    "check_eps",
]
