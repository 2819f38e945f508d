"""The single-input view of a multi-modal model, shared by the torchattacks and ART adapters.

Attack libraries call ``model(x)`` with one tensor in [0, 1], and some call it on sub-batches or
single samples (DeepFool, FAB, APGD, Square, ART's decision-based attacks). The view shows them the
multi-modal model as ``f(x)`` on one (B', 1, H, W) "image" (DESIGN.md, "Adapting single-input attack
libraries"):

* the attacked modalities, flattened and concatenated in ``threat.modalities`` order, are the first
  D coordinates, mapped by one affine map per sample centred on the clean input,
  ``x_lib = 0.5 + (u - u_clean) / s`` with the scalar ``s = eps / LIB_EPS``. The library budget is
  then ``LIB_EPS`` = 0.35 for every ε, any δ inside the ε ball (ℓ2 or ℓ∞) stays in [0.15, 0.85] so the
  library's own [0, 1] clamp never acts, and ℓ2 geometry is kept because ``s`` is a scalar;
* the next coordinates are *tags*: the sample index in binary, as 0.1 / 0.9. The view decodes them by
  thresholding at 0.5 under ``no_grad`` and supplies the frozen modalities and the clean centre of
  exactly those samples, whatever subset or order the library sends. Tags get zero gradient, so
  gradient steps never move them, and random starts move them by at most 0.35, which the threshold
  tolerates; a tag moved further (noise, pixel swaps) is an error, never a silent mix-up. The rest of
  the image is padding (also ignored), so that H, W ≥ 5: Square's ℓ2 initialisation tiles the image
  into windows of side H // 5.

The view clamps every attacked modality into its valid box before calling the model; the attack base
class then projects the returned inputs onto the threat ball and into the boxes, restores model mode
and RNGs, and keeps frozen modalities bit-identical. :meth:`SingleInputView.attack_mask` (1 on the
attacked coordinates, 0 on tags and padding) and :meth:`SingleInputView.clip_bounds` (the exact
per-coordinate box of one sample in library coordinates) serve libraries that accept a perturbation
mask or per-feature bounds (ART).
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from typing import AbstractSet, Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..contracts import Batch, ModalitySpec

LIB_EPS = 0.35
CENTRE = 0.5
TAG_LOW, TAG_HIGH = 0.1, 0.9
TAG_SLACK = 1e-3  # rounding in the library's own steps and clamps
# The largest tag move the view accepts: a budgeted move (≤ LIB_EPS per coordinate) never crosses the
# 0.5 threshold, which is 0.4 away from either code.
TAG_TOLERANCE = LIB_EPS
MIN_SIDE = 5


def checked_signature(label: str, attack_cls: type, options: Mapping[str, Any], reserved: AbstractSet[str],
                      reserved_source: str) -> dict[str, inspect.Parameter]:
    """The library constructor's parameters, after refusing options that the adapter sets itself
    (``reserved``: they come from ``reserved_source``) and options the constructor does not take."""
    params = dict(inspect.signature(attack_cls.__init__).parameters)
    params.pop("self", None)
    clash = sorted(set(reserved).intersection(options))
    if clash:
        raise ValueError(f"{label}: {', '.join(clash)} come from {reserved_source}, not from options")
    unknown = sorted(set(options) - set(params))
    if unknown:
        accepted = sorted(set(params) - set(reserved))
        raise ValueError(f"{label} has no option {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}")
    return params


def grid_shape(n: int, min_side: int = MIN_SIDE) -> tuple[int, int]:
    """A near-square (H, W) with H·W ≥ n and both sides ≥ ``min_side``, for attacks that tile the image."""
    h = max(min_side, math.ceil(math.sqrt(n)))
    return h, max(min_side, math.ceil(n / h))


def tag_bits(n: int) -> int:
    return math.ceil(math.log2(n + 1))


class SingleInputView(nn.Module):
    """The multi-modal model seen as ``f(x)`` on one (B', 1, H, W) tensor, B' any subset of the batch.

    Holds the clean batch; decodes each row's sample index from its tags, so frozen modalities and
    the clean centre always belong to the right sample, for sub-batches, single samples or repeats.
    ``min_side`` enlarges the padding for attacks that tile the image with large windows (ART's Square).
    """

    def __init__(self, model: nn.Module, batch: Batch, modalities: Sequence[str], specs: dict[str, ModalitySpec],
                 scale: float, min_side: int = MIN_SIDE) -> None:
        super().__init__()
        self.model = model
        self.batch = batch
        self.modalities = tuple(modalities)
        self.specs = specs
        self.scale = scale
        self.dtype = torch.promote_types(torch.float32, batch[self.modalities[0]].dtype)
        for m in self.modalities[1:]:
            self.dtype = torch.promote_types(self.dtype, batch[m].dtype)
        self.clean = torch.cat([batch[m].flatten(1).to(self.dtype) for m in self.modalities], 1)
        self.sizes = [batch[m][0].numel() for m in self.modalities]
        self._offset = self.clean - self.scale * CENTRE  # decode(x) = offset + s·x
        n = self.clean.shape[0]
        self.n_tags = tag_bits(n)
        self.height, self.width = grid_shape(self.clean.shape[1] + self.n_tags, min_side)
        self.strict = True
        self._tags = self.encode().flatten(1)[:, self.clean.shape[1]:self.clean.shape[1] + self.n_tags]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one library input (channels first)."""
        return (1, self.height, self.width)

    def encode(self) -> Tensor:
        """The clean batch in library coordinates: 0.5 on attacked coordinates, then tags, then padding."""
        n, d = self.clean.shape
        x = torch.full((n, self.height * self.width), CENTRE, dtype=self.dtype, device=self.clean.device)
        bits = (torch.arange(n, device=x.device)[:, None] >> torch.arange(self.n_tags, device=x.device)) & 1
        x[:, d:d + self.n_tags] = torch.where(bits.bool(), TAG_HIGH, TAG_LOW).to(self.dtype)
        return x.view(n, 1, self.height, self.width)

    def decode(self, x: Tensor, index: Tensor | None = None, *, exact: bool = False) -> dict[str, Tensor]:
        """Library coordinates back to the attacked modalities in model-input space (unclamped).

        Row r is sample ``index[r]`` of the batch (all samples in order when ``index`` is None). Model
        calls use one fused kernel, which may move an untouched coordinate by one ulp; ``exact`` (for
        the attack's result) computes clean + s·(x − 0.5), so whatever the library left at the centre
        comes back bit-identical to the clean input.
        """
        lib = x.flatten(1)[:, :self.clean.shape[1]].to(self.dtype)
        if exact:
            clean = self.clean if index is None else self.clean[index]
            u = clean + self.scale * (lib - CENTRE)
        else:
            offset = self._offset if index is None else self._offset[index]
            u = torch.add(offset, lib, alpha=self.scale)  # clean + s (x − 0.5), fused: runs on every model call
        out = {}
        for m, piece in zip(self.modalities, u.split(self.sizes, dim=1)):
            out[m] = piece.reshape((piece.shape[0],) + self.batch[m].shape[1:])
        return out

    def attack_mask(self) -> Tensor:
        """(1, H, W): 1 on the attacked coordinates, 0 on tags and padding, for libraries that take a mask."""
        mask = torch.zeros(self.height * self.width, dtype=self.dtype, device=self.clean.device)
        mask[:self.clean.shape[1]] = 1
        return mask.view(self.input_shape)

    def clip_bounds(self, pin: float) -> tuple[Tensor, Tensor]:
        """Per-coordinate (lower, upper), each (B, 1, H, W), in library coordinates, for per-feature bounds.

        Attacked coordinates get each modality's valid box mapped through the sample's own affine map,
        intersected with [0, 1]; tags and padding are pinned to ``value ± pin``, so a library that draws
        random points inside its bounds never moves them. The clean point (0.5) is inside every box.
        """
        lib = self.encode().flatten(1)
        lower, upper = lib - pin, lib + pin
        d = self.clean.shape[1]
        lo_u, hi_u = [], []
        for m, size in zip(self.modalities, self.sizes):
            x = self.batch[m].to(self.dtype)
            box = self.specs[m].box(x)
            if box is None:
                lo_u.append(torch.full((x.shape[0], size), -math.inf, dtype=self.dtype, device=x.device))
                hi_u.append(torch.full((x.shape[0], size), math.inf, dtype=self.dtype, device=x.device))
            else:
                lo_u.append(box[0].expand_as(x).flatten(1))
                hi_u.append(box[1].expand_as(x).flatten(1))
        lower[:, :d] = (CENTRE + (torch.cat(lo_u, 1) - self.clean) / self.scale).clamp(0.0, CENTRE)
        upper[:, :d] = (CENTRE + (torch.cat(hi_u, 1) - self.clean) / self.scale).clamp(CENTRE, 1.0)
        shape = (-1,) + self.input_shape
        return lower.view(shape), upper.view(shape)

    @contextmanager
    def probing(self) -> Iterator[None]:
        """Inside, rows whose tags read as an index past the batch go to sample ``index % n`` instead of
        raising: for libraries that probe the model with a made-up input while an attack is built (ART's
        APGD checks on ``np.ones`` whether the model outputs probabilities) and look at nothing else."""
        self.strict = False
        try:
            yield
        finally:
            self.strict = True

    def sample_index(self, x: Tensor) -> Tensor:
        """Each row's sample index, read from its tags; an attack that moved a tag further than its own
        budget (noise, pixel swaps) would silently pair rows with another sample's frozen inputs, so
        that is an error instead."""
        with torch.no_grad():
            d = self.clean.shape[1]
            tags = x.flatten(1)[:, d:d + self.n_tags].to(self.dtype)
            bits = tags > CENTRE
            index = (bits.long() << torch.arange(self.n_tags, device=x.device)).sum(1)
            drift = (tags - torch.where(bits, TAG_HIGH, TAG_LOW)).abs().amax()
            if not self.strict:
                index = index % self.clean.shape[0]
        if bool((drift > TAG_TOLERANCE + TAG_SLACK) | (index >= self.clean.shape[0]).any()):
            raise RuntimeError(f"the attack moved the sample-index tags of the single-input view by {float(drift):.3g}, "
                               f"more than its budget {LIB_EPS}: it changes inputs beyond its budget (noise, pixel "
                               f"swaps) and cannot be adapted with these options")
        return index

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise RuntimeError(f"the attack library sent an input of shape {tuple(x.shape)} to the single-input view, "
                               f"which takes (B, 1, {self.height}, {self.width}); attacks that resize or crop images "
                               f"cannot be adapted")
        index = self.rows(x)
        attacked = self.decode(x, index)
        inputs = {}
        for m, value in self.batch.items():
            if m in attacked:
                inputs[m] = self.specs[m].clamp(attacked[m].to(value.dtype))
            else:
                inputs[m] = value if index is None else value[index]
        return self.model(inputs).logits.float()

    def rows(self, x: Tensor) -> Tensor | None:
        """The sample index of each row, or None for the whole batch in order (what full-batch gradient
        attacks send, tags untouched): then the frozen modalities are used as they are, without copies."""
        n, d = self.clean.shape
        if x.shape[0] == n:
            with torch.no_grad():
                tags = x.flatten(1)[:, d:d + self.n_tags].to(self.dtype)
                if torch.equal(tags, self._tags):
                    return None
        index = self.sample_index(x)
        if index.shape[0] == n and bool((index == torch.arange(n, device=index.device)).all()):
            return None
        return index


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad during the attack: DeepFool and ART call ``backward()``, which would
    otherwise fill the user's ``.grad`` buffers; the flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


__all__ = ["SingleInputView", "frozen_parameters", "grid_shape", "tag_bits", "LIB_EPS", "CENTRE", "TAG_LOW",
           "TAG_HIGH", "TAG_SLACK", "TAG_TOLERANCE", "MIN_SIDE"]
