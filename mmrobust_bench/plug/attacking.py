"""Attacks from a library: id strings, torchattacks / ART classes and configured instances in the suite's terms
(:func:`resolve_attack`), and the one-batch calls :func:`attack` and :func:`drop`.

Attack options mean what they mean in the library the attack comes from: ``eps``, torchattacks' ``alpha``
and ``steps``, ART's ``eps_step`` and ``max_iter`` are all in model-input space. Given as a library class
or a configured instance, the attack runs exactly as the library would build it: options not given take
the library's own defaults (``torchattacks.PGDL2``: ``eps=1.0``, ``alpha=0.2``), read from the instance
or the constructor. Given as an id string (``"torchattacks:PGDL2"``), it runs as ``mmrobust-bench run
--attack`` runs it, so rows from Python and from the CLI agree.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..attacks import Attack, build_attack
from ..bench.validate import check_count, check_eps
from ..contracts import ALL_MODALITIES, ThreatModel
from .batches import as_model_dtype, check_classes, class_indices, labels_of, model_dtype, num_classes, split_batch
from .declare import WrappedModel, check_wrapped

# Library norm spellings (torchattacks "L2"/"Linf", ART 2/np.inf/1/0) -> the threat model's names.
_NORMS = {"l2": "l2", "2": "l2", "linf": "linf", "inf": "linf", "l1": "l1", "1": "l1", "l0": "l0", "0": "l0"}
# Step sizes the adapters would otherwise scale with ε: from a library class or instance they are filled
# with the library's value, so the attack runs with the step the library itself would take.
_ABSOLUTE_STEPS = ("alpha", "eps_step")
# Instance settings that only change logging or batching, never the result: not copied from an instance (ART
# keeps a SummaryWriter object, not the argument, under ``summary_writer``).
_NOT_COPIED = frozenset({"summary_writer", "verbose", "batch_size"})


@dataclass
class ResolvedAttack:
    """An attack request turned into the suite's terms (what :func:`resolve_attack` returns).

    Attributes:
        name: the suite's attack id (``"torchattacks:PGDL2"``, ``"art:FastGradientMethod"``, ``"pgd_l2"``).
        options: the options the library class or instance implies (step sizes, settings it was built with).
        eps: the ε it implies (None: not implied).
        norm: the norm it implies, as the suite names it (None: not implied).
        targeted: whether the instance is in targeted mode.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    eps: float | None = None
    norm: str | None = None
    targeted: bool = False


def norm_name(value: Any) -> str:
    """A norm in any library's spelling as the suite names it.

    Args:
        value: ``"L2"``, ``"Linf"``, ``2``, ``np.inf``, ``"l1"``, ``0``, ...

    Returns:
        ``"l2"``, ``"linf"``, ``"l1"`` or ``"l0"``.

    Raises:
        ValueError: an unknown norm, with the valid spellings.
    """
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        key = "inf" if math.isinf(float(value)) else str(int(value)) if float(value).is_integer() else str(value)
    else:
        key = str(value).strip().lower()
    if key not in _NORMS:
        raise ValueError(
            f"unknown norm {value!r}; valid: l2, linf, l1, l0 (or the library's spelling: 'L2', "
            f"'Linf', 2, np.inf, 1, 0)"
        )
    return _NORMS[key]


def _library_of(obj: Any) -> str | None:
    cls = obj if inspect.isclass(obj) else type(obj)
    root = (getattr(cls, "__module__", "") or "").split(".")[0]
    if root == "torchattacks":
        return "torchattacks"
    if root == "art":
        return "art"
    return None


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)  # type: ignore[misc]  # the class's own, read only
    params.pop("self", None)
    return params


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or (type(a) is type(b) and a == b))
    except Exception:  # arrays, tensors: compare as different, so the instance's value is passed on
        return False


def resolve_attack(attack: Any) -> ResolvedAttack:
    """Turn an attack id, a torchattacks / ART class or a configured instance into the suite's terms.

    An id string is taken as ``mmrobust-bench run --attack`` takes it (nothing implied). A class contributes its
    defaults for ``eps``, ``norm`` and the step size (``alpha`` / ``eps_step``); an instance contributes every
    option it was built with (those equal to the library default, step sizes excepted, are left to the adapter,
    which passes the library's default on; logging and batching settings are not copied).

    Args:
        attack: an id string, a torchattacks / ART attack class, or a configured instance.

    Returns:
        The request in the suite's terms.

    Raises:
        TypeError: anything else (a suite ``Attack`` object is called directly instead).
    """
    if isinstance(attack, str):  # as ``run --attack`` takes it: the adapter's defaults, ε and norm from the caller
        return ResolvedAttack(attack)
    if isinstance(attack, Attack):
        raise TypeError(
            "pass the attack as an id string (e.g. 'pgd_l2') or a torchattacks / ART class or instance; "
            "a suite Attack object is used with its own __call__"
        )
    library = _library_of(attack)
    if library is None:
        raise TypeError(
            f"unknown attack {attack!r}: give an id string ('pgd_l2', 'torchattacks:PGDL2', "
            f"'art:FastGradientMethod'), a torchattacks or ART attack class, or a configured instance"
        )
    cls = attack if inspect.isclass(attack) else type(attack)
    params = _parameters(cls)
    resolved = ResolvedAttack(f"{library}:{cls.__name__}")
    _defaults_into(resolved, params)
    if inspect.isclass(attack):
        return resolved
    if library == "torchattacks":
        if getattr(attack, "normalization_used", None) or getattr(attack, "_normalization_applied", None):
            raise ValueError(
                "the torchattacks instance applies its own input normalization; put the normalization "
                "inside the model and attack in model-input space"
            )
        resolved.targeted = bool(getattr(attack, "targeted", False))
    for name, param in params.items():
        if name in ("model", "estimator", "classifier") or name in _NOT_COPIED or not hasattr(attack, name):
            continue
        value = getattr(attack, name)
        if name == "eps":
            resolved.eps = _scalar(value, "eps")
        elif name == "norm":
            resolved.norm = norm_name(value)
        elif name == "targeted":
            resolved.targeted = bool(value)
        elif name in _ABSOLUTE_STEPS or not _same(value, param.default):
            resolved.options[name] = value
    return resolved


def _defaults_into(resolved: ResolvedAttack, params: Mapping[str, inspect.Parameter]) -> None:
    empty = inspect.Parameter.empty
    if "eps" in params and params["eps"].default is not empty:
        resolved.eps = _scalar(params["eps"].default, "eps")
    if "norm" in params and params["norm"].default is not empty:
        resolved.norm = norm_name(params["norm"].default)
    for name in _ABSOLUTE_STEPS:
        if name in params and params[name].default is not empty and "eps" in params:
            resolved.options[name] = params[name].default


def _scalar(value: Any, what: str) -> float:
    try:
        return float(np.asarray(value, dtype=np.float64).item())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be one number, got {value!r}") from exc


def build(
    wrapped: WrappedModel,
    attack: Any,
    modality: str | Sequence[str],
    eps: float | None,
    norm: str | None,
    joint: bool,
    seed: int,
    options: Mapping[str, Any],
    targeted: bool,
    require_eps: bool = True,
) -> tuple[Attack, ThreatModel, str]:
    """(suite attack, threat model at ``eps``, attack id) for a request; ``eps`` None takes the library's (and
    0 when there is none and ``require_eps`` is False)."""
    resolved = resolve_attack(attack)
    opts = {**resolved.options, **dict(options)}
    atk = build_attack(resolved.name, wrapped.specs, seed=seed, **opts)
    if norm is not None:
        chosen = norm_name(norm)
    elif resolved.norm is not None:
        chosen = resolved.norm
    else:  # the CLI's default ℓ2 where the attack runs under it, else the attack's own norm
        supported = tuple(getattr(atk, "norms", ("l2",)))
        chosen = "l2" if "l2" in supported else supported[0]
    value = eps if eps is not None else resolved.eps
    if value is None:
        value = 0.0
        if atk.norm_bounded and require_eps:
            raise ValueError(f"attack {resolved.name!r} needs eps=... (its budget, in model-input space)")
    else:  # the command line's bounds on ε: finite, >= 0, at most bench.validate.MAX_EPS
        value = check_eps([value], "eps")[0]
    threat = ThreatModel.parse(
        modality, float(value), wrapped.specs, norm=chosen, joint=joint, targeted=targeted or resolved.targeted
    )
    atk.validate(threat)
    return atk, threat, resolved.name


def attack(
    model: WrappedModel,
    batch: Any,
    labels: Any = None,
    *,
    attack: Any = "pgd_l2",
    modality: str | Sequence[str] = ALL_MODALITIES,
    eps: float | None = None,
    norm: str | None = None,
    joint: bool = True,
    targets: Tensor | None = None,
    seed: int = 0,
    order: Sequence[str] | None = None,
    label_key: str | None = None,
    **options: Any,
) -> Any:
    """The adversarial version of ``batch``, in the user's own format (dict, tuple or tensor).

    Unattacked modalities come back bit-identical; the model's weights, buffers, mode and the global RNGs are
    left as they were. Floating inputs of another dtype than the model's are attacked in the model's dtype, and
    the attacked modalities come back in it (casting back would move them off the ε-ball by rounding).

    Args:
        model: a model wrapped by :func:`~mmrobust_bench.plug.wrap`.
        batch: the inputs as a dict, a tuple / list (in the declared ``order``) or one tensor.
        labels: one class index per sample (default: those found in ``batch``).
        attack: an id (``"pgd_l2"``, ``"missing"``, ``"torchattacks:PGDL2"``, ``"art:FastGradientMethod"``),
            a torchattacks / ART class, or a configured instance (its ``eps``, ``alpha``, ``steps``… are read).
        modality: one name, several (a list or ``"a,v"``), or ``"all"``; ``attack="missing"`` drops them
            instead (``fill="zero"|"mean"|"noise"``).
        eps: the budget in model-input space (default: the library class's or instance's).
        norm: the threat's norm in any library's spelling (default: the attack's own, ℓ2 where it runs under it).
        joint: one ε-ball over the attacked modalities (True) or one per modality.
        targets: the target class of each sample, for a targeted attack.
        seed: the attack's seed (a whole number >= 0).
        order: the layout of tuple batches, e.g. ``("video", "audio", "label")``.
        label_key: the key of the labels in a dict batch.
        **options: the attack's options (``alpha``, ``steps``, ART's ``eps_step``, ``max_iter``…), in
            model-input space and meaning what the library means by them.

    Returns:
        The adversarial batch, in the format ``batch`` came in.
    """
    wrapped = check_wrapped(model)
    check_count(seed, "seed", minimum=0)
    split = split_batch(wrapped, batch, order, label_key)
    y = labels_of(split, labels)
    dtype = model_dtype(wrapped)
    inputs = {m: as_model_dtype(x, dtype) for m, x in split.inputs.items()}
    wrapped.resolve(inputs)
    goals = None if targets is None else class_indices(targets, int(y.shape[0]), "targets")
    atk, threat, _ = build(wrapped, attack, modality, eps, norm, joint, seed, options, targets is not None)
    if threat.targeted and targets is None:
        raise ValueError("the attack instance is in targeted mode: pass targets=... (the target class of each sample)")
    classes = num_classes(wrapped, inputs)
    check_classes(y, classes)
    if goals is not None:
        check_classes(goals, classes, "targets")
    device = inputs[wrapped.names[0]].device
    adv = atk(wrapped, inputs, y.to(device), threat, targets=None if goals is None else goals.to(device))
    return split.rebuild({m: adv[m] for m in threat.modalities})


def drop(
    model: WrappedModel,
    batch: Any,
    *,
    modality: str | Sequence[str],
    fill: str = "zero",
    order: Sequence[str] | None = None,
    label_key: str | None = None,
    **options: Any,
) -> Any:
    """``batch`` with ``modality`` missing (the ``missing`` attack); labels are not needed.

    Args:
        model: a model wrapped by :func:`~mmrobust_bench.plug.wrap`.
        batch: the inputs as a dict, a tuple / list (in the declared ``order``) or one tensor.
        modality: the modality (or modalities) to drop.
        fill: ``"zero"``, ``"mean"`` (with ``fill_values={modality: mean tensor}``) or ``"noise"`` (with
            ``noise_std``).
        order: the layout of tuple batches.
        label_key: the key of the labels in a dict batch.
        **options: ``fill_values``, ``noise_std``.

    Returns:
        The batch with the dropped modalities replaced, in the format ``batch`` came in.
    """
    split = split_batch(check_wrapped(model), batch, order, label_key)
    n = int(next(iter(split.inputs.values())).shape[0])
    return attack(
        model,
        batch,
        torch.zeros(n, dtype=torch.long),
        attack="missing",
        modality=modality,
        fill=fill,
        order=order,
        label_key=label_key,
        **options,
    )


__all__ = ["ResolvedAttack", "norm_name", "resolve_attack", "build", "attack", "drop"]
