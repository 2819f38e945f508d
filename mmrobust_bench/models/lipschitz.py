"""Per-class, per-modality Lipschitz estimates of the uni-modal scores (docs/methods.md §10.5).

τ_k^(m) = max over samples of ‖∇_{x^(m)} z_k^(m)(x)‖₂. All K vector–Jacobian products of one
modality come from a single batched backward (``is_grads_batched=True``), chunked over classes to
bound memory. These are gradient-based *estimates* (lower bounds of the true constants), so any
radius built on them is an empirical certificate.

``mode="official"`` reproduces the reference ``get_lip``: it differentiates the *fused* logit,
accumulates the first modality's gradient over classes 0..k and reads every other modality's
gradient after zeroing it, which gives τ ≡ 0 there.

They live with the models, below the defenses, because CRMT's training (step 2) needs them as well as
certification (``certify.lipschitz`` re-exports them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..contracts import Batch, ModelOutput, input_gradients_of

LIP_MODES = ("intended", "official")


def unimodal_jacobian_chunks(
    model: nn.Module, batch: Batch, modalities: Sequence[str], class_chunk: int = 32
) -> tuple[ModelOutput, Iterator[tuple[str, Tensor]]]:
    """The model's output on ``batch`` and, lazily, ``(m, J)`` per modality and class chunk, with
    J[c, b] = ∂z^(m)_{start+c}(x_b)/∂x^(m) of shape (chunk, B, *x^(m).shape): one batched backward
    (``is_grads_batched``) per chunk, the graph freed after the last. A score that does not depend on
    its own input gives J = 0. Lipschitz estimates take row norms, certificates the Gram matrix."""
    inputs = {m: x.detach().requires_grad_(m in modalities) for m, x in batch.items()}
    out = model(inputs)

    def chunks() -> Iterator[tuple[str, Tensor]]:
        for i, m in enumerate(modalities):
            z = out.unimodal[m].float()
            b, k = z.shape
            eye = torch.eye(k, device=z.device, dtype=z.dtype)
            for start in range(0, k, class_chunk):
                stop = min(k, start + class_chunk)
                grad_out = eye[start:stop, None, :].expand(stop - start, b, k)
                last = i == len(modalities) - 1 and stop == k
                (g,) = torch.autograd.grad(
                    z, inputs[m], grad_outputs=grad_out, is_grads_batched=True, retain_graph=not last, allow_unused=True
                )
                if g is None:  # z^(m) does not depend on x^(m)
                    g = torch.zeros((stop - start,) + tuple(inputs[m].shape), device=z.device)
                yield m, g.detach()

    return out, chunks()


def batch_unimodal_gradient_norms(
    model: nn.Module, batch: Batch, modalities: Sequence[str], class_chunk: int = 32
) -> dict[str, Tensor]:
    """(K, B) norms ‖∇_{x^(m)} z_k^(m)(x_b)‖ for each modality m, one batched backward per chunk."""
    _, chunks = unimodal_jacobian_chunks(model, batch, modalities, class_chunk)
    parts: dict[str, list[Tensor]] = {m: [] for m in modalities}
    for m, g in chunks:
        parts[m].append(g.float().flatten(2).norm(dim=2))  # (chunk, B)
    return {m: torch.cat(p, dim=0) for m, p in parts.items()}


def _official_batch(model: nn.Module, batch: Batch, modalities: Sequence[str]) -> dict[str, Tensor]:
    """The reference get_lip on one batch: fused-logit gradients, first modality accumulated, rest zero."""
    inputs = {m: x.detach().requires_grad_(m in modalities) for m, x in batch.items()}
    logits = model(inputs).logits.float()
    k = logits.shape[1]
    first = modalities[0]
    acc = torch.zeros_like(inputs[first], dtype=torch.float32)
    norms = {m: torch.zeros(k, logits.shape[0], device=logits.device) for m in modalities}
    for c in range(k):
        grads = input_gradients_of(logits[:, c].sum(), [inputs[m] for m in modalities], retain_graph=c < k - 1)
        acc = acc + grads[0].float()
        norms[first][c] = acc.flatten(1).norm(dim=1)
        # every other modality's gradient was zeroed before being read: its norm is 0
    return norms


def estimate_lipschitz(
    model: nn.Module,
    batches: Iterable[tuple[Batch, Tensor]],
    modalities: Sequence[str],
    *,
    mode: str = "intended",
    class_chunk: int = 32,
) -> dict[str, Tensor]:
    """Running max over all samples of the per-class gradient norms: {modality: τ (K,)}.

    The model is put in eval mode for the estimate and restored afterwards.
    """
    if mode not in LIP_MODES:
        raise ValueError(f"unknown Lipschitz mode {mode!r}; valid: {', '.join(LIP_MODES)}")
    was_training = model.training
    model.eval()
    tau: dict[str, Tensor] = {}
    try:
        for batch, _ in batches:
            if mode == "intended":
                norms = batch_unimodal_gradient_norms(model, batch, modalities, class_chunk)
            else:
                norms = _official_batch(model, batch, modalities)
            for m, n in norms.items():
                peak = n.max(dim=1).values.detach()
                tau[m] = peak if m not in tau else torch.maximum(tau[m], peak)
    finally:
        model.train(was_training)
    return tau


__all__ = ["LIP_MODES", "unimodal_jacobian_chunks", "batch_unimodal_gradient_norms", "estimate_lipschitz"]
