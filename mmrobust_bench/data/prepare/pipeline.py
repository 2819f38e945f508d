"""``prepare``'s pipeline: the outputs each dataset needs per clip, made atomically and in parallel, then the
manifest the loaders read (docs/methods.md §2; the per-clip recipe is ``mmrobust-bench prepare --help``).

Every output is written to a temporary name and renamed, so an interrupted run is resumed by running it
again (clips whose outputs exist are skipped). A clip that fails is logged (and appended to
``prepare_errors.log``) and left out of the manifest; the others go on.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ...io import atomic_path, atomic_write_text, current_umask
from ...progress import disable_flag
from .. import DATASETS_PREPARED
from . import tools
from .audio import check_audio, fbank_features, load_audio
from .sources import MediaIndex, RawClip, clips_from_folders, clips_from_list
from .video import IMAGE_SUFFIXES, copy_frames, extract_flow, extract_frames

log = logging.getLogger("mmrobust_bench.data.prepare")  # the package's name, whichever module logs

ERROR_LOG = "prepare_errors.log"


# ----------------------------------------------------------------------------- one clip


@dataclass(frozen=True)
class Plan:
    """What one dataset needs per clip."""

    frames: bool = True
    audio: bool = False
    flow: bool = False


PLANS = {"ks": Plan(audio=True), "vggsound": Plan(audio=True), "ucf101": Plan(flow=True)}


def clip_outputs(out: Path, clip: RawClip) -> dict[str, Path]:
    return {
        "frames": out / "frames" / clip.split / clip.id,
        "audio": out / "audio" / clip.split / f"{clip.id}.npy",
        "flow_u": out / "flow_u" / clip.split / clip.id,
        "flow_v": out / "flow_v" / clip.split / clip.id,
    }


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
def atomic_dirs(*targets: Path) -> Iterator[list[Path]]:
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
            with atomic_dirs(paths["frames"]) as (tmp,):
                if clip.frames is not None:
                    copy_frames(clip.frames, tmp)
                elif clip.video is not None:
                    extract_frames(clip.video, tmp, fps, backend or "")
                else:
                    raise ValueError("no video file or frame folder")
        if "flow" in todo:
            if clip.video is None:
                raise ValueError("no video file for optical flow")
            with atomic_dirs(paths["flow_u"], paths["flow_v"]) as (tmp_u, tmp_v):
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
        lines = [
            f"manifest: {self.manifest} ({self.rows} clips)",
            f"processed {self.processed}, already done {self.skipped}, failed {len(self.failed)} "
            f"in {self.seconds:.1f} s",
        ]
        if self.failed:
            lines.append(f"failures are listed in {self.manifest.parent / ERROR_LOG}")
        return "\n".join(lines)


def check_tools(plan: Plan, todo: Sequence[tuple[RawClip, list[str]]]) -> str | None:
    """Fail early, with the install hint, when pending work needs a decoder that is not there."""
    if any("flow" in need for _, need in todo) and tools.tvl1_factory() is None:
        raise ValueError(
            f"UCF101 optical flow needs OpenCV with TV-L1 (cv2.optflow.DualTVL1OpticalFlow_create): {tools.FLOW_HINT}"
        )
    backend = tools.video_backend()
    if (
        any("frames" in need and clip.frames is None and clip.video is not None for clip, need in todo)
        and backend is None
    ):
        raise ValueError(tools.VIDEO_HINT)
    if any(
        "audio" in need
        and (clip.audio or clip.video) is not None
        and (clip.audio or clip.video).suffix.lower() != ".wav"
        for clip, need in todo
    ) and not (tools.ffmpeg_exe() or tools.has_module("torchcodec")):
        raise ValueError(tools.AUDIO_HINT)
    return backend


def _count_images(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def write_manifest(dataset: str, out: Path, clips: Iterable[RawClip]) -> tuple[Path, int]:
    """Manifest rows for every clip whose outputs all exist (relative paths, file counts)."""
    plan = PLANS[dataset]
    columns = (
        ["id", "label", "split", "frames"]
        + (["audio"] if plan.audio else [])
        + (["flow_u", "flow_v"] if plan.flow else [])
        + ["n_frames"]
        + (["n_flow"] if plan.flow else [])
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    rows = 0
    for clip in clips:
        if pending(plan, out, clip):
            continue
        paths = clip_outputs(out, clip)
        row = {
            "id": clip.id,
            "label": clip.label,
            "split": clip.split,
            "frames": paths["frames"].relative_to(out).as_posix(),
            "n_frames": _count_images(paths["frames"]),
        }
        if plan.audio:
            row["audio"] = paths["audio"].relative_to(out).as_posix()
        if plan.flow:
            row.update(
                flow_u=paths["flow_u"].relative_to(out).as_posix(),
                flow_v=paths["flow_v"].relative_to(out).as_posix(),
                n_flow=_count_images(paths["flow_u"]),
            )
        writer.writerow(row)
        rows += 1
    manifest = out / "manifest.csv"
    atomic_write_text(manifest, buffer.getvalue())
    return manifest, rows


def prepare(
    dataset: str,
    raw: Path | str,
    out: Path | str,
    *,
    list_file: Path | str | None = None,
    workers: int = 0,
    fps: float = 1.0,
    limit: int | None = None,
    progress: bool = True,
) -> PrepareReport:
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
        raise ValueError(
            f"prepare {dataset}: found no clips under {raw}; expected <raw>/<split>/<class>/<clip>.<ext> "
            f"(split = train/test, ext = a video, or .wav plus a <clip>/ folder of frames) or a --list file"
        )
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
        _record(
            clip.id,
            "clip id is not a plain file name (path separators, '..' or empty); it would write outside --out",
            failed,
            out,
        )
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
    return PrepareReport(
        manifest,
        rows,
        len(jobs) - (len(failed) - len(unsafe)),
        len(clips) - len(jobs),
        failed,
        time.perf_counter() - start,
    )


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


__all__ = [
    "DATASETS_PREPARED",
    "ERROR_LOG",
    "Plan",
    "PLANS",
    "PrepareReport",
    "clip_outputs",
    "pending",
    "atomic_dirs",
    "process_clip",
    "check_tools",
    "write_manifest",
    "prepare",
    "safe_clip_id",
]
