"""CRMT: Certifiable Robust Multi-modal Training (docs/methods.md §10), variants ``crmt_jt`` and ``crmt_at``.

Step 1 trains the CRMT head with CE + ρ·L1, a LogSumExp smooth maximum
of the negative uni-modal margins (computed stably in log space). Then the per-class uni-modal
Lipschitz constants τ are estimated, and step 2 trains only the integration weights a^(m) to
maximise the certified-radius surrogate of Eq. 10, with the encoders fixed in eval mode, for the reference's
n//3 − 1 epochs by default (:func:`step2_epoch_count`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import CRMTHead, MultiModalNet
from ..models.heads import DEFAULT_OWN_GROUPS, LEGACY_OWN_GROUPS, canonical_own_groups
from ..models.lipschitz import LIP_MODES, estimate_lipschitz
from . import DEFENSES
from .adversarial import joint_normalised_ascent
from .base import Defense, TrainContext

log = logging.getLogger(__name__)

MARGIN_FLOOR = 1e-5
STEP2_AUTO = -1  # step2_epochs' automatic value (step2_epoch_count)


def margin_regulariser(unimodal: dict[str, Tensor], labels: Tensor) -> Tensor:
    """L1 = mean_i log(Σ_m Σ_{k≠y} exp(z_k^(m) − z_y^(m)) + 1e-5), computed as one logsumexp."""
    terms = []
    for z in unimodal.values():
        z = z.float()
        diff = z - z.gather(1, labels[:, None])
        terms.append(diff.scatter(1, labels[:, None], float("-inf")))
    floor = torch.full((labels.shape[0], 1), math.log(MARGIN_FLOOR), device=labels.device)
    return torch.logsumexp(torch.cat(terms + [floor], dim=1), dim=1).mean()


def step2_objective(
    z: dict[str, Tensor], a: dict[str, Tensor], tau: dict[str, Tensor], bias: Tensor, labels: Tensor
) -> Tensor:
    """−mean(num/den) of Eq. 10 at the runner-up class j (docs/methods.md §10.6); z, τ, b held fixed."""
    logits = bias + sum(a[m] * z[m] for m in z)
    masked = logits.detach().scatter(1, labels[:, None], float("-inf"))
    j = masked.argmax(dim=1)
    y = labels
    beta = (bias[y] - bias[j]).detach()
    num = beta + sum(
        a[m][y] * z[m].gather(1, y[:, None]).squeeze(1) - a[m][j] * z[m].gather(1, j[:, None]).squeeze(1) for m in z
    )
    den = torch.sqrt(sum((a[m][y] * tau[m][y] + a[m][j] * tau[m][j]) ** 2 for m in z))
    return -(num / den).mean()


def step2_epoch_count(step2_epochs: int, epochs: int) -> int:
    """Step 2's epochs after a step 1 of ``epochs``: ``step2_epochs``, or for the automatic value the reference's
    ``range(1, n // 3)``, max(1, epochs // 3 − 1) (45 for the paper's 140, 1 for synthav's 6, 2 for avdigits' 10).
    A longer step 2 lowers accuracy on synthav (docs/methods.md §10.6, ``benchmarks/crmt_step2_epochs.py``)."""
    return max(1, epochs // 3 - 1) if step2_epochs == STEP2_AUTO else step2_epochs


class CRMTBase(Defense):
    head = "crmt"
    # own_groups keeps the spelling the committed checkpoints were keyed with ("per_class" for the unit rows)
    KEY_SPELLINGS: ClassVar[dict[str, dict[str, str]]] = {
        "own_groups": {new: old for old, new in LEGACY_OWN_GROUPS.items()}
    }

    @dataclass
    class Config:
        rho: float = 2.0  # weight of the margin regulariser L1 (current reference configs)
        # "full": the paper's orthogonal head, W̃W̃ᵀ = I (default); "per_class_unit_rows": the reference code's
        # centred unit-norm rows, not orthogonal ("per_class", the old name, is accepted)
        own_groups: str = DEFAULT_OWN_GROUPS
        lip_mode: str = "intended"  # "official" reproduces the reference get_lip bugs
        step2: bool = True
        # step-2 epochs; -1 (automatic): the reference's range(1, n // 3), max(1, epochs // 3 - 1): 45 for 140,
        # 1 on synthav (6 epochs), 2 on avdigits (10); longer lowers accuracy on synthav (docs/methods.md §10.6)
        step2_epochs: int = STEP2_AUTO
        step2_lr_ratio: float = 0.03  # step-2 lr = ratio × base lr
        step2_momentum: float = 0.9
        step2_weight_decay: float = 1e-2
        clamp_nonnegative: bool = False  # clamp a >= 0 after each step-2 update (off for parity)
        lip_max_samples: int = -1  # -1: every training sample, as the reference
        step2_encoder_mode: str = "eval"  # "train" reproduces the reference (BN running stats drift)

        def __post_init__(self) -> None:
            self.own_groups = canonical_own_groups(self.own_groups)
            if self.lip_mode not in LIP_MODES:
                raise ValueError(f"lip_mode must be one of {', '.join(LIP_MODES)}, got {self.lip_mode!r}")
            if self.step2_encoder_mode not in ("eval", "train"):
                raise ValueError(f"step2_encoder_mode must be 'eval' or 'train', got {self.step2_encoder_mode!r}")

    def model_options(self) -> dict:
        return {"own_groups": self.config.own_groups}

    def step1_inputs(self, model: MultiModalNet, batch, labels, ctx: TrainContext):
        return batch

    def loss(self, model, batch, labels, ctx):
        out = model(self.step1_inputs(model, batch, labels, ctx))
        return F.cross_entropy(out.logits.float(), labels) + self.config.rho * margin_regulariser(out.unimodal, labels)

    def post_train(self, model: MultiModalNet, ctx: TrainContext) -> dict[str, Tensor]:
        train = ctx.dataset.train
        if self.config.lip_max_samples > 0 and len(train) > self.config.lip_max_samples:
            idx = torch.randperm(len(train), generator=ctx.generator)[: self.config.lip_max_samples]
            train = train.subset(idx)
        modalities = list(model.modalities)
        tau = estimate_lipschitz(
            model, train.batches(ctx.train.batch_size, device=ctx.device), modalities, mode=self.config.lip_mode
        )
        if self.config.step2:
            self.train_integration_weights(model, tau, ctx)
        return {f"lipschitz.{m}": t.cpu() for m, t in tau.items()}

    def train_integration_weights(self, model: MultiModalNet, tau: dict[str, Tensor], ctx: TrainContext) -> None:
        """Step 2: only a^(m) learn; encoders and W̃ are fixed.

        In the default eval mode the uni-modal scores z never change, so they are computed once;
        ``step2_encoder_mode="train"`` recomputes them per batch with BN in train mode, as the
        reference does (running statistics drift while a^(m) train).
        """
        head = model.head
        assert isinstance(head, CRMTHead)
        frozen = self.config.step2_encoder_mode == "eval"
        train = ctx.dataset.train
        if frozen:
            model.eval()
            cached = self._unimodal_scores(model, train.batches(ctx.train.batch_size, device=ctx.device))
        bias = head.bias.detach().float()
        epochs = step2_epoch_count(self.config.step2_epochs, ctx.train.epochs)
        log.info("crmt step 2: %d epochs at lr %g", epochs, self.config.step2_lr_ratio * ctx.train.lr)
        params = head.integration_parameters()
        for _ in range(epochs):
            # a new optimiser every epoch, as the reference (momentum resets)
            opt = torch.optim.SGD(
                params,
                lr=self.config.step2_lr_ratio * ctx.train.lr,
                momentum=self.config.step2_momentum,
                weight_decay=self.config.step2_weight_decay,
            )
            if frozen:
                z_all, y_all = cached
                order = torch.randperm(len(y_all), generator=ctx.generator).to(y_all.device)
                batches = (
                    ({m: z[idx] for m, z in z_all.items()}, y_all[idx]) for idx in order.split(ctx.train.batch_size)
                )
            else:
                model.train()
                batches = (
                    self._unimodal_scores(model, [(b, y)])
                    for b, y in train.batches(
                        ctx.train.batch_size, shuffle=True, generator=ctx.generator, device=ctx.device
                    )
                )
            for z, y in batches:
                a = {m: head.integration[m] for m in model.modalities}
                loss = step2_objective(z, a, tau, bias, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if self.config.clamp_nonnegative:
                    with torch.no_grad():
                        for p in params:
                            p.clamp_(min=0)
        model.eval()

    @staticmethod
    @torch.no_grad()
    def _unimodal_scores(model: MultiModalNet, batches) -> tuple[dict[str, Tensor], Tensor]:
        """Detached uni-modal scores z^(m) and labels over ``batches`` (in the model's current mode)."""
        zs: dict[str, list[Tensor]] = {m: [] for m in model.modalities}
        ys = []
        for batch, labels in batches:
            out = model(batch)
            for m in model.modalities:
                zs[m].append(out.unimodal[m].float())
            ys.append(labels)
        return {m: torch.cat(v) for m, v in zs.items()}, torch.cat(ys)


@DEFENSES.register("crmt_jt")
class CRMTJointTraining(CRMTBase):
    """CRMT-JT: step 1 on clean inputs."""

    name = "crmt_jt"


@DEFENSES.register("crmt_at")
class CRMTAdversarialTraining(CRMTBase):
    """CRMT-AT: step 1 on joint adversarial examples only (ε 0.1, 5 steps, model in train mode)."""

    name = "crmt_at"

    @dataclass
    class Config(CRMTBase.Config):
        at_eps: float = 0.1
        at_steps: int = 5

    def step1_inputs(self, model, batch, labels, ctx):
        return joint_normalised_ascent(model, batch, labels, eps=self.config.at_eps, steps=self.config.at_steps)
