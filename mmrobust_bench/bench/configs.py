"""The settings of the suite's commands as small frozen objects that the CLI, the sweep and the Python API share.

``ModelConfig`` says which model a command trains or loads (the (defense, dataset, seed) unit and its
overrides), ``EvalConfig`` what ``run`` measures on it, ``CertifyConfig`` how ``certify`` certifies it. The
keyword functions (``bench.api.run``, ``bench.certification.certify_defense``) build them from their arguments;
the CLI builds them from its parsed arguments and the sweep from its YAML, so the three cannot drift apart.
Where to write (``root``, ``results``), on what device and whether to show progress stay call arguments: they
change where a number lands, never the number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..certify.honesty import HonestyConfig
from ..certify.smoothing import SmoothingConfig
from ..contracts import ALL_MODALITIES


@dataclass(frozen=True)
class ModelConfig:
    """Which model: ``defense`` trained on ``dataset`` with ``seed``; ``overrides`` change its schedule or
    hyperparameters, ``dataset_options`` the data; ``label`` names it in rows (default: the defense id)."""

    defense: str = "crmt_at"
    dataset: str = "synthav"
    seed: int = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def row_label(self) -> str:
        return self.label or self.defense


@dataclass(frozen=True)
class EvalConfig:
    """What ``run`` measures: ``attack`` (with ``attack_options``) on ``modality`` (a name, comma list, ``all``
    or ``any``) under ``norm`` at each ε of ``eps`` (None: the norm's default grid); ``curve`` ``sweep`` (the
    attack at every ε) or ``minimal`` (one minimal-norm run read at every ε); ``check_flags`` runs the
    validity checks."""

    attack: str = "pgd_l2"
    modality: str = "a"
    eps: Sequence[float] | None = None
    norm: str = "l2"
    attack_options: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 500
    curve: str = "sweep"
    check_flags: bool = True


@dataclass(frozen=True)
class CertifyConfig:
    """How ``certify`` certifies a model: ``method`` ``empirical`` (Eq. 5/7/10 radii with the honesty check) or
    ``smoothing`` (randomized smoothing per noise set of ``modalities``, with the SmoothAdv-style check of
    ``n_attack`` noise draws × ``attack_steps`` steps on ``attack_samples`` samples). ``radii``: the certified
    accuracies' grid (None: the method's default); ``train_samples`` / ``test_samples`` > 0: seeded subsets."""

    method: str = "empirical"
    radii: Sequence[float] | None = None
    honesty_steps: int = 100
    honesty: HonestyConfig | None = None
    train_samples: int = -1
    test_samples: int = -1
    batch_size: int = 64
    smoothing: SmoothingConfig | None = None
    modalities: Sequence[str] = (ALL_MODALITIES,)
    n_attack: int = 16
    attack_steps: int = 20
    attack_samples: int = -1


__all__ = ["CertifyConfig", "EvalConfig", "ModelConfig"]
