"""``vggsound``: VGGSound (309 classes), audio + RGB, with the Kinetics-Sounds pipeline (docs/methods.md §2).

The CRMT pre-processing reuses the KS scripts for VGGSound, so the files, the 3-frame sampling and
the augmentation are those of ``ks``; classes are the sorted class names of the manifest (not the
order of first appearance used by BalanceBenchmark). The data directory comes from
``data_root=`` or ``$MMROBUST_VGGSOUND_ROOT``.
"""

from __future__ import annotations

from pathlib import Path

from . import DATASETS
from .av_clips import ClipDataset, ClipProfile, build_clip_dataset, fbank_stream, rgb_stream
from .kinetics_sounds import KS_FRAME_RULE

PROFILE = ClipProfile(
    name="vggsound",
    title="VGGSound",
    env_var="MMROBUST_VGGSOUND_ROOT",
    order=("v", "a"),
    frames=(rgb_stream(KS_FRAME_RULE),),
    arrays=(fbank_stream(),),
    crop=True,
    encoders={"v": "resnet18_visual", "a": "resnet18_audio"},
    layout="frames/<split>/<ytid>_<start>/*.jpg (1 fps) and audio/<split>/<ytid>_<start>.npy (float32 (1024, 128))",
)


@DATASETS.register("vggsound")
def build_vggsound(*, cache_dir: Path | None = None, **options) -> ClipDataset:
    """VGGSound from ``data_root`` (or $MMROBUST_VGGSOUND_ROOT); options: :class:`.av_clips.ClipOptions`."""
    return build_clip_dataset(PROFILE, cache_dir, options)
