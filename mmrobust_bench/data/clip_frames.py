"""Decoding and augmenting the frames of a clip: PIL decoding and resizing, torchvision's RandomResizedCrop
box drawn from a per-sample RNG, and horizontal flips (flow's u channel changes sign).

The cached path and the JPEG path share these functions, so both give bit-identical batches.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def decode_frame(
    folders: Sequence[Path], names: Sequence[str], mode: str, size: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """(size, size, C) uint8 frame from one image per folder, resized like ``Resize((size, size))``
    on a PIL image (bilinear), and the original (height, width)."""
    parts = []
    orig = (0, 0)
    for folder, name in zip(folders, names):
        with Image.open(folder / name) as img:
            img = img.convert(mode)
            if not parts:
                orig = (img.height, img.width)
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            arr = np.array(img)  # a writable copy
        parts.append(arr if arr.ndim == 3 else arr[..., None])
    return (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)), orig


def random_resized_crop_box(
    height: int,
    width: int,
    rng: random.Random,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w): the algorithm of torchvision's ``RandomResizedCrop.get_params``, drawn from ``rng``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resize_box(frame: np.ndarray, size: int, box: tuple[float, float, float, float] | None) -> np.ndarray:
    """Bilinear (PIL) resize of a (H, W, C) uint8 frame, optionally of the sub-box (left, top, right, bottom)."""
    if box is None and frame.shape[0] == size and frame.shape[1] == size:
        return frame
    channels = [frame] if frame.shape[2] == 3 else [frame[..., c] for c in range(frame.shape[2])]
    out = []
    for part in channels:
        img = Image.fromarray(np.ascontiguousarray(part))
        arr = np.asarray(img.resize((size, size), Image.BILINEAR, box=box))
        out.append(arr if arr.ndim == 3 else arr[..., None])
    return out[0] if len(out) == 1 else np.concatenate(out, axis=-1)


def flip_frame(frame: np.ndarray, negate: Sequence[int]) -> np.ndarray:
    out = frame[:, ::-1].copy()
    for c in negate:
        out[..., c] = 255 - out[..., c]  # u -> 1 - u in [0, 1] units: the horizontal flow changes sign
    return out


__all__ = ["decode_frame", "random_resized_crop_box", "resize_box", "flip_frame"]
