"""Checkpoints: safetensors weights + JSON config + sha256, keyed by what determines the model.

Layout: ``<root>/checkpoints/<dataset>/<defense>/<key>/{stage1,final}.safetensors`` with
``config.json`` beside them and ``resume.pt`` while training is under way. The key hashes the
dataset config, defense name and hyperparameters, training schedule and seed, so a second run
with the same settings reuses the model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_path, atomic_write_json, sha256_file, stable_hash

TRAINING_CODE_VERSION = 1  # bump when a change to training invalidates cached checkpoints


@dataclass(frozen=True)
class CheckpointKey:
    dataset: str
    dataset_config: dict
    defense: str
    defense_config: dict
    train_config: dict
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "dataset_config": self.dataset_config, "defense": self.defense,
                "defense_config": self.defense_config, "train_config": self.train_config, "seed": self.seed,
                "training_code_version": TRAINING_CODE_VERSION}

    @property
    def digest(self) -> str:
        return stable_hash(self.as_dict())

    @property
    def config_hash(self) -> str:
        return stable_hash({"defense_config": self.defense_config, "train_config": self.train_config}, 12)

    def directory(self, root: Path) -> Path:
        return root / "checkpoints" / self.dataset / self.defense / self.digest


def save_stage(directory: Path, stage: str, model: torch.nn.Module, extra: dict[str, torch.Tensor],
               key: CheckpointKey) -> str:
    """Write ``<stage>.safetensors`` atomically, then record its sha256 in config.json."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in extra.items()})
    path = directory / f"{stage}.safetensors"
    with atomic_path(path) as tmp:
        # one metadata entry: safetensors does not keep the order of several, and the sha256 must be reproducible
        save_file(tensors, str(tmp), metadata={"mmrobust_bench": json.dumps({"stage": stage, "key": key.digest})})
    digest = sha256_file(path)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else key.as_dict()
    config.setdefault("stages", {})[stage] = {"file": path.name, "sha256": digest}
    atomic_write_json(config_path, config)
    return digest


def load_stage(directory: Path, stage: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str] | None:
    """(model state, extra tensors, sha256) of a finished stage, or None if it is absent or corrupt."""
    path = directory / f"{stage}.safetensors"
    config_path = directory / "config.json"
    if not path.exists() or not config_path.exists():
        return None
    recorded = json.loads(config_path.read_text()).get("stages", {}).get(stage, {}).get("sha256")
    digest = sha256_file(path)
    if recorded != digest:
        return None
    tensors = load_file(str(path))
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return model, extra, digest


def save_resume(directory: Path, state: dict[str, Any]) -> None:
    with atomic_path(directory / "resume.pt") as tmp:
        torch.save(state, tmp)


def load_resume(directory: Path) -> dict[str, Any] | None:
    path = directory / "resume.pt"
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def clear_resume(directory: Path) -> None:
    (directory / "resume.pt").unlink(missing_ok=True)
