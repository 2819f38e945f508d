"""``gaussian_av``: two vector modalities from a Gaussian mixture, and the ``example_mlp`` encoder.

Class k has one mean per modality, μ_k^(m) = separation_m · (a random unit vector), and a sample
is x^(m) = μ_y^(m) + N(0, I). The modality with the larger separation carries the stronger cue,
so joint training prefers it, the paper's modality preference in a setting whose Bayes classifier
is known in closed form (:func:`bayes_predict`). A plugin dataset is a builder registered through
the ``mmrobust_bench.datasets`` entry point that returns an
:class:`~mmrobust_bench.data.base.InMemoryDataset` (or any object with its attributes); its
``encoders`` name registered encoders, here ``example_mlp`` from the ``mmrobust_bench.encoders``
entry point of this package. Generation takes milliseconds, so nothing is cached.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrobust_bench.contracts import ModalitySpec
from mmrobust_bench.data.base import InMemoryDataset, TensorSplit, check_options


@dataclass(frozen=True)
class GaussianAVConfig:
    n_train: int = 2000
    n_test: int = 500
    n_classes: int = 5
    dim_v: int = 16
    dim_a: int = 16
    separation_v: float = 1.5  # ‖μ_k^(v)‖: the weaker cue
    separation_a: float = 3.0  # ‖μ_k^(a)‖: the stronger cue, so JT prefers audio
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith(("n_", "dim_")) and value < 1:
                raise ValueError(f"gaussian_av: {f.name} must be >= 1, got {value}")
            if f.name.startswith("separation_") and value < 0:
                raise ValueError(f"gaussian_av: {f.name} must be >= 0, got {value}")
        if self.n_classes < 2:
            raise ValueError(f"gaussian_av: n_classes must be >= 2, got {self.n_classes}")


def class_means(cfg: GaussianAVConfig) -> dict[str, Tensor]:
    """μ^(m) as (K, dim_m) per modality, from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(cfg.seed)
    return {
        m: F.normalize(torch.randn(cfg.n_classes, dim, generator=g), dim=1) * sep
        for m, dim, sep in (("v", cfg.dim_v, cfg.separation_v), ("a", cfg.dim_a, cfg.separation_a))
    }


def generate(cfg: GaussianAVConfig) -> tuple[dict[str, Tensor], Tensor]:
    """Inputs (train then test) and labels, from a second stream seeded with ``seed + 1``."""
    means = class_means(cfg)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    n = cfg.n_train + cfg.n_test
    labels = torch.randint(cfg.n_classes, (n,), generator=g)
    inputs = {m: mu[labels] + torch.randn(n, mu.shape[1], generator=g) for m, mu in means.items()}
    return inputs, labels


def bayes_predict(batch: dict[str, Tensor], means: dict[str, Tensor]) -> Tensor:
    """The Bayes classifier of the mixture (equal priors, identity covariance): argmin_k Σ_m ‖x^(m) − μ_k^(m)‖².

    Only the modalities present in ``batch`` enter the sum, so it is also the Bayes classifier when
    a modality is missing.
    """
    dist = sum(torch.cdist(x.float(), means[m]).pow(2) for m, x in batch.items())
    return dist.argmin(1)


def build_gaussian_av(*, cache_dir: Path | None = None, **options: Any) -> InMemoryDataset:
    """``options`` are :class:`GaussianAVConfig` fields (``--dataset-set separation_a=2``)."""
    check_options("gaussian_av", options, (f.name for f in fields(GaussianAVConfig)))
    cfg = GaussianAVConfig(**options)
    inputs, labels = generate(cfg)
    n = cfg.n_train

    def split(sl: slice) -> TensorSplit:
        return TensorSplit({m: x[sl] for m, x in inputs.items()}, labels[sl])

    return InMemoryDataset(
        name="gaussian_av",
        specs=(
            ModalitySpec("v", (cfg.dim_v,), description="Gaussian-mixture vector, the weaker cue; unbounded"),
            ModalitySpec("a", (cfg.dim_a,), description="Gaussian-mixture vector, the stronger cue; unbounded"),
        ),
        num_classes=cfg.n_classes,
        train=split(slice(0, n)),
        test=split(slice(n, None)),
        class_names=tuple(f"class{k}" for k in range(cfg.n_classes)),
        config=asdict(cfg),
        train_defaults={"epochs": 8, "batch_size": 64, "lr": 0.05, "lr_step": 0, "optimizer": "sgd", "feature_dim": 32},
        encoders={"v": "example_mlp", "a": "example_mlp"},
    )


class MLPEncoder(nn.Module):
    """Flatten → Linear → ReLU → Linear → ReLU: non-negative pooled-like features, as the CNN encoders give."""

    def __init__(self, in_features: int, feature_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, feature_dim), nn.ReLU()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def mlp_encoder(spec: ModalitySpec, feature_dim: int) -> nn.Module:
    """An encoder factory ``(spec, feature_dim) -> module``, for inputs of any shape."""
    return MLPEncoder(math.prod(spec.shape), feature_dim)
