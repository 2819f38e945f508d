"""``random_l2``: random ℓ2 noise of norm exactly ε on the attacked modalities.

The sanity baseline of a robustness table: a model's accuracy under random noise of radius ε is an
upper bound that any real attack at the same radius should go well below; an "attack" that does
no better than noise suggests masked gradients. A plugin attack is an
:class:`~mmrobust_bench.attacks.base.Attack` subclass registered through the
``mmrobust_bench.attacks`` entry point; the base class restores the model's mode and global RNGs,
keeps unattacked modalities bit-identical, projects onto the threat ball and clamps into each
modality's valid box, so ``perturb`` only proposes the perturbed inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmrobust_bench.attacks.base import Attack
from mmrobust_bench.contracts import Batch, ModalitySpec, ThreatModel, joint_l2_norm


class RandomNoiseL2(Attack):
    """δ = ε·g/‖g‖ with g ~ N(0, I): uniform on the ε-sphere, per sample.

    A joint threat draws one direction over the concatenation of the attacked modalities, a
    per-modality threat one direction (of norm ε) per modality. Draws come from a generator seeded
    with ``seed`` (reproducible, independent of the global RNG). Clamping into a bounded modality's
    box can shorten δ below ε; unbounded modalities keep it exactly.
    """

    name = "random_l2"
    library = "mmrobust-example-plugin"
    per_sample_eps = True
    norms = ("l2",)

    def __init__(self, specs: Sequence[ModalitySpec], *, seed: int = 0, **options: Any) -> None:
        if options:
            raise ValueError(f"random_l2 takes no options, got {', '.join(sorted(options))}")
        super().__init__(specs, seed=seed)

    @property
    def library_version(self) -> str:
        from importlib.metadata import version

        return version("mmrobust-example-plugin")

    def perturb(
        self,
        model: nn.Module,
        batch: Batch,
        labels: Tensor,
        threat: ThreatModel,
        eps: Tensor,
        *,
        targets: Tensor | None = None,
    ) -> Batch:
        if targets is not None:
            raise ValueError("random_l2 is untargeted: random noise does not aim at a class")
        device = labels.device
        generator = torch.Generator(device=device).manual_seed(self.seed)
        groups = [threat.modalities] if threat.joint else [(m,) for m in threat.modalities]
        out = {}
        for group in groups:
            noise = {m: torch.randn(batch[m].shape, generator=generator, device=device) for m in group}
            factor = eps / joint_l2_norm(noise, group).clamp_min(1e-12)
            for m in group:
                shape = (-1,) + (1,) * (batch[m].dim() - 1)
                out[m] = (batch[m].float() + noise[m] * factor.view(shape)).to(batch[m].dtype)
        return out
