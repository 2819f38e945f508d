"""What a real video dataset is made of: sampling rules, streams, profiles and options (docs/methods.md §2).

A :class:`ClipProfile` names what distinguishes Kinetics-Sounds, VGGSound and UCF101 (their streams,
augmentation and defaults); :class:`ClipOptions` are the ``--dataset-set`` options every one of them takes.
The manifest (``clip_manifest``), frames (``clip_frames``), cache (``clip_cache``) and the dataset itself
(``av_clips``) are built on these.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import check_fields, check_known
from ..contracts import ModalitySpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOW_MEAN = (0.1307, 0.1307)
FLOW_STD = (0.3081, 0.3081)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SORTED = "sorted"  # frame pattern: the t-th image file of the sorted folder listing
MANIFEST = "manifest.csv"
PAPER_SCHEDULE = {
    "epochs": 140,
    "batch_size": 64,
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "lr_step": 60,
    "lr_gamma": 0.1,
    "optimizer": "sgd",
    "feature_dim": 512,
}


# ----------------------------------------------------------------------------- sampling rules


@dataclass(frozen=True)
class SegmentRule:
    """Which frames (1-based) a clip contributes: ``picks`` segments of ⌊n/picks⌋ files each.

    train: t_i uniform in [i·seg+1, i·seg+seg] (then ``min(t, train_cap)``); test:
    t_i = i·seg + max(⌊seg/2⌋, 1). ``few_files``: with n ≤ few_files every pick is frame 1 (KS).
    ``fixed_count``: seg is computed from this count instead of the files (UCF RGB uses 6).
    ``min_files``: clips with fewer files are left out of the split.
    """

    picks: int = 3
    few_files: int = 0
    train_cap: int | None = None
    fixed_count: int | None = None
    min_files: int = 1

    def _seg(self, n_files: int) -> int:
        return (self.fixed_count if self.fixed_count is not None else n_files) // self.picks

    def indices(self, n_files: int, train: bool, rng: random.Random | None) -> list[int]:
        if n_files <= self.few_files:
            return [1] * self.picks
        seg = self._seg(n_files)
        out = []
        for i in range(self.picks):
            if train:
                t = rng.randint(i * seg + 1, i * seg + seg)
                if self.train_cap is not None:
                    t = min(t, self.train_cap)
            else:
                t = i * seg + max(seg // 2, 1)
            out.append(min(t, n_files))  # only a fixed_count rule can point past the last file
        return out

    def reachable(self, n_files: int, train: bool) -> list[int]:
        """Every frame a sample may use (what the uint8 cache stores), in increasing order."""
        if not train:
            return self.indices(n_files, False, None)
        if n_files <= self.few_files:
            return [1]
        last = min(self.picks * self._seg(n_files), n_files)
        if self.train_cap is not None:
            last = min(last, self.train_cap)
        return list(range(1, last + 1))


# ----------------------------------------------------------------------------- streams and profiles


@dataclass(frozen=True)
class FrameStream:
    """A modality stored as JPEG folders: one RGB folder, or one grayscale folder per channel (flow)."""

    name: str
    columns: tuple[str, ...]  # manifest path column(s), one folder each
    mode: str  # PIL mode of each folder's images: "RGB" or "L"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rule: SegmentRule
    count_column: str  # optional manifest column with the number of files (of the first folder)
    pattern_option: str  # dataset option naming the file pattern
    flip_negates: tuple[int, ...] = ()  # channels that change sign under a horizontal flip (flow u)
    description: str = ""

    @property
    def channels(self) -> int:
        return len(self.columns) * (3 if self.mode == "RGB" else 1)

    def spec(self, image_size: int) -> ModalitySpec:
        lower = tuple((0.0 - m) / s for m, s in zip(self.mean, self.std))
        upper = tuple((1.0 - m) / s for m, s in zip(self.mean, self.std))
        return ModalitySpec(
            self.name, (self.channels, self.rule.picks, image_size, image_size), lower, upper, self.description
        )


@dataclass(frozen=True)
class ArrayStream:
    """A modality stored as one ``.npy`` per clip (the fbank), fed to the model unchanged."""

    name: str
    column: str
    shape: tuple[int, ...]  # model-input shape; the file holds shape[1:] when shape[0] == 1
    description: str = ""

    def spec(self) -> ModalitySpec:
        return ModalitySpec(self.name, self.shape, None, None, self.description)


@dataclass(frozen=True)
class ClipProfile:
    """What distinguishes KS, VGGSound and UCF101: streams, augmentation, defaults, help texts."""

    name: str
    title: str
    env_var: str
    order: tuple[str, ...]  # modality order of the specs (and of the concat head)
    frames: tuple[FrameStream, ...]
    arrays: tuple[ArrayStream, ...]
    # train augmentation: True = RandomResizedCrop + flip drawn per frame (KS, VGGSound);
    # False = Resize + one horizontal flip per sample shared by every frame stream (UCF101)
    crop: bool
    encoders: dict[str, str]
    layout: str  # human description of the on-disk layout, for error messages

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for s in self.frames for c in s.columns) + tuple(a.column for a in self.arrays)

    def prepare_hint(self) -> str:
        return f"prepare it from raw media with `mmrobust-bench prepare {self.name} --raw RAW_DIR --out DATA_DIR`"


def rgb_stream(rule: SegmentRule) -> FrameStream:
    return FrameStream(
        "v",
        ("frames",),
        "RGB",
        IMAGENET_MEAN,
        IMAGENET_STD,
        rule,
        "n_frames",
        "frame_pattern",
        description="RGB frames (C, T, H, W), ImageNet-normalised",
    )


def fbank_stream() -> ArrayStream:
    return ArrayStream("a", "audio", (1, 1024, 128), "Kaldi log-mel fbank (1, 1024, 128), AST-normalised, unbounded")


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ClipOptions:
    """Dataset options (``--dataset-set key=value``)."""

    data_root: str | None = None  # default: the profile's environment variable
    manifest: str = MANIFEST  # relative to data_root unless absolute
    image_size: int = 224
    frame_pattern: str = SORTED  # "sorted" or a str.format pattern with {t} (1-based) or {i} (0-based)
    flow_pattern: str = SORTED
    frame_cache: bool | str = "auto"  # True, False, or "auto" (build unless larger than frame_cache_max_gb)
    frame_cache_dir: str | None = None  # default: <cache_dir>/clip-cache, else <data_root>/.mmrobust-cache
    frame_cache_size: int | None = None  # side of the cached frames; default image_size
    frame_cache_max_gb: float = 64.0
    num_workers: int | str = "auto"
    train_split: str = "train"
    test_split: str = "test"
    encoders: dict[str, str] | None = None  # per-modality encoder ids replacing the ResNet-18s
    allow_outside_root: bool = False  # follow manifest paths that leave data_root (absolute or ../)

    def __post_init__(self) -> None:
        check_fields(self, "dataset options")
        if not isinstance(self.image_size, int) or self.image_size < 8:
            raise ValueError(f"image_size must be an integer >= 8, got {self.image_size!r}")
        if self.frame_cache_size is not None and (
            not isinstance(self.frame_cache_size, int) or self.frame_cache_size < 8
        ):
            raise ValueError(f"frame_cache_size must be an integer >= 8, got {self.frame_cache_size!r}")
        if self.frame_cache not in (True, False, "auto"):
            raise ValueError(f"frame_cache must be true, false or auto, got {self.frame_cache!r}")
        if self.num_workers != "auto" and not (isinstance(self.num_workers, int) and self.num_workers >= 0):
            raise ValueError(f"num_workers must be 'auto' or an integer >= 0, got {self.num_workers!r}")
        if self.encoders is not None and not isinstance(self.encoders, Mapping):
            raise ValueError(f"encoders must map modality to encoder id, got {self.encoders!r}")
        for name in ("frame_pattern", "flow_pattern"):
            pattern = getattr(self, name)
            if pattern != SORTED:
                try:
                    pattern.format(t=1, i=0)
                except (KeyError, IndexError, ValueError) as exc:
                    raise ValueError(
                        f"{name} must be 'sorted' or a pattern such as frame_{{t:05d}}.jpg "
                        f"({{t}} 1-based, {{i}} 0-based), got {pattern!r}"
                    ) from exc

    @property
    def cache_size(self) -> int:
        return self.frame_cache_size or self.image_size

    @property
    def workers(self) -> int:
        if self.num_workers != "auto":
            return int(self.num_workers)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(0, min(8, cpus - 1))


def parse_options(profile: ClipProfile, options: Mapping[str, Any]) -> ClipOptions:
    valid = set(ClipOptions.__dataclass_fields__)
    if not any(s.pattern_option == "flow_pattern" for s in profile.frames):
        valid.discard("flow_pattern")
    check_known(profile.name, options, valid)
    return ClipOptions(**options)


def profile_specs(profile: ClipProfile, image_size: int) -> tuple[ModalitySpec, ...]:
    specs = {s.name: s.spec(image_size) for s in profile.frames}
    specs.update({a.name: a.spec() for a in profile.arrays})
    return tuple(specs[m] for m in profile.order)


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FLOW_MEAN",
    "FLOW_STD",
    "IMAGE_SUFFIXES",
    "SORTED",
    "MANIFEST",
    "PAPER_SCHEDULE",
    "SegmentRule",
    "FrameStream",
    "ArrayStream",
    "ClipProfile",
    "rgb_stream",
    "fbank_stream",
    "ClipOptions",
    "parse_options",
    "profile_specs",
]
