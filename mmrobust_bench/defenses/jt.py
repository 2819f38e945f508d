"""JT: joint training of the concat late-fusion model with CE on the fused logits (docs/methods.md §3)."""

from __future__ import annotations

from dataclasses import dataclass

from . import DEFENSES
from .base import Defense


@DEFENSES.register("jt")
class JointTraining(Defense):
    """JT: joint training of the concat late-fusion model, CE on the fused logits."""

    name = "jt"
    head = "concat"

    @dataclass
    class Config:
        pass
