"""MSEFM = MinSim + ExFMem (Tian & Xu, CVPR 2021; docs/methods.md §9), as one training run.

Stage A (the shared loop) trains the concat model with CE + λ_s·mean cos(φ^(v), φ^(a)), pushing the
modalities' features apart. Stage B records external feature memories D^(m) from training samples.
Stage C fine-tunes the whole model with every feature replaced by φ̃ = γ D h + (1−γ) φ, h being the
sparse code of φ against D. The memories are buffers of the model and the sparse coding runs in its
forward, so checkpoints hold them and white-box attacks differentiate through the unrolled solver.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..contracts import Batch
from ..data.base import InMemoryDataset
from ..models import MultiModalNet
from ..models.sparse_coding import FORMS, SOLVERS, STOPPING, SparseCodingLayer, check_step, lipschitz_step
from . import DEFENSES
from .base import Defense, TrainConfig, TrainContext, make_optimizer

log = logging.getLogger(__name__)

STEP_RULES = ("lipschitz", "official")
# The reference's hand-tuned ISTA steps for Kinetics-Sounds; tuned to its own feature scales.
OFFICIAL_KS_STEPS = {"v": 2e-6, "a": 5.8e-7}
# How often the solver's stopping test is read on the host, per device type. The codes do not
# depend on it (sparse_coding.StoppingRule); on an accelerator a read every iteration would stall
# the queue up to max_iter times per forward, on the CPU extra iterations would only cost time.
CHECK_EVERY = {"cpu": 1}
ACCELERATOR_CHECK_EVERY = 16
LEGACY_GRADIENT_FORM = "gram"  # the solver's form before gradient_form existed (keys omit it at this value)


def mean_cosine(features: Mapping[str, Tensor]) -> Tensor:
    """mean_i cos(φ^(m)(x_i), φ^(n)(x_i)), averaged over modality pairs (one pair: v and a)."""
    pairs = list(itertools.combinations(features.values(), 2))
    return sum(F.cosine_similarity(p.float(), q.float(), dim=1).mean() for p, q in pairs) / len(pairs)


class ExFMemNet(MultiModalNet, SparseCodingLayer):
    """A multi-modal net whose pooled features go through the external feature memories.

    Until :meth:`set_memories` is called (stage A) it is the plain concat model. The memories,
    their step sizes and the ready flag are buffers, so a checkpoint restores all of them; the
    forward reads Python copies of the steps and the flag (refreshed by :meth:`set_memories` and
    after every ``load_state_dict``), so it never waits for the device to read a buffer.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        head: nn.Module,
        feature_dims: Mapping[str, int],
        memory_size: int,
        *,
        sparsity: float,
        blend: float,
        solver: str,
        max_iter: int,
        tol: float,
        gradient_form: str = "residual",
        stopping: str = "batch",
    ) -> None:
        super().__init__(encoders, head)
        self.sparsity = sparsity
        self.blend = blend
        self.solver = SOLVERS[solver]
        self.max_iter = max_iter
        self.tol = tol
        self.gradient_form = gradient_form
        self.stopping = stopping
        for m in self.modalities:
            self.register_buffer(f"memory_{m}", torch.zeros(feature_dims[m], memory_size))
            self.register_buffer(f"step_{m}", torch.zeros(()))
        self.register_buffer("memory_ready", torch.zeros((), dtype=torch.bool))
        self._refresh_host_copies()
        self.register_load_state_dict_post_hook(ExFMemNet._after_load)

    @staticmethod
    def _after_load(module: ExFMemNet, _incompatible_keys: object) -> None:
        module._refresh_host_copies()

    def _refresh_host_copies(self) -> None:
        self._steps = {m: float(getattr(self, f"step_{m}")) for m in self.modalities}
        self._ready = bool(self.memory_ready)

    def memory(self, modality: str) -> Tensor:
        return getattr(self, f"memory_{modality}")

    def set_memories(self, memories: Mapping[str, Tensor], steps: Mapping[str, float]) -> None:
        """Install D^(m) (d × N) and their ISTA/FISTA steps; a step with α·λ_max > 1 is refused."""
        for m in self.modalities:
            check_step(memories[m], steps[m])
            self.memory(m).copy_(memories[m])
            getattr(self, f"step_{m}").fill_(steps[m])
        self.memory_ready.fill_(True)
        self._refresh_host_copies()

    def recall(self, modality: str, features: Tensor) -> Tensor:
        """φ̃ = γ D h + (1−γ) φ with h the sparse code of φ; in fp32 even under autocast."""
        check_every = CHECK_EVERY.get(features.device.type, ACCELERATOR_CHECK_EVERY)
        with torch.autocast(device_type=features.device.type, enabled=False):
            memory = self.memory(modality).float()
            x = features.float()
            codes = self.solver(
                memory,
                x.t(),
                self.sparsity,
                self._steps[modality],
                max_iter=self.max_iter,
                tol=self.tol,
                check_every=check_every,
                form=self.gradient_form,
                stopping=self.stopping,
            )
            return self.blend * (memory @ codes).t() + (1 - self.blend) * x

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        features = super().encode(batch)
        if not self._ready:
            return features
        return {m: self.recall(m, f) for m, f in features.items()}


@DEFENSES.register("msefm")
class MSEFM(Defense):
    """MSEFM: MinSim feature decorrelation, then external feature memories with sparse-coded features."""

    name = "msefm"
    head = "concat"
    # every MSEFM checkpoint made before gradient_form existed used the Gram form, and every one made before
    # stopping existed the batch rule: keyed without those fields at those values
    KEY_OMITTED: ClassVar[dict[str, str]] = {"gradient_form": LEGACY_GRADIENT_FORM, "stopping": "batch"}

    @dataclass
    class Config:
        minsim_weight: float = 1.0  # λ_s of stage A (the reference suggests 0.8 for KS in a comment)
        memory_size: int = 1024  # samples per memory; fewer if the train set is smaller
        sparsity: float = 0.1  # λ of the sparse code
        blend: float = 0.6  # γ (KS); 0.5 for MUSIC/AVE
        solver: str = "fista"  # "ista" is the reference solver
        step_rule: str = "lipschitz"  # α = 1/λ_max(DᵀD); "official": the reference's KS constants
        max_iter: int = 200  # the reference ISTA uses 2000
        tol: float = 8e-4  # stop when ‖h − h_prev‖ is below this: over the batch, or per vector (stopping)
        # "batch" (the reference): the test above, so an early stop makes a code depend on its batch;
        # "sample": each feature vector's code freezes once its own ‖h − h_prev‖₂ < tol (batch-independent).
        # Certificates run "sample" whatever this says (bench/certification.py: smoothing needs a fixed classifier)
        stopping: str = "batch"
        # how the solver computes Dᵀ(D h − φ): "residual" (2dN operations per feature vector) or "gram"
        # (DᵀD precomputed, N²; the form of the checkpoints whose keys omit this field).
        # Same math, float rounding apart (models/sparse_coding.py)
        gradient_form: str = "residual"
        exfmem_epochs: int = -1  # stage C epochs; -1: a third of the schedule, at least 1
        exfmem_lr_ratio: float = 0.1  # stage-C lr = ratio × base lr (reference: 1e-4 after 1e-3)
        exfmem_cos_weight: float = 1.0  # weight of mean cos(φ̃^(v), φ̃^(a)) in stage C

        def __post_init__(self) -> None:
            if self.solver not in SOLVERS:
                raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
            if self.gradient_form not in FORMS:
                raise ValueError(f"gradient_form must be one of {', '.join(FORMS)}, got {self.gradient_form!r}")
            if self.stopping not in STOPPING:
                raise ValueError(f"stopping must be one of {', '.join(STOPPING)}, got {self.stopping!r}")
            if self.step_rule not in STEP_RULES:
                raise ValueError(f"step_rule must be one of {', '.join(STEP_RULES)}, got {self.step_rule!r}")
            if self.memory_size < 1 or self.max_iter < 1:
                raise ValueError("memory_size and max_iter must be >= 1")
            if not 0.0 <= self.blend <= 1.0:
                raise ValueError(f"blend must lie in [0, 1], got {self.blend}")

    def build_model(self, dataset: InMemoryDataset, train: TrainConfig) -> ExFMemNet:
        if len(dataset.specs) < 2:
            raise ValueError(f"msefm separates the features of two or more modalities; {dataset.name} has one")
        base = super().build_model(dataset, train)
        cfg = self.config
        return ExFMemNet(
            base.encoders,
            base.head,
            dict(zip(base.head.names, base.head.dims)),
            min(cfg.memory_size, len(dataset.train)),
            sparsity=cfg.sparsity,
            blend=cfg.blend,
            solver=cfg.solver,
            max_iter=cfg.max_iter,
            tol=cfg.tol,
            gradient_form=cfg.gradient_form,
            stopping=cfg.stopping,
        )

    def objective(self, model: MultiModalNet, batch: Batch, labels: Tensor, cos_weight: float) -> Tensor:
        out = model(batch)
        return F.cross_entropy(out.logits.float(), labels) + cos_weight * mean_cosine(out.features)

    def loss(self, model: MultiModalNet, batch: Batch, labels: Tensor, ctx: TrainContext) -> Tensor:
        return self.objective(model, batch, labels, self.config.minsim_weight)

    def post_train(self, model: MultiModalNet, ctx: TrainContext) -> dict[str, Tensor]:
        assert isinstance(model, ExFMemNet)
        memories = self.extract_memories(model, ctx)
        model.set_memories(memories, {m: self.step_size(m, d) for m, d in memories.items()})
        self.train_exfmem(model, ctx)
        return {}

    def extract_memories(self, model: ExFMemNet, ctx: TrainContext) -> dict[str, Tensor]:
        """Stage B: pooled features (eval mode) of random training samples, one column each."""
        train = ctx.dataset.train
        size = model.memory(model.modalities[0]).shape[1]
        chosen = train.subset(torch.randperm(len(train), generator=ctx.generator)[:size])
        model.eval()
        columns: dict[str, list[Tensor]] = {m: [] for m in model.modalities}
        with torch.no_grad():
            for batch, _ in chosen.batches(ctx.train.batch_size, device=ctx.device):
                for m, f in model.encode(batch).items():
                    columns[m].append(f.float())
        return {m: torch.cat(c).t().contiguous() for m, c in columns.items()}

    def step_size(self, modality: str, memory: Tensor) -> float:
        if self.config.step_rule == "lipschitz":
            return lipschitz_step(memory)
        if modality not in OFFICIAL_KS_STEPS:
            raise ValueError(
                f"step_rule 'official' has constants for modalities {', '.join(OFFICIAL_KS_STEPS)} "
                f"only, not {modality!r}; use step_rule=lipschitz"
            )
        return OFFICIAL_KS_STEPS[modality]

    def train_exfmem(self, model: ExFMemNet, ctx: TrainContext) -> None:
        """Stage C: fine-tune everything through the fixed memories with CE + mean cos(φ̃^(v), φ̃^(a))."""
        cfg = self.config
        epochs = cfg.exfmem_epochs if cfg.exfmem_epochs >= 0 else max(1, ctx.train.epochs // 3)
        opt = make_optimizer(model.parameters(), ctx.train, cfg.exfmem_lr_ratio * ctx.train.lr)
        for epoch in range(epochs):
            model.train()
            for batch, labels in ctx.dataset.train.batches(
                ctx.train.batch_size, shuffle=True, generator=ctx.generator, device=ctx.device
            ):
                loss = self.objective(model, batch, labels, cfg.exfmem_cos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            log.info("msefm stage C epoch %d/%d: last loss %.4f", epoch + 1, epochs, float(loss.detach()))
