"""The one training loop shared by every defense, with caching and epoch-level resume.

Over 400 lines as one module: resume, torchrun sharding, per-epoch seeding and the non-finite guards are the same
loop, and splitting it would scatter the state they share."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import filelock
import torch

from ..data.base import InMemoryDataset
from ..defenses import Defense, TrainConfig, TrainContext
from ..defenses.base import add_input_noise, key_dict, lr_factor, make_optimizer
from ..io import atomic_write_json, file_lock
from ..models import MultiModalNet
from ..progress import StepLog, progress_bar
from . import distributed
from .checkpoints import (
    CheckpointKey,
    clear_resume,
    load_resume,
    load_stage,
    non_finite_tensors,
    save_resume,
    save_stage,
)
from .environment import machine_provenance

log = logging.getLogger(__name__)


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; anything else is passed to torch.device."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for, but no CUDA device is available; use the CPU (--device cpu, device='cpu')"
        )
    return chosen


@dataclass
class TrainedModel:
    model: MultiModalNet
    defense: Defense
    train_config: TrainConfig
    key: CheckpointKey
    directory: Path
    sha256: str
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    cached: bool = False
    seconds: float = 0.0
    stage1_cached: bool = False  # stage 1 came from its checkpoint; only the post-training stages ran

    @property
    def status(self) -> str:
        """What training did, for the command line: reused, finished from stage 1, or trained."""
        if self.cached:
            return "reused cached checkpoint"
        if self.stage1_cached:
            return f"stage 1 reused from its checkpoint, post-training in {self.seconds:.1f} s"
        return f"trained in {self.seconds:.1f} s"


def _build(
    defense: Defense, dataset: InMemoryDataset, train_cfg: TrainConfig, seed: int, device: torch.device
) -> MultiModalNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = defense.build_model(dataset, train_cfg)
    return model.to(device)


def speed_setup(model: MultiModalNet, cfg: TrainConfig) -> MultiModalNet:
    """channels-last weights (4-D convs; 5-D get channels_last_3d) and in-place ``torch.compile`` of each
    encoder (in place, so parameter names and checkpoints are unchanged)."""
    if cfg.channels_last:
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() in (4, 5):
                    fmt = torch.channels_last if param.dim() == 4 else torch.channels_last_3d
                    param.data = param.data.contiguous(memory_format=fmt)
    if cfg.compile:
        for encoder in model.encoders.values():
            encoder.compile()
    return model


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler | None:
    """StepLR exactly as before for the plain step schedule; a per-epoch LambdaLR otherwise."""
    if cfg.lr_schedule == "step" and cfg.warmup_epochs == 0:
        return torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step, cfg.lr_gamma) if cfg.lr_step > 0 else None
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: lr_factor(cfg, epoch))


def model_dtype(model: torch.nn.Module) -> str:
    """The floating dtype of a model's parameters (``float32``), as rows and checkpoint configs record it."""
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.is_floating_point()})
    return "+".join(dtypes) or "none"


def provenance(device: torch.device, model: torch.nn.Module) -> dict[str, object]:
    """What a bit-for-bit rerun needs besides the checkpoint key: torch version, device, dtype and the
    intra-op thread count (float reductions are ordered by it on the CPU; docs/design.md §8), and what explains
    a difference when one of them changes (CPU capability, torch's build, the CPU or GPU model:
    ``bench.environment``)."""
    return {
        **machine_provenance(device),
        "device": str(device),
        "dtype": model_dtype(model),
        "interop_threads": torch.get_num_interop_threads(),
    }


def record_provenance(directory: Path, stage: str, info: dict[str, object]) -> None:
    """Add ``info`` as ``provenance.<stage>`` to the checkpoint's config.json (atomically; outside the key)."""
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(config, dict):
        config.setdefault("provenance", {})[stage] = info
        atomic_write_json(path, config)


@contextlib.contextmanager
def checkpoint_lock(directory: Path) -> Iterator[None]:
    """Hold the checkpoint folder's lock (``.train.lock``) so that two processes (shards, cluster jobs on a
    shared filesystem) never train one model at once: the second waits, then loads what the first saved.
    Under torchrun rank 0 holds it for the group."""
    world = distributed.current()
    lock = file_lock(directory / "train") if world.main else None
    if lock is not None:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            log.info("waiting for another process training %s", directory)
            lock.acquire()
    try:
        distributed.barrier()
        yield
    finally:
        if lock is not None:
            lock.release()


def train(
    defense: Defense,
    dataset: InMemoryDataset,
    train_cfg: TrainConfig,
    *,
    seed: int = 0,
    root: Path,
    device: str | torch.device = "auto",
    progress: bool = True,
    force: bool = False,
    sync_batchnorm: bool = False,
) -> TrainedModel:
    """Train ``defense`` on ``dataset`` (or load the cached result) under the checkpoint folder's lock."""
    with contextlib.ExitStack() as locks:
        return _train(
            defense,
            dataset,
            train_cfg,
            seed=seed,
            root=root,
            device=device,
            progress=progress,
            force=force,
            sync_batchnorm=sync_batchnorm,
            locks=locks,
        )


def _train(
    defense: Defense,
    dataset: InMemoryDataset,
    train_cfg: TrainConfig,
    *,
    seed: int = 0,
    root: Path,
    device: str | torch.device = "auto",
    progress: bool = True,
    force: bool = False,
    sync_batchnorm: bool = False,
    locks: contextlib.ExitStack,
) -> TrainedModel:
    """Train ``defense`` on ``dataset`` (or load the cached result) and return the final model.

    Stage 1 (the shared loop) is checkpointed as ``stage1``; post-training stages (CRMT step 2)
    then produce ``final``. An interrupted stage 1 resumes from the last finished epoch. Under
    ``torchrun`` stage 1 is data-parallel (``bench.distributed``); the world size (and
    ``sync_batchnorm``) then join the checkpoint key, since per-process BatchNorm statistics and
    per-rank randomness make the model depend on them.
    """
    dev = distributed.local_device(select_device(device))
    world = distributed.current()
    train_dict = key_dict(train_cfg)
    if world.active:
        train_dict = {**train_dict, "world_size": world.world_size, "sync_batchnorm": bool(sync_batchnorm)}
    elif sync_batchnorm:
        raise ValueError("sync_batchnorm only applies to a distributed run (launch with torchrun --nproc-per-node N)")
    key = CheckpointKey(dataset.name, dataset.config, defense.name, defense.config_dict(), train_dict, seed)
    directory = key.directory(root)
    locks.enter_context(checkpoint_lock(directory))
    model = speed_setup(_build(defense, dataset, train_cfg, seed, dev), train_cfg)
    start_time = time.perf_counter()
    if not force:
        final = load_stage(directory, "final", key, model)
        if final is not None:
            state, extra, digest = final
            model.load_state_dict(state)
            model.eval()
            log.info(
                "reusing the checkpoint of %s (seed %d) in %s (sha256 %s…)", defense.name, seed, directory, digest[:12]
            )
            return TrainedModel(model, defense, train_cfg, key, directory, digest, extra, cached=True)

    gen = torch.Generator().manual_seed(seed)
    ctx = TrainContext(dataset=dataset, train=train_cfg, device=dev, generator=gen, progress=progress and world.main)
    stage1 = None if force else load_stage(directory, "stage1", key, model)
    if stage1 is not None:
        model.load_state_dict(stage1[0])
    else:
        trained = model
        if world.active and sync_batchnorm:
            trained = distributed.convert_sync_batchnorm(model, dev)
        _train_stage1(defense, trained, ctx, directory, key, resume=not force, seed=seed)
        if trained is not model:  # SyncBatchNorm shares parameters and buffers with the original modules
            model.load_state_dict(trained.state_dict())
        if world.main:
            save_stage(directory, "stage1", model, {}, key)
            record_provenance(directory, "stage1", provenance(dev, model))
            clear_resume(directory)
        distributed.barrier()
    ctx.state.clear()
    gen.manual_seed(seed + 1)  # post-training stages draw the same numbers whether stage 1 was cached or not
    if world.active:
        # later stages run on rank 0 (they have their own loops); the other ranks load what it wrote
        if world.main:
            extra = defense.post_train(model, ctx)
            save_stage(directory, "final", model, extra, key)
            record_provenance(directory, "final", provenance(dev, model))
        distributed.barrier()
        state, extra, digest = load_stage(directory, "final", key)
        model.load_state_dict(state)
    else:
        extra = defense.post_train(model, ctx)
        digest = save_stage(directory, "final", model, extra, key)
        record_provenance(directory, "final", provenance(dev, model))
    model.eval()
    seconds = time.perf_counter() - start_time
    if stage1 is not None:  # a checkpoint with a valid stage 1 but no valid final stage (interrupted or damaged)
        log.info(
            "finished %s (seed %d) from its cached stage-1 checkpoint: post-training stages in %.1f s; checkpoint %s",
            defense.name,
            seed,
            seconds,
            directory,
        )
    else:
        log.info("trained %s (seed %d) in %.1f s; checkpoint %s", defense.name, seed, seconds, directory)
    return TrainedModel(
        model,
        defense,
        train_cfg,
        key,
        directory,
        digest,
        extra,
        cached=False,
        seconds=seconds,
        stage1_cached=stage1 is not None,
    )


def check_finite_epoch(
    model: torch.nn.Module, finite: list[tuple[int, torch.Tensor]], epoch: int, cfg: TrainConfig, name: str
) -> None:
    """Stop a diverged training at the end of the epoch (one device synchronisation), before anything of it is
    saved: ``finite`` holds (step, whether the loss was finite) for this rank's steps. Under torchrun every rank
    decides on the sum of every rank's findings, so they stop together."""
    steps = [step for step, _ in finite]
    ok = torch.stack([flag for _, flag in finite]).cpu().tolist() if finite else []
    bad_steps = [step for step, good in zip(steps, ok) if not good]
    bad_weights = non_finite_tensors(model.state_dict())
    n_bad_steps, n_bad_weights = distributed.all_sum([len(bad_steps), len(bad_weights)])
    hint = f"lower the learning rate (lr is {cfg.lr:g}; --set lr=...) or check the data; no checkpoint was written"
    if n_bad_steps:
        where = f"step {bad_steps[0] + 1}" if bad_steps else "a step of another rank"
        raise ValueError(
            f"training {name} diverged: the loss is NaN or inf at epoch {epoch + 1} of {cfg.epochs}, "
            f"{where} ({int(n_bad_steps)} such steps in the epoch); {hint}"
        )
    if n_bad_weights:
        listed = ", ".join(bad_weights[:3]) + (" and more" if len(bad_weights) > 3 else "")
        raise ValueError(
            f"training {name} diverged: after epoch {epoch + 1} of {cfg.epochs} the weights hold NaN or "
            f"inf ({listed or 'on another rank'}); {hint}"
        )


def _train_stage1(
    defense: Defense,
    model: MultiModalNet,
    ctx: TrainContext,
    directory: Path,
    key: CheckpointKey,
    resume: bool,
    seed: int = 0,
) -> None:
    cfg = ctx.train
    world = distributed.current()
    opt = make_optimizer(model.parameters(), cfg)
    sched = _scheduler(opt, cfg)
    # One process: one generator for data order and the defense's draws (as always). Several: the data
    # order is shared by every rank, the defense's draws are per rank (reseeded each epoch).
    order_gen = torch.Generator().manual_seed(seed) if world.active else ctx.generator
    first_epoch = 0
    state = load_resume(directory) if resume else None
    if state is not None and state.get("key") == key.digest:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        ctx.generator.set_state(state["generator"])
        if world.active:
            order_gen.set_state(state["order_generator"])
        ctx.state.update(state.get("defense_state", {}))
        first_epoch = state["epoch"] + 1
        log.info("resuming %s from epoch %d", key.defense, first_epoch)
    elif state is not None:
        log.warning(
            "ignoring %s/resume.safetensors: it was saved for another configuration or suite version; "
            "training %s from epoch 0",
            directory,
            key.defense,
        )
    params = [p for p in model.parameters()]
    bf16 = cfg.precision == "bf16"
    split = defense.training_split(ctx.dataset.train, ctx)
    noise = cfg.noise_sigma
    unknown = sorted(set(noise) - {sp.name for sp in ctx.dataset.specs})
    if unknown:
        raise ValueError(
            f"noise_sigma names unknown modality {', '.join(unknown)}; valid: "
            f"{', '.join(sp.name for sp in ctx.dataset.specs)}"
        )
    noise_gen = torch.Generator(device=ctx.device) if noise else None
    n_train = len(split)
    # one tick per optimizer step (a long epoch shows progress); the postfix names the epoch and its mean loss
    per_epoch = -(-n_train // cfg.batch_size) if n_train else 0
    bar = progress_bar(
        desc=f"train {defense.name}",
        enabled=ctx.progress,
        total=cfg.epochs * per_epoch,
        initial=first_epoch * per_epoch,
        unit="batch",
        leave=False,
    )
    epochs_log = StepLog(f"train {defense.name}", cfg.epochs, unit="epoch", enabled=ctx.progress, done=first_epoch)
    for epoch in range(first_epoch, cfg.epochs):
        ctx.epoch = epoch
        if world.active:
            ctx.generator.manual_seed(distributed.rank_seed(seed, world.rank, epoch))
        model.train()
        defense.on_epoch_start(model, ctx)
        model.train()
        total = torch.zeros((), device=ctx.device)
        steps = 0
        finite: list[tuple[int, torch.Tensor]] = []  # read once per epoch: no device synchronisation per step
        if (
            noise_gen is not None
        ):  # Gaussian augmentation: seeded per (seed, rank, epoch), so a resumed run draws the same
            noise_gen.manual_seed(distributed.rank_seed(seed + 1_000_003, world.rank if world.active else 0, epoch))
        for step, (batch, labels) in enumerate(
            split.batches(cfg.batch_size, shuffle=True, generator=order_gen, device=ctx.device, shard=world.shard)
        ):
            local_n = labels.shape[0]
            if local_n:  # the loss first: attacks inside it may leave parameter gradients, zeroed below
                if noise_gen is not None:
                    batch = add_input_noise(batch, noise, noise_gen)
                with torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = defense.loss(model, batch, labels, ctx)
                loss = loss.float()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                defense.after_backward(model, ctx)
                total += loss.detach()
                finite.append((step, torch.isfinite(loss.detach())))
            else:
                opt.zero_grad(set_to_none=True)
            if world.active:
                distributed.sync_gradients(
                    params, local_n, distributed.global_batch_size(cfg.batch_size, n_train, step)
                )
            opt.step()
            steps += 1
            ctx.step += 1
            bar.update(1)
        if sched is not None:
            sched.step()
        if world.active:
            distributed.broadcast_state(model, buffers_only=True)  # rank 0's BatchNorm running statistics
        check_finite_epoch(model, finite, epoch, cfg, defense.name)
        mean_loss = (total / max(steps, 1)).item()
        bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{mean_loss:.3f}")
        epochs_log.step(detail=f"loss {mean_loss:.3f}")  # where no bar is drawn (a log file): one line per epoch
        if world.main:
            save_resume(
                directory,
                {
                    "key": key.digest,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "generator": ctx.generator.get_state(),
                    "defense_state": dict(ctx.state),
                    **({"order_generator": order_gen.get_state()} if world.active else {}),
                },
            )
        distributed.barrier()
    bar.close()
