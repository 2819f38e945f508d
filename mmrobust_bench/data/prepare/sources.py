"""Where ``prepare``'s clips come from: a ``--list`` (a CSV ``id,label,split``; VGGSound's ``vggsound.csv``;
UCF101's ``ucfTrainTestlist`` folder or one ``trainlist0N.txt``/``testlist0N.txt``) with media found anywhere
under ``--raw`` by file name, or else the folder layout ``<raw>/<split>/<class>/<clip>.<ext>`` (``val`` and
``validation`` count as ``test``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from .video import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".flv", ".m4v", ".mpg", ".mpeg")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".aac")
SPLIT_NAMES = {"train": "train", "test": "test", "val": "test", "validation": "test"}


@dataclass
class RawClip:
    id: str
    label: str
    split: str
    video: Path | None = None
    audio: Path | None = None
    frames: Path | None = None  # a folder of already extracted images


@dataclass
class MediaIndex:
    """Every media file / image folder under the raw directory, by stem (file or folder name)."""

    videos: dict[str, Path] = field(default_factory=dict)
    audios: dict[str, Path] = field(default_factory=dict)
    frames: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def scan(cls, raw: Path) -> MediaIndex:
        index = cls()
        for folder, dirs, files in os.walk(raw):
            dirs.sort()
            here = Path(folder)
            if here != raw and any(f.lower().endswith(IMAGE_SUFFIXES) for f in files):
                index.frames.setdefault(here.name, here)
            for name in sorted(files):
                path = here / name
                suffix = path.suffix.lower()
                if suffix in VIDEO_SUFFIXES:
                    index.videos.setdefault(path.stem, path)
                # a .wav wins over other audio of the same clip: it needs no decoder
                elif suffix in AUDIO_SUFFIXES and (path.stem not in index.audios or suffix == ".wav"):
                    index.audios[path.stem] = path
        return index

    def clip(self, cid: str, label: str, split: str) -> RawClip:
        return RawClip(cid, label, split, self.videos.get(cid), self.audios.get(cid), self.frames.get(cid))


def _split_name(text: str) -> str | None:
    return SPLIT_NAMES.get(text.strip().lower())


def clips_from_folders(raw: Path) -> list[RawClip]:
    """``<raw>/<split>/<class>/<clip>.<ext>`` media files and ``<clip>/`` folders of extracted frames."""
    found: dict[tuple[str, str], RawClip] = {}
    for split_dir in sorted(p for p in raw.iterdir() if p.is_dir() and _split_name(p.name)):
        split = _split_name(split_dir.name)
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for entry in sorted(class_dir.iterdir()):
                suffix = entry.suffix.lower()
                if entry.is_dir():
                    kind, cid = "frames", entry.name
                elif suffix in VIDEO_SUFFIXES:
                    kind, cid = "video", entry.stem
                elif suffix in AUDIO_SUFFIXES:
                    kind, cid = "audio", entry.stem
                else:
                    continue
                clip = found.setdefault((split, cid), RawClip(cid, class_dir.name, split))
                if kind == "audio" and clip.audio is not None and clip.audio.suffix.lower() == ".wav":
                    continue  # a .wav wins over other audio of the same clip: it needs no decoder
                setattr(clip, kind, entry)
    return [found[k] for k in sorted(found)]


def clips_from_list(list_path: Path, index: MediaIndex, dataset: str) -> list[RawClip]:
    """A CSV with header id,label,split; VGGSound's vggsound.csv; or UCF101's train/test lists."""
    if list_path.is_dir():
        lists = sorted(list_path.glob("trainlist01.txt")) + sorted(list_path.glob("testlist01.txt"))
        if not lists:
            raise ValueError(f"--list folder {list_path} holds no trainlist01.txt / testlist01.txt (UCF101 split 1)")
        return [c for p in lists for c in clips_from_list(p, index, dataset)]
    name = list_path.name.lower()
    if name.startswith(("trainlist", "testlist")):
        split = "train" if name.startswith("trainlist") else "test"
        clips = []
        for line in list_path.read_text().splitlines():
            if line.strip():
                rel = line.split()[0].replace("\\", "/")
                clips.append(index.clip(Path(rel).stem, rel.split("/")[0], split))
        return clips
    with open(list_path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"--list {list_path} is empty")
    header = [c.strip().lower() for c in rows[0]]
    if {"id", "label", "split"} <= set(header):
        col = {k: header.index(k) for k in ("id", "label", "split")}
        out = []
        for r in rows[1:]:
            split = _split_name(r[col["split"]])
            if split is not None:
                out.append(index.clip(r[col["id"]].strip(), r[col["label"]].strip(), split))
        return out
    if len(rows[0]) == 4 and rows[0][1].strip().isdigit():  # vggsound.csv: ytid, start, label, split
        out = []
        for ytid, start, label, split in (r[:4] for r in rows):
            if _split_name(split) is not None:
                out.append(index.clip(f"{ytid.strip()}_{int(start):06d}", label.strip(), _split_name(split)))
        return out
    raise ValueError(
        f"--list {list_path}: expected a CSV with header id,label,split (label = class name), "
        f"VGGSound's vggsound.csv (ytid,start,label,split) or UCF101's trainlist0N/testlist0N.txt"
    )


__all__ = [
    "VIDEO_SUFFIXES",
    "AUDIO_SUFFIXES",
    "SPLIT_NAMES",
    "RawClip",
    "MediaIndex",
    "clips_from_folders",
    "clips_from_list",
]
