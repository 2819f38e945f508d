"""``synthav``: the embedded synthetic audio-visual benchmark (the default dataset everywhere).

Every class has an audio cue (a tone with a harmonic at a class-specific mel-spaced pitch) and a
visual cue (a drifting colour grating at a class-specific orientation). Audio goes through the real
pipeline: waveform → ``torchaudio.compliance.kaldi.fbank`` → normalised log-mel (1 × T × F), and is
unbounded like the paper's spectrograms. Visual is 3 RGB frames, ImageNet-normalised, with the
valid per-channel box declared in model-input space.

Knobs:
- ``*_reliability``: probability that a modality's cue names the true class (otherwise it names a
  random wrong class). The more reliable modality is the one a jointly trained model prefers.
- ``audio_snr_db`` / ``visual_contrast`` / ``visual_noise``: how clean each cue is.
The audio cue lives in a few mel bins, the visual cue is spread over every pixel, so at equal ℓ2
budget audio is the fragile modality. Defaults reproduce the paper's situation (the model prefers
the fragile audio); ``prefer="visual"`` swaps the reliabilities so the model prefers video.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torchaudio.compliance import kaldi

from ..checked_tensors import read_checked_tensors, write_checked_tensors
from ..config import check_fields, check_known, coerce_floats
from ..contracts import ModalitySpec
from ..io import default_root, stable_hash
from ..progress import progress_bar
from . import DATASETS
from .base import InMemoryDataset, TensorSplit

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAMPLE_RATE = 16_000
FRAME_SHIFT = 160  # 10 ms at 16 kHz
FRAME_LENGTH = 400  # 25 ms at 16 kHz
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SynthAVConfig:
    n_classes: int = 10
    n_train: int = 4000
    n_test: int = 1000
    seed: int = 0
    prefer: str = "audio"  # which modality a joint model prefers: "audio" or "visual"
    preferred_reliability: float = 0.95
    other_reliability: float = 0.70
    audio_frames: int = 64
    mel_bins: int = 40
    audio_snr_db: float = 0.0
    image_size: int = 32
    n_frames: int = 3
    visual_contrast: float = 0.2
    visual_noise: float = 0.15

    def __post_init__(self) -> None:
        check_fields(self, "synthav")  # integral sizes >= 1 (n_train=0 gives NaN statistics), finite floats
        if self.prefer not in ("audio", "visual"):
            raise ValueError(f"synthav: prefer must be 'audio' or 'visual', got {self.prefer!r}")
        if self.n_classes < 2:
            raise ValueError("synthav: n_classes must be at least 2")
        if self.mel_bins < 4:  # Kaldi's mel filterbank needs more than 3 bins
            raise ValueError(f"synthav: mel_bins must be at least 4, got {self.mel_bins}")
        for name in ("preferred_reliability", "other_reliability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"synthav: {name} must be in [0, 1], got {value}")

    @property
    def audio_reliability(self) -> float:
        return self.preferred_reliability if self.prefer == "audio" else self.other_reliability

    @property
    def visual_reliability(self) -> float:
        return self.other_reliability if self.prefer == "audio" else self.preferred_reliability


def visual_spec(cfg: SynthAVConfig) -> ModalitySpec:
    lower = tuple((0.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    upper = tuple((1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    return ModalitySpec(
        "v",
        (3, cfg.n_frames, cfg.image_size, cfg.image_size),
        lower,
        upper,
        "RGB frames (C, T, H, W), ImageNet-normalised",
    )


def audio_spec(cfg: SynthAVConfig) -> ModalitySpec:
    return ModalitySpec(
        "a", (1, cfg.audio_frames, cfg.mel_bins), None, None, "Kaldi log-mel fbank (1, T, F), normalised, unbounded"
    )


def _cue_classes(labels: torch.Tensor, reliability: float, n_classes: int, gen: torch.Generator) -> torch.Tensor:
    """The class each sample's cue shows: the label with prob. ``reliability``, else a wrong class."""
    keep = torch.rand(labels.shape, generator=gen) < reliability
    shift = torch.randint(1, n_classes, labels.shape, generator=gen)
    return torch.where(keep, labels, (labels + shift) % n_classes)


def _mel(f: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(f / 700.0)


def _inv_mel(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (torch.exp(m / 1127.0) - 1.0)


def synth_waveforms(cues: torch.Tensor, cfg: SynthAVConfig, gen: torch.Generator) -> torch.Tensor:
    """(N, samples) waveforms: class tone + harmonic inside a random window, plus white noise."""
    n = cues.shape[0]
    length = FRAME_LENGTH + (cfg.audio_frames - 1) * FRAME_SHIFT
    pitches = _inv_mel(torch.linspace(_mel(torch.tensor(250.0)), _mel(torch.tensor(3000.0)), cfg.n_classes))
    f0 = pitches[cues] * (1.0 + 0.01 * torch.randn(n, generator=gen))
    t = torch.arange(length, dtype=torch.float32) / SAMPLE_RATE
    phase = 2 * math.pi * torch.rand(n, 1, generator=gen)
    tone = torch.sin(2 * math.pi * f0[:, None] * t + phase) + 0.5 * torch.sin(4 * math.pi * f0[:, None] * t + phase)
    start = torch.rand(n, 1, generator=gen) * 0.4 * length
    stop = start + (0.5 + 0.1 * torch.rand(n, 1, generator=gen)) * length
    idx = torch.arange(length, dtype=torch.float32)
    envelope = ((idx >= start) & (idx < stop)).float()
    noise_std = math.sqrt(0.625) * 10 ** (-cfg.audio_snr_db / 20)  # tone power is 0.625
    noise = noise_std * torch.randn(n, length, generator=gen)
    return 0.3 * (tone * envelope + noise)


def fbank_features(waves: torch.Tensor, mel_bins: int) -> torch.Tensor:
    """Kaldi-compatible log-mel filterbanks, as in the paper's pre-processing (docs/methods.md §2)."""
    feats = [
        kaldi.fbank(
            w[None] - w.mean(),
            num_mel_bins=mel_bins,
            sample_frequency=SAMPLE_RATE,
            htk_compat=True,
            use_energy=False,
            dither=0.0,
            window_type="hanning",
            frame_length=1000 * FRAME_LENGTH / SAMPLE_RATE,
            frame_shift=1000 * FRAME_SHIFT / SAMPLE_RATE,
        )
        for w in progress_bar(waves, desc="synthav: audio filterbanks", unit="clip", leave=False)
    ]
    return torch.stack(feats)


def synth_frames(cues: torch.Tensor, cfg: SynthAVConfig, gen: torch.Generator) -> torch.Tensor:
    """(N, 3, T, H, W) frames in [0, 1]: a colour grating drifting over T frames, plus noise."""
    n, size, k = cues.shape[0], cfg.image_size, cfg.n_classes
    theta = math.pi * cues.float() / k + 0.05 * torch.randn(n, generator=gen)
    palette = torch.stack(
        [0.6 + 0.4 * torch.cos(2 * math.pi * (torch.arange(k) / k + off)) for off in (0.0, 1 / 3, 2 / 3)], dim=1
    )  # (K, 3) colour weights
    colour = palette[cues]
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    proj = xx[None] * torch.cos(theta)[:, None, None] + yy[None] * torch.sin(theta)[:, None, None]
    phase0 = 2 * math.pi * torch.rand(n, generator=gen)
    speed = 0.5 + torch.rand(n, generator=gen)
    frames = []
    for t in range(cfg.n_frames):
        grating = torch.sin(3 * math.pi * proj + (phase0 + speed * t)[:, None, None])  # (N, H, W)
        frames.append(grating[:, None] * colour[:, :, None, None])  # (N, 3, H, W)
    pattern = torch.stack(frames, dim=2)  # (N, 3, T, H, W)
    noise = cfg.visual_noise * torch.randn(pattern.shape, generator=gen)
    return (0.5 + cfg.visual_contrast * pattern + noise).clamp(0.0, 1.0)


def generate(cfg: SynthAVConfig) -> dict[str, torch.Tensor]:
    """All tensors of the dataset, deterministically from ``cfg.seed``."""
    gen = torch.Generator().manual_seed(cfg.seed)
    n = cfg.n_train + cfg.n_test
    labels = torch.arange(n) % cfg.n_classes
    labels = labels[torch.randperm(n, generator=gen)]
    audio_cues = _cue_classes(labels, cfg.audio_reliability, cfg.n_classes, gen)
    visual_cues = _cue_classes(labels, cfg.visual_reliability, cfg.n_classes, gen)
    fb = fbank_features(synth_waveforms(audio_cues, cfg, gen), cfg.mel_bins)
    train_fb = fb[: cfg.n_train]
    mean, std = train_fb.mean(), train_fb.std()
    audio = ((fb - mean) / (2 * std))[:, None]  # AST-style normalisation, statistics from train only
    mean_t = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std_t = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    visual = (synth_frames(visual_cues, cfg, gen) - mean_t) / std_t
    return {
        "a": audio.contiguous(),
        "v": visual.contiguous(),
        "labels": labels,
        "audio_cues": audio_cues,
        "visual_cues": visual_cues,
        "audio_norm": torch.stack([mean, std]),
    }


def cache_key(cfg: SynthAVConfig) -> str:
    return stable_hash({"version": GENERATOR_VERSION, **asdict(cfg)})


def cache_path(cfg: SynthAVConfig, cache_dir: Path) -> Path:
    return cache_dir / f"synthav-{cache_key(cfg)}.safetensors"


def write_cache(path: Path, cfg: SynthAVConfig, tensors: dict[str, torch.Tensor]) -> None:
    """The tensors, with the key, the config and a sha256 of the tensors in one metadata entry (one entry
    keeps the file reproducible: safetensors does not keep the order of several)."""
    write_checked_tensors(path, tensors, {"key": cache_key(cfg), "config": asdict(cfg)})


def read_cache(path: Path, cfg: SynthAVConfig) -> dict[str, torch.Tensor] | None:
    """The cached tensors when the file is this configuration's and intact; None (with a warning naming
    the file) when it is another configuration's, lacks a checksum, or is truncated or bit-flipped."""
    tensors, _, problem = read_checked_tensors(path, cache_key(cfg))
    if tensors is not None:
        return tensors
    log.warning("synthav cache %s is not used: %s; regenerating it", path, problem)
    return None


def check_synthav_options(**options: Any) -> SynthAVConfig:
    """Validate synthav options without generating anything (names, types, ranges)."""
    check_known("synthav", options, SynthAVConfig.__dataclass_fields__)
    return SynthAVConfig(**coerce_floats(SynthAVConfig, options))


@DATASETS.register("synthav")
def build_synthav(*, cache_dir: Path | None = None, **options) -> InMemoryDataset:
    """Generate (or load from cache) synthav; ``options`` are :class:`SynthAVConfig` fields."""
    cfg = check_synthav_options(**options)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_root() / "datasets"
    path = cache_path(cfg, cache_dir)
    start = time.perf_counter()
    tensors = read_cache(path, cfg) if path.exists() else None
    if tensors is not None:
        log.info("loaded synthav from %s in %.2f s", path, time.perf_counter() - start)
    else:
        start = time.perf_counter()
        tensors = generate(cfg)
        write_cache(path, cfg, tensors)
        log.info("generated synthav in %.1f s -> %s", time.perf_counter() - start, path)
    n = cfg.n_train
    split = lambda sl: TensorSplit({"v": tensors["v"][sl], "a": tensors["a"][sl]}, tensors["labels"][sl])  # noqa: E731
    return InMemoryDataset(
        name="synthav",
        specs=(visual_spec(cfg), audio_spec(cfg)),
        num_classes=cfg.n_classes,
        train=split(slice(0, n)),
        test=split(slice(n, None)),
        class_names=tuple(f"class{k}" for k in range(cfg.n_classes)),
        config=asdict(cfg),
        train_defaults={"epochs": 6, "batch_size": 64, "lr": 0.05, "lr_step": 0, "optimizer": "sgd", "feature_dim": 64},
        encoders={"v": "small_cnn3d", "a": "small_cnn2d"},
    )


build_synthav.check_options = check_synthav_options  # type: ignore[attr-defined]  # bench.validate calls it
build_synthav.modality_names = ("v", "a")  # type: ignore[attr-defined]  # --modality is checked before building
