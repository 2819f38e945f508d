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

The parts live in modules of one purpose: ``clip_profiles`` (sampling rules, streams, profiles, options),
``clip_manifest`` (the manifest and the clips on disk), ``clip_frames`` (decoding and augmentation) and
``clip_cache`` (the memory-mapped frame cache); this module wires them into a dataset and re-exports their
public names.

Over 400 lines as one module: the source, its splits and the dataset share the clip index and the cache handles;
the manifest, frames and cache live in the clip_* modules.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..contracts import Batch, ModalitySpec
from ..io import sha256_file
from .base import shard_slice
from .clip_cache import CACHE_VERSION, FrameCache, open_caches
from .clip_frames import decode_frame, flip_frame, random_resized_crop_box, resize_box
from .clip_manifest import ClipTable, layout_error, read_manifest, resolve_root, scan_split
from .clip_profiles import (
    FLOW_MEAN,
    FLOW_STD,
    IMAGE_SUFFIXES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MANIFEST,
    PAPER_SCHEDULE,
    SORTED,
    ArrayStream,
    ClipOptions,
    ClipProfile,
    FrameStream,
    SegmentRule,
    fbank_stream,
    parse_options,
    profile_specs,
    rgb_stream,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- one split


class ClipSource(torch.utils.data.Dataset):
    """All clips of one split; items are addressed by (clip, epoch seed) and come out as uint8 frames."""

    def __init__(
        self,
        profile: ClipProfile,
        table: ClipTable,
        opts: ClipOptions,
        *,
        train: bool,
        split: str,
        root: Path,
        manifest_sha: str,
        cache_root: Path,
    ) -> None:
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
                    frame = resize_box(frame, size, (left * sx, top * sy, (left + w) * sx, (top + h) * sy))
                    if rng.random() < 0.5:
                        frame = flip_frame(frame, stream.flip_negates)
                else:
                    frame = resize_box(frame, size, None)
                    if shared_flip:
                        frame = flip_frame(frame, stream.flip_negates)
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
            raise ValueError(
                f"{self.profile.name}: {path} has shape {value.shape}, expected {tuple(array.shape[1:])} "
                f"({array.description}); {self.profile.prepare_hint()}"
            )
        return torch.from_numpy(np.asarray(value, dtype=np.float32)).reshape(array.shape)

    # --- model-input space
    def to_model_input(self, raw: dict[str, Tensor], device: torch.device) -> Batch:
        out = {}
        for stream in self.profile.frames:
            x = raw[stream.name].to(device, non_blocking=True)
            key = (stream.name, str(device))
            if key not in self._norm:
                view = (1, -1, 1, 1, 1)
                self._norm[key] = (
                    torch.tensor(stream.mean, device=device).view(view),
                    torch.tensor(stream.std, device=device).view(view),
                )
            mean, std = self._norm[key]
            out[stream.name] = x.float().div_(255).sub_(mean).div_(std)  # ToTensor, then Normalize
        for array in self.profile.arrays:
            out[array.name] = raw[array.name].to(device, non_blocking=True)
        return {m: out[m] for m in self.profile.order}

    # --- the uint8 cache (clip_cache)
    def ensure_cache(self) -> None:
        """Open (or build, on first use) the uint8 frame cache of every frame stream, as configured."""
        if self._cache_decided:
            return
        self._cache_decided = True
        open_caches(self, self.caches)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_norm"] = {}
        return state


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

    def subset(self, index: Tensor) -> ClipSplit:
        return ClipSplit(self.source, self.index[torch.as_tensor(index, dtype=torch.long)])

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[Batch, Tensor]]:
        """Yield (batch, labels) on ``device``; order and augmentation draw only from ``generator``
        (the global RNG when it is None, like a DataLoader). ``shard=(rank, world)``: rank's part of each
        batch, as :meth:`TensorSplit.batches`; a clip's augmentation is the same whichever rank loads it."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if self.source.train else None
        stop = n - n % batch_size if drop_last else n
        clips = self.index[order[:stop]].tolist()
        plan = [
            [(c, seed) for c in shard_slice(torch.tensor(clips[s : s + batch_size], dtype=torch.long), shard).tolist()]
            for s in range(0, stop, batch_size)
        ]
        if not plan:
            return
        self.source.ensure_cache()
        dev = torch.device(device)
        filled = [part for part in plan if part]
        workers = min(self.source.opts.workers, len(filled))
        loader = iter(
            DataLoader(
                self.source,
                batch_sampler=filled,
                num_workers=workers,
                pin_memory=dev.type == "cuda",
                prefetch_factor=4 if workers else None,
            )
            if filled
            else ()
        )
        for part in plan:
            if not part:  # a rank's share of a global batch shorter than the world: an empty batch keeps step
                specs = profile_specs(self.source.profile, self.source.opts.image_size)
                yield (
                    {sp.name: torch.empty((0,) + tuple(sp.shape), device=dev) for sp in specs},
                    torch.empty(0, dtype=torch.long, device=dev),
                )
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
        raise layout_error(
            profile,
            root,
            f"manifest {manifest} names {len(class_names)} class(es) in splits "
            f"{'/'.join(wanted)}; found splits {sorted({r['split'] for r in rows})}",
        )
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
            raise layout_error(
                profile,
                root,
                f"no usable {split!r} clips in {manifest} (rows missing, or their files absent / with too few frames)",
            )
        splits[split] = ClipSplit(
            ClipSource(
                profile, table, opts, train=train, split=split, root=root, manifest_sha=sha, cache_root=cache_root
            )
        )
    encoders = dict(profile.encoders)
    if opts.encoders:
        unknown = sorted(set(opts.encoders) - set(profile.order))
        if unknown:
            raise ValueError(
                f"{profile.name}: encoders for unknown modality {', '.join(unknown)}; "
                f"modalities: {', '.join(profile.order)}"
            )
        encoders.update(opts.encoders)
    config = {
        "manifest_sha256": sha,
        "image_size": opts.image_size,
        "frame_cache_size": opts.cache_size,
        "train_split": opts.train_split,
        "test_split": opts.test_split,
        "encoders": encoders,
        "n_train": len(splits[opts.train_split]),
        "n_test": len(splits[opts.test_split]),
    }
    config.update({s.pattern_option: getattr(opts, s.pattern_option) for s in profile.frames})
    log.info(
        "loaded %s from %s: %d train / %d test clips, %d classes, in %.2f s",
        profile.name,
        manifest,
        config["n_train"],
        config["n_test"],
        len(class_names),
        time.perf_counter() - started,
    )
    return ClipDataset(
        name=profile.name,
        specs=profile_specs(profile, opts.image_size),
        num_classes=len(class_names),
        train=splits[opts.train_split],
        test=splits[opts.test_split],
        class_names=class_names,
        config=config,
        train_defaults=dict(PAPER_SCHEDULE),
        encoders=encoders,
        data_root=root,
    )


__all__ = [
    "SegmentRule",
    "FrameStream",
    "ArrayStream",
    "ClipProfile",
    "ClipOptions",
    "ClipSplit",
    "ClipSource",
    "ClipDataset",
    "FrameCache",
    "build_clip_dataset",
    "decode_frame",
    "random_resized_crop_box",
    "rgb_stream",
    "fbank_stream",
    "profile_specs",
    "PAPER_SCHEDULE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FLOW_MEAN",
    "FLOW_STD",
    "SORTED",
    "MANIFEST",
    "CACHE_VERSION",
    "ClipTable",
    "IMAGE_SUFFIXES",
]
