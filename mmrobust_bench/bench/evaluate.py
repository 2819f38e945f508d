"""Clean and adversarial accuracy of a trained model over an ε grid, as a per-ε sweep or from minimal norms.

:func:`robust_accuracy` is the one attack loop of the suite: ``run``, the sweep and the public API's
``mmr.evaluate`` all measure through it, on a dataset split or on any iterable of ``(batch, labels)`` pairs."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from ..attacks import Attack
from ..contracts import ThreatModel, joint_l2_norm
from ..data.base import Split, TensorSplit
from ..progress import progress_bar
from . import distributed

log = logging.getLogger(__name__)

# What the measuring loops read: a dataset split (batched here, on the device) or any iterable of
# ``(batch, labels)`` pairs already on the device (a user's DataLoader after the public API unpacked it).
Batches = Split | Iterable[tuple[Mapping[str, Tensor], Tensor]]

ATTACK_LOG_SECONDS = 60.0  # where no bar is drawn, a long cell logs its progress (with an ETA) this often
# What ``minimal_norm_curve`` multiplies the largest ε of the grid by to get the attack's radius: the
# library's box then lies well beyond every ε of the grid, and a norm found above the grid no longer matters.
RADIUS_FACTOR = 4.0
MINIMAL_NORM_HINT = (
    "fmn_l2, torchattacks:FAB, torchattacks:DeepFool, torchattacks:CW, art:DeepFool, "
    "art:CarliniL2Method, art:ElasticNet"
)


@dataclass
class Measurement:
    """Robust accuracy at one ε. ``outcomes``: each sample's correctness in split order (kept when asked for:
    the ``any`` threat combines them); ``details``: what the attack reports about itself (``autoattack``: how
    many samples each member broke), written into the rows' ``details`` column."""

    eps: float
    correct: int
    n: int
    seconds: float
    outcomes: Tensor | None = None
    details: dict | None = None
    non_finite: int = 0  # samples whose logits (on the attack's outputs at ε) were NaN or inf: counted wrong, flagged

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.n, 1)


@contextlib.contextmanager
def attack_setting(model: nn.Module, attack: Attack, threat: ThreatModel) -> Iterator[None]:
    """The model as the attack needs it while it is measured: a feature-level missing modality
    (``Missing(level="feature")``) sets the model's ``dropped_features`` and restores it afterwards."""
    drop = getattr(attack, "dropped_features", None)
    names = drop(threat) if callable(drop) else frozenset()
    if not names:
        yield
        return
    if not hasattr(model, "dropped_features"):
        raise ValueError(
            f"{attack.describe()} zeroes encoder features and needs a model with a `dropped_features` "
            f"attribute (MultiModalNet); {type(model).__name__} has none"
        )
    before: frozenset[str] = model.dropped_features  # type: ignore[assignment]  # checked present above
    model.dropped_features = frozenset(before) | frozenset(names)  # type: ignore[assignment]  # a plain attribute
    try:
        yield
    finally:
        model.dropped_features = before  # type: ignore[assignment]


def finite_rows(logits: Tensor) -> Tensor:
    """(B,) True where every logit of the sample is finite."""
    return torch.isfinite(logits).all(1)


def correct_predictions(logits: Tensor, labels: Tensor) -> Tensor:
    """(B,) whether each sample is classified correctly. NaN or inf logits make no prediction (the argmax of
    NaN is class 0, which would count as correct on class 0's samples): such a sample counts as wrong."""
    return (logits.argmax(1) == labels) & finite_rows(logits)


@torch.no_grad()
def clean_accuracy(model: nn.Module, split: TensorSplit, batch_size: int, device: torch.device) -> Measurement:
    """Clean accuracy; samples with non-finite logits count as wrong and in ``non_finite`` (the row's flag)."""
    model.eval()
    start, correct, bad = time.perf_counter(), 0, 0
    for batch, labels in _my_batches(split, batch_size, device):
        logits = model(batch).logits
        correct += int(correct_predictions(logits, labels).sum())
        bad += int((~finite_rows(logits)).sum())
    summed, bad_sum, seconds = distributed.all_sum([correct, bad, time.perf_counter() - start])
    correct, bad = int(summed), int(bad_sum)
    log.info("clean accuracy %.3f on %d samples in %.1f s", correct / max(len(split), 1), len(split), seconds)
    if bad:
        log.warning(
            "the model's logits are not finite (NaN or inf) on %d of %d clean samples: counted wrong and "
            "flagged non_finite (a diverged training or a damaged checkpoint?)",
            int(bad),
            len(split),
        )
    return Measurement(0.0, int(correct), len(split), seconds, non_finite=int(bad))


def _my_batches(split: Split, batch_size: int, device: torch.device) -> Iterator[tuple[dict, Tensor]]:
    """The split's batches, lazily (real datasets stream from disk); under torchrun only this rank's share,
    round robin, each batch exactly as one process would see it (so seeded attacks give identical numbers)."""
    for _step, item in _my_numbered_batches(split, batch_size, device):
        yield item


def _my_numbered_batches(
    split: Split, batch_size: int, device: torch.device
) -> Iterator[tuple[int, tuple[dict, Tensor]]]:
    """:func:`_my_batches` with each batch's index in the whole split (what a cell journal files it under)."""
    for step, item in enumerate(split.batches(batch_size, device=device)):
        if distributed.mine(step):
            yield step, item


def _batch_count(split: Split, batch_size: int) -> int:
    total = math.ceil(len(split) / max(batch_size, 1))
    d = distributed.current()
    return len(range(d.rank, total, d.world_size))


def _stream(
    data: Batches, batch_size: int, device: torch.device
) -> tuple[Iterator[tuple[int, tuple[Mapping[str, Tensor], Tensor]]], int | None]:
    """(this rank's batches with their index in the whole stream, their count or None when unknown): a split is
    batched here (:func:`_my_batches`); an iterable's batches are taken as they come, round robin over ranks under
    torchrun like a split's."""
    if isinstance(data, Split):
        return _my_numbered_batches(data, batch_size, device), _batch_count(data, batch_size)
    return ((step, item) for step, item in enumerate(data) if distributed.mine(step)), None


class BatchJournal(Protocol):
    """Where a cell keeps its finished batches so that a stopped run resumes (``bench.cell_journal``)."""

    restored: int

    def batch(self, step: int, labels: Tensor) -> BatchOutcome | None: ...

    def store_batch(self, step: int, labels: Tensor, outcome: BatchOutcome) -> None: ...


@dataclass
class BatchOutcome:
    """One batch under an attack at every ε of a grid: each sample's correctness (R, B), the seconds per ε, what the
    attack reported per ε (``take_breaks``) and how many samples' logits on its outputs were NaN or inf per ε."""

    hits: Tensor
    seconds: list[float]
    details: list[dict | None]
    non_finite: list[int]


def attack_batch(
    model: nn.Module,
    attack: Attack,
    threat: ThreatModel,
    grid: Sequence[float],
    batch: Mapping[str, Tensor],
    labels: Tensor,
) -> BatchOutcome:
    """One batch under ``attack`` at every ε of ``grid`` (:class:`BatchOutcome`). Attacks that take a per-sample ε
    run the grid as one batch of R copies, which gives exactly the numbers of R separate runs. The body of
    :func:`robust_accuracy`'s loop."""
    r, b = len(grid), labels.shape[0]
    take = getattr(attack, "take_breaks", None)
    if callable(take):
        take()  # what earlier calls (validity checks) left in the counter is not this batch's
    if attack.per_sample_eps and r > 1:
        rep = {m: x.repeat((r,) + (1,) * (x.dim() - 1)) for m, x in batch.items()}
        eps = torch.tensor(list(grid), device=labels.device).repeat_interleave(b)
        start = time.perf_counter()
        adv = attack(model, rep, labels.repeat(r), threat, eps)
        with torch.no_grad():
            logits = model(adv).logits
            hits = correct_predictions(logits, labels.repeat(r)).view(r, b)
            bad = (~finite_rows(logits)).view(r, b).sum(1).tolist()
        elapsed = time.perf_counter() - start
        details = take() if callable(take) else None
        return BatchOutcome(hits, [elapsed / r] * r, [details] * r, [int(x) for x in bad])
    rows, seconds, reports, bad = [], [], [], []
    for e in grid:
        start = time.perf_counter()
        adv = attack(model, dict(batch), labels, threat.with_eps(e))
        with torch.no_grad():
            logits = model(adv).logits
            rows.append(correct_predictions(logits, labels))
            bad.append(int((~finite_rows(logits)).sum()))
        seconds.append(time.perf_counter() - start)
        reports.append(take() if callable(take) else None)
    return BatchOutcome(torch.stack(rows), seconds, reports, bad)


def merge_details(total: dict | None, part: dict | None) -> dict | None:
    """Add one batch's attack report to the running one: counts (``breaks``) add up, everything else is kept."""
    if part is None:
        return total
    if total is None:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in part.items()}
    for key, value in part.items():
        if key == "breaks":
            counts = total.setdefault("breaks", {})
            for member, count in value.items():
                counts[member] = counts.get(member, 0) + int(count)
        elif isinstance(value, dict):
            total.setdefault(key, {}).update(value)
        else:
            total.setdefault(key, value)
    return total


def robust_accuracy(
    model: nn.Module,
    split: Batches,
    attack: Attack,
    threat: ThreatModel,
    eps_grid: Sequence[float],
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    journal: BatchJournal | None = None,
) -> list[Measurement]:
    """Accuracy under ``attack`` at every ε of the grid (one entry for unbounded attacks).

    ``split``: a dataset split, batched here by ``batch_size`` on ``device``, or any iterable of ``(batch,
    labels)`` pairs already on the device, attacked as they come (``batch_size`` and ``device`` unused).
    Attacks that take a per-sample ε run the whole grid as one batched computation: each batch
    is repeated R times with the R radii, which gives exactly the numbers of R separate runs (a split is
    batched by ``batch_size // R`` for it).
    Each measurement keeps every sample's correctness (``outcomes``, input order, gathered under torchrun).
    ``journal``: finished batches are read from it instead of attacked again, and each batch attacked is stored in
    it (the sweep's resumable cells; every attack call reseeds, so a batch's outcome is the same either way).
    """
    model.eval()
    grid = [float(e) for e in eps_grid] if attack.norm_bounded else [0.0]
    correct = [0] * len(grid)
    bad = [0] * len(grid)
    seconds = [0.0] * len(grid)
    details: list[dict | None] = [None] * len(grid)
    per_batch: list[Tensor] = []
    batched = attack.per_sample_eps and len(grid) > 1
    step = max(1, batch_size // len(grid)) if batched else batch_size
    batches, count = _stream(split, step, device)
    bar = progress_bar(
        total=None if count is None else count * (1 if batched else len(grid)),
        desc=f"attack {attack.describe()} on {'+'.join(threat.modalities)}",
        enabled=progress,
        unit="batch",
        leave=False,
        log_steps="batch",  # in a log file: a line with the ETA once a minute in a long cell, none in a short one
        log_every=ATTACK_LOG_SECONDS,
    )
    seen = 0
    with attack_setting(model, attack, threat):
        for index, (batch, labels) in batches:
            outcome = journal.batch(index, labels) if journal is not None else None
            if outcome is None:
                outcome = attack_batch(model, attack, threat, grid, batch, labels)
                if journal is not None:
                    journal.store_batch(index, labels, outcome)
            for i in range(len(grid)):
                correct[i] += int(outcome.hits[i].sum())
                bad[i] += outcome.non_finite[i]
                seconds[i] += outcome.seconds[i]
                details[i] = merge_details(details[i], outcome.details[i])
            per_batch.append(outcome.hits.cpu())
            seen += int(labels.shape[0])
            bar.update(1 if batched else len(grid))
    bar.close()
    r = len(grid)
    merged = distributed.all_sum(correct + bad + seconds + [seen])
    correct, bad, seconds = [int(c) for c in merged[:r]], [int(c) for c in merged[r : 2 * r]], merged[2 * r : -1]
    n = len(split) if isinstance(split, Split) else int(merged[-1])
    if distributed.current().active:  # every rank's report, summed from scratch in rank order
        shares, details = distributed.all_gather(details), [None] * len(grid)
        for part in shares:
            details = [merge_details(d, p) for d, p in zip(details, part)]
    per_sample = _in_split_order(per_batch, len(grid))
    resumed = journal.restored if journal is not None else 0
    log.info(
        "%s on %s: %d samples × %d radii in %.1f s%s",
        attack.describe(),
        "+".join(threat.modalities),
        n,
        len(grid),
        sum(seconds),
        f" ({resumed} finished batch{'es' if resumed > 1 else ''} read from a stopped run's journal)"
        if resumed
        else "",
    )
    return [
        Measurement(e, c, n, s, per_sample[i], details[i], non_finite=bad[i])
        for i, (e, c, s) in enumerate(zip(grid, correct, seconds))
    ]


def _in_split_order(per_batch: list[Tensor], radii: int) -> Tensor:
    """(R, N) correctness in split order from this rank's per-batch (R, b) pieces (batch k came from rank k mod W
    under torchrun)."""
    d = distributed.current()
    if d.active:
        shares = distributed.all_gather(per_batch)
        per_batch = [shares[k % d.world_size][k // d.world_size] for k in range(sum(len(x) for x in shares))]
    return torch.cat(per_batch, 1) if per_batch else torch.zeros(radii, 0, dtype=torch.bool)


def perturbation_norm(clean: Mapping[str, Tensor], adv: Mapping[str, Tensor], threat: ThreatModel) -> Tensor:
    """Per-sample size of ``adv - clean`` in the threat's geometry (fp32): the ℓ2, ℓ1 or ℓ0 size over the
    concatenation of the attacked modalities for a joint budget, the largest per-modality size for
    per-modality budgets, and the ℓ∞ norm (the same either way); a sample is inside the ε ball iff it is ≤ ε.
    ℓ0 counts the coordinates that moved."""
    mods = threat.modalities
    delta = {m: (adv[m] - clean[m]).float().flatten(1) for m in mods}
    if threat.norm == "linf":
        return torch.stack([d.abs().amax(1) for d in delta.values()]).amax(0)
    if threat.norm in ("l1", "l0"):
        sizes = torch.stack(
            [d.abs().sum(1) if threat.norm == "l1" else (d != 0).sum(1).float() for d in delta.values()]
        )
        return sizes.sum(0) if threat.joint else sizes.amax(0)
    if threat.joint:
        return joint_l2_norm(delta, mods)
    return torch.stack([d.norm(dim=1) for d in delta.values()]).amax(0)


@dataclass
class MinimalNormCurve:
    """Robust accuracy at every ε of a grid from one minimal-norm run.

    ``norms`` holds, per test sample (in split order), the size of the smallest adversarial perturbation
    found: 0 for samples misclassified without attack, ``inf`` where none was found within ``radius``.
    A sample counts as robust at ε exactly when its norm exceeds ε.
    """

    measurements: list[Measurement]
    norms: Tensor
    radius: float
    seconds: float

    def accuracy_at(self, eps: float) -> float:
        return float((self.norms > eps).sum()) / max(self.norms.numel(), 1)


def minimal_norm_curve(
    model: nn.Module,
    split: TensorSplit,
    attack: Attack,
    threat: ThreatModel,
    eps_grid: Sequence[float],
    batch_size: int,
    device: torch.device,
    *,
    radius: float | None = None,
    progress: bool = False,
) -> MinimalNormCurve:
    """The whole robust-accuracy-vs-ε curve from one run of a minimal-norm attack.

    The attack runs once at ``radius`` (default ``RADIUS_FACTOR`` × the largest ε), so its library box
    lies far beyond the grid; each sample's norm is measured on the returned inputs with the model
    itself (never from the library's own success flags), and robust accuracy at ε is the fraction of
    samples correctly classified whose minimal norm exceeds ε.
    """
    if not getattr(attack, "minimal_norm", False):
        raise ValueError(
            f"attack {attack.describe()} does not search for a minimal adversarial norm, so it gives no "
            f"curve in one run; use one that does ({MINIMAL_NORM_HINT}) or the per-ε sweep"
        )
    grid = [float(e) for e in eps_grid]
    if radius is None:
        radius = RADIUS_FACTOR * max(grid)
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(
            f"the minimal-norm radius must be a finite number > 0, got {radius!r}; give an ε grid with a positive value"
        )
    model.eval()
    wide = threat.with_eps(radius)
    norms, broken = [], []
    start = time.perf_counter()
    with attack_setting(model, attack, threat):
        for batch, labels in progress_bar(
            _my_batches(split, batch_size, device),
            total=_batch_count(split, batch_size),
            unit="batch",
            desc=f"minimal norms {attack.describe()}",
            enabled=progress,
            leave=False,
        ):
            adv = attack(model, batch, labels, wide)
            with torch.no_grad():
                clean_ok = correct_predictions(model(batch).logits, labels)
                adv_logits = model(adv).logits
                still_ok = correct_predictions(adv_logits, labels)
            broken.append((clean_ok & ~finite_rows(adv_logits)).cpu())  # a sample already wrong is not the attack's
            size = perturbation_norm(batch, adv, threat)
            norms.append(
                torch.where(
                    clean_ok, torch.where(still_ok, torch.full_like(size, math.inf), size), torch.zeros_like(size)
                ).cpu()
            )
    seconds = distributed.all_sum([time.perf_counter() - start])[0]
    d = distributed.current()
    if d.active:  # every rank's per-batch norms, back in split order (batch k came from rank k mod W)
        shares, bad_shares = distributed.all_gather(norms), distributed.all_gather(broken)
        order = [(k % d.world_size, k // d.world_size) for k in range(sum(len(x) for x in shares))]
        norms, broken = [shares[r][i] for r, i in order], [bad_shares[r][i] for r, i in order]
    norms_all = torch.cat(norms) if norms else torch.zeros(0)
    broken_all = torch.cat(broken) if broken else torch.zeros(0, dtype=torch.bool)
    # a sample whose logits broke down on its adversarial input counts as misclassified from its norm on
    measurements = [
        Measurement(
            e,
            int((norms_all > e).sum()),
            len(split),
            seconds / len(grid),
            non_finite=int((broken_all & (norms_all <= e)).sum()),
        )
        for e in grid
    ]
    log.info(
        "%s minimal norms on %s: %d samples in %.1f s (radius %g)",
        attack.describe(),
        "+".join(threat.modalities),
        len(split),
        seconds,
        radius,
    )
    return MinimalNormCurve(measurements, norms_all, float(radius), seconds)


__all__ = [
    "Measurement",
    "MinimalNormCurve",
    "attack_setting",
    "attack_batch",
    "BatchOutcome",
    "merge_details",
    "clean_accuracy",
    "correct_predictions",
    "finite_rows",
    "Batches",
    "BatchJournal",
    "robust_accuracy",
    "minimal_norm_curve",
    "perturbation_norm",
    "RADIUS_FACTOR",
]
