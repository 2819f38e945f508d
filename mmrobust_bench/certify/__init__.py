"""Certification: Lipschitz estimates, certified radii and vulnerability indicators (empirical)."""
from .lipschitz import LIP_MODES, batch_unimodal_gradient_norms, estimate_lipschitz

__all__ = ["LIP_MODES", "batch_unimodal_gradient_norms", "estimate_lipschitz"]
