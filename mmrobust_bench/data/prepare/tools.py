"""Which decoders this machine has for ``prepare``: an ffmpeg binary, torchcodec, OpenCV (and its TV-L1 flow).

All three are optional (the ``video`` extra installs a static ffmpeg and OpenCV-contrib); each hint names
what to install. The other modules call these through the module (``tools.ffmpeg_exe()``), so tests can hide
a decoder in one place.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from typing import Any

VIDEO_EXTRA = "pip install 'mmrobust-bench[video]'"  # OpenCV-contrib (TV-L1) + imageio-ffmpeg (a static ffmpeg)
FLOW_HINT = f"{VIDEO_EXTRA} (or: pip install opencv-contrib-python-headless)"
VIDEO_HINT = (
    f"decoding video needs ffmpeg, torchcodec or OpenCV: {VIDEO_EXTRA} installs a static ffmpeg "
    "(imageio-ffmpeg) and OpenCV; an `ffmpeg` binary on PATH (apt-get install ffmpeg) or "
    "pip install torchcodec also work"
)
AUDIO_HINT = (
    f"decoding non-WAV audio needs ffmpeg or torchcodec: {VIDEO_EXTRA} installs a static ffmpeg "
    "(imageio-ffmpeg); an `ffmpeg` binary on PATH (apt-get install ffmpeg) or pip install torchcodec "
    "also work; WAV files need nothing extra"
)


def ffmpeg_exe() -> str | None:
    """The ffmpeg binary: ``ffmpeg`` on PATH, else the static one of imageio-ffmpeg (the ``video`` extra), else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg  # optional: the video extra

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError):  # not installed, or no binary for this platform
        return None


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def video_backend() -> str | None:
    """The first available way to decode video: the ffmpeg binary (PATH or imageio-ffmpeg), torchcodec, or OpenCV."""
    if ffmpeg_exe():
        return "ffmpeg"
    if has_module("torchcodec"):
        return "torchcodec"
    if has_module("cv2"):
        return "cv2"
    return None


def tvl1_factory() -> Callable[[], Any] | None:
    """OpenCV's Dual TV-L1 constructor (contrib's ``cv2.optflow`` or the old top-level one), if importable."""
    try:
        import cv2  # optional: the video extra
    except ImportError:
        return None
    optflow = getattr(cv2, "optflow", None)
    if optflow is not None and hasattr(optflow, "DualTVL1OpticalFlow_create"):
        return optflow.DualTVL1OpticalFlow_create
    return getattr(cv2, "DualTVL1OpticalFlow_create", None)


__all__ = [
    "VIDEO_EXTRA",
    "FLOW_HINT",
    "VIDEO_HINT",
    "AUDIO_HINT",
    "ffmpeg_exe",
    "has_module",
    "video_backend",
    "tvl1_factory",
]
