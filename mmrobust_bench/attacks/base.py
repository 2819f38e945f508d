"""The attack contract: ``attack(model, batch, labels, threat) -> batch_adv``.

Every attack subclasses :class:`Attack` and implements :meth:`perturb`. The base class enforces
what docs/design.md §3 promises for *every* registered attack, whatever the library behind it does:
the model's train/eval mode and the global RNGs (torch, numpy, python) are restored, a seeded
generator makes the result reproducible, unattacked modalities are returned bit-identical, the
attacked ones are projected onto the threat ball and clamped into their valid box, and dtype,
device and shape are preserved.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from .._version import __version__
from ..contracts import Batch, ModalitySpec, ThreatModel, joint_l2_norm, spec_map


@contextlib.contextmanager
def preserved_state(model: nn.Module, seed: int) -> Iterator[None]:
    """Restore the model's per-module train flags, its buffers (BatchNorm running statistics and
    ``num_batches_tracked``: an attack run on a model in train mode must not change them) and every
    global RNG; seed the RNGs inside."""
    modes = [(m, m.training) for m in model.modules()]
    with torch.no_grad():
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
    np_state = np.random.get_state()
    py_state = random.getstate()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        # the generators that fork_rng restores, and no others: torch.manual_seed would also queue
        # lazy seeds (with a formatted stack trace each) for every other backend, on every attack call
        torch.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.manual_seed(seed)  # the current device, the one in ``devices``
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            for module, flag in modes:
                if module.training != flag:  # no recursion: every module is restored individually
                    module.training = flag
            with torch.no_grad():
                for buf, saved in buffers:
                    if buf.shape == saved.shape and not torch.equal(buf, saved):
                        buf.copy_(saved)
            np.random.set_state(np_state)
            random.setstate(py_state)


def as_eps_vector(eps: float | Tensor, n: int, device: torch.device) -> Tensor:
    """A per-sample ε vector (n,) in fp32."""
    if isinstance(eps, Tensor):
        vec = eps.to(device=device, dtype=torch.float32).flatten()
        if vec.numel() == 1:
            vec = vec.expand(n)
        if vec.shape[0] != n:
            raise ValueError(f"per-sample eps has {vec.shape[0]} entries for a batch of {n}")
        return vec
    return torch.full((n,), float(eps), device=device)


def _rows(v: Tensor, like: Tensor) -> Tensor:
    return v.view((-1,) + (1,) * (like.dim() - 1))


def l1_ball_projection(v: Tensor, radius: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` (n, D) onto the ℓ1 ball of its own ``radius`` (n,)
    (Duchi et al. 2008, by sorting); rows already inside come back unchanged."""
    a = v.abs()
    inside = a.sum(1) <= radius
    u = a.sort(dim=1, descending=True).values
    css = u.cumsum(1)
    j = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    cond = u - (css - radius[:, None]) / j > 0
    rho = cond.to(v.dtype).mul(j).argmax(1)  # the last index where cond holds
    theta = ((css.gather(1, rho[:, None]).squeeze(1) - radius) / (rho + 1).to(v.dtype)).clamp_min(0)
    out = v.sign() * (a - theta[:, None]).clamp_min(0)
    return torch.where(inside[:, None], v, out)


def l0_ball_projection(v: Tensor, count: Tensor) -> Tensor:
    """Keep each row's ``floor(count)`` largest-magnitude entries of ``v`` (n, D), zero the rest."""
    k = count.floor().clamp(0, v.shape[1]).long()
    order = v.abs().argsort(dim=1, descending=True)
    keep = torch.arange(v.shape[1], device=v.device)[None, :] < k[:, None]
    mask = torch.zeros_like(keep).scatter(1, order, keep)
    return torch.where(mask, v, torch.zeros_like(v))


def project(clean: Batch, adv: Batch, threat: ThreatModel, eps: Tensor, specs: dict[str, ModalitySpec]) -> Batch:
    """Project ``adv`` onto the threat ball around ``clean`` (per sample) and into the valid boxes.

    ℓ2, ℓ1 and ℓ0 balls are over the concatenation of the attacked modalities (joint) or per modality;
    ℓ∞ is the same per-coordinate bound either way. The box clamp comes last; since every box contains
    its clean point, clamping moves every coordinate of δ towards 0, so no norm grows afterwards.
    """
    # a library may hand back NaN or inf (an overflowed step): such a coordinate has no distance to the clean
    # point, so it goes back to the clean value instead of passing through as an "adversarial" input
    adv = {m: torch.where(torch.isfinite(x), x, clean[m]) if m in threat.modalities else x for m, x in adv.items()}
    out = dict(adv)
    mods = threat.modalities
    groups = [mods] if threat.joint else [(m,) for m in mods]
    if threat.norm == "l2":
        for group in groups:
            # at least float32 (half inputs), float64 kept as it is: rounding it to float32 moved the clean point
            work = {m: torch.promote_types(clean[m].dtype, torch.float32) for m in group}
            delta = {m: (adv[m] - clean[m]).to(work[m]) for m in group}
            norm = joint_l2_norm(delta, group, functools.reduce(torch.promote_types, work.values()))
            factor = torch.clamp(eps / (norm + 1e-12), max=1.0)
            for m in group:
                out[m] = (clean[m].to(work[m]) + delta[m] * _rows(factor, delta[m])).to(clean[m].dtype)
    elif threat.norm in ("l1", "l0"):
        for group in groups:
            flat = torch.cat([(adv[m] - clean[m]).double().flatten(1) for m in group], 1)
            if threat.norm == "l1":
                flat = l1_ball_projection(flat, eps.double())
            else:
                flat = l0_ball_projection(flat, eps.double())
            start = 0
            for m in group:
                size = clean[m][0].numel()
                piece = flat[:, start : start + size].reshape(clean[m].shape)
                start += size
                out[m] = torch.where(piece == 0, clean[m], (clean[m].double() + piece).to(clean[m].dtype))
    else:
        for m in mods:
            e = _rows(eps, clean[m]).to(clean[m].dtype)
            out[m] = torch.clamp(adv[m], clean[m] - e, clean[m] + e)
    for m in mods:
        box = specs[m].box(out[m])
        if box is not None:
            out[m] = torch.clamp(out[m], box[0], box[1])
    return out


class Attack:
    """Base class of all attacks; subclasses implement :meth:`perturb`.

    ``library``/``library_version`` go into result rows. ``per_sample_eps`` says whether
    :meth:`perturb` honours a per-sample ε vector (native attacks do, so a radius sweep is one
    batched computation). ``norm_bounded`` is False for attacks without a budget (``missing``).
    """

    # name and norms: instance attributes with class defaults; the library adapters set them per instance
    name: str = "attack"
    library: ClassVar[str] = "native"
    per_sample_eps: ClassVar[bool] = False
    norm_bounded: ClassVar[bool] = True
    norms: tuple[str, ...] = ("l2",)

    def __init__(self, specs: Sequence[ModalitySpec], *, seed: int = 0) -> None:
        self.specs = spec_map(specs)
        self.seed = seed

    @property
    def library_version(self) -> str:
        return __version__

    def describe(self) -> str:
        return self.name

    def validate(self, threat: ThreatModel) -> None:
        unknown = [m for m in threat.modalities if m not in self.specs]
        if unknown:
            raise ValueError(f"unknown modality {', '.join(unknown)}; valid: {', '.join(self.specs)}")
        if self.norm_bounded and threat.norm not in self.norms:
            raise ValueError(
                f"{self.name} attacks in norm {', '.join(self.norms)}, not {threat.norm}: use --norm "
                f"{self.norms[0]} (norm='{self.norms[0]}' in the API)"
            )

    def __call__(
        self,
        model: nn.Module,
        batch: Batch,
        labels: Tensor,
        threat: ThreatModel,
        eps: Tensor | float | None = None,
        *,
        targets: Tensor | None = None,
    ) -> Batch:
        self.validate(threat)
        n = labels.shape[0]
        eps_vec = as_eps_vector(threat.eps if eps is None else eps, n, labels.device)
        if eps is not None and not self.per_sample_eps and not bool((eps_vec == eps_vec[0]).all()):
            raise ValueError(f"attack {self.name!r} takes one eps per call, not a per-sample vector")
        with preserved_state(model, self.seed):
            adv = self.perturb(model, batch, labels, threat, eps_vec, targets=targets)
        out = {}
        for m, x in batch.items():
            if m in threat.modalities:
                out[m] = adv[m].detach().to(dtype=x.dtype, device=x.device).reshape(x.shape)
            else:
                out[m] = x
        if self.norm_bounded:
            return project(batch, out, threat, eps_vec, self.specs)
        return {m: self.specs[m].clamp(x) if m in threat.modalities else x for m, x in out.items()}

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
        raise NotImplementedError
