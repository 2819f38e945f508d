"""What a defense is: a hyperparameter dataclass, a model head, a step-1 loss, optional hooks and
post-training stages. One shared loop (``bench.train``) drives every defense.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import check_nonnegative
from ..contracts import Batch
from ..data.base import InMemoryDataset
from ..models import MultiModalNet, build_model
from ..safe_yaml import load_yaml, preview


@dataclass
class TrainConfig:
    """The training schedule shared by all defenses (docs/methods.md §1 defaults; datasets may override).

    The paper's schedule (140 epochs of SGD at lr 1e-3, StepLR 60) is the default; ``synthav``
    overrides it with a short CPU schedule, which the run prints and stores in the checkpoint.
    """

    epochs: int = 140
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step: int = 60  # StepLR step in epochs; 0 disables the schedule
    lr_gamma: float = 0.1
    optimizer: str = "sgd"
    feature_dim: int = 512
    lr_schedule: str = "step"  # "step" (StepLR by lr_step/lr_gamma) or "cosine" (to 0 over the epochs after warm-up)
    warmup_epochs: int = 0  # linear warm-up epochs before the schedule (ViTs such as MMT need it)
    # Speed settings (GPU): bf16 autocast for the defense's loss (CRMT head, margins, bounds and MSEFM's
    # coding stay fp32 inside it), channels-last convolution weights, torch.compile of the encoders.
    precision: str = "fp32"  # "fp32" or "bf16"
    channels_last: bool = False
    compile: bool = False
    # Gaussian noise augmentation per modality (any defense): every training input x^(m) gets x^(m) + N(0, σ_m² I)
    # before the defense's loss, unclamped, as the smoothed classifier of certify/smoothing.py defines it.
    # Set as --set noise_sigma_a=0.25 --set noise_sigma_v=0.1 (or noise_sigma={a: 0.25}); empty: no noise.
    noise_sigma: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("train config: epochs and batch_size must be >= 1 and lr > 0")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"train config: optimizer must be 'sgd' or 'adamw', got {preview(self.optimizer)}")
        if self.lr_schedule not in ("step", "cosine"):
            raise ValueError(f"train config: lr_schedule must be 'step' or 'cosine', got {preview(self.lr_schedule)}")
        if self.warmup_epochs < 0:
            raise ValueError(f"train config: warmup_epochs must be >= 0, got {self.warmup_epochs}")
        # SGD's momentum coefficient is a decay factor: at 1 or above the velocity grows without bound
        # (momentum=400.5 trained to a constant predictor with finite weights, so no NaN check would see it)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"train config: momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0 or not 0 < self.lr_gamma <= 1:
            raise ValueError(
                f"train config: weight_decay must be >= 0 and lr_gamma in (0, 1], got "
                f"weight_decay={self.weight_decay!r}, lr_gamma={self.lr_gamma!r}"
            )
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"train config: precision must be 'fp32' or 'bf16', got {preview(self.precision)}")
        self.noise_sigma = check_noise_sigma(self.noise_sigma)


# TrainConfig fields added after checkpoints existed: left out of checkpoint keys while at these values,
# so that earlier checkpoints (trained exactly so) keep their keys.
KEY_OMITTED_DEFAULTS = {"precision": "fp32", "channels_last": False, "compile": False, "noise_sigma": {}}

NOISE_PREFIX = "noise_sigma_"


def check_noise_sigma(value: Any) -> dict[str, float]:
    """``noise_sigma`` as {modality: σ ≥ 0} (σ = 0 entries dropped); a clear error otherwise. Modality names are
    checked against the dataset when training starts."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            f"train config: noise_sigma must map modality names to σ, e.g. {{a: 0.25}}, got {preview(value)}"
        )
    out: dict[str, float] = {}
    for m, s in value.items():
        sigma = check_nonnegative(s, f"train config: noise_sigma[{preview(m)}]")
        if sigma > 0:
            out[str(m)] = sigma
    return out


def fold_noise_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Turn ``noise_sigma_<m>=σ`` keys into one ``noise_sigma`` mapping (merged into a given ``noise_sigma``)."""
    keys = [k for k in overrides if k.startswith(NOISE_PREFIX) and len(k) > len(NOISE_PREFIX)]
    if not keys:
        return dict(overrides)
    out = {k: v for k, v in overrides.items() if k not in keys}
    given = out.get("noise_sigma") or {}
    if isinstance(given, str):
        given = load_yaml(given, "train config: noise_sigma") or {}
    if not isinstance(given, dict):
        raise ValueError(f"train config: noise_sigma must map modality names to σ, got {preview(given)}")
    out["noise_sigma"] = {**given, **{k[len(NOISE_PREFIX) :]: overrides[k] for k in keys}}
    return out


def add_input_noise(batch: Batch, sigma: dict[str, float], generator: torch.Generator) -> Batch:
    """x^(m) + σ_m·N(0, I) for the modalities in ``sigma`` (no clamp: the smoothed classifier's noise)."""
    if not sigma:
        return batch
    out = dict(batch)
    for m, s in sigma.items():
        x = batch[m]
        out[m] = x + s * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return out


def keyed_settings(
    values: dict[str, Any], omitted: dict[str, Any] | None = None, spellings: dict[str, dict[Any, Any]] | None = None
) -> dict[str, Any]:
    """``values`` as they enter a checkpoint key, so that extending or renaming a setting moves no existing
    config hash: a field added after checkpoints existed is left out while it holds the value those checkpoints
    were trained with (``omitted``: field → value), and a renamed option value keeps the spelling the
    checkpoints were keyed with (``spellings``: field → {current value: keyed value})."""
    omitted, spellings = omitted or {}, spellings or {}
    out = {k: v for k, v in values.items() if not (k in omitted and v == omitted[k])}
    for k, renamed in spellings.items():
        if k in out and out[k] in renamed:
            out[k] = renamed[out[k]]
    return out


def key_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The schedule as it enters a checkpoint key (``KEY_OMITTED_DEFAULTS`` left out at their defaults)."""
    return keyed_settings(dataclasses.asdict(cfg), KEY_OMITTED_DEFAULTS)


def make_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: TrainConfig, lr: float | None = None
) -> torch.optim.Optimizer:
    """The schedule's optimiser (SGD with momentum or AdamW) over ``params``, at ``lr`` or the base lr."""
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Multiplier of the base lr during ``epoch`` (0-based): linear warm-up, then the schedule.

    Warm-up epoch e runs at (e+1)/(W+1) of the base lr, so the first epoch after it is the first at
    the full lr. "cosine" then decays as ½(1 + cos(π·i/n)) over the n = epochs − W remaining epochs
    (the last epoch keeps a small positive lr); "step" multiplies by γ every ``lr_step`` epochs.
    """
    warm = cfg.warmup_epochs
    if epoch < warm:
        return (epoch + 1) / (warm + 1)
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - warm) / max(cfg.epochs - warm, 1)))
    return cfg.lr_gamma ** (epoch // cfg.lr_step) if cfg.lr_step > 0 else 1.0


@dataclass
class TrainContext:
    """What a defense may look at during training."""

    dataset: InMemoryDataset
    train: TrainConfig
    device: torch.device
    generator: torch.Generator
    epoch: int = 0
    step: int = 0
    progress: bool = False
    state: dict[str, Any] = field(default_factory=dict)


class Defense:
    """Base class: plain joint training with CE on the fused logits.

    Subclasses set ``name``, ``Config`` (a dataclass with docs/methods.md defaults) and ``head``, and
    override :meth:`loss` and, where the method needs them, the hooks below.
    """

    name: ClassVar[str] = "defense"
    head: ClassVar[str] = "concat"
    # Hyperparameters added or renamed after checkpoints existed (see ``keyed_settings``): a field left out of
    # the key while at the value earlier checkpoints used, and option values keyed with their old spelling.
    KEY_OMITTED: ClassVar[dict[str, Any]] = {}
    KEY_SPELLINGS: ClassVar[dict[str, dict[Any, Any]]] = {}

    @dataclass
    class Config:
        pass

    def __init__(self, config: Any | None = None) -> None:
        self.config: Any = config if config is not None else self.Config()  # each defense has its own Config

    def config_dict(self) -> dict[str, Any]:
        """Hyperparameters as they enter the checkpoint key (``KEY_OMITTED`` and ``KEY_SPELLINGS`` applied)."""
        return keyed_settings(dataclasses.asdict(self.config), self.KEY_OMITTED, self.KEY_SPELLINGS)

    def build_model(self, dataset: InMemoryDataset, train: TrainConfig) -> MultiModalNet:
        return build_model(
            dataset.specs,
            dataset.num_classes,
            dataset.encoders,
            head=self.head,
            feature_dim=train.feature_dim,
            **self.model_options(),
        )

    def model_options(self) -> dict[str, Any]:
        return {}

    def training_split(self, train: Any, ctx: TrainContext) -> Any:
        """The part of the training split that the shared loop iterates over (GB keeps its V′ aside)."""
        return train

    def on_epoch_start(self, model: MultiModalNet, ctx: TrainContext) -> None:
        """Called before every epoch (PMR prototypes, GB weights)."""

    def loss(self, model: MultiModalNet, batch: Batch, labels: Tensor, ctx: TrainContext) -> Tensor:
        return F.cross_entropy(model(batch).logits.float(), labels)

    def after_backward(self, model: MultiModalNet, ctx: TrainContext) -> None:
        """Called between backward and the optimizer step (gradient modulation, OGM-GE)."""

    def post_train(self, model: MultiModalNet, ctx: TrainContext) -> dict[str, Tensor]:
        """Stages after step 1 (CRMT step 2); returns extra tensors to store with the checkpoint."""
        return {}
