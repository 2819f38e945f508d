"""The ``any`` threat: the attacker picks the modality, per sample.

A sample is robust under ``any`` at ε when it survives the attack on every single modality at ε and on the
joint ball over all modalities at ε. Its accuracy is therefore ≤ every single set's by construction, and it costs
nothing beyond the per-set runs: it is the per-sample AND of their stored outcomes (``Measurement.outcomes``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..contracts import ALL_MODALITIES, ANY_MODALITY, ThreatModel
from .evaluate import Measurement

ANY = ANY_MODALITY


def modality_label(modality: str, threat: ThreatModel) -> str:
    """The rows' ``modality`` cell of a choice: ``all`` as given, else the attacked names joined by ``+``."""
    return ALL_MODALITIES if modality == ALL_MODALITIES else "+".join(threat.modalities)


def threat_sets(names: Sequence[str]) -> list[str]:
    """The modality choices ``any`` takes the worst of: each modality alone, then all of them jointly (one ball)
    when there are several."""
    return list(names) + ([ALL_MODALITIES] if len(names) > 1 else [])


def combine_any(per_set: Mapping[str, Sequence[Measurement]]) -> list[Measurement]:
    """``any``'s measurement at each ε from every set's measurements at the same ε (with ``outcomes``): the
    per-sample AND of the outcomes. ``details`` says how many samples each set's attack left misclassified."""
    labels = list(per_set)
    if not labels:
        raise ValueError("the any threat needs at least one threat set")
    grids = {label: [m.eps for m in per_set[label]] for label in labels}
    first = grids[labels[0]]
    if any(g != first for g in grids.values()):
        raise ValueError(f"the any threat combines sets measured on one ε grid; got {grids}")
    out = []
    for i, eps in enumerate(first):
        parts = [per_set[label][i] for label in labels]
        missing = [label for label, m in zip(labels, parts) if m.outcomes is None]
        if missing:
            raise ValueError(f"the any threat needs each sample's outcome; set(s) {', '.join(missing)} have none")
        sizes = {int(m.outcomes.numel()) for m in parts}
        if len(sizes) != 1:
            raise ValueError(f"the any threat combines sets measured on the same samples; got sample counts {sizes}")
        robust = torch.stack([m.outcomes.bool().flatten() for m in parts]).all(0)
        details = {
            "sets": labels,
            "misclassified": {label: int((~m.outcomes.bool()).sum()) for label, m in zip(labels, parts)},
        }
        out.append(Measurement(eps, int(robust.sum()), parts[0].n, sum(m.seconds for m in parts), robust, details))
    return out


def any_flags(per_set_flags: Mapping[str, str]) -> str:
    """The ``flags`` cell of an ``any`` row: every flag of the sets' rows at that ε, sorted, ";"-joined (a flag on
    one set's number concerns the worst case over the sets as well)."""
    names = {name for cell in per_set_flags.values() for name in str(cell or "").split(";") if name}
    return ";".join(sorted(names))


__all__ = ["ANY", "modality_label", "threat_sets", "combine_any", "any_flags"]
