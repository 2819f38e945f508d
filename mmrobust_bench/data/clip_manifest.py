"""A real dataset's manifest: where its directory is, which clips it lists, and which of them are on disk.

``manifest.csv`` holds ``id, label, split`` and one relative path column per stored stream (docs/methods.md
§2); :func:`scan_split` keeps the clips of a split whose files exist, refusing paths that leave the data
directory unless allowed.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .clip_profiles import IMAGE_SUFFIXES, MANIFEST, ClipOptions, ClipProfile

log = logging.getLogger("mmrobust_bench.data.av_clips")  # every part of the clip datasets logs under one name


@dataclass
class ClipTable:
    """The clips of one split that are present on disk, with their file counts."""

    ids: list[str]
    labels: Tensor  # int64 class indices
    paths: dict[str, list[Path]]  # manifest column -> one path per clip
    counts: dict[str, np.ndarray]  # frame stream name -> files per clip

    def __len__(self) -> int:
        return len(self.ids)


def layout_error(profile: ClipProfile, root: Path, problem: str) -> ValueError:
    return ValueError(
        f"{profile.name}: {problem}. Expected a {profile.title} directory {root} holding {MANIFEST} "
        f"(CSV with columns id,label,split,{','.join(profile.columns)}; label = class name, split = train/test, "
        f"paths relative to the directory) and the layout {profile.layout}; {profile.prepare_hint()}"
    )


def resolve_root(profile: ClipProfile, opts: ClipOptions) -> Path:
    text = opts.data_root or os.environ.get(profile.env_var)
    if not text:
        raise ValueError(
            f"{profile.name}: no data directory given; pass --dataset-set data_root=DIR (Python: "
            f"dataset_options=dict(data_root=DIR)) or set {profile.env_var}; {profile.prepare_hint()}"
        )
    root = Path(text).expanduser()
    if not root.is_dir():
        raise layout_error(profile, root, f"data directory {root} does not exist")
    return root


def read_manifest(profile: ClipProfile, root: Path, manifest: Path) -> list[dict[str, str]]:
    if not manifest.is_file():
        raise layout_error(profile, root, f"no manifest at {manifest}")
    try:
        with open(manifest, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise layout_error(profile, root, f"cannot read manifest {manifest} ({exc})") from exc
    missing = [c for c in ("id", "label", "split") + profile.columns if c not in header]
    if missing:
        raise layout_error(
            profile,
            root,
            f"manifest {manifest} lacks column(s) {', '.join(missing)} (has: {', '.join(header) or 'nothing'})",
        )
    if not rows:
        raise layout_error(profile, root, f"manifest {manifest} has no rows")
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


def scan_split(
    profile: ClipProfile,
    root: Path,
    rows: Sequence[dict[str, str]],
    split: str,
    class_index: Mapping[str, int],
    allow_outside_root: bool = False,
) -> ClipTable:
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
        log.warning(
            "%s %s: left out %d clip(s) (%s)",
            profile.name,
            split,
            sum(skipped.values()),
            ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())),
        )
    return ClipTable(
        ids,
        torch.tensor(labels, dtype=torch.long),
        paths,
        {k: np.asarray(v, dtype=np.int64) for k, v in counts.items()},
    )


__all__ = ["ClipTable", "layout_error", "resolve_root", "read_manifest", "inside_root", "scan_split"]
