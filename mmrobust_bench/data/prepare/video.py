"""The pictures of a clip: 1 fps RGB frames (ffmpeg ``-r 1`` as the reference extractor, else torchcodec or
OpenCV; or a folder of already extracted images, renumbered) and UCF101's TV-L1 optical flow, each component
clipped to ±15 and quantised to uint8 JPEGs (docs/methods.md §2).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from . import tools

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FRAME_NAME = "frame_{t:05d}.jpg"  # what the loaders' "sorted" default reads (and frame_pattern can name)
FLOW_BOUND = 15.0


def extract_frames(video: Path, dest: Path, fps: float, backend: str) -> int:
    """Write 1-based ``frame_00001.jpg …`` at ``fps`` into the (empty) folder ``dest``; return the count."""
    if backend == "ffmpeg":
        out = subprocess.run(
            [
                tools.ffmpeg_exe() or "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(video),
                "-r",
                f"{fps:g}",
                "-q:v",
                "2",
                str(dest / "frame_%05d.jpg"),
            ],
            capture_output=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"ffmpeg failed: {out.stderr.decode(errors='replace').strip()[-300:]}")
    elif backend == "torchcodec":
        from torchcodec.decoders import VideoDecoder  # optional decoder

        decoder = VideoDecoder(str(video))
        duration = decoder.metadata.duration_seconds or 0.0
        times = [k / fps for k in range(max(1, int(duration * fps)))]
        frames = decoder.get_frames_played_at(seconds=times).data  # (N, C, H, W) uint8
        for t, frame in enumerate(frames, start=1):
            Image.fromarray(frame.permute(1, 2, 0).numpy()).save(dest / FRAME_NAME.format(t=t), quality=95)
    elif backend == "cv2":
        import cv2  # optional: the video extra

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
        raise RuntimeError(tools.VIDEO_HINT)
    count = sum(1 for p in dest.iterdir() if p.suffix == ".jpg")
    if count == 0:
        raise ValueError("no frames decoded")
    return count


def copy_frames(source: Path, dest: Path) -> int:
    """Copy already extracted images in sorted order as ``frame_00001.jpg …`` (re-encoded if not JPEG)."""
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
    import cv2  # optional: the video extra

    create = tools.tvl1_factory()
    if create is None:
        raise RuntimeError(f"optical flow needs OpenCV's TV-L1: {tools.FLOW_HINT}")
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


__all__ = [
    "IMAGE_SUFFIXES",
    "FRAME_NAME",
    "FLOW_BOUND",
    "extract_frames",
    "copy_frames",
    "quantise_flow",
    "extract_flow",
]
