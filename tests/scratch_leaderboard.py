"""A scratch leaderboard for the zoo and verify tests: a tiny synthav sweep laid out as ``leaderboards/<dataset>``
(sweep.yaml, runs/ with rows and checkpoints, zoo/ exported from them), built once per test module."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from mmrobust_bench.bench.sweep import build_plan, run_sweep
from mmrobust_bench.cli import main

TINY = {
    "dataset": "synthav",
    "dataset_set": {"n_train": 128, "n_test": 32},
    "seeds": [0, 1],
    "threads": 1,
    "set": {"epochs": 1, "batch_size": 32},
    "batch_size": 32,
    "defenses": ["jt"],
    "grid": [
        {"attacks": ["fgm"], "modalities": ["a"], "eps": [0.5, 1.0]},
        {"attacks": ["missing"], "modalities": ["v"]},
    ],
}
CERTIFY = {"radii": [0.0, 0.5], "honesty_steps": 2, "train_samples": 64}


@dataclass
class Leaderboard:
    base: Path  # the folder holding <dataset>/ (what $MMROBUST_LEADERBOARDS names)
    config: Path  # <base>/synthav/sweep.yaml
    runs: Path
    zoo: Path

    def copy(self, to: Path) -> Leaderboard:
        """An independent copy (a test that damages files damages its own)."""
        shutil.copytree(self.base, to, symlinks=True)
        return Leaderboard(to, to / "synthav" / "sweep.yaml", to / "synthav" / "runs", to / "synthav" / "zoo")


def build(base: Path, *, certify: bool | dict = False) -> Leaderboard:
    """Run the tiny sweep (one thread) and export its zoo through the CLI; ``certify``: the sweep's certify block,
    or True for :data:`CERTIFY`."""
    config = dict(TINY, certify=CERTIFY if certify is True else certify) if certify else dict(TINY)
    folder = base / "synthav"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump(config))
    before = torch.get_num_threads()
    try:
        run_sweep(build_plan(config), root=folder / "runs", progress=False)
    finally:
        torch.set_num_threads(before)
    assert main(["zoo", "export", "--root", str(folder / "runs"), "--out", str(folder / "zoo"), "-q"]) == 0
    return Leaderboard(base, folder / "sweep.yaml", folder / "runs", folder / "zoo")
