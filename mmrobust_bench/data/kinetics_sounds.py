"""``ks``: Kinetics-Sounds (31 classes), audio + RGB, in the preprocessed layout of docs/methods.md §2.

Frames at 1 fps; three sampled by segment (train: random per segment, capped at frame 9; test:
segment middles; clips of ≤ 6 frames use frame 1 three times), each train frame with its own
RandomResizedCrop + horizontal flip; audio is the (1024, 128) AST-normalised Kaldi fbank. The data
directory comes from ``data_root=`` or ``$MMROBUST_KS_ROOT``; see :mod:`.av_clips` for options.
"""

from __future__ import annotations

from pathlib import Path

from . import DATASETS
from .av_clips import ClipDataset, ClipProfile, SegmentRule, build_clip_dataset, fbank_stream, rgb_stream

# the reference keeps clips with more than 3 frames; ≤ 6 frames -> all picks are frame 1; train picks capped at 9
KS_FRAME_RULE = SegmentRule(picks=3, few_files=6, train_cap=9, min_files=4)

PROFILE = ClipProfile(
    name="ks",
    title="Kinetics-Sounds",
    env_var="MMROBUST_KS_ROOT",
    order=("v", "a"),
    frames=(rgb_stream(KS_FRAME_RULE),),
    arrays=(fbank_stream(),),
    crop=True,
    encoders={"v": "resnet18_visual", "a": "resnet18_audio"},
    layout="frames/<split>/<id>/*.jpg (1 fps) and audio/<split>/<id>.npy (float32 (1024, 128))",
)


@DATASETS.register("ks")
def build_ks(*, cache_dir: Path | None = None, **options) -> ClipDataset:
    """Kinetics-Sounds from ``data_root`` (or $MMROBUST_KS_ROOT); options: :class:`.av_clips.ClipOptions`."""
    return build_clip_dataset(PROFILE, cache_dir, options)
