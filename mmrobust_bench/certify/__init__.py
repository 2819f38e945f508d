"""Certification: Lipschitz estimates, certified radii and vulnerability indicators (empirical)."""
from .lipschitz import LIP_MODES, batch_unimodal_gradient_norms, estimate_lipschitz
from .radii import (DEFAULT_RADII, EMPIRICAL, MIN_J, RUNNER_UP, Certificate, CertifiedRadius, HonestyCheck,
                    certify, head_kind, honesty_check, pair_eta, unimodal_grams)

__all__ = ["LIP_MODES", "batch_unimodal_gradient_norms", "estimate_lipschitz", "DEFAULT_RADII", "EMPIRICAL",
           "MIN_J", "RUNNER_UP", "Certificate", "CertifiedRadius", "HonestyCheck", "certify", "head_kind",
           "honesty_check", "pair_eta", "unimodal_grams"]
