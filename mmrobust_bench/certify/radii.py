"""Certified radii (Eq. 5, 7, 10), the vulnerability indicator η and an honesty check (docs/methods.md §11).

For every sample and modality the K × K Gram matrix G^(m) = J Jᵀ of the uni-modal score Jacobian
J = ∂z^(m)/∂x^(m) comes from one batched backward per class chunk (``is_grads_batched``). From it:

- the per-class Lipschitz estimate τ_k^(m) = max_x sqrt(G_kk) (the intended ``get_lip``);
- the per-pair local indicator η_{y,j}^(m)(x) = sqrt(G_yy + G_jj − 2 G_yj) of the modality's
  contribution s^(m) to the fused logits (s = z for the concat head, s = a ⊙ z for the CRMT head),
  i.e. the gradient norm of that modality's share of the margin h_y − h_j;
- global pair constants L_{y,j}^(m) = max over training samples of the local η.

Radii, with the margin h_y − h_j of the fused logits and the true label y:

- Eq. 5 (all modalities, joint ℓ2): min_j (h_y − h_j) / sqrt(Σ_m (L_{y,j}^(m))²). For the concat head
  L_{y,j}^(m) = c_j^(m) τ_j^(m) = ‖W_y^(m) − W_j^(m)‖ × Lip(ζ), so this is the paper's Eq. 5.
- Eq. 7 (modality m alone): min_j (h_y − h_j) / L_{y,j}^(m).
- Eq. 10 (CRMT head): min_j (h_y − h_j) / sqrt(Σ_m (|a_y^(m)| τ_y^(m) + |a_j^(m)| τ_j^(m))²), and its
  one-modality form with the single term (|a_y| τ_y + |a_j| τ_j).

Each comes as the minimum over j and as the runner-up-only variant (j = argmax_{k≠y} h_k, as
CRMT step 2 uses). The runner-up variant is **not a bound** (another class may be closer; the honesty
check breaks it on 20–42% of certified samples of the synthav leaderboard): its rows carry the kind
``not a bound (runner-up only)``. Gradient norms at finitely many samples only *lower-bound* the
Lipschitz constants, so every radius here is an empirical certificate (never one of a model whose logits
or constants are NaN or inf: :func:`require_finite`), and each one is checked
(``certify.honesty``): PGD with a per-sample budget just inside the claimed radius looks for adversarial
examples it should not find; the counts are lower bounds. On models whose "uni-modal" scores mix
modalities (MMT's joint layers) the uni-modal bounds are heuristic and labelled so. The sound,
probabilistic alternative is randomized smoothing (``certify.smoothing``). What :func:`certify` returns
(:class:`Certificate`, its frames and report) is in ``certify.certificate``; this module re-exports it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..contracts import Batch, ModalitySpec
from ..data.base import Split, TensorSplit
from ..models import ConcatHead, CRMTHead
from ..progress import progress_bar
from .certificate import (
    DEFAULT_RADII,
    EMPIRICAL,
    HEURISTIC_NOTE,
    KIND_EMPIRICAL,
    KIND_HEURISTIC,
    KIND_NOT_A_BOUND,
    KIND_SOUND,
    MIN_J,
    RUNNER_UP,
    Certificate,
    CertifiedRadius,
)
from .honesty import HONESTY_CAP, HONESTY_SLACK, HonestyCheck, HonestyConfig, honesty_check
from .lipschitz import unimodal_jacobian_chunks

ADDITIVE = "additive"  # a head-less model whose fused logits are Σ_m z^(m) + a constant per class (the public API's)
# What certify reads: a dataset split (batched here) or any iterable of ``(batch, labels)`` pairs on the device.
Batches = TensorSplit | Iterable[tuple[Batch, Tensor]]
TrainBatches = Split | Iterable[tuple[Batch, Tensor | None]]  # the train labels are not read


def head_kind(model: nn.Module) -> str:
    """``concat`` or ``crmt``: the two fusion heads whose radii have a closed form."""
    head = getattr(model, "head", None)
    if isinstance(head, CRMTHead):
        return "crmt"
    if isinstance(head, ConcatHead):
        return "concat"
    raise ValueError(f"certification needs a ConcatHead or CRMTHead fusion layer, got {type(head).__name__}")


def mixes_modalities(model: nn.Module) -> bool:
    """True when a "uni-modal" score can depend on another modality's input (MMT with joint layers), so
    the uni-modal Lipschitz bounds, and every radius built on them, are heuristic."""
    preset = getattr(model, "preset", None)
    return bool(preset is not None and getattr(preset, "fusion_layers", 0) > 0)


def contribution_scales(model: nn.Module) -> dict[str, Tensor]:
    """Per-class factor from uni-modal score z^(m) to its share of the fused logit: 1 (concat) or a^(m) (CRMT)."""
    head: Any = model.head  # a ConcatHead or CRMTHead (head_kind checks)
    if head_kind(model) == "crmt":
        return {m: head.integration[m].detach().float() for m in head.names}
    k = head.fc.weight.shape[0]
    return {m: torch.ones(k, device=head.fc.weight.device) for m in head.names}


def unimodal_grams(
    model: nn.Module, batch: Batch, modalities: Sequence[str], class_chunk: int = 32
) -> tuple[dict[str, Tensor], Tensor]:
    """({m: (B, K, K) Gram of ∂z^(m)/∂x^(m)}, fused logits (B, K)); one batched backward per class chunk.

    Memory: the Jacobian of one modality, K × B × |x^(m)| floats, is held to form the Gram; choose
    the batch size accordingly.
    """
    out, chunks = unimodal_jacobian_chunks(model, batch, modalities, class_chunk)
    grams: dict[str, Tensor] = {}
    for m, group in itertools.groupby(chunks, key=lambda item: item[0]):  # one modality's Jacobian at a time
        jac = torch.cat([g.float().flatten(2).transpose(0, 1) for _, g in group], dim=1)  # (B, K, D)
        grams[m] = jac @ jac.transpose(1, 2)
    return grams, out.logits.detach().float()


def pair_eta(gram: Tensor) -> Tensor:
    """(…, K, K) η_{y,j} = sqrt(G_yy + G_jj − 2 G_yj) = ‖∇s_y − ∇s_j‖ from a Gram matrix."""
    diag = gram.diagonal(dim1=-2, dim2=-1)
    return (diag.unsqueeze(-1) + diag.unsqueeze(-2) - 2 * gram).clamp_min(0).sqrt()


def scaled_gram(gram: Tensor, scale: Tensor) -> Tensor:
    """Gram of the contributions s_k = scale_k z_k from the Gram of z."""
    return gram * (scale[:, None] * scale[None, :])


def require_finite(margins: Tensor, den: Tensor) -> None:
    """Refuse to build a radius on numbers that are not numbers: NaN margins (NaN or inf logits) would claim
    class 0, and a NaN Lipschitz constant fails ``d > 0`` and would claim an infinite radius."""
    bad = int((~torch.isfinite(margins).all(1)).sum()) if margins.dim() == 2 else 0
    if bad:
        raise ValueError(
            f"certify: the model's logits are NaN or inf on {bad} of {margins.shape[0]} certified samples, "
            f"so it cannot be certified (a diverged training or a damaged checkpoint?); check its weights"
        )
    if not bool(torch.isfinite(den).all()):
        raise ValueError(
            "certify: the Lipschitz constants (input-gradient norms over the training samples, or the "
            "checkpoint's τ) hold NaN or inf, so no radius can be computed; check the model's weights"
        )


def radius_from(margins: Tensor, labels: Tensor, den: Tensor, runner_up: Tensor) -> tuple[Tensor, Tensor]:
    """(min over j, runner-up only) of margin_j / den[y, j]; a zero denominator claims ±∞. Non-finite margins
    or denominators are refused (:func:`require_finite`)."""
    require_finite(margins, den)
    d = den[labels]  # (N, K)
    ratio = torch.where(
        d > 0,
        margins / d.clamp_min(1e-30),
        torch.where(margins > 0, torch.full_like(margins, math.inf), torch.full_like(margins, -math.inf)),
    )
    ratio = ratio.scatter(1, labels[:, None], math.inf)
    return ratio.min(dim=1).values, ratio.gather(1, runner_up[:, None]).squeeze(1)


def _root_sum_squares(parts: Sequence[Tensor]) -> Tensor:
    """sqrt(Σ t²) over ``parts``, added in order from zero as Python's ``sum`` adds (the joint bounds' denominator)."""
    total = torch.zeros_like(parts[0])
    for t in parts:
        total = total + t**2
    return torch.sqrt(total)


def _stream(
    data: TrainBatches, batch_size: int, device: torch.device
) -> tuple[Iterator[tuple[Batch, Any]], int | None]:
    """(the batches, their count or None when unknown): a split batched here, an iterable's pairs as they come."""
    if isinstance(data, Split):
        return data.batches(batch_size, device=device), math.ceil(len(data) / batch_size)
    return iter(data), (len(data) if hasattr(data, "__len__") else None)  # type: ignore[arg-type]


def _scaled(gram: Tensor, scales: Mapping[str, Tensor], m: str) -> Tensor:
    """The Gram of modality ``m``'s contribution to the fused logits (:func:`scaled_gram`; 1 for an additive model)."""
    return scaled_gram(gram, scales[m]) if m in scales else gram


def _global_constants(
    model: nn.Module,
    train: TrainBatches,
    modalities: Sequence[str],
    scales: Mapping[str, Tensor],
    batch_size: int,
    class_chunk: int,
    device: torch.device,
    progress: bool = False,
) -> tuple[dict, dict, int]:
    """(τ_k^(m) of z, L_{y,j}^(m) of the contributions, the number of samples): running maxima over ``train``."""
    tau: dict[str, Tensor] = {}
    pair: dict[str, Tensor] = {}
    seen = 0
    batches, total = _stream(train, batch_size, device)
    for batch, _ in progress_bar(
        batches, total=total, desc="certify: global constants (train)", unit="batch", enabled=progress, leave=False
    ):
        grams, _ = unimodal_grams(model, batch, modalities, class_chunk)
        for m, g in grams.items():
            t = g.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt().amax(0)
            p = pair_eta(_scaled(g, scales, m)).amax(0)
            tau[m] = t if m not in tau else torch.maximum(tau[m], t)
            pair[m] = p if m not in pair else torch.maximum(pair[m], p)
        seen += int(next(iter(batch.values())).shape[0])
    if not pair:
        raise ValueError("certify: the training data gave no batches; the Lipschitz constants need at least one sample")
    return tau, pair, seen


def certify(
    model: nn.Module,
    train: TrainBatches,
    test: Batches,
    specs: Sequence[ModalitySpec],
    *,
    tau: Mapping[str, Tensor] | None = None,
    tau_source: str | None = None,
    batch_size: int = 64,
    class_chunk: int = 32,
    device: torch.device | str = "cpu",
    honesty_steps: int | None = None,
    honesty: HonestyConfig | None = None,
    heuristic: bool | None = None,
    notes: Sequence[str] = (),
    progress: bool = False,
    head: str | None = None,
    variants: Sequence[str] = (MIN_J, RUNNER_UP),
) -> Certificate:
    """Radii of Eq. 5/7 (any head) and Eq. 10 (CRMT head) on ``test``, constants from ``train``.

    ``train`` and ``test``: dataset splits (batched here by ``batch_size`` on ``device``) or any iterables of
    ``(batch, labels)`` pairs already on the device (the test pairs are then held in memory for the honesty
    check; the train labels are not read). ``tau`` (per-class τ_k^(m), e.g. a CRMT checkpoint's
    ``lipschitz.<m>``) feeds Eq. 10; without it τ is estimated from the same Gram pass over ``train``.
    ``honesty`` sets the strength of the honesty check (default :class:`HonestyConfig`); ``honesty_steps``
    overrides its steps, and 0 skips it. ``heuristic`` (default: detected, see :func:`mixes_modalities`)
    labels every radius heuristic. ``head``: None reads the model's fusion head (:func:`head_kind`);
    ``"additive"`` certifies a model without one whose fused logits are Σ_m z^(m) plus a constant per class
    (Eq. 5/7, contributions z^(m) themselves). ``variants``: which of ``min_j`` and ``runner_up`` to compute
    (each is honesty-checked). The model is evaluated in eval mode and its mode restored afterwards.
    """
    device = torch.device(device)
    modalities = tuple(s.name for s in specs)
    if head not in (None, ADDITIVE):
        raise ValueError(f"head={head!r}: give None (read the model's fusion head) or {ADDITIVE!r}")
    kind = head_kind(model) if head is None else ADDITIVE
    check = honesty or HonestyConfig()
    if honesty_steps is not None:
        check = HonestyConfig(**{**check.__dict__, "steps": int(honesty_steps)})
    heuristic = mixes_modalities(model) if heuristic is None else bool(heuristic)
    was_training = model.training
    model.eval()
    try:
        scales = contribution_scales(model) if kind != ADDITIVE else {}
        tau_est, pair, n_train = _global_constants(
            model, train, modalities, scales, batch_size, class_chunk, device, progress
        )
        k = next(iter(pair.values())).shape[0]
        if tau is None:
            tau_used = dict(tau_est)
            source = tau_source or f"estimate over {n_train} training samples"
        else:
            missing = [m for m in modalities if m not in tau]
            if missing:
                raise ValueError(f"tau is missing modality {', '.join(missing)}")
            tau_used = {m: tau[m].detach().float().to(device) for m in modalities}
            source = tau_source or "given"

        logits, labels = [], []
        local: dict[str, list[Tensor]] = {m: [] for m in modalities}
        sums = {m: torch.zeros(k, k, device=device) for m in modalities}  # Σ over test samples of class y of η_{y,j}
        counts = torch.zeros(k, device=device)
        held: list[Batch] = []  # an iterable's test batches, for the honesty check
        batches, total = _stream(test, batch_size, device)
        for batch, y in progress_bar(
            batches, total=total, desc="certify: local bounds (test)", unit="batch", enabled=progress, leave=False
        ):
            if not isinstance(test, TensorSplit):
                held.append(dict(batch))
            grams, h = unimodal_grams(model, batch, modalities, class_chunk)
            ru = h.scatter(1, y[:, None], -math.inf).argmax(1)
            for m, g in grams.items():
                eta = pair_eta(_scaled(g, scales, m))  # (B, K, K)
                at_y = eta[torch.arange(y.shape[0], device=device), y]  # (B, K): η_{y,j}
                local[m].append(at_y.gather(1, ru[:, None]).squeeze(1))
                sums[m].index_add_(0, y, at_y)
            counts += torch.bincount(y, minlength=k).float()
            logits.append(h)
            labels.append(y)
        h = torch.cat(logits) if logits else torch.zeros(0, k, device=device)
        y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
        ru = h.scatter(1, y[:, None], -math.inf).argmax(1) if y.numel() else y
        margins = h.gather(1, y[:, None]) - h if y.numel() else h
        checked = (
            test
            if isinstance(test, TensorSplit)
            else TensorSplit({m: torch.cat([b[m] for b in held]) for m in modalities} if held else {}, y)
        )

        denominators: list[tuple[str, str, tuple[str, ...], Tensor]] = [
            ("eq5", "Eq. 5", modalities, _root_sum_squares([pair[m] for m in modalities]))
        ]
        denominators += [(f"eq7[{m}]", "Eq. 7", (m,), pair[m]) for m in modalities]
        eq10: dict[str, Tensor] = {}
        if kind == "crmt":
            for m in modalities:
                at = scales[m].abs() * tau_used[m]
                eq10[m] = at[:, None] + at[None, :]
            denominators.append(("eq10", "Eq. 10", modalities, _root_sum_squares([eq10[m] for m in modalities])))
            denominators += [(f"eq10[{m}]", "Eq. 10", (m,), eq10[m]) for m in modalities]

        radii = []
        for name, equation, mods, den in progress_bar(
            denominators,
            desc="certify: radii and honesty checks",
            unit="bound",
            enabled=progress,
            leave=False,
            log_steps="bound",
        ):  # a log line per bound without a terminal
            r_min, r_ru = radius_from(margins, y, den, ru)
            for variant, r in ((MIN_J, r_min), (RUNNER_UP, r_ru)):
                if variant not in variants:
                    continue
                found = (
                    honesty_check(
                        model, checked, r.cpu(), mods, specs, config=check, batch_size=batch_size, device=device
                    )
                    if check.enabled
                    else None
                )
                radii.append(CertifiedRadius(name, equation, mods, variant, r.cpu(), found, heuristic))
        local_mean = {m: (sums[m] / counts[:, None]).cpu() for m in modalities}  # NaN rows for absent classes
        for m in modalities:
            local_mean[m].fill_diagonal_(math.nan)
        return Certificate(
            modalities=modalities,
            head=kind,
            labels=y.cpu(),
            predictions=h.argmax(1).cpu() if y.numel() else y.cpu(),
            runner_up=ru.cpu(),
            tau={m: t.cpu() for m, t in tau_used.items()},
            tau_estimated={m: t.cpu() for m, t in tau_est.items()},
            tau_source=source,
            pair_eta={m: p.cpu() for m, p in pair.items()},
            eq10_eta={m: e.cpu() for m, e in eq10.items()},
            local_eta={m: torch.cat(v).cpu() if v else torch.zeros(0) for m, v in local.items()},
            local_pair_mean=local_mean,
            radii=radii,
            n_train=n_train,
            notes=list(notes),
            heuristic=heuristic,
        )
    finally:
        model.train(was_training)


__all__ = [
    "ADDITIVE",
    "Batches",
    "TrainBatches",
    "EMPIRICAL",
    "MIN_J",
    "RUNNER_UP",
    "DEFAULT_RADII",
    "KIND_EMPIRICAL",
    "KIND_NOT_A_BOUND",
    "KIND_HEURISTIC",
    "KIND_SOUND",
    "HEURISTIC_NOTE",
    "Certificate",
    "CertifiedRadius",
    "HonestyCheck",
    "HonestyConfig",
    "HONESTY_CAP",
    "HONESTY_SLACK",
    "certify",
    "contribution_scales",
    "head_kind",
    "honesty_check",
    "mixes_modalities",
    "pair_eta",
    "radius_from",
    "scaled_gram",
    "unimodal_grams",
]
