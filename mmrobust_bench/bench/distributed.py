"""Multi-process training and evaluation under ``torchrun`` (torch.distributed: NCCL on GPU, gloo on CPU).

Semantics, chosen so that W processes compute what one process computes:

* **Training.** ``batch_size`` stays the *global* batch: every global batch (drawn from one shuffling
  generator seeded identically on every rank) is split into W contiguous parts and rank r trains on
  part r. After the backward (and the defense's ``after_backward`` hook, e.g. OGM-GE's modulation), the
  gradients are summed across ranks weighted by each rank's share of the batch, in one flattened
  all-reduce, so the optimizer step sees the gradient of the mean loss over the global batch.
  Defenses call encoders, heads and stages separately (``encode``/``classify``, CRMT step 2, GB's
  uni-modal heads), which bypasses ``DistributedDataParallel.forward``; the DDP wrapper's reducer
  would then silently skip the all-reduce, so the gradients are synchronised explicitly instead.
* **Randomness.** Data order is shared; the randomness a defense draws in its loss (Mixup's λ, OGM-GE's
  noise, adversarial starts) comes from a per-rank generator reseeded from (seed, rank, epoch), so resume
  needs no per-rank state.
* **BatchNorm.** As the reference: per-process batch statistics, and the running statistics of rank 0
  (broadcast every epoch, like DDP's ``broadcast_buffers``); ``sync_batchnorm=True`` converts to
  ``nn.SyncBatchNorm`` (CUDA only).
* **Checkpoints.** Rank 0 writes resume states and stages; later stages (CRMT step 2, MSEFM memories)
  run on rank 0 and the other ranks load the result.
* **Evaluation.** Batches (of the single-process batch size) go round-robin to ranks and counts are
  summed, so each batch, and every attack's seeded randomness on it, is exactly the single-process one:
  the merged numbers are identical, not merely close.

Launch: ``torchrun --nproc-per-node 2 -m mmrobust_bench.cli run ...`` (any subcommand that trains or
evaluates); rank 0 alone writes result rows, plots and reports.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..data.base import shard_slice

_SEED_STRIDE = 1_000_003  # rank and epoch offsets of per-rank seeds (a prime, so (rank, epoch) pairs never collide)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, world size, local rank (the GPU index on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        """(rank, world size) for ``TensorSplit.batches(shard=...)``; None in a single process."""
        return (self.rank, self.world_size) if self.active else None


def current() -> Dist:
    """The running process group's view, or a single process when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return Dist()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str | torch.device = "auto", timeout_minutes: float = 60.0) -> Dist:
    """Join the process group that ``torchrun`` describes in the environment (no-op for one process).

    NCCL when the job runs on CUDA, gloo on the CPU; each rank takes the GPU ``LOCAL_RANK``.
    """
    if not launched_by_torchrun() or not dist.is_available():
        return current()
    if dist.is_initialized():
        return current()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and str(device) not in ("cpu",) and not str(device).startswith("cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
    return current()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun, so ranks on one node use different GPUs."""
    d = current()
    if device.type == "cuda" and d.active and device.index is None:
        return torch.device("cuda", d.local_rank)
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().active:
        dist.barrier()


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    return seed + _SEED_STRIDE * (rank + 1) + 7919 * epoch


def global_batch_size(batch_size: int, n: int, step: int) -> int:
    """Size of the ``step``-th global batch of an epoch over ``n`` samples (the last one may be short)."""
    return max(0, min(batch_size, n - step * batch_size))


def sync_gradients(params: Sequence[nn.Parameter], local_n: int, global_n: int) -> None:
    """Gradient of the mean loss over the global batch: Σ_r (n_r / N) g_r, in one flattened all-reduce.

    A parameter with a gradient on any rank gets one everywhere (zeros where it was unused locally);
    one without a gradient anywhere keeps ``None``, exactly as in a single process.
    """
    d = current()
    if not d.active:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has)
    used = [p for p, h in zip(params, has.tolist()) if h]
    if not used:
        return
    weight = local_n / max(global_n, 1)
    flat = torch.cat(
        [
            (p.grad.detach().float().flatten() * weight)
            if p.grad is not None
            else torch.zeros(p.numel(), device=device)
            for p in used
        ]
    )
    dist.all_reduce(flat)
    offset = 0
    for p in used:
        part = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        if p.grad is None:
            p.grad = part.clone()
        else:
            p.grad.copy_(part)


def broadcast_state(module: nn.Module, src: int = 0, buffers_only: bool = False) -> None:
    """Give every rank ``src``'s buffers (BatchNorm running statistics) and, unless ``buffers_only``, parameters."""
    if not current().active:
        return
    tensors = list(module.buffers()) + ([] if buffers_only else list(module.parameters()))
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src)


def all_sum(values: Iterable[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sum over ranks of a list of numbers (float64 on the wire, so counts stay exact)."""
    values = list(values)
    if not current().active:
        return values
    backend_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order."""
    d = current()
    if not d.active:
        return [value]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, value)
    return out


def mine(step: int) -> bool:
    """Whether the ``step``-th evaluation batch belongs to this rank (round robin)."""
    d = current()
    return not d.active or step % d.world_size == d.rank


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    if device.type != "cuda":
        raise ValueError(
            "sync_batchnorm needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
            "leave it off on the CPU (per-process statistics, as the reference)"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


__all__ = [
    "Dist",
    "current",
    "launched_by_torchrun",
    "init_from_env",
    "local_device",
    "shutdown",
    "barrier",
    "rank_seed",
    "shard_slice",
    "global_batch_size",
    "sync_gradients",
    "broadcast_state",
    "all_sum",
    "all_gather",
    "mine",
    "convert_sync_batchnorm",
]
