"""The memory-mapped uint8 frame cache of one split: every frame a sample can ever use, decoded once.

One ``.npy`` per frame stream, memory-mapped by every loader worker, with an index (offsets, frame numbers,
original sizes, a blake2b digest per frame) and the configuration key it was built for. A cache of another
configuration, truncated or without checksums is rebuilt; a frame that fails its checksum is an error.
``frame_cache="auto"`` builds it unless it would exceed ``frame_cache_max_gb`` or 90 % of the free disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..io import atomic_path, stable_hash
from ..progress import disable_flag
from .clip_manifest import ClipTable
from .clip_profiles import ClipOptions, ClipProfile, FrameStream

log = logging.getLogger("mmrobust_bench.data.av_clips")  # every part of the clip datasets logs under one name

CACHE_VERSION = 1


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
    def load(cls, data_path: Path, index_path: Path, key: str | None = None) -> FrameCache:
        """Open a cache, checking before use that it is ``key``'s, complete (not truncated) and
        checksummed; a ValueError naming the file otherwise (the caller rebuilds it)."""
        try:
            with np.load(index_path, allow_pickle=False) as idx:
                if "digests" not in idx or "key" not in idx:
                    raise ValueError("it has no checksums (written by an older version)")
                if key is not None and str(idx["key"]) != key:
                    raise ValueError(f"it belongs to another configuration (key {idx['key']}, expected {key})")
                cache = cls(
                    data_path, index_path, idx["offsets"], idx["counts"], idx["frame_t"], idx["orig"], idx["digests"]
                )
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
        pos = off + int(np.searchsorted(self.frame_t[off : off + cnt], t))
        if pos >= off + cnt or self.frame_t[pos] != t:
            raise RuntimeError(f"frame cache {self.data_path} has no frame {t} of clip {clip}; delete it to rebuild")
        frame = np.asarray(self._data[pos])
        if self.digests is not None and not np.array_equal(self.frame_digest(frame), self.digests[pos]):
            raise ValueError(
                f"frame cache {self.data_path} is corrupt (frame {t} of clip {clip} does not match its "
                f"checksum); delete {self.data_path} and {self.index_path} to rebuild it"
            )
        return frame, (int(self.orig[pos, 0]), int(self.orig[pos, 1]))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_data"], state["_pid"] = None, -1  # workers map the file themselves
        return state


class CachedSplit(Protocol):
    """What the cache needs of a split (``av_clips.ClipSource``): its identity and a way to decode a frame."""

    profile: ClipProfile
    table: ClipTable
    opts: ClipOptions
    train: bool
    split: str
    root: Path
    manifest_sha: str
    cache_root: Path

    def pattern(self, stream: FrameStream) -> str: ...

    def decode(self, stream: FrameStream, clip: int, t: int) -> tuple[np.ndarray, tuple[int, int]]: ...


def cache_key(source: CachedSplit, stream: FrameStream) -> str:
    return stable_hash(
        {
            "version": CACHE_VERSION,
            "root": str(source.root.resolve()),
            "manifest": source.manifest_sha,
            "split": source.split,
            "train": source.train,
            "stream": stream.name,
            "pattern": source.pattern(stream),
            "size": source.opts.cache_size,
            "rule": asdict(stream.rule),
        }
    )


def cache_paths(source: CachedSplit, stream: FrameStream) -> tuple[Path, Path]:
    stem = f"{source.profile.name}-{source.split}-{stream.name}-{cache_key(source, stream)}"
    return source.cache_root / f"{stem}.npy", source.cache_root / f"{stem}.index.npz"


def open_caches(source: CachedSplit, caches: dict[str, FrameCache]) -> None:
    """Open (or build) the uint8 frame cache of every frame stream of ``source`` into ``caches``, as configured."""
    if source.opts.frame_cache is False:
        return
    for stream in source.profile.frames:
        data_path, index_path = cache_paths(source, stream)
        if data_path.exists() and index_path.exists():
            try:
                caches[stream.name] = FrameCache.load(data_path, index_path, cache_key(source, stream))
                continue
            except ValueError as exc:
                log.warning("%s; rebuilding it", exc)
                data_path.unlink(missing_ok=True)
                index_path.unlink(missing_ok=True)
        if not (data_path.exists() and index_path.exists()):
            reach = [stream.rule.reachable(int(n), source.train) for n in source.table.counts[stream.name]]
            size = source.opts.cache_size
            need = sum(map(len, reach)) * size * size * stream.channels
            if source.opts.frame_cache == "auto" and not _cache_fits(source, stream, need):
                continue
            build_cache(source, stream, reach, data_path, index_path)
        caches[stream.name] = FrameCache.load(data_path, index_path, cache_key(source, stream))


def _cache_fits(source: CachedSplit, stream: FrameStream, need: int) -> bool:
    limit = source.opts.frame_cache_max_gb * 2**30
    try:
        source.cache_root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(source.cache_root).free
    except OSError as exc:
        log.warning(
            "%s %s: cannot write the frame cache in %s (%s); decoding JPEGs every epoch. Set "
            "frame_cache_dir to a writable folder",
            source.profile.name,
            source.split,
            source.cache_root,
            exc,
        )
        return False
    if need > limit or need > 0.9 * free:
        log.warning(
            "%s %s: not caching %s frames (%.1f GiB needed, limit %.1f GiB, %.1f GiB free in %s); "
            "decoding JPEGs every epoch. Set frame_cache=true or raise frame_cache_max_gb to force it",
            source.profile.name,
            source.split,
            stream.name,
            need / 2**30,
            limit / 2**30,
            free / 2**30,
            source.cache_root,
        )
        return False
    return True


def build_cache(
    source: CachedSplit, stream: FrameStream, reach: list[list[int]], data_path: Path, index_path: Path
) -> None:
    """Decode the ``reach``able frames of every clip (in loader workers) into a new cache, written atomically."""
    counts = np.asarray([len(r) for r in reach], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    frame_t = np.asarray([t for r in reach for t in r], dtype=np.int32)
    size = source.opts.cache_size
    orig = np.zeros((len(frame_t), 2), dtype=np.int32)
    digests = np.zeros((len(frame_t), 16), dtype=np.uint8)
    workers = source.opts.workers
    loader = DataLoader(
        _CacheFill(source, stream, reach),
        batch_size=4,
        num_workers=workers,
        collate_fn=_as_list,
        prefetch_factor=4 if workers else None,
    )
    try:
        source.cache_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"{source.profile.name}: cannot write the frame cache in {source.cache_root} ({exc}); "
            f"set frame_cache_dir to a writable folder or frame_cache=false"
        ) from exc
    with atomic_path(data_path) as tmp_data:
        data = np.lib.format.open_memmap(
            tmp_data, mode="w+", dtype=np.uint8, shape=(len(frame_t), size, size, stream.channels)
        )
        bar = tqdm(
            total=len(reach),
            desc=f"caching {source.profile.name} {source.split} {stream.name} frames",
            leave=False,
            disable=disable_flag(),
        )
        for chunk in loader:
            for clip, frames, sizes in chunk:
                lo = offsets[clip]
                data[lo : lo + len(frames)] = frames
                orig[lo : lo + len(frames)] = sizes
                digests[lo : lo + len(frames)] = [FrameCache.frame_digest(f) for f in frames]
            bar.update(len(chunk))
        bar.close()
        data.flush()
        del data
        with atomic_path(index_path) as tmp_index, open(tmp_index, "wb") as fh:
            np.savez(
                fh,
                offsets=offsets,
                counts=counts,
                frame_t=frame_t,
                orig=orig,
                digests=digests,
                key=np.array(cache_key(source, stream)),
            )
    log.info(
        "cached %d %s frames of %s %s in %s", len(frame_t), stream.name, source.profile.name, source.split, data_path
    )


class _CacheFill(torch.utils.data.Dataset):
    """Decodes the reachable frames of one clip (run in loader workers while the cache is built)."""

    def __init__(self, source: CachedSplit, stream: FrameStream, reach: list[list[int]]) -> None:
        self.source, self.stream, self.reach = source, stream, reach

    def __len__(self) -> int:
        return len(self.reach)

    def __getitem__(self, clip: int) -> tuple[int, np.ndarray, np.ndarray]:
        decoded = [self.source.decode(self.stream, clip, t) for t in self.reach[clip]]
        return clip, np.stack([d[0] for d in decoded]), np.asarray([d[1] for d in decoded], dtype=np.int32)


def _as_list(items: list) -> list:
    return items


__all__ = ["CACHE_VERSION", "FrameCache", "CachedSplit", "cache_key", "cache_paths", "open_caches", "build_cache"]
