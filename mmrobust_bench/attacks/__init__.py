"""Attacks on chosen modalities: native (the paper's exact FGM / ℓ2-PGD), ``missing``, and adapters
that run any torchattacks (``torchattacks:NAME``) or ART (``art:NAME``) attack on a multi-modal model.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ..contracts import ModalitySpec
from ..registry import Registry, RegistryError
from .base import Attack, preserved_state, project

AttackFactory = Callable[..., Attack]

ATTACKS: Registry[AttackFactory] = Registry(
    "attack", "mmrobust_bench.attacks",
    builtin_package="mmrobust_bench.attacks",
)

# Library families: "<prefix>:<attack name>" is built by FAMILIES[prefix](attack_name, specs, **options).
FAMILIES: dict[str, Callable[..., Attack]] = {}
FAMILY_LISTERS: dict[str, Callable[[], list[str]]] = {}


def register_family(prefix: str, factory: Callable[..., Attack], lister: Callable[[], list[str]]) -> None:
    FAMILIES[prefix] = factory
    FAMILY_LISTERS[prefix] = lister


def build_attack(name: str, specs: Sequence[ModalitySpec], *, seed: int = 0, **options: Any) -> Attack:
    """Instantiate an attack by CLI id: a registered name or ``<library>:<attack>``."""
    ATTACKS.names()  # loads built-in modules, which register the families
    if ":" in name and name not in ATTACKS:
        prefix, attack_name = name.split(":", 1)
        if prefix not in FAMILIES:
            raise RegistryError(f"unknown attack library {prefix!r} in {name!r}; valid: {', '.join(sorted(FAMILIES))}")
        return FAMILIES[prefix](attack_name, specs, seed=seed, **options)
    return ATTACKS.get(name)(specs, seed=seed, **options)


def attack_names() -> list[str]:
    """Registered names plus ``<library>:*`` families (see ``list_family``)."""
    return ATTACKS.names() + [f"{p}:<Name>" for p in sorted(FAMILIES)]


__all__ = ["ATTACKS", "Attack", "build_attack", "attack_names", "register_family", "preserved_state", "project",
           "FAMILIES", "FAMILY_LISTERS"]
