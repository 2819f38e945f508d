"""Attacks on chosen modalities: native (the paper's exact FGM / ℓ2-PGD, an ℓ∞ PGD reference, FMN),
``missing``, and adapters that run any torchattacks (``torchattacks:NAME``) or ART (``art:NAME``) attack on a
multi-modal model.

Public helpers for the CLI, the sweep and the top-level API: :func:`build_attack`,
:func:`validate_attack_options` (options and norm checked before anything is built or trained),
:func:`attack_norms` (the threat norms an attack id runs under), :func:`default_eps` (the default ε grid
of a norm), :func:`option_units` (options given in model-input units and how they reach the library) and
:func:`library_box_note` (how the attack treats a modality's valid box, for ``list`` and the docs).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..config import check_option_type, unknown_option_message
from ..contracts import NORMS, ModalitySpec, ThreatModel
from ..registry import Registry, RegistryError
from .base import Attack, preserved_state, project

AttackFactory = Callable[..., Attack]

ATTACKS: Registry[AttackFactory] = Registry(
    "attack",
    "mmrobust_bench.attacks",
    builtin_package="mmrobust_bench.attacks",
)

# Library families: "<prefix>:<attack name>" is built by FAMILIES[prefix](attack_name, specs, **options).
FAMILIES: dict[str, Callable[..., Attack]] = {}
FAMILY_LISTERS: dict[str, Callable[[], list[str]]] = {}


def register_family(prefix: str, factory: Callable[..., Attack], lister: Callable[[], list[str]]) -> None:
    FAMILIES[prefix] = factory
    FAMILY_LISTERS[prefix] = lister


def build_attack(name: str, specs: Sequence[ModalitySpec], *, seed: int = 0, **options: Any) -> Attack:
    """Instantiate an attack by CLI id: a registered name or ``<library>:<attack>``. Unknown or mistyped
    options are a one-line ``ValueError`` naming the valid ones ("did you mean ..."), never a TypeError."""
    ATTACKS.names()  # loads built-in modules, which register the families
    if ":" in name and name not in ATTACKS:
        prefix, attack_name = name.split(":", 1)
        if prefix not in FAMILIES:
            raise RegistryError(f"unknown attack library {prefix!r} in {name!r}; valid: {', '.join(sorted(FAMILIES))}")
        return FAMILIES[prefix](attack_name, specs, seed=seed, **options)
    factory = ATTACKS.get(name)
    check_options(name, factory, options)
    return factory(specs, seed=seed, **options)


def _option_parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """The keyword options a registered factory takes (those of the class it returns when it forwards
    ``**options``), or None when they cannot be known (a plugin forwarding to something opaque)."""
    params = dict(inspect.signature(factory).parameters)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        try:
            target = typing.get_type_hints(factory).get("return")
        except Exception:
            return None
        if not inspect.isclass(target):
            return None
        params = dict(inspect.signature(target.__init__).parameters)
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return None
    for fixed in ("self", "specs", "seed"):
        params.pop(fixed, None)
    return {k: p for k, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_options(name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Refuse unknown options of a registered attack with "did you mean", and values of the wrong type."""
    params = _option_parameters(factory)
    if params is None:
        return
    if "eps" in options:
        raise ValueError(f"{name} takes ε from --eps (eps= in the API), not from its options")
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(
            unknown_option_message(name, unknown, list(params), options, {k: p.default for k, p in params.items()})
        )
    for key, value in options.items():
        check_option_type(name, key, value, params[key].default, strict=True)


_PROBE_SPECS = (ModalitySpec("x", (1,)),)


def validate_attack_options(
    name: str,
    options: Mapping[str, Any] | None = None,
    norm: str = "l2",
    *,
    eps: Sequence[float] | None = None,
    specs: Sequence[ModalitySpec] | None = None,
) -> Attack:
    """Check an attack id, its options and the threat norm (and an ``eps`` option against the ε grid)
    before anything is built or trained; returns the attack built on ``specs`` (a one-modality probe
    spec when None). Errors are one-line ``ValueError``/``LookupError`` messages naming the fix."""
    ThreatModel(("x",), 0.0, norm)  # an unknown norm says so, with "did you mean"
    atk = build_attack(name, specs or _PROBE_SPECS, **dict(options or {}))
    if atk.norm_bounded and norm not in atk.norms:
        first = next(iter(atk.specs))
        atk.validate(ThreatModel((first,), 1.0, norm))  # the attack's own message (names --norm)
        raise ValueError(f"{name} supports norm {', '.join(atk.norms)}, not {norm}: use --norm {atk.norms[0]}")
    fixed = getattr(atk, "fixed_eps", None)
    if fixed is not None and eps is not None:
        # here: the adapter imports this package (a cycle at import time)
        from .torchattacks_adapter import check_fixed_eps

        check_fixed_eps(atk.name, fixed, [float(e) for e in eps])
    return atk


def _art_support(name: str) -> Any:
    """The adapter's table entry of an ``art:NAME`` id (read without importing ART, which takes seconds)."""
    if not name.startswith("art:"):
        return None
    # here: the adapter imports this package (a cycle at import time)
    from .art_adapter import ART_ATTACKS

    return ART_ATTACKS.get(name[4:])


def attack_norms(name: str) -> tuple[str, ...]:
    """The threat norms attack ``name`` runs under (its natural one first); every norm for ``missing``."""
    support = _art_support(name)
    if support is not None:
        return tuple(support.norms)
    return tuple(build_attack(name, _PROBE_SPECS).norms)


# Default ε grids per norm, in model-input space (``run``/``sweep`` without --eps). ℓ2 is the paper's grid.
# ℓ∞ radii are per coordinate: 0.01 is 2.55/255 of a [0, 1] image and 1 % of a unit-variance feature (an
# audio spectrogram), so one grid serves both kinds of modality; ℓ1 radii are sums over coordinates; ℓ0
# radii count changed coordinates.
DEFAULT_EPS_BY_NORM: dict[str, tuple[float, ...]] = {
    "l2": (0.25, 0.5, 1.0, 1.5, 2.0),
    "linf": (0.005, 0.01, 0.02, 0.05, 0.1),
    "l1": (1.0, 2.0, 5.0, 10.0, 20.0),
    "l0": (1.0, 2.0, 5.0, 10.0, 20.0),
}


def default_eps(norm: str = "l2") -> tuple[float, ...]:
    """The default ε grid of ``norm`` (see ``DEFAULT_EPS_BY_NORM``)."""
    ThreatModel(("x",), 0.0, norm)
    return DEFAULT_EPS_BY_NORM[norm]


def option_units(name: str) -> dict[str, str]:
    """Options of attack ``name`` that are lengths in input space, with what they are and how they reach
    the library: given in model-input units (like ε) and divided by the view's scale, so ``alpha=0.1`` is a
    step of 0.1 in model-input space, as it would be with the library on a single-input model."""
    atk = build_attack(name, _PROBE_SPECS)
    from .torchattacks_adapter import TorchattacksAttack, length_options  # the adapter imports this package

    if isinstance(atk, TorchattacksAttack):  # autoattack is library "torchattacks" too, without options of its own
        table = length_options(atk.attack_cls.__name__)
    elif atk.library == "art":
        from .art_adapter import LENGTH_OPTIONS  # the adapter imports this package

        table = dict(LENGTH_OPTIONS)
    else:
        return {}
    params = getattr(atk, "signature_args", {})
    return {
        opt: f"{what}, in model-input units (divided by the view's scale before the library sees it)"
        for opt, what in table.items()
        if opt in params
    }


NATIVE_BOX_NOTE = (
    "native: every bounded modality is clamped into its valid box after every step (torch.clamp) "
    "and the result is projected onto the threat ball; no library involved"
)
MISSING_BOX_NOTE = "no budget: the fill of a dropped modality is clamped into its valid box"
TORCHATTACKS_BOX_NOTE = (
    "torchattacks clamps to [0, 1]: a uniform box (same width on every channel, e.g. images in [0, 1]) is mapped "
    "onto it and the result equals the library's on the single-input model; a non-uniform per-channel box (e.g. "
    "ImageNet-normalised images) cannot be expressed: the adapter keeps l2 geometry, clamps what the model sees "
    "with torch.clamp and projects the result into the box, but the library's iterate is not clamped to it; "
    "unbounded modalities are never clamped"
)
ART_BOX_NOTE = (
    "ART clip_values: each bounded modality's box is passed per feature, so the result equals ART's on the "
    "single-input model with clip_values set to the box; budget-free attacks (DeepFool, Carlini-Wagner, ...) "
    "attacked jointly with an unbounded modality get clip [0, 1] at scale eps/0.35 and the box is clamped by the "
    "adapter instead; unbounded modalities are never clamped inside the eps ball"
)


def library_box_note(name: str) -> str:
    """How attack ``name`` treats a modality's valid box (one line, for ``list`` and the docs)."""
    if _art_support(name) is not None:
        return ART_BOX_NOTE
    atk = build_attack(name, _PROBE_SPECS)
    if atk.library == "torchattacks":
        return TORCHATTACKS_BOX_NOTE
    if atk.library == "art":
        return ART_BOX_NOTE
    return NATIVE_BOX_NOTE if atk.norm_bounded else MISSING_BOX_NOTE


def attack_names() -> list[str]:
    """Registered names plus ``<library>:*`` families (see ``list_family``)."""
    return ATTACKS.names() + [f"{p}:<Name>" for p in sorted(FAMILIES)]


__all__ = [
    "ATTACKS",
    "Attack",
    "build_attack",
    "attack_names",
    "register_family",
    "preserved_state",
    "project",
    "FAMILIES",
    "FAMILY_LISTERS",
    "validate_attack_options",
    "attack_norms",
    "default_eps",
    "option_units",
    "library_box_note",
    "DEFAULT_EPS_BY_NORM",
    "NORMS",
    "check_options",
]
