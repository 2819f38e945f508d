"""Up-front time estimates of the public API's long calls: one timed forward-backward pass of the first batch,
times how many such passes the call makes per sample, times the samples. A call expected to take over a minute
says so, with the remedy, before it starts (the estimate is also returned, for tests and callers)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..bench.busy_cores import warn_api_busy_cores

log = logging.getLogger("mmrobust_bench.plug")

ANNOUNCE_SECONDS = 60.0  # a call expected to take longer says so before it starts
# Library overhead beyond the model's own passes (FAB's projections, Square's bookkeeping): the ensemble's CPU time
# over (passes × timed pass) was 1.3-3.6 on synthav's JT model per threat set (benchmarks/autoattack_cost.py).
ENSEMBLE_OVERHEAD = 3.0


def timed_pass(model: nn.Module, batch: Mapping[str, Tensor]) -> tuple[float, int]:
    """(seconds of one forward-backward pass (gradient w.r.t. the inputs) per sample of ``batch``, the classes)."""
    inputs = {m: x.detach().clone().requires_grad_(x.is_floating_point()) for m, x in batch.items()}
    n = max(1, int(next(iter(inputs.values())).shape[0]))
    start = time.perf_counter()
    out = model(inputs)
    logits = out.logits if hasattr(out, "logits") else out
    wanted = [x for x in inputs.values() if x.requires_grad]
    if wanted:  # gradients w.r.t. the inputs only: the model's own .grad stays untouched
        torch.autograd.grad(logits.float().max(1).values.sum(), wanted, allow_unused=True)
    return (time.perf_counter() - start) / n, int(logits.shape[1])


def loader_samples(loader: Iterable[Any], first_batch: int) -> int | None:
    """How many samples ``loader`` yields, where it says (a DataLoader's dataset, or its length × batch)."""
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    if hasattr(loader, "__len__"):
        return len(loader) * first_batch  # type: ignore[arg-type]
    return None


def warn_busy_cores(call: str, device: torch.device) -> None:
    """Warn (once per process and thread count) when this CPU call's torch threads would share busy cores: spinning
    OpenMP threads make it tens of times slower (``bench.busy_cores``). The count is the caller's to change."""
    warn_api_busy_cores(call, device.type == "cpu", torch.get_num_threads(), log)


def announce(
    call: str, estimate: float, what: str, remedy: str, *, bound: bool = True, logger: logging.Logger = log
) -> float:
    """Warn (on ``logger``) before a call expected to take over :data:`ANNOUNCE_SECONDS`; ``bound``: the estimate
    is an upper bound ("up to about"), else a point estimate ("about"). Returns ``estimate``."""
    if estimate > ANNOUNCE_SECONDS:
        size = "up to about" if bound else "about"
        logger.warning("%s: %s %.0f min for %s on this machine; %s", call, size, estimate / 60, what, remedy)
    return estimate


def autoattack_estimate(
    model: nn.Module, batch: Mapping[str, Tensor], attacks: Iterable[Any], samples: int | None, radii: int
) -> float | None:
    """Upper bound on the seconds of ``evaluate`` with the ensemble (every member on every sample), or None when
    no attack of ``attacks`` is the ensemble or the loader's size is unknown."""
    ensembles = [a for a in attacks if hasattr(a, "gradient_passes")]
    if not ensembles or samples is None:
        return None
    with torch.enable_grad():
        per_pass, num_classes = timed_pass(model, batch)
    passes = float(sum(a.gradient_passes(num_classes) for a in ensembles))
    return per_pass * ENSEMBLE_OVERHEAD * passes * samples * radii


def certificates_estimate(
    model: nn.Module, batch: Mapping[str, Tensor], train: int | None, test: int | None, check: Any
) -> float | None:
    """Upper bound on the seconds of ``certificates``: a Jacobian (one pass per class and modality) of every train
    and test sample, then the honesty check's passes on every test sample for each certificate (Eq. 5 and one
    Eq. 7 per modality); None when a loader's size is unknown."""
    if train is None or test is None:
        return None
    with torch.enable_grad():
        per_pass, classes = timed_pass(model, batch)
    modalities = len(batch)
    passes = (train + test) * classes * modalities
    if check.enabled:
        targets = classes - 1 if check.targeted_classes < 0 else min(check.targeted_classes, classes - 1)
        per_sample = check.steps * (1 + check.restarts) * (1 + (targets if check.targeted else 0))
        passes += test * per_sample * (modalities + 1)
    return per_pass * passes


__all__ = [
    "ANNOUNCE_SECONDS",
    "announce",
    "autoattack_estimate",
    "certificates_estimate",
    "loader_samples",
    "timed_pass",
]
