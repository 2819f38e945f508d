"""Certification: empirical radii from Lipschitz estimates (Eq. 5/7/10) and vulnerability indicators, their
honesty check (violations found are lower bounds), and sound randomized-smoothing certificates per modality.

The names below load their module on first use (PEP 562): a caller that needs only ``certify.lipschitz``
(whose estimates live in ``models.lipschitz``) does not pull in smoothing's scipy.stats and the radii's pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "HonestyConfig": "honesty",
    **dict.fromkeys(("LIP_MODES", "batch_unimodal_gradient_norms", "estimate_lipschitz"), "lipschitz"),
    **dict.fromkeys(
        (
            "DEFAULT_RADII",
            "EMPIRICAL",
            "KIND_EMPIRICAL",
            "KIND_HEURISTIC",
            "KIND_NOT_A_BOUND",
            "KIND_SOUND",
            "MIN_J",
            "RUNNER_UP",
            "Certificate",
            "CertifiedRadius",
            "HonestyCheck",
            "certify",
            "head_kind",
            "honesty_check",
            "mixes_modalities",
            "pair_eta",
            "unimodal_grams",
        ),
        "radii",
    ),
    **dict.fromkeys(
        (
            "SmoothedCertificate",
            "SmoothingConfig",
            "clopper_pearson_lower",
            "smooth_certify",
            "smooth_predict",
            "smoothed_honesty_check",
        ),
        "smoothing",
    ),
}
_SUBMODULES = ("honesty", "lipschitz", "radii", "smoothing")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF, *_SUBMODULES})


__all__ = [
    "LIP_MODES",
    "batch_unimodal_gradient_norms",
    "estimate_lipschitz",
    "DEFAULT_RADII",
    "EMPIRICAL",
    "KIND_EMPIRICAL",
    "KIND_HEURISTIC",
    "KIND_NOT_A_BOUND",
    "KIND_SOUND",
    "MIN_J",
    "RUNNER_UP",
    "Certificate",
    "CertifiedRadius",
    "HonestyCheck",
    "HonestyConfig",
    "certify",
    "head_kind",
    "honesty_check",
    "mixes_modalities",
    "pair_eta",
    "unimodal_grams",
    "SmoothedCertificate",
    "SmoothingConfig",
    "clopper_pearson_lower",
    "smooth_certify",
    "smooth_predict",
    "smoothed_honesty_check",
]
