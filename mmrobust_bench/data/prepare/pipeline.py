"""``mmrobust-bench prepare {ks,vggsound,ucf101}``: raw media → the preprocessed layout + manifest.

Per clip (docs/methods.md §2):
- **frames**: 1 fps JPEGs ``frames/<split>/<id>/frame_00001.jpg, …`` from the video, with the
  ``ffmpeg`` binary (``ffmpeg -i V -r 1``, as the reference extractor; the one on PATH, else the static
  build of imageio-ffmpeg) or, without it, torchcodec or OpenCV (frames displayed at t = 0, 1, 2 … s);
  a folder of already extracted images named like the clip is copied instead (renumbered in sorted
  order). ``pip install 'mmrobust-bench[video]'`` installs imageio-ffmpeg and OpenCV-contrib.
- **audio** (ks, vggsound): channel 0, resampled to 16 kHz, minus its mean, Kaldi fbank (128 mel
  bins, Hanning window, 25 ms / 10 ms, ``htk_compat``, no energy, no dither), zero-padded or
  truncated to 1024 frames, then (x + 4.503877) / (2 · 5.141276); saved as float32 (1024, 128)
  ``audio/<split>/<id>.npy``. A ``.wav`` next to the video (or alone) is read directly; other
  audio is decoded with ffmpeg or torchcodec.
- **flow** (ucf101): OpenCV Dual TV-L1 between consecutive grayscale frames of the video at its
  native rate, each component clipped to ±15 and stored as round((f + 15)·255/30) in
  ``flow_u/<split>/<id>/`` and ``flow_v/<split>/<id>/`` JPEGs.
Every output is written to a temporary name and renamed, so an interrupted run is resumed by
running it again (clips whose outputs exist are skipped). A clip that fails is logged (and
appended to ``prepare_errors.log``) and left out of the manifest; the others go on.

Where clips come from: ``--list`` (a CSV with header ``id,label,split``; VGGSound's own
``vggsound.csv``; UCF101's ``ucfTrainTestlist`` folder or a ``trainlist0N.txt``/``testlist0N.txt``)
with media found anywhere under ``--raw`` by file name, or else the folder layout
``<raw>/<split>/<class>/<clip>.<ext>`` (``val``/``validation`` count as ``test``).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..io import atomic_path, atomic_write_text, current_umask
from ..progress import disable_flag

if TYPE_CHECKING:  # torch loads inside the functions that need it: `mmrobust-bench --help` builds this parser
    import torch

log = logging.getLogger(__name__)

DATASETS_PREPARED = ("ks", "vggsound", "ucf101")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".flv", ".m4v", ".mpg", ".mpeg")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".aac")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLIT_NAMES = {"train": "train", "test": "test", "val": "test", "validation": "test"}
FRAME_NAME = "frame_{t:05d}.jpg"  # what the loaders' "sorted" default reads (and frame_pattern can name)
SAMPLE_RATE = 16_000
TARGET_FRAMES = 1024
MEL_BINS = 128
AST_MEAN, AST_STD = -4.503877, 5.141276
FLOW_BOUND = 15.0
ERROR_LOG = "prepare_errors.log"
VIDEO_EXTRA = "pip install 'mmrobust-bench[video]'"  # OpenCV-contrib (TV-L1) + imageio-ffmpeg (a static ffmpeg)
FLOW_HINT = f"{VIDEO_EXTRA} (or: pip install opencv-contrib-python-headless)"
VIDEO_HINT = (f"decoding video needs ffmpeg, torchcodec or OpenCV: {VIDEO_EXTRA} installs a static ffmpeg "
              "(imageio-ffmpeg) and OpenCV; an `ffmpeg` binary on PATH (apt-get install ffmpeg) or "
              "pip install torchcodec also work")
AUDIO_HINT = (f"decoding non-WAV audio needs ffmpeg or torchcodec: {VIDEO_EXTRA} installs a static ffmpeg "
              "(imageio-ffmpeg); an `ffmpeg` binary on PATH (apt-get install ffmpeg) or pip install torchcodec "
              "also work; WAV files need nothing extra")


# ----------------------------------------------------------------------------- audio: fbank exactly per §2

def fbank_features(waveform: torch.Tensor, sample_rate: int) -> np.ndarray:
    """(channels, samples) float waveform → normalised float32 (1024, 128) fbank (docs/methods.md §2)."""
    import torch
    from torchaudio.compliance import kaldi
    from torchaudio.functional import resample

    wave = waveform[:1].to(torch.float32)  # channel 0 only, as the reference's fbank call
    if sample_rate != SAMPLE_RATE:
        wave = resample(wave, int(sample_rate), SAMPLE_RATE)
    wave = wave - wave.mean()
    fbank = kaldi.fbank(wave, htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False,
                        window_type="hanning", num_mel_bins=MEL_BINS, dither=0.0, frame_shift=10)
    pad = TARGET_FRAMES - fbank.shape[0]
    fbank = torch.nn.functional.pad(fbank, (0, 0, 0, pad)) if pad > 0 else fbank[:TARGET_FRAMES]
    return ((fbank - AST_MEAN) / (AST_STD * 2)).numpy().astype(np.float32)


# Plausible audio: real recordings are sampled at 8–192 kHz (384 kHz at most); a header claiming 1 Hz is damaged
# and would turn 10 s of sound into garbage fbank. Durations outside these bounds are not dataset clips.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
MIN_DURATION_S, MAX_DURATION_S = 0.1, 3 * 3600.0


def check_audio(waveform: "torch.Tensor", sample_rate: int) -> tuple["torch.Tensor", int]:
    """Refuse (ValueError, so the clip is logged as failed) an implausible sample rate or duration."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"implausible sample rate {sample_rate} Hz (expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; "
                         f"a damaged header?)")
    seconds = waveform.shape[-1] / sample_rate
    if not MIN_DURATION_S <= seconds <= MAX_DURATION_S:
        raise ValueError(f"implausible duration {seconds:.3g} s (expected {MIN_DURATION_S:g} s to "
                         f"{MAX_DURATION_S / 3600:g} h)")
    return waveform, sample_rate


def read_wav(path: Path) -> tuple[torch.Tensor, int]:
    """(channels, samples) float32 in [-1, 1] (torchaudio's normalisation) and the sample rate."""
    import torch
    from scipy.io import wavfile

    rate, data = wavfile.read(path)
    data = np.asarray(data)
    if data.dtype == np.uint8:
        scaled = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        scaled = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    else:
        scaled = data.astype(np.float32)
    scaled = scaled[:, None] if scaled.ndim == 1 else scaled
    if scaled.shape[0] == 0:
        raise ValueError("empty audio")
    return torch.from_numpy(np.ascontiguousarray(scaled.T)), int(rate)


def ffmpeg_exe() -> str | None:
    """The ffmpeg binary: ``ffmpeg`` on PATH, else the static one of imageio-ffmpeg (the ``video`` extra), else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError):  # not installed, or no binary for this platform
        return None


def decode_audio(path: Path) -> tuple[torch.Tensor, int]:
    """Channel 0 of any audio/video file at 16 kHz, via ffmpeg or torchcodec."""
    import torch

    ffmpeg = ffmpeg_exe()
    if ffmpeg:
        out = subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(path), "-vn", "-map", "0:a:0",
                              "-af", "pan=mono|c0=c0", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"],
                             capture_output=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"ffmpeg could not decode audio: {out.stderr.decode(errors='replace').strip()[-300:]}")
        samples = np.frombuffer(out.stdout, dtype=np.float32)
        if samples.size == 0:
            raise ValueError("no audio samples")
        return torch.from_numpy(samples.copy())[None], SAMPLE_RATE
    if _has_module("torchcodec"):
        from torchcodec.decoders import AudioDecoder

        samples = AudioDecoder(str(path), sample_rate=SAMPLE_RATE).get_all_samples()
        return samples.data[:1].float(), int(samples.sample_rate)
    raise RuntimeError(AUDIO_HINT)


def load_audio(path: Path) -> tuple[torch.Tensor, int]:
    return read_wav(path) if path.suffix.lower() == ".wav" else decode_audio(path)


# ----------------------------------------------------------------------------- video: frames and flow

def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def video_backend() -> str | None:
    """The first available way to decode video: the ffmpeg binary (PATH or imageio-ffmpeg), torchcodec, or OpenCV."""
    if ffmpeg_exe():
        return "ffmpeg"
    if _has_module("torchcodec"):
        return "torchcodec"
    if _has_module("cv2"):
        return "cv2"
    return None


def tvl1_factory() -> Callable[[], Any] | None:
    """OpenCV's Dual TV-L1 constructor (contrib's ``cv2.optflow`` or the old top-level one), if importable."""
    try:
        import cv2
    except ImportError:
        return None
    optflow = getattr(cv2, "optflow", None)
    if optflow is not None and hasattr(optflow, "DualTVL1OpticalFlow_create"):
        return optflow.DualTVL1OpticalFlow_create
    return getattr(cv2, "DualTVL1OpticalFlow_create", None)


def extract_frames(video: Path, dest: Path, fps: float, backend: str) -> int:
    """Write 1-based ``frame_00001.jpg …`` at ``fps`` into the (empty) folder ``dest``; return the count."""
    if backend == "ffmpeg":
        out = subprocess.run([ffmpeg_exe() or "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(video),
                              "-r", f"{fps:g}", "-q:v", "2", str(dest / "frame_%05d.jpg")],
                             capture_output=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"ffmpeg failed: {out.stderr.decode(errors='replace').strip()[-300:]}")
    elif backend == "torchcodec":
        from PIL import Image
        from torchcodec.decoders import VideoDecoder

        decoder = VideoDecoder(str(video))
        duration = decoder.metadata.duration_seconds or 0.0
        times = [k / fps for k in range(max(1, int(duration * fps)))]
        frames = decoder.get_frames_played_at(seconds=times).data  # (N, C, H, W) uint8
        for t, frame in enumerate(frames, start=1):
            Image.fromarray(frame.permute(1, 2, 0).numpy()).save(dest / FRAME_NAME.format(t=t), quality=95)
    elif backend == "cv2":
        import cv2

        cap = cv2.VideoCapture(str(video))
        native = cap.get(cv2.CAP_PROP_FPS) or 25.0
        t, index, next_time = 0, 0, 0.0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index / native + 1e-6 >= next_time:
                t += 1
                cv2.imwrite(str(dest / FRAME_NAME.format(t=t)), frame)
                next_time = t / fps
            index += 1
        cap.release()
    else:
        raise RuntimeError(VIDEO_HINT)
    count = sum(1 for p in dest.iterdir() if p.suffix == ".jpg")
    if count == 0:
        raise ValueError("no frames decoded")
    return count


def copy_frames(source: Path, dest: Path) -> int:
    """Copy already extracted images in sorted order as ``frame_00001.jpg …`` (re-encoded if not JPEG)."""
    from PIL import Image

    images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"no images in {source}")
    for t, path in enumerate(images, start=1):
        target = dest / FRAME_NAME.format(t=t)
        if path.suffix.lower() in (".jpg", ".jpeg"):
            shutil.copyfile(path, target)
        else:
            with Image.open(path) as img:
                img.convert("RGB").save(target, quality=95)
    return len(images)


def quantise_flow(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """(H, W, 2) float flow → uint8 round((f + bound)·255/(2·bound)), clipped to [0, 255] (the reference)."""
    return np.clip(np.round((flow + bound) * (255.0 / (2 * bound))), 0, 255).astype(np.uint8)


def extract_flow(video: Path, dest_u: Path, dest_v: Path) -> int:
    """TV-L1 flow of consecutive grayscale frames at the native rate, as u/v JPEGs; return the count."""
    import cv2

    create = tvl1_factory()
    if create is None:
        raise RuntimeError(f"optical flow needs OpenCV's TV-L1: {FLOW_HINT}")
    tvl1 = create()
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    if not ok:
        raise ValueError("no frames decoded")
    prev = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    count = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        curr = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        flow = quantise_flow(tvl1.calc(prev, curr, None))
        count += 1
        cv2.imwrite(str(dest_u / FRAME_NAME.format(t=count)), flow[..., 0])
        cv2.imwrite(str(dest_v / FRAME_NAME.format(t=count)), flow[..., 1])
        prev = curr
    cap.release()
    if count == 0:
        raise ValueError("video has a single frame: no flow")
    return count


# ----------------------------------------------------------------------------- discovering clips

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
    def scan(cls, raw: Path) -> "MediaIndex":
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
                elif suffix in AUDIO_SUFFIXES:
                    # a .wav wins over other audio of the same clip: it needs no decoder
                    if path.stem not in index.audios or suffix == ".wav":
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
    raise ValueError(f"--list {list_path}: expected a CSV with header id,label,split (label = class name), "
                     f"VGGSound's vggsound.csv (ytid,start,label,split) or UCF101's trainlist0N/testlist0N.txt")


# ----------------------------------------------------------------------------- one clip

@dataclass(frozen=True)
class Plan:
    """What one dataset needs per clip."""

    frames: bool = True
    audio: bool = False
    flow: bool = False


PLANS = {"ks": Plan(audio=True), "vggsound": Plan(audio=True), "ucf101": Plan(flow=True)}


def clip_outputs(out: Path, clip: RawClip) -> dict[str, Path]:
    return {"frames": out / "frames" / clip.split / clip.id, "audio": out / "audio" / clip.split / f"{clip.id}.npy",
            "flow_u": out / "flow_u" / clip.split / clip.id, "flow_v": out / "flow_v" / clip.split / clip.id}


def pending(plan: Plan, out: Path, clip: RawClip) -> list[str]:
    """The outputs of ``clip`` still to be made."""
    paths = clip_outputs(out, clip)
    todo = []
    if plan.frames and not paths["frames"].is_dir():
        todo.append("frames")
    if plan.audio and not paths["audio"].is_file():
        todo.append("audio")
    if plan.flow and not (paths["flow_u"].is_dir() and paths["flow_v"].is_dir()):
        todo.append("flow")
    return todo


@contextlib.contextmanager
def _atomic_dirs(*targets: Path):
    """Temporary sibling folders, renamed onto ``targets`` when the block succeeds."""
    temps = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            temps.append(Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)))
        yield temps
        for tmp, target in zip(temps, targets):
            os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a folder gets what mkdir would give
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            shutil.rmtree(tmp, ignore_errors=True)


def process_clip(plan: Plan, out: Path, clip: RawClip, fps: float, backend: str | None) -> str | None:
    """Make the missing outputs of one clip; return None, or the error that stopped it."""
    paths = clip_outputs(out, clip)
    try:
        todo = pending(plan, out, clip)
        if "audio" in todo:
            source = clip.audio or clip.video
            if source is None:
                raise ValueError("no audio or video file")
            feats = fbank_features(*check_audio(*load_audio(source)))
            with atomic_path(paths["audio"]) as tmp, open(tmp, "wb") as fh:
                np.save(fh, feats)
        if "frames" in todo:
            with _atomic_dirs(paths["frames"]) as (tmp,):
                if clip.frames is not None:
                    copy_frames(clip.frames, tmp)
                elif clip.video is not None:
                    extract_frames(clip.video, tmp, fps, backend or "")
                else:
                    raise ValueError("no video file or frame folder")
        if "flow" in todo:
            if clip.video is None:
                raise ValueError("no video file for optical flow")
            with _atomic_dirs(paths["flow_u"], paths["flow_v"]) as (tmp_u, tmp_v):
                extract_flow(clip.video, tmp_u, tmp_v)
    except Exception as exc:  # one bad file must not stop the dataset: report it and go on
        return f"{type(exc).__name__}: {exc}"
    return None


def _process_star(args: tuple) -> tuple[str, str | None]:
    plan, out, clip, fps, backend = args
    return clip.id, process_clip(plan, out, clip, fps, backend)


# ----------------------------------------------------------------------------- the whole dataset

@dataclass
class PrepareReport:
    manifest: Path
    rows: int
    processed: int
    skipped: int
    failed: list[tuple[str, str]]
    seconds: float

    def summary(self) -> str:
        lines = [f"manifest: {self.manifest} ({self.rows} clips)",
                 f"processed {self.processed}, already done {self.skipped}, failed {len(self.failed)} "
                 f"in {self.seconds:.1f} s"]
        if self.failed:
            lines.append(f"failures are listed in {self.manifest.parent / ERROR_LOG}")
        return "\n".join(lines)


def check_tools(plan: Plan, todo: Sequence[tuple[RawClip, list[str]]]) -> str | None:
    """Fail early, with the install hint, when pending work needs a decoder that is not there."""
    if any("flow" in need for _, need in todo) and tvl1_factory() is None:
        raise ValueError(f"UCF101 optical flow needs OpenCV with TV-L1 (cv2.optflow.DualTVL1OpticalFlow_create): "
                         f"{FLOW_HINT}")
    backend = video_backend()
    if any("frames" in need and clip.frames is None and clip.video is not None for clip, need in todo) and backend is None:
        raise ValueError(VIDEO_HINT)
    if any("audio" in need and (clip.audio or clip.video) is not None and (clip.audio or clip.video).suffix.lower() != ".wav"
           for clip, need in todo) and not (ffmpeg_exe() or _has_module("torchcodec")):
        raise ValueError(AUDIO_HINT)
    return backend


def _count_images(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def write_manifest(dataset: str, out: Path, clips: Iterable[RawClip]) -> tuple[Path, int]:
    """Manifest rows for every clip whose outputs all exist (relative paths, file counts)."""
    plan = PLANS[dataset]
    columns = ["id", "label", "split", "frames"] + (["audio"] if plan.audio else []) + \
              (["flow_u", "flow_v"] if plan.flow else []) + ["n_frames"] + (["n_flow"] if plan.flow else [])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    rows = 0
    for clip in clips:
        if pending(plan, out, clip):
            continue
        paths = clip_outputs(out, clip)
        row = {"id": clip.id, "label": clip.label, "split": clip.split,
               "frames": paths["frames"].relative_to(out).as_posix(), "n_frames": _count_images(paths["frames"])}
        if plan.audio:
            row["audio"] = paths["audio"].relative_to(out).as_posix()
        if plan.flow:
            row.update(flow_u=paths["flow_u"].relative_to(out).as_posix(),
                       flow_v=paths["flow_v"].relative_to(out).as_posix(), n_flow=_count_images(paths["flow_u"]))
        writer.writerow(row)
        rows += 1
    manifest = out / "manifest.csv"
    atomic_write_text(manifest, buffer.getvalue())
    return manifest, rows


def prepare(dataset: str, raw: Path | str, out: Path | str, *, list_file: Path | str | None = None, workers: int = 0,
            fps: float = 1.0, limit: int | None = None, progress: bool = True) -> PrepareReport:
    """Build (or complete) the data directory ``out`` of ``dataset`` from the raw media under ``raw``."""
    if dataset not in PLANS:
        raise ValueError(f"prepare: unknown dataset {dataset!r}; valid: {', '.join(DATASETS_PREPARED)}")
    raw, out = Path(raw).expanduser(), Path(out).expanduser()
    if not raw.is_dir():
        raise ValueError(f"prepare {dataset}: --raw {raw} is not a directory")
    if fps <= 0:
        raise ValueError(f"prepare {dataset}: --fps must be > 0, got {fps}")
    start = time.perf_counter()
    if list_file is not None:
        clips = clips_from_list(Path(list_file).expanduser(), MediaIndex.scan(raw), dataset)
    else:
        clips = clips_from_folders(raw)
    if not clips:
        raise ValueError(f"prepare {dataset}: found no clips under {raw}; expected <raw>/<split>/<class>/<clip>.<ext> "
                         f"(split = train/test, ext = a video, or .wav plus a <clip>/ folder of frames) or a --list file")
    if limit is not None:
        clips = clips[:limit]
    duplicates = sorted(cid for (_, cid), n in Counter((c.split, c.id) for c in clips).items() if n > 1)
    if duplicates:
        raise ValueError(f"prepare {dataset}: clip ids repeat within a split: {', '.join(duplicates[:5])}")
    plan = PLANS[dataset]
    out.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[str, str]] = []
    unsafe = [c for c in clips if not safe_clip_id(c.id)]
    for clip in unsafe:  # ids name output paths: one with a separator or ".." would write outside --out
        _record(clip.id, "clip id is not a plain file name (path separators, '..' or empty); it would write "
                         "outside --out", failed, out)
    clips = [c for c in clips if safe_clip_id(c.id)]
    todo = [(c, need) for c in clips if (need := pending(plan, out, c))]
    backend = check_tools(plan, todo)
    jobs = [(plan, out, clip, fps, backend) for clip, _ in todo]
    bar = tqdm(total=len(jobs), desc=f"prepare {dataset}", disable=disable_flag(progress), unit="clip")
    if workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for future in as_completed([pool.submit(_process_star, job) for job in jobs]):
                _record(*future.result(), failed, out)
                bar.update(1)
    else:
        for job in jobs:
            _record(*_process_star(job), failed, out)
            bar.update(1)
    bar.close()
    manifest, rows = write_manifest(dataset, out, clips)
    return PrepareReport(manifest, rows, len(jobs) - (len(failed) - len(unsafe)), len(clips) - len(jobs), failed,
                         time.perf_counter() - start)


def safe_clip_id(cid: str) -> bool:
    """A clip id usable as a file name under --out: no separators, not '.', '..' or empty."""
    return bool(cid) and cid not in (".", "..") and not any(sep in cid for sep in ("/", "\\", "\0"))


def _record(cid: str, error: str | None, failed: list[tuple[str, str]], out: Path) -> None:
    if error is None:
        return
    failed.append((cid, error))
    log.warning("prepare: skipped clip %s: %s", cid, error)
    with open(out / ERROR_LOG, "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{cid}\t{error}\n")


# ----------------------------------------------------------------------------- command line

def add_prepare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``prepare`` on the CLI's sub-command parsers."""
    parser = subparsers.add_parser(
        "prepare", help="build a ks/vggsound/ucf101 data directory (frames, fbank, flow, manifest) from raw media",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=DATASETS_PREPARED, help="which layout to build")
    parser.add_argument("--raw", required=True, help="directory holding the raw videos / audio / frame folders")
    parser.add_argument("--out", required=True, help="data directory to write (use it as --dataset-set data_root=...)")
    parser.add_argument("--list", dest="list_file", help="clip list: CSV id,label,split; vggsound.csv; UCF101 trainlist/testlist")
    parser.add_argument("--workers", type=int, default=0, help="parallel processes (0: in this process)")
    parser.add_argument("--fps", type=float, default=1.0, help="frames extracted per second, 1 as in the paper")
    parser.add_argument("--limit", type=int, help="only the first N clips (a trial run)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=main_prepare)
    return parser


def main_prepare(args: argparse.Namespace) -> int:
    """Run ``prepare`` from parsed arguments; print the summary; 1 if no clip is usable."""
    report = prepare(args.dataset, args.raw, args.out, list_file=args.list_file, workers=args.workers, fps=args.fps,
                     limit=args.limit, progress=not args.no_progress)
    print(report.summary())
    if report.rows == 0:
        print(f"mmrobust-bench: error: no clip of {args.dataset} could be prepared", file=sys.stderr)
        return 1
    print(f"use it with: mmrobust-bench run --dataset {args.dataset} --dataset-set data_root={report.manifest.parent}")
    return 0


__all__ = ["prepare", "PrepareReport", "add_prepare_parser", "main_prepare", "fbank_features", "read_wav",
           "ffmpeg_exe", "decode_audio", "quantise_flow", "extract_frames", "extract_flow", "video_backend",
           "tvl1_factory", "clips_from_list", "clips_from_folders", "MediaIndex"]
