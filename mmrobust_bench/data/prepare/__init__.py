"""Raw media → the preprocessed layout and manifest that the ks, vggsound and ucf101 loaders read
(docs/methods.md §2); the command is ``mmrobust-bench prepare`` (its help, in ``cli/prepare.py``, gives the
per-clip recipe).

One module per part: ``audio`` (the fbank), ``video`` (frames and TV-L1 flow), ``sources`` (where the clips
come from), ``tools`` (which optional decoders are installed) and ``pipeline`` (per-clip outputs, the whole
dataset, the manifest). Their public names are importable from here.
"""

from __future__ import annotations

from .audio import check_audio, decode_audio, fbank_features, load_audio, read_wav
from .pipeline import (
    DATASETS_PREPARED,
    ERROR_LOG,
    PLANS,
    Plan,
    PrepareReport,
    atomic_dirs,
    check_tools,
    prepare,
    process_clip,
    safe_clip_id,
    write_manifest,
)
from .sources import MediaIndex, RawClip, clips_from_folders, clips_from_list
from .tools import ffmpeg_exe, tvl1_factory, video_backend
from .video import copy_frames, extract_flow, extract_frames, quantise_flow

__all__ = [
    "prepare",
    "PrepareReport",
    "fbank_features",
    "read_wav",
    "ffmpeg_exe",
    "decode_audio",
    "quantise_flow",
    "extract_frames",
    "extract_flow",
    "video_backend",
    "tvl1_factory",
    "clips_from_list",
    "clips_from_folders",
    "MediaIndex",
    "RawClip",
    "Plan",
    "PLANS",
    "DATASETS_PREPARED",
    "ERROR_LOG",
    "check_audio",
    "load_audio",
    "copy_frames",
    "atomic_dirs",
    "check_tools",
    "process_clip",
    "safe_clip_id",
    "write_manifest",
]
