"""The one training loop shared by every defense, with caching and epoch-level resume."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.base import InMemoryDataset
from ..defenses import Defense, TrainConfig, TrainContext
from ..defenses.base import key_dict, lr_factor, make_optimizer
from ..models import MultiModalNet
from . import distributed
from .checkpoints import (CheckpointKey, clear_resume, load_resume, load_stage, save_resume,
                          save_stage)

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
        raise ValueError("device 'cuda' asked for, but no CUDA device is available; use --device cpu")
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


def _build(defense: Defense, dataset: InMemoryDataset, train_cfg: TrainConfig, seed: int,
           device: torch.device) -> MultiModalNet:
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


def train(defense: Defense, dataset: InMemoryDataset, train_cfg: TrainConfig, *, seed: int = 0,
          root: Path, device: str | torch.device = "auto", progress: bool = True,
          force: bool = False, sync_batchnorm: bool = False) -> TrainedModel:
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
    model = speed_setup(_build(defense, dataset, train_cfg, seed, dev), train_cfg)
    start_time = time.perf_counter()
    if not force:
        final = load_stage(directory, "final")
        if final is not None:
            state, extra, digest = final
            model.load_state_dict(state)
            model.eval()
            return TrainedModel(model, defense, train_cfg, key, directory, digest, extra, cached=True)

    gen = torch.Generator().manual_seed(seed)
    ctx = TrainContext(dataset=dataset, train=train_cfg, device=dev, generator=gen, progress=progress and world.main)
    stage1 = None if force else load_stage(directory, "stage1")
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
            clear_resume(directory)
        distributed.barrier()
    ctx.state.clear()
    gen.manual_seed(seed + 1)  # post-training stages draw the same numbers whether stage 1 was cached or not
    if world.active:
        # later stages run on rank 0 (they have their own loops); the other ranks load what it wrote
        if world.main:
            extra = defense.post_train(model, ctx)
            save_stage(directory, "final", model, extra, key)
        distributed.barrier()
        state, extra, digest = load_stage(directory, "final")
        model.load_state_dict(state)
    else:
        extra = defense.post_train(model, ctx)
        digest = save_stage(directory, "final", model, extra, key)
    model.eval()
    return TrainedModel(model, defense, train_cfg, key, directory, digest, extra, cached=False,
                        seconds=time.perf_counter() - start_time)


def _train_stage1(defense: Defense, model: MultiModalNet, ctx: TrainContext, directory: Path,
                  key: CheckpointKey, resume: bool, seed: int = 0) -> None:
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
        log.warning("ignoring %s/resume.pt: it was saved for another configuration or suite version; "
                    "training %s from epoch 0", directory, key.defense)
    params = [p for p in model.parameters()]
    bf16 = cfg.precision == "bf16"
    split = defense.training_split(ctx.dataset.train, ctx)
    n_train = len(split)
    bar = tqdm(range(first_epoch, cfg.epochs), desc=f"train {defense.name}", disable=not ctx.progress,
               initial=first_epoch, total=cfg.epochs, leave=False)
    for epoch in bar:
        ctx.epoch = epoch
        if world.active:
            ctx.generator.manual_seed(distributed.rank_seed(seed, world.rank, epoch))
        model.train()
        defense.on_epoch_start(model, ctx)
        model.train()
        total = torch.zeros((), device=ctx.device)
        steps = 0
        for step, (batch, labels) in enumerate(split.batches(
                cfg.batch_size, shuffle=True, generator=order_gen, device=ctx.device, shard=world.shard)):
            local_n = labels.shape[0]
            if local_n:  # the loss first: attacks inside it may leave parameter gradients, zeroed below
                with torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = defense.loss(model, batch, labels, ctx)
                loss = loss.float()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                defense.after_backward(model, ctx)
                total += loss.detach()
            else:
                opt.zero_grad(set_to_none=True)
            if world.active:
                distributed.sync_gradients(params, local_n, distributed.global_batch_size(cfg.batch_size, n_train,
                                                                                          step))
            opt.step()
            steps += 1
            ctx.step += 1
        if sched is not None:
            sched.step()
        if world.active:
            distributed.broadcast_state(model, buffers_only=True)  # rank 0's BatchNorm running statistics
        bar.set_postfix(loss=f"{(total / max(steps, 1)).item():.3f}")
        if world.main:
            save_resume(directory, {"key": key.digest, "epoch": epoch, "model": model.state_dict(),
                                    "optimizer": opt.state_dict(),
                                    "scheduler": sched.state_dict() if sched is not None else None,
                                    "generator": ctx.generator.get_state(), "defense_state": dict(ctx.state),
                                    **({"order_generator": order_gen.get_state()} if world.active else {})})
        distributed.barrier()
