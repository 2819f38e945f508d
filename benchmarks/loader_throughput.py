"""Samples/s of the real-dataset loader alone (cold JPEG decoding vs the uint8 frame cache) vs a training step.

Builds a KS-style fixture (JPEG frames at ``--orig`` resolution, (1024, 128) fbank .npy files) in a
temporary folder, then times one train epoch of ``ks`` through ``ClipSplit.batches`` with
``frame_cache=False`` (every frame decoded from JPEG) and with the cache (built first, timed
separately), and a JT forward/backward/SGD step of the ResNet-18 encoders on the same shapes.
Prints one JSON object. Usage:
``python benchmarks/loader_throughput.py [--clips 48] [--image-size 112] [--workers 2] [--device auto]``
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mmrobust_bench.bench.environment import benchmark_machine
from mmrobust_bench.bench.train import select_device
from mmrobust_bench.data import build_dataset
from mmrobust_bench.models import build_model


def make_fixture(root: Path, clips: int, frames: int, height: int, width: int, seed: int = 0) -> None:
    """Smooth random frames (natural-image-like JPEG cost) and random fbank features, 80/20 train/test."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(clips):
        split = "train" if k < int(0.8 * clips) else "test"
        cid = f"clip{k:04d}"
        folder = root / "frames" / split / cid
        folder.mkdir(parents=True)
        coarse = rng.integers(0, 256, (frames, height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        for t in range(frames):
            img = Image.fromarray(coarse[t]).resize((width, height), Image.BICUBIC)
            img.save(folder / f"frame_{t + 1:05d}.jpg", quality=90)
        audio = root / "audio" / split / f"{cid}.npy"
        audio.parent.mkdir(parents=True, exist_ok=True)
        np.save(audio, rng.standard_normal((1024, 128)).astype(np.float32))
        rows.append(
            {
                "id": cid,
                "label": f"class{k % 4}",
                "split": split,
                "frames": f"frames/{split}/{cid}",
                "audio": f"audio/{split}/{cid}.npy",
                "n_frames": frames,
            }
        )
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def epoch_rate(split, batch_size: int, device: torch.device, repeats: int) -> float:
    """Samples/s of full passes over ``split`` (loader + host-to-device copy + normalisation only)."""
    gen = torch.Generator().manual_seed(0)
    n = 0
    start = time.perf_counter()
    for _ in range(repeats):
        for _batch, labels in split.batches(batch_size, shuffle=True, generator=gen, device=device):
            n += labels.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def train_step_rate(ds, batch_size: int, device: torch.device, feature_dim: int, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(ds.specs, ds.num_classes, ds.encoders, feature_dim=feature_dim).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batch = {s.name: torch.randn((batch_size,) + s.shape, device=device) for s in ds.specs}
    labels = torch.randint(0, ds.num_classes, (batch_size,), device=device)

    def step() -> None:
        loss = F.cross_entropy(model(batch).logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--frames", type=int, default=10, help="JPEG frames per clip (1 fps over 10 s)")
    parser.add_argument("--orig", default="180x320", help="original frame size HxW")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", default="auto", help="loader workers (auto or a number)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs timed per loader variant")
    parser.add_argument("--feature-dim", type=int, default=512, help="512 = ResNet-18 proper")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.orig.lower().split("x"))
    workers = args.workers if args.workers == "auto" else int(args.workers)
    device = select_device(args.device)
    root = Path(tempfile.mkdtemp(prefix="mmrobust-loader-"))
    try:
        make_fixture(root / "data", args.clips, args.frames, height, width)
        common = dict(data_root=str(root / "data"), image_size=args.image_size, num_workers=workers)
        cold = build_dataset("ks", cache_dir=root / "runs", frame_cache=False, **common)
        cold_rate = epoch_rate(cold.train, args.batch_size, device, args.repeats)
        cached = build_dataset("ks", cache_dir=root / "runs", frame_cache=True, **common)
        start = time.perf_counter()
        cached.train.source.ensure_cache()
        build_seconds = time.perf_counter() - start
        cache_bytes = sum(p.stat().st_size for p in (root / "runs").rglob("*.npy"))
        cached_rate = epoch_rate(cached.train, args.batch_size, device, args.repeats)
        step_rate = train_step_rate(cached, args.batch_size, device, args.feature_dim, args.steps)
        print(
            json.dumps(
                {
                    "benchmark": "loader_throughput",
                    "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "clips_train": len(cached.train),
                    "frames_per_clip": args.frames,
                    "orig_frame": [height, width],
                    "image_size": args.image_size,
                    "batch_size": args.batch_size,
                    "workers": cached.train.source.opts.workers,
                    "loader_cold_jpeg_samples_per_s": round(cold_rate, 1),
                    "loader_uint8_cache_samples_per_s": round(cached_rate, 1),
                    "cache_speedup": round(cached_rate / cold_rate, 2),
                    "cache_build_seconds": round(build_seconds, 2),
                    "cache_megabytes": round(cache_bytes / 2**20, 1),
                    "train_step_samples_per_s": round(step_rate, 1),
                    "feature_dim": args.feature_dim,
                    "machine": benchmark_machine(device),
                },
                indent=2,
            )
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
