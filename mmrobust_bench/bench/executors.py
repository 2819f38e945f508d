"""Where a sweep's (defense, seed) units run: in this process (``local``) or as tasks on Ray (``ray``).

Both write through the locked result store (``bench.results``) and train each checkpoint under its
folder's lock (``bench.train.checkpoint_lock``), so they can also run side by side, against one root,
with ``sweep --shard I/N`` processes; and both are resumable the same way: finished cells are skipped.

Ray (the optional extra ``[ray]``): every unit's training is a task; when it finishes, each of the
unit's cells and its certificate become tasks of their own, so cells of one model spread over the
workers. A local Ray cluster is started by default (``workers`` workers); ``address`` joins an
existing one (``ray start --head`` on a node, ``auto`` inside a Ray job). Each task sets
``torch.set_num_threads`` to its share of the cores (the sweep's pinned ``threads`` if any) and
asks Ray for that many CPUs, so concurrent workers never oversubscribe them. ``torchrun`` stays the
tool for data-parallel training of one model; the two are not combined.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..progress import progress_bar
from . import distributed
from .result_readers import read_rows
from .result_rows import done_cells
from .sweep_config import DefenseEntry
from .sweep_plan import SweepPlan, unit_cells
from .sweep_units import SweepOutcome, certify_unit, earlier_cell_keys, run_cell, run_unit, set_threads, train_unit
from .train import TrainedModel, select_device

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
Unit = tuple[DefenseEntry, int]


def run_units(
    executor: str,
    plan: SweepPlan,
    units: Sequence[Unit],
    *,
    root: Path,
    results_path: Path,
    device: str,
    progress: bool,
    command: str,
    sync_batchnorm: bool = False,
    address: str | None = None,
    workers: int | None = None,
) -> SweepOutcome:
    """Run ``units`` of ``plan`` on ``executor`` (``local`` or ``ray``) and add up what they did."""
    if executor == "local":
        if address is not None or workers is not None:
            raise ValueError("--address and --workers apply to --executor ray; drop them or add --executor ray")
        return run_local(
            plan,
            units,
            root=root,
            results_path=results_path,
            device=device,
            progress=progress,
            command=command,
            sync_batchnorm=sync_batchnorm,
        )
    if executor == "ray":
        if sync_batchnorm or distributed.current().active:
            raise ValueError("--executor ray starts its own workers; launch it without torchrun and --sync-bn")
        return run_ray(
            plan,
            units,
            root=root,
            results_path=results_path,
            device=device,
            progress=progress,
            command=command,
            address=address,
            workers=workers,
        )
    raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")


def run_local(
    plan: SweepPlan,
    units: Sequence[Unit],
    *,
    root: Path,
    results_path: Path,
    device: str,
    progress: bool,
    command: str,
    sync_batchnorm: bool = False,
) -> SweepOutcome:
    """The units one after the other in this process (every rank of it under torchrun)."""
    outcome = SweepOutcome(results_path)
    per_model = len(unit_cells(plan)) + (1 if plan.certify else 0)
    main_rank = distributed.current().main
    # one step per cell and certificate: a bar on a terminal, else one log line each (progress.StepLog)
    bar = progress_bar(total=len(units) * per_model, desc="sweep", enabled=progress and main_rank, log_steps="step")
    for entry, seed in units:
        bar.set_postfix_str(f"{entry.label} seed {seed}")
        outcome.add(
            run_unit(
                plan,
                entry,
                seed,
                root=root,
                results_path=results_path,
                device=device,
                progress=progress,
                command=command,
                sync_batchnorm=sync_batchnorm,
                bar=bar,
            )
        )
    bar.close()
    return outcome


# ------------------------------------------------------------------------------------------------ Ray

# the models a Ray worker process loaded last, so that consecutive cell tasks of one unit load it once
_LOADED: collections.OrderedDict[tuple, TrainedModel] = collections.OrderedDict()
_LOADED_MAX = 2


def _unit_model(plan: SweepPlan, entry: DefenseEntry, seed: int, root: Path, device: str) -> TrainedModel:
    key = (
        str(root),
        entry.defense,
        entry.label,
        repr(sorted(entry.overrides.items())),
        seed,
        plan.dataset,
        repr(sorted(plan.dataset_options.items())),
        repr(sorted(plan.common_overrides.items())),
        device,
    )
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    trained = train_unit(plan, entry, seed, root=root, device=device)
    _LOADED[key] = trained
    while len(_LOADED) > _LOADED_MAX:
        _LOADED.popitem(last=False)
    return trained


def unit_task(
    kind: str,
    plan: SweepPlan,
    entry: DefenseEntry,
    seed: int,
    cell_index: int | None,
    root: str,
    results_path: str,
    device: str,
    threads: int,
    command: str,
) -> dict[str, int]:
    """One Ray task: ``train`` a unit's model, evaluate its cell ``cell_index``, or ``certify`` it."""
    set_threads(threads)
    root_path, results = Path(root), Path(results_path)
    trained = _unit_model(plan, entry, seed, root_path, device)
    if kind == "train":
        return {"models": 1}
    dev = select_device(device)
    if kind == "certify":
        return {"certified": certify_unit(plan, trained, entry, seed, root=root_path, dev=dev, command=command)}
    index = int(cell_index)  # type: ignore[arg-type]
    evaluated, skipped = run_cell(
        plan,
        trained,
        entry,
        seed,
        unit_cells(plan)[index],
        dev=dev,
        done=done_cells(read_rows(results)),
        results_path=results,
        claimed=earlier_cell_keys(plan, trained, entry, seed, index, dev),
    )
    return {"evaluated_rows": evaluated, "skipped_rows": skipped}


def ray_threads(plan: SweepPlan, workers: int, cpus: int | None = None) -> int:
    """Intra-op threads per Ray task: the sweep's pinned count, else an equal share of the cores."""
    if plan.threads:
        return int(plan.threads)
    return max(1, (cpus or os.cpu_count() or 1) // max(workers, 1))


def run_ray(
    plan: SweepPlan,
    units: Sequence[Unit],
    *,
    root: Path,
    results_path: Path,
    device: str,
    progress: bool,
    command: str,
    address: str | None = None,
    workers: int | None = None,
) -> SweepOutcome:
    """The units as Ray tasks: trainings first, then each trained unit's cells and certificate."""
    try:
        import ray  # here: Ray is the optional extra [ray]
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'mmrobust-bench[ray]' (or pip install ray)") from None
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {workers}")
    gpu = select_device(device).type == "cuda"
    started = not ray.is_initialized()
    if started:
        if address is None:
            count = workers or os.cpu_count() or 1
            threads = ray_threads(plan, count)
            ray.init(
                num_cpus=count * threads,
                num_gpus=torch.cuda.device_count() if gpu else 0,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        count = workers or max(1, cluster_cpus // (plan.threads or 1))
        threads = ray_threads(plan, count, cluster_cpus)
        remote = ray.remote(unit_task).options(num_cpus=threads, num_gpus=1 if gpu else 0, max_retries=0)
        args = dict(
            root=str(root),
            results_path=str(results_path),
            device="cuda" if gpu else device,
            threads=threads,
            command=command,
        )
        return _drive(ray, remote, plan, units, args, count, results_path, progress)
    finally:
        if started:
            ray.shutdown()


def _drive(
    ray: Any,
    remote: Any,
    plan: SweepPlan,
    units: Sequence[Unit],
    args: dict[str, Any],
    in_flight: int,
    results_path: Path,
    progress: bool,
) -> SweepOutcome:
    """Submit tasks, at most ``in_flight`` at a time, a trained unit's cells ahead of further trainings."""
    outcome = SweepOutcome(results_path)
    cells = len(unit_cells(plan))
    per_model = 1 + cells + (1 if plan.certify else 0)
    pending: collections.deque = collections.deque(("train", entry, seed, None) for entry, seed in units)
    running: dict[Any, tuple] = {}
    bar = progress_bar(total=len(units) * per_model, desc="sweep (ray)", enabled=progress, log_steps="task")
    try:
        while pending or running:
            while pending and len(running) < in_flight:
                kind, entry, seed, index = pending.popleft()
                ref = remote.remote(kind, plan, entry, seed, index, **args)
                running[ref] = (kind, entry, seed, index)
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                kind, entry, seed, _index = running.pop(ref)
                try:
                    done = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, Exception):
                        raise cause from None
                    raise
                for name, value in done.items():
                    setattr(outcome, name, getattr(outcome, name) + value)
                bar.set_postfix_str(f"{entry.label} seed {seed} {kind}", refresh=False)  # the task the step logs
                bar.update(1)
                if kind == "train":
                    follow = [("cell", entry, seed, i) for i in range(cells)]
                    if plan.certify is not None:
                        follow.append(("certify", entry, seed, None))
                    pending.extendleft(reversed(follow))
    finally:
        bar.close()
        for ref in running:
            ray.cancel(ref, force=True)
    return outcome


__all__ = ["EXECUTORS", "run_units", "run_local", "run_ray", "unit_task", "ray_threads"]
