"""Bring your own model: attack a two-input PyTorch model with torchattacks and ART through mmrobust-bench.

Runs in well under a minute on 2 CPU cores (``python examples/own_model.py``; ``--quick`` for a smaller
run). Nothing here comes from the suite except ``import mmrobust_bench as mmr``: the model, its data and
its training loop are the user's own. The script

1. makes a small audio-visual data set: an unbounded "spectrogram" whose class is a band of mel bins,
   and an RGB "video frame" in [0, 1] whose class is a colour grating (the audio cue is the clearer one);
2. trains ``forward(audio, video) -> logits`` for a few seconds;
3. declares the two inputs once (``mmr.wrap``), attacks each modality with ``torchattacks.PGDL2`` and
   ART's ``FastGradientMethod`` (options as those libraries define them, in model-input space) and
   drops each modality, evaluating straight from a ``DataLoader``;
4. prints the table: the same tidy rows ``mmrobust-bench run`` writes (add ``results="results.csv"`` to
   ``mmr.evaluate`` to append them to a results file).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
import torchattacks
from art.attacks.evasion import FastGradientMethod
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mmrobust_bench as mmr

CLASSES = 4
MELS, FRAMES = 8, 16  # audio: (mel bins, frames), unbounded
SIDE = 8  # video: (3, SIDE, SIDE), valid box [0, 1]


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Audio: noise plus energy in a class-specific pair of mel bins (the class in 90% of clips). Video: a
    grating whose orientation and dominant colour give the class (in 70% of clips), in [0, 1]."""
    labels = torch.randint(0, CLASSES, (n,), generator=generator)

    def cue(reliability: float) -> torch.Tensor:
        wrong = torch.randint(0, CLASSES, (n,), generator=generator)
        keep = torch.rand(n, generator=generator) < reliability
        return torch.where(keep, labels, wrong)

    audio = torch.randn(n, MELS, FRAMES, generator=generator)
    band = cue(0.9)
    for k in range(CLASSES):
        rows = band == k
        audio[rows, 2 * k : 2 * k + 2] += 0.5
    grid = torch.linspace(0, 3.1416 * 3, SIDE)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    video = torch.empty(n, 3, SIDE, SIDE)
    pattern = cue(0.7)
    for k in range(CLASSES):
        angle = k * 3.1416 / CLASSES
        wave = 0.5 + 0.3 * torch.sin(torch.cos(torch.tensor(angle)) * xx + torch.sin(torch.tensor(angle)) * yy)
        rows = pattern == k
        video[rows] = wave.expand(3, SIDE, SIDE) * torch.tensor([1.0, 0.8, 0.6]).roll(k % 3)[:, None, None]
    video = (video + 0.15 * torch.randn(video.shape, generator=generator)).clamp(0, 1)
    return audio, video, labels


class AudioVisualNet(nn.Module):
    """The user's own model: two encoders, concatenation, a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = nn.Sequential(nn.Conv1d(MELS, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.video = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, CLASSES)

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.audio(audio), self.video(video)], dim=1))


def train(model: nn.Module, loader: DataLoader, epochs: int) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for audio, video, labels in loader:
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(audio, video), labels).backward()
            optimiser.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and epochs (what CI runs)")
    args = parser.parse_args()
    start = time.perf_counter()
    # A model this small is all per-call overhead: one thread is fastest, and it keeps the run from slowing
    # to a crawl when other processes share the cores (thread oversubscription).
    torch.set_num_threads(1)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    n_train, n_test, epochs = (512, 128, 4) if args.quick else (1024, 256, 6)
    train_set = TensorDataset(*make_data(n_train, generator))
    test_set = TensorDataset(*make_data(n_test, generator))
    model = AudioVisualNet()
    train(model, DataLoader(train_set, batch_size=64, shuffle=True, generator=generator), epochs)
    print(f"trained in {time.perf_counter() - start:.1f} s")

    # Declare the two inputs once: shapes (optional, inferred from the first batch otherwise) and valid boxes.
    wrapped = mmr.wrap(
        model,
        modalities={"audio": mmr.Modality((MELS, FRAMES)), "video": mmr.Modality((3, SIDE, SIDE), box=(0, 1))},
        call="positional",
    )
    loader = DataLoader(test_set, batch_size=128)  # tuples (audio, video, label): the declared order

    # One attack on one batch, given back as the batch came: (audio_adv, video, labels).
    audio, video, labels = next(iter(loader))
    audio_adv, video_same, _ = mmr.attack(
        wrapped,
        (audio, video, labels),
        attack=torchattacks.PGDL2,
        modality="audio",
        eps=1.0,
        alpha=0.25,
        steps=10,
        random_start=False,
    )
    assert torch.equal(video_same, video)
    print(f"one PGDL2 batch: audio moved by ℓ2 ≤ {float((audio_adv - audio).flatten(1).norm(dim=1).max()):.3f}")

    eps = [0.25, 0.5, 1.0, 2.0]
    frames = []
    for modality in ("audio", "video"):
        frames.append(
            mmr.evaluate(
                wrapped,
                loader,
                attack=torchattacks.PGDL2,
                modality=modality,
                eps=eps,
                alpha=0.25,
                steps=10,
                random_start=False,
                label="my-av-net",
            )
        )
        frames.append(
            mmr.evaluate(
                wrapped,
                loader,
                attack=FastGradientMethod,
                modality=modality,
                eps=eps,
                norm="l2",
                label="my-av-net",
                check_flags=False,
            )
        )
        frames.append(
            mmr.evaluate(wrapped, loader, attack="missing", modality=modality, label="my-av-net", check_flags=False)
        )
    table = pd.concat(frames, ignore_index=True)
    table = table.drop_duplicates(subset=["attack", "modality", "eps"])  # each evaluate() repeats the clean row
    print(mmr.format_table(table))
    if (table["flags"] != "").any():
        print(
            "flags: validity checks of mmrobust_bench.bench.flags. unbounded_not_zero on PGDL2 means that at a huge "
            "radius 10 steps of alpha=0.25 still leave samples correct: the attack is step-limited, so give it "
            "more steps or a larger alpha before trusting its numbers at large eps."
        )
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
