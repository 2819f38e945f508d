"""An example plugin for mmrobust-bench: a defense, an attack, a dataset and an encoder, each added
through its entry-point group (``mmrobust_bench.defenses`` / ``.attacks`` / ``.datasets`` / ``.encoders``)."""

from .gaussian_av import GaussianAVConfig, bayes_predict, build_gaussian_av, mlp_encoder
from .label_smoothing import LabelSmoothingJT
from .random_noise import RandomNoiseL2

__all__ = ["LabelSmoothingJT", "RandomNoiseL2", "GaussianAVConfig", "build_gaussian_av", "bayes_predict", "mlp_encoder"]
