"""Certification: empirical radii from Lipschitz estimates (Eq. 5/7/10) and vulnerability indicators, their
honesty check (violations found are lower bounds), and sound randomized-smoothing certificates per modality."""
from .honesty import HonestyConfig
from .lipschitz import LIP_MODES, batch_unimodal_gradient_norms, estimate_lipschitz
from .radii import (DEFAULT_RADII, EMPIRICAL, KIND_EMPIRICAL, KIND_HEURISTIC, KIND_NOT_A_BOUND, KIND_SOUND, MIN_J,
                    RUNNER_UP, Certificate, CertifiedRadius, HonestyCheck, certify, head_kind, honesty_check,
                    mixes_modalities, pair_eta, unimodal_grams)
from .smoothing import (SmoothedCertificate, SmoothingConfig, clopper_pearson_lower, smooth_certify, smooth_predict,
                        smoothed_honesty_check)

__all__ = ["LIP_MODES", "batch_unimodal_gradient_norms", "estimate_lipschitz", "DEFAULT_RADII", "EMPIRICAL",
           "KIND_EMPIRICAL", "KIND_HEURISTIC", "KIND_NOT_A_BOUND", "KIND_SOUND", "MIN_J", "RUNNER_UP", "Certificate",
           "CertifiedRadius", "HonestyCheck", "HonestyConfig", "certify", "head_kind", "honesty_check",
           "mixes_modalities", "pair_eta", "unimodal_grams", "SmoothedCertificate", "SmoothingConfig",
           "clopper_pearson_lower", "smooth_certify", "smooth_predict", "smoothed_honesty_check"]
