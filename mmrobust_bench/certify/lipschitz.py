"""Per-class, per-modality Lipschitz estimates of the uni-modal scores (docs/methods.md §10.5).

They are computed in :mod:`mmrobust_bench.models.lipschitz`, below the defenses, because CRMT's training
(step 2) needs them as well as certification; this module keeps the certification layer's names.
"""

from __future__ import annotations

from ..models.lipschitz import LIP_MODES, batch_unimodal_gradient_norms, estimate_lipschitz, unimodal_jacobian_chunks

__all__ = ["LIP_MODES", "batch_unimodal_gradient_norms", "estimate_lipschitz", "unimodal_jacobian_chunks"]
