"""Clean and adversarial accuracy of a trained model over an ε grid."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks import Attack
from ..contracts import ThreatModel
from ..data.base import TensorSplit


@dataclass
class Measurement:
    eps: float
    correct: int
    n: int
    seconds: float

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.n, 1)


@torch.no_grad()
def clean_accuracy(model: nn.Module, split: TensorSplit, batch_size: int, device: torch.device) -> Measurement:
    model.eval()
    start, correct = time.perf_counter(), 0
    for batch, labels in split.batches(batch_size, device=device):
        correct += int((model(batch).logits.argmax(1) == labels).sum())
    return Measurement(0.0, correct, len(split), time.perf_counter() - start)


def robust_accuracy(model: nn.Module, split: TensorSplit, attack: Attack, threat: ThreatModel,
                    eps_grid: Sequence[float], batch_size: int, device: torch.device,
                    progress: bool = False) -> list[Measurement]:
    """Accuracy under ``attack`` at every ε of the grid (one entry for unbounded attacks).

    Attacks that take a per-sample ε run the whole grid as one batched computation: each batch
    is repeated R times with the R radii, which gives exactly the numbers of R separate runs.
    """
    model.eval()
    grid = [float(e) for e in eps_grid] if attack.norm_bounded else [0.0]
    correct = [0] * len(grid)
    seconds = [0.0] * len(grid)
    batched = attack.per_sample_eps and len(grid) > 1
    step = max(1, batch_size // len(grid)) if batched else batch_size
    batches = list(split.batches(step, device=device))
    bar = tqdm(total=len(batches) * (1 if batched else len(grid)), desc=f"attack {attack.describe()}",
               disable=not progress, leave=False)
    for batch, labels in batches:
        if batched:
            r, b = len(grid), labels.shape[0]
            rep = {m: x.repeat((r,) + (1,) * (x.dim() - 1)) for m, x in batch.items()}
            eps = torch.tensor(grid, device=device).repeat_interleave(b)
            start = time.perf_counter()
            adv = attack(model, rep, labels.repeat(r), threat, eps)
            with torch.no_grad():
                hits = (model(adv).logits.argmax(1) == labels.repeat(r)).view(r, b).sum(1)
            elapsed = time.perf_counter() - start
            for i in range(r):
                correct[i] += int(hits[i])
                seconds[i] += elapsed / r
            bar.update(1)
        else:
            for i, e in enumerate(grid):
                start = time.perf_counter()
                adv = attack(model, batch, labels, threat.with_eps(e))
                with torch.no_grad():
                    correct[i] += int((model(adv).logits.argmax(1) == labels).sum())
                seconds[i] += time.perf_counter() - start
                bar.update(1)
    bar.close()
    return [Measurement(e, c, len(split), s) for e, c, s in zip(grid, correct, seconds)]
