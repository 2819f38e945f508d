"""Shared machinery of the real video datasets (Kinetics-Sounds, VGGSound, UCF101; docs/methods.md §2).

A dataset directory holds a **manifest** (``manifest.csv``: ``id, label, split`` plus one relative
path column per stored stream — ``frames`` for 1 fps RGB JPEG folders, ``audio`` for (1024, 128)
float32 fbank ``.npy`` files, ``flow_u``/``flow_v`` for TV-L1 flow JPEG folders — and optionally the
file counts ``n_frames``/``n_flow``). Nothing else is hard-coded: frame files are found by a
configurable pattern (default: the t-th image of the sorted folder listing), class indices are the
sorted class names of the manifest, and ``mmrobust-bench prepare`` writes exactly this layout.

Sampling and augmentation follow the reference loaders (:class:`SegmentRule`): three frames by
segment, random at train time and deterministic at test time; KS/VGGSound train frames get an
independent RandomResizedCrop + horizontal flip each, UCF101 gets one flip shared by RGB and flow
with u → 1 − u. Every random draw comes from a per-sample RNG seeded by (epoch seed, clip), the
epoch seed being drawn from the training generator, so a run is reproducible whatever the number
of loader workers.

Speed: frames are decoded once into a memory-mapped uint8 cache per split (``frame_cache``), the
loader runs in DataLoader workers and ships uint8 tensors (pinned when the target is CUDA);
conversion to float and normalisation happen on the target device. The cached path and the JPEG
path give bit-identical batches: both resize each decoded frame to ``frame_cache_size`` first
(default: ``image_size``), and random crops are computed in original pixel coordinates and mapped
onto that frame. With the default size, test batches equal the reference
``Resize((S, S)) → ToTensor → Normalize`` exactly; train crops are taken from the S×S frame rather
than the full-resolution JPEG (the same region, resampled from fewer pixels; raise
``frame_cache_size`` for more).
"""
from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import check_fields, check_known
from ..contracts import Batch, ModalitySpec
from ..io import atomic_path, sha256_file, stable_hash
from ..progress import disable_flag
from .base import shard_slice

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOW_MEAN = (0.1307, 0.1307)
FLOW_STD = (0.3081, 0.3081)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SORTED = "sorted"  # frame pattern: the t-th image file of the sorted folder listing
MANIFEST = "manifest.csv"
CACHE_VERSION = 1
PAPER_SCHEDULE = {"epochs": 140, "batch_size": 64, "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4,
                  "lr_step": 60, "lr_gamma": 0.1, "optimizer": "sgd", "feature_dim": 512}


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
        return ModalitySpec(self.name, (self.channels, self.rule.picks, image_size, image_size), lower, upper,
                            self.description)


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
    return FrameStream("v", ("frames",), "RGB", IMAGENET_MEAN, IMAGENET_STD, rule, "n_frames", "frame_pattern",
                       description="RGB frames (C, T, H, W), ImageNet-normalised")


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
        if self.frame_cache_size is not None and (not isinstance(self.frame_cache_size, int) or self.frame_cache_size < 8):
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
                    raise ValueError(f"{name} must be 'sorted' or a pattern such as frame_{{t:05d}}.jpg "
                                     f"({{t}} 1-based, {{i}} 0-based), got {pattern!r}") from exc

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


# ----------------------------------------------------------------------------- manifest

@dataclass
class ClipTable:
    """The clips of one split that are present on disk, with their file counts."""

    ids: list[str]
    labels: Tensor  # int64 class indices
    paths: dict[str, list[Path]]  # manifest column -> one path per clip
    counts: dict[str, np.ndarray]  # frame stream name -> files per clip

    def __len__(self) -> int:
        return len(self.ids)


def _layout_error(profile: ClipProfile, root: Path, problem: str) -> ValueError:
    return ValueError(
        f"{profile.name}: {problem}. Expected a {profile.title} directory {root} holding {MANIFEST} "
        f"(CSV with columns id,label,split,{','.join(profile.columns)}; label = class name, split = train/test, "
        f"paths relative to the directory) and the layout {profile.layout}; {profile.prepare_hint()}"
    )


def resolve_root(profile: ClipProfile, opts: ClipOptions) -> Path:
    text = opts.data_root or os.environ.get(profile.env_var)
    if not text:
        raise ValueError(f"{profile.name}: no data directory given; pass --dataset-set data_root=DIR (Python: "
                         f"dataset_options=dict(data_root=DIR)) or set {profile.env_var}; {profile.prepare_hint()}")
    root = Path(text).expanduser()
    if not root.is_dir():
        raise _layout_error(profile, root, f"data directory {root} does not exist")
    return root


def read_manifest(profile: ClipProfile, root: Path, manifest: Path) -> list[dict[str, str]]:
    if not manifest.is_file():
        raise _layout_error(profile, root, f"no manifest at {manifest}")
    try:
        with open(manifest, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _layout_error(profile, root, f"cannot read manifest {manifest} ({exc})") from exc
    missing = [c for c in ("id", "label", "split") + profile.columns if c not in header]
    if missing:
        raise _layout_error(profile, root, f"manifest {manifest} lacks column(s) {', '.join(missing)} "
                                           f"(has: {', '.join(header) or 'nothing'})")
    if not rows:
        raise _layout_error(profile, root, f"manifest {manifest} has no rows")
    return rows


def _count_images(folder: Path) -> int:
    try:
        return sum(1 for name in os.listdir(folder) if name.lower().endswith(IMAGE_SUFFIXES))
    except OSError:
        return -1


def inside_root(relative: str) -> bool:
    """A manifest path that stays inside the data directory: relative, and no ``..`` climbing out of it."""
    if not relative or Path(relative).is_absolute() or os.path.isabs(relative):
        return False
    normal = os.path.normpath(relative.replace("\\", "/"))
    return normal != ".." and not normal.startswith("../")


def scan_split(profile: ClipProfile, root: Path, rows: Sequence[dict[str, str]], split: str,
               class_index: Mapping[str, int], allow_outside_root: bool = False) -> ClipTable:
    """Keep the rows of ``split`` whose files exist (and hold enough frames), like the reference.

    A path that leaves ``root`` (absolute, or climbing out with ``..``) is left out, unless
    ``allow_outside_root``: a manifest must not make the loader read arbitrary files."""
    ids: list[str] = []
    labels: list[int] = []
    paths: dict[str, list[Path]] = {c: [] for c in profile.columns}
    counts: dict[str, list[int]] = {s.name: [] for s in profile.frames}
    skipped: dict[str, int] = {}
    for row in rows:
        if row["split"] != split:
            continue
        resolved = {c: root / row[c] for c in profile.columns}
        reason = None
        if row["label"] not in class_index:
            reason = "no label"
        elif any(not row[c] for c in profile.columns):
            reason = "empty path"
        elif not allow_outside_root and not all(inside_root(row[c]) for c in profile.columns):
            reason = "path outside data_root (set allow_outside_root=true to follow it)"
        elif any(not resolved[a.column].is_file() for a in profile.arrays):
            reason = "missing .npy"
        n_files: dict[str, int] = {}
        for stream in profile.frames:
            if reason is not None:
                break
            folders = [resolved[c] for c in stream.columns]
            if not all(f.is_dir() for f in folders):
                reason = "missing frame folder"
                break
            given = row.get(stream.count_column, "")
            n = int(given) if given.isdigit() else _count_images(folders[0])
            if n < stream.rule.min_files:
                reason = f"fewer than {stream.rule.min_files} {stream.name} frames"
                break
            n_files[stream.name] = n
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        ids.append(row["id"])
        labels.append(class_index[row["label"]])
        for c in profile.columns:
            paths[c].append(resolved[c])
        for name, n in n_files.items():
            counts[name].append(n)
    if skipped:
        log.warning("%s %s: left out %d clip(s) (%s)", profile.name, split, sum(skipped.values()),
                    ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())))
    return ClipTable(ids, torch.tensor(labels, dtype=torch.long), paths,
                     {k: np.asarray(v, dtype=np.int64) for k, v in counts.items()})


# ----------------------------------------------------------------------------- frames

def decode_frame(folders: Sequence[Path], names: Sequence[str], mode: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(size, size, C) uint8 frame from one image per folder, resized like ``Resize((size, size))``
    on a PIL image (bilinear), and the original (height, width)."""
    parts = []
    orig = (0, 0)
    for folder, name in zip(folders, names):
        with Image.open(folder / name) as img:
            img = img.convert(mode)
            if not parts:
                orig = (img.height, img.width)
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            arr = np.array(img)  # a writable copy
        parts.append(arr if arr.ndim == 3 else arr[..., None])
    return (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)), orig


def random_resized_crop_box(height: int, width: int, rng: random.Random, scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w): the algorithm of torchvision's ``RandomResizedCrop.get_params``, drawn from ``rng``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _resize_box(frame: np.ndarray, size: int, box: tuple[float, float, float, float] | None) -> np.ndarray:
    """Bilinear (PIL) resize of a (H, W, C) uint8 frame, optionally of the sub-box (left, top, right, bottom)."""
    if box is None and frame.shape[0] == size and frame.shape[1] == size:
        return frame
    channels = [frame] if frame.shape[2] == 3 else [frame[..., c] for c in range(frame.shape[2])]
    out = []
    for part in channels:
        img = Image.fromarray(np.ascontiguousarray(part))
        arr = np.asarray(img.resize((size, size), Image.BILINEAR, box=box))
        out.append(arr if arr.ndim == 3 else arr[..., None])
    return out[0] if len(out) == 1 else np.concatenate(out, axis=-1)


def _flip(frame: np.ndarray, negate: Sequence[int]) -> np.ndarray:
    out = frame[:, ::-1].copy()
    for c in negate:
        out[..., c] = 255 - out[..., c]  # u -> 1 - u in [0, 1] units: the horizontal flow changes sign
    return out


@dataclass
class FrameCache:
    """The uint8 frames one split can ever use, as one memory-mapped ``.npy`` per frame stream.

    ``data[k]`` is a (S, S, C) frame; clip c owns rows ``offsets[c] : offsets[c] + counts[c]``, whose
    1-based frame numbers are ``frame_t`` and original sizes ``orig`` (height, width).
    """

    data_path: Path
    index_path: Path
    offsets: np.ndarray
    counts: np.ndarray
    frame_t: np.ndarray
    orig: np.ndarray
    digests: np.ndarray | None = None  # (N, 16) uint8 blake2b of every frame, checked when it is read
    _data: np.ndarray | None = field(default=None, repr=False)
    _pid: int = -1

    @classmethod
    def load(cls, data_path: Path, index_path: Path, key: str | None = None) -> "FrameCache":
        """Open a cache, checking before use that it is ``key``'s, complete (not truncated) and
        checksummed; a ValueError naming the file otherwise (the caller rebuilds it)."""
        try:
            with np.load(index_path, allow_pickle=False) as idx:
                if "digests" not in idx or "key" not in idx:
                    raise ValueError("it has no checksums (written by an older version)")
                if key is not None and str(idx["key"]) != key:
                    raise ValueError(f"it belongs to another configuration (key {idx['key']}, expected {key})")
                cache = cls(data_path, index_path, idx["offsets"], idx["counts"], idx["frame_t"], idx["orig"],
                            idx["digests"])
            data = np.load(data_path, mmap_mode="r", allow_pickle=False)  # a truncated file fails here
            if data.shape[0] != len(cache.frame_t) or len(cache.digests) != len(cache.frame_t):
                raise ValueError(f"it holds {data.shape[0]} frames, its index {len(cache.frame_t)}")
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ValueError(f"frame cache {data_path} is unusable: {exc}") from exc
        return cache

    @staticmethod
    def frame_digest(frame: np.ndarray) -> np.ndarray:
        return np.frombuffer(hashlib.blake2b(np.ascontiguousarray(frame).data, digest_size=16).digest(), dtype=np.uint8)

    def frame(self, clip: int, t: int) -> tuple[np.ndarray, tuple[int, int]]:
        if self._data is None or self._pid != os.getpid():
            self._data, self._pid = np.load(self.data_path, mmap_mode="r"), os.getpid()
        off, cnt = int(self.offsets[clip]), int(self.counts[clip])
        pos = off + int(np.searchsorted(self.frame_t[off:off + cnt], t))
        if pos >= off + cnt or self.frame_t[pos] != t:
            raise RuntimeError(f"frame cache {self.data_path} has no frame {t} of clip {clip}; delete it to rebuild")
        frame = np.asarray(self._data[pos])
        if self.digests is not None and not np.array_equal(self.frame_digest(frame), self.digests[pos]):
            raise ValueError(f"frame cache {self.data_path} is corrupt (frame {t} of clip {clip} does not match its "
                             f"checksum); delete {self.data_path} and {self.index_path} to rebuild it")
        return frame, (int(self.orig[pos, 0]), int(self.orig[pos, 1]))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_data"], state["_pid"] = None, -1  # workers map the file themselves
        return state


# ----------------------------------------------------------------------------- one split

class ClipSource(torch.utils.data.Dataset):
    """All clips of one split; items are addressed by (clip, epoch seed) and come out as uint8 frames."""

    def __init__(self, profile: ClipProfile, table: ClipTable, opts: ClipOptions, *, train: bool,
                 split: str, root: Path, manifest_sha: str, cache_root: Path) -> None:
        self.profile = profile
        self.table = table
        self.opts = opts
        self.train = train
        self.split = split
        self.root = root
        self.manifest_sha = manifest_sha
        self.cache_root = cache_root
        self.caches: dict[str, FrameCache] = {}
        self._cache_decided = False
        self._norm: dict[tuple[str, str], tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return len(self.table)

    # --- file access
    def pattern(self, stream: FrameStream) -> str:
        return getattr(self.opts, stream.pattern_option)

    def frame_names(self, stream: FrameStream, clip: int, t: int) -> list[str]:
        folders = [self.table.paths[c][clip] for c in stream.columns]
        pattern = self.pattern(stream)
        if pattern != SORTED:
            return [pattern.format(t=t, i=t - 1)] * len(folders)
        names = []
        for folder in folders:
            listing = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))
            if t > len(listing):
                raise ValueError(f"{self.profile.name}: {folder} holds {len(listing)} images, frame {t} asked for")
            names.append(listing[t - 1])
        return names

    def decode(self, stream: FrameStream, clip: int, t: int) -> tuple[np.ndarray, tuple[int, int]]:
        folders = [self.table.paths[c][clip] for c in stream.columns]
        return decode_frame(folders, self.frame_names(stream, clip, t), stream.mode, self.opts.cache_size)

    def frame(self, stream: FrameStream, clip: int, t: int) -> tuple[np.ndarray, tuple[int, int]]:
        cache = self.caches.get(stream.name)
        return cache.frame(clip, t) if cache is not None else self.decode(stream, clip, t)

    # --- one sample
    def __getitem__(self, item: tuple[int, int | None]) -> tuple[dict[str, Tensor], int]:
        clip, seed = item
        rng = random.Random(f"{seed}:{clip}") if self.train else None
        size = self.opts.image_size
        shared_flip = self.train and not self.profile.crop and rng.random() < 0.5
        out: dict[str, Tensor] = {}
        for stream in self.profile.frames:
            frames = []
            for t in stream.rule.indices(int(self.table.counts[stream.name][clip]), self.train, rng):
                frame, (h0, w0) = self.frame(stream, clip, t)
                if self.train and self.profile.crop:
                    top, left, h, w = random_resized_crop_box(h0, w0, rng)
                    sy, sx = frame.shape[0] / h0, frame.shape[1] / w0
                    frame = _resize_box(frame, size, (left * sx, top * sy, (left + w) * sx, (top + h) * sy))
                    if rng.random() < 0.5:
                        frame = _flip(frame, stream.flip_negates)
                else:
                    frame = _resize_box(frame, size, None)
                    if shared_flip:
                        frame = _flip(frame, stream.flip_negates)
                frames.append(frame)
            # (T, H, W, C) -> (C, T, H, W), copied by numpy: no intra-op threads for a tiny copy
            out[stream.name] = torch.from_numpy(np.ascontiguousarray(np.stack(frames).transpose(3, 0, 1, 2)))
        for array in self.profile.arrays:
            out[array.name] = self.load_array(array, clip)
        return out, int(self.table.labels[clip])

    def load_array(self, array: ArrayStream, clip: int) -> Tensor:
        path = self.table.paths[array.column][clip]
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.profile.name}: cannot read {path} ({exc})") from exc
        expected = array.shape[1:] if array.shape[0] == 1 and value.ndim == len(array.shape) - 1 else array.shape
        if tuple(value.shape) != tuple(expected):
            raise ValueError(f"{self.profile.name}: {path} has shape {value.shape}, expected {tuple(array.shape[1:])} "
                             f"({array.description}); {self.profile.prepare_hint()}")
        return torch.from_numpy(np.asarray(value, dtype=np.float32)).reshape(array.shape)

    # --- model-input space
    def to_model_input(self, raw: dict[str, Tensor], device: torch.device) -> Batch:
        out = {}
        for stream in self.profile.frames:
            x = raw[stream.name].to(device, non_blocking=True)
            key = (stream.name, str(device))
            if key not in self._norm:
                view = (1, -1, 1, 1, 1)
                self._norm[key] = (torch.tensor(stream.mean, device=device).view(view),
                                   torch.tensor(stream.std, device=device).view(view))
            mean, std = self._norm[key]
            out[stream.name] = x.float().div_(255).sub_(mean).div_(std)  # ToTensor, then Normalize
        for array in self.profile.arrays:
            out[array.name] = raw[array.name].to(device, non_blocking=True)
        return {m: out[m] for m in self.profile.order}

    # --- the uint8 cache
    def cache_key(self, stream: FrameStream) -> str:
        return stable_hash({"version": CACHE_VERSION, "root": str(self.root.resolve()), "manifest": self.manifest_sha,
                            "split": self.split, "train": self.train, "stream": stream.name,
                            "pattern": self.pattern(stream), "size": self.opts.cache_size, "rule": asdict(stream.rule)})

    def cache_paths(self, stream: FrameStream) -> tuple[Path, Path]:
        stem = f"{self.profile.name}-{self.split}-{stream.name}-{self.cache_key(stream)}"
        return self.cache_root / f"{stem}.npy", self.cache_root / f"{stem}.index.npz"

    def ensure_cache(self) -> None:
        """Open (or build, on first use) the uint8 frame cache of every frame stream, as configured."""
        if self._cache_decided:
            return
        self._cache_decided = True
        if self.opts.frame_cache is False:
            return
        for stream in self.profile.frames:
            data_path, index_path = self.cache_paths(stream)
            if data_path.exists() and index_path.exists():
                try:
                    self.caches[stream.name] = FrameCache.load(data_path, index_path, self.cache_key(stream))
                    continue
                except ValueError as exc:
                    log.warning("%s; rebuilding it", exc)
                    data_path.unlink(missing_ok=True)
                    index_path.unlink(missing_ok=True)
            if not (data_path.exists() and index_path.exists()):
                reach = [stream.rule.reachable(int(n), self.train) for n in self.table.counts[stream.name]]
                size = self.opts.cache_size
                need = sum(map(len, reach)) * size * size * stream.channels
                if self.opts.frame_cache == "auto" and not self._cache_fits(stream, need):
                    continue
                self.build_cache(stream, reach, data_path, index_path)
            self.caches[stream.name] = FrameCache.load(data_path, index_path, self.cache_key(stream))

    def _cache_fits(self, stream: FrameStream, need: int) -> bool:
        limit = self.opts.frame_cache_max_gb * 2**30
        try:
            self.cache_root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.cache_root).free
        except OSError as exc:
            log.warning("%s %s: cannot write the frame cache in %s (%s); decoding JPEGs every epoch. Set "
                        "frame_cache_dir to a writable folder", self.profile.name, self.split, self.cache_root, exc)
            return False
        if need > limit or need > 0.9 * free:
            log.warning("%s %s: not caching %s frames (%.1f GiB needed, limit %.1f GiB, %.1f GiB free in %s); "
                        "decoding JPEGs every epoch. Set frame_cache=true or raise frame_cache_max_gb to force it",
                        self.profile.name, self.split, stream.name, need / 2**30, limit / 2**30, free / 2**30,
                        self.cache_root)
            return False
        return True

    def build_cache(self, stream: FrameStream, reach: list[list[int]], data_path: Path, index_path: Path) -> None:
        counts = np.asarray([len(r) for r in reach], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        frame_t = np.asarray([t for r in reach for t in r], dtype=np.int32)
        size = self.opts.cache_size
        orig = np.zeros((len(frame_t), 2), dtype=np.int32)
        digests = np.zeros((len(frame_t), 16), dtype=np.uint8)
        workers = self.opts.workers
        loader = DataLoader(_CacheFill(self, stream, reach), batch_size=4, num_workers=workers,
                            collate_fn=_as_list, prefetch_factor=4 if workers else None)
        try:
            self.cache_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{self.profile.name}: cannot write the frame cache in {self.cache_root} ({exc}); "
                             f"set frame_cache_dir to a writable folder or frame_cache=false") from exc
        with atomic_path(data_path) as tmp_data:
            data = np.lib.format.open_memmap(tmp_data, mode="w+", dtype=np.uint8,
                                             shape=(len(frame_t), size, size, stream.channels))
            bar = tqdm(total=len(reach), desc=f"caching {self.profile.name} {self.split} {stream.name} frames",
                       leave=False, disable=disable_flag())
            for chunk in loader:
                for clip, frames, sizes in chunk:
                    lo = offsets[clip]
                    data[lo:lo + len(frames)] = frames
                    orig[lo:lo + len(frames)] = sizes
                    digests[lo:lo + len(frames)] = [FrameCache.frame_digest(f) for f in frames]
                bar.update(len(chunk))
            bar.close()
            data.flush()
            del data
            with atomic_path(index_path) as tmp_index, open(tmp_index, "wb") as fh:
                np.savez(fh, offsets=offsets, counts=counts, frame_t=frame_t, orig=orig, digests=digests,
                         key=np.array(self.cache_key(stream)))
        log.info("cached %d %s frames of %s %s in %s", len(frame_t), stream.name, self.profile.name, self.split,
                 data_path)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_norm"] = {}
        return state


class _CacheFill(torch.utils.data.Dataset):
    """Decodes the reachable frames of one clip (run in loader workers while the cache is built)."""

    def __init__(self, source: ClipSource, stream: FrameStream, reach: list[list[int]]) -> None:
        self.source, self.stream, self.reach = source, stream, reach

    def __len__(self) -> int:
        return len(self.reach)

    def __getitem__(self, clip: int) -> tuple[int, np.ndarray, np.ndarray]:
        decoded = [self.source.decode(self.stream, clip, t) for t in self.reach[clip]]
        return clip, np.stack([d[0] for d in decoded]), np.asarray([d[1] for d in decoded], dtype=np.int32)


def _as_list(items: list) -> list:
    return items


class ClipSplit:
    """A split of a real dataset with the interface of :class:`~mmrobust_bench.data.base.TensorSplit`.

    ``batches`` runs a torch DataLoader (``num_workers`` workers, pinned memory for CUDA) over the
    selected clips; ``subset`` selects clips without copying anything.
    """

    def __init__(self, source: ClipSource, index: Tensor | None = None) -> None:
        self.source = source
        self.index = torch.arange(len(source)) if index is None else torch.as_tensor(index, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.index.numel())

    @property
    def labels(self) -> Tensor:
        return self.source.table.labels[self.index]

    @property
    def ids(self) -> list[str]:
        return [self.source.table.ids[i] for i in self.index.tolist()]

    def subset(self, index: Tensor) -> "ClipSplit":
        return ClipSplit(self.source, self.index[torch.as_tensor(index, dtype=torch.long)])

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", drop_last: bool = False,
                shard: tuple[int, int] | None = None) -> Iterator[tuple[Batch, Tensor]]:
        """Yield (batch, labels) on ``device``; order and augmentation draw only from ``generator``
        (the global RNG when it is None, like a DataLoader). ``shard=(rank, world)``: rank's part of each
        batch, as :meth:`TensorSplit.batches`; a clip's augmentation is the same whichever rank loads it."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if self.source.train else None
        stop = n - n % batch_size if drop_last else n
        clips = self.index[order[:stop]].tolist()
        plan = [[(c, seed) for c in shard_slice(torch.tensor(clips[s:s + batch_size], dtype=torch.long), shard).tolist()]
                for s in range(0, stop, batch_size)]
        if not plan:
            return
        self.source.ensure_cache()
        dev = torch.device(device)
        filled = [part for part in plan if part]
        workers = min(self.source.opts.workers, len(filled))
        loader = iter(DataLoader(self.source, batch_sampler=filled, num_workers=workers,
                                 pin_memory=dev.type == "cuda", prefetch_factor=4 if workers else None)
                      if filled else ())
        for part in plan:
            if not part:  # a rank's share of a global batch shorter than the world: an empty batch keeps step
                specs = profile_specs(self.source.profile, self.source.opts.image_size)
                yield ({sp.name: torch.empty((0,) + tuple(sp.shape), device=dev) for sp in specs},
                       torch.empty(0, dtype=torch.long, device=dev))
                continue
            raw, labels = next(loader)
            yield self.source.to_model_input(raw, dev), labels.to(dev, non_blocking=True)

    @property
    def inputs(self) -> Batch:
        """The whole selection as CPU tensors (test-time transform on a test split): small subsets only."""
        parts = [b for b, _ in self.batches(max(len(self), 1), generator=torch.Generator().manual_seed(0))]
        if not parts:
            specs = profile_specs(self.source.profile, self.source.opts.image_size)
            return {s.name: torch.empty((0,) + s.shape) for s in specs}
        return parts[0]


# ----------------------------------------------------------------------------- the dataset

@dataclass
class ClipDataset:
    """A real dataset: specs, class names, lazily loaded splits, and the paper's schedule."""

    name: str
    specs: tuple[ModalitySpec, ...]
    num_classes: int
    train: ClipSplit
    test: ClipSplit
    class_names: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    train_defaults: dict[str, Any] = field(default_factory=dict)
    encoders: dict[str, str] = field(default_factory=dict)
    data_root: Path | None = None

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)


def profile_specs(profile: ClipProfile, image_size: int) -> tuple[ModalitySpec, ...]:
    specs = {s.name: s.spec(image_size) for s in profile.frames}
    specs.update({a.name: a.spec() for a in profile.arrays})
    return tuple(specs[m] for m in profile.order)


def build_clip_dataset(profile: ClipProfile, cache_dir: Path | None, options: Mapping[str, Any]) -> ClipDataset:
    """Read the manifest under ``data_root``, keep the clips present on disk, and wire the splits."""
    started = time.perf_counter()
    opts = parse_options(profile, options)
    root = resolve_root(profile, opts)
    manifest = Path(opts.manifest) if Path(opts.manifest).is_absolute() else root / opts.manifest
    rows = read_manifest(profile, root, manifest)
    wanted = (opts.train_split, opts.test_split)
    class_names = tuple(sorted({r["label"] for r in rows if r["split"] in wanted and r["label"]}))
    if len(class_names) < 2:
        raise _layout_error(profile, root, f"manifest {manifest} names {len(class_names)} class(es) in splits "
                                           f"{'/'.join(wanted)}; found splits {sorted({r['split'] for r in rows})}")
    class_index = {c: k for k, c in enumerate(class_names)}
    sha = sha256_file(manifest)
    if opts.frame_cache_dir:
        cache_root = Path(opts.frame_cache_dir)
    elif cache_dir is not None:
        cache_root = Path(cache_dir) / "clip-cache"
    else:
        cache_root = root / ".mmrobust-cache"
    splits = {}
    for split, train in ((opts.train_split, True), (opts.test_split, False)):
        table = scan_split(profile, root, rows, split, class_index, opts.allow_outside_root)
        if len(table) == 0:
            raise _layout_error(profile, root, f"no usable {split!r} clips in {manifest} (rows missing, or their "
                                               f"files absent / with too few frames)")
        splits[split] = ClipSplit(ClipSource(profile, table, opts, train=train, split=split, root=root,
                                             manifest_sha=sha, cache_root=cache_root))
    encoders = dict(profile.encoders)
    if opts.encoders:
        unknown = sorted(set(opts.encoders) - set(profile.order))
        if unknown:
            raise ValueError(f"{profile.name}: encoders for unknown modality {', '.join(unknown)}; "
                             f"modalities: {', '.join(profile.order)}")
        encoders.update(opts.encoders)
    config = {"manifest_sha256": sha, "image_size": opts.image_size, "frame_cache_size": opts.cache_size,
              "train_split": opts.train_split, "test_split": opts.test_split, "encoders": encoders,
              "n_train": len(splits[opts.train_split]), "n_test": len(splits[opts.test_split])}
    config.update({s.pattern_option: getattr(opts, s.pattern_option) for s in profile.frames})
    log.info("loaded %s from %s: %d train / %d test clips, %d classes, in %.2f s", profile.name, manifest,
             config["n_train"], config["n_test"], len(class_names), time.perf_counter() - started)
    return ClipDataset(
        name=profile.name, specs=profile_specs(profile, opts.image_size), num_classes=len(class_names),
        train=splits[opts.train_split], test=splits[opts.test_split], class_names=class_names, config=config,
        train_defaults=dict(PAPER_SCHEDULE), encoders=encoders, data_root=root,
    )


__all__ = ["SegmentRule", "FrameStream", "ArrayStream", "ClipProfile", "ClipOptions", "ClipSplit", "ClipSource",
           "ClipDataset", "FrameCache", "build_clip_dataset", "decode_frame", "random_resized_crop_box",
           "rgb_stream", "fbank_stream", "profile_specs", "PAPER_SCHEDULE", "IMAGENET_MEAN", "IMAGENET_STD",
           "FLOW_MEAN", "FLOW_STD", "SORTED", "MANIFEST"]
