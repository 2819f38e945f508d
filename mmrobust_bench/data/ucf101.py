"""``ucf101``: UCF101 split 1 (101 classes), RGB + TV-L1 optical flow (docs/methods.md §2).

RGB: six frames per clip with seg = 2 (train: one of {2i+1, 2i+2}; test: 2i+1), Resize to
``image_size``, ImageNet normalisation. Flow: three (u, v) pairs sampled by segment over the flow
files, resized, stacked to (2, T, H, W) and normalised with mean 0.1307 / std 0.3081 per channel.
At train time one horizontal flip is drawn per sample and applied to RGB *and* flow, and a flipped
u becomes 1 − u (the recommended fix of docs/methods.md §2; BalanceBenchmark flips them independently
and keeps u). The modality names are ``v`` (RGB) and ``flow``. The data directory comes from
``data_root=`` or ``$MMROBUST_UCF101_ROOT``.
"""

from __future__ import annotations

from pathlib import Path

from . import DATASETS
from .av_clips import (
    FLOW_MEAN,
    FLOW_STD,
    ClipDataset,
    ClipProfile,
    FrameStream,
    SegmentRule,
    build_clip_dataset,
    rgb_stream,
)

RGB_RULE = SegmentRule(picks=3, fixed_count=6)  # clips with fewer than 6 frames reuse their last one
FLOW_RULE = SegmentRule(picks=3, min_files=3)

FLOW = FrameStream(
    "flow",
    ("flow_u", "flow_v"),
    "L",
    FLOW_MEAN,
    FLOW_STD,
    FLOW_RULE,
    "n_flow",
    "flow_pattern",
    flip_negates=(0,),
    description="TV-L1 optical flow (u, v) as (C=2, T, H, W), normalised with mean 0.1307 / std 0.3081",
)

PROFILE = ClipProfile(
    name="ucf101",
    title="UCF101",
    env_var="MMROBUST_UCF101_ROOT",
    order=("v", "flow"),
    frames=(rgb_stream(RGB_RULE), FLOW),
    arrays=(),
    crop=False,
    encoders={"v": "resnet18_visual", "flow": "resnet18_flow"},
    layout="frames/<split>/<id>/*.jpg (1 fps) and flow_u/<split>/<id>/*.jpg, flow_v/<split>/<id>/*.jpg "
    "(TV-L1 flow clipped to ±15, stored as round((f + 15)·255/30))",
)


@DATASETS.register("ucf101")
def build_ucf101(*, cache_dir: Path | None = None, **options) -> ClipDataset:
    """UCF101 from ``data_root`` (or $MMROBUST_UCF101_ROOT); options: :class:`.av_clips.ClipOptions`."""
    return build_clip_dataset(PROFILE, cache_dir, options)
