"""MMT: the multi-modal transformer with hierarchical attention (docs/methods.md §13).

"Multi-stream to one-stream": every modality is cut into non-overlapping patches by its own ViT
tokeniser (learned spatial + temporal position embeddings for frames, learned 2-D ones for a
spectrogram) and gets its own learnable CLS token; ``unimodal_layers`` pre-LN transformer layers
run per stream, then ``fusion_layers`` joint layers run over the concatenated sequence
[CLS_v, visual tokens, CLS_a, audio tokens]. The final CLS of modality m is its feature φ^(m),
which feeds the usual fusion heads (concat for JT, the CRMT head), so attacks and certification
see an ordinary :class:`MultiModalNet`.

After the joint layers φ^(m), hence z^(m), depends on *every* input: the uni-modal certificates
of Eq. 5/10 are heuristic for MMT (exact only with ``fusion_layers=0``).

Patch grids come from the modality specs, nothing is hard-coded: with 16 × 16 patches the paper's
3 × 224 × 224 frames give 3 × 14 × 14 = 588 tokens and a 1024 × 128 fbank 64 × 8 = 512 tokens;
synthav's 3 × 32 × 32 frames and 64 × 40 fbank use the ``small`` preset's 8 × 8 patches
(48 and 40 tokens).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..contracts import Batch, ModalitySpec
from .heads import ConcatHead, CRMTHead
from .multimodal import HEADS, MultiModalNet


@dataclass(frozen=True)
class MMTPreset:
    width: int
    heads: int
    mlp_ratio: float
    unimodal_layers: int
    fusion_layers: int
    dropout: float
    patch: int

    def __post_init__(self) -> None:
        if min(self.width, self.heads, self.patch) < 1 or min(self.unimodal_layers, self.fusion_layers) < 0:
            raise ValueError(f"MMT: width, heads and patch must be >= 1 and layer counts >= 0, got {self}")
        if self.width % self.heads:
            raise ValueError(f"MMT: width {self.width} is not divisible by {self.heads} heads")
        if self.mlp_ratio <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MMT: need mlp_ratio > 0 and 0 <= dropout < 1, got {self}")


PRESETS: dict[str, MMTPreset] = {
    # docs/methods.md §13 suggested settings, for 224 × 224 frames and 1024 × 128 spectrograms
    "paper": MMTPreset(width=512, heads=8, mlp_ratio=4.0, unimodal_layers=4, fusion_layers=2, dropout=0.1, patch=16),
    # synthav-sized inputs on a CPU: tens of tokens per modality, trains in seconds
    "small": MMTPreset(width=64, heads=4, mlp_ratio=2.0, unimodal_layers=1, fusion_layers=1, dropout=0.0, patch=8),
}
SIZES = ("auto",) + tuple(PRESETS)
PAPER_MIN_PATCHES = 64  # "auto" picks the paper preset when every frame/spectrogram has this many 16×16 patches


def _frame_shape(spec: ModalitySpec) -> tuple[int, int, int, int]:
    """(C, T, H, W) of a modality: (C, T, H, W) video/flow, or (C, H, W) spectrogram as T = 1."""
    if len(spec.shape) == 4:
        return spec.shape
    if len(spec.shape) == 3:
        c, h, w = spec.shape
        return c, 1, h, w
    raise ValueError(f"MMT tokenises (C, H, W) or (C, T, H, W) inputs; modality {spec.name!r} has shape {spec.shape}")


def choose_size(specs: Sequence[ModalitySpec]) -> str:
    """``paper`` when 16 × 16 patches give every modality at least 64 patches per frame, else ``small``."""
    side = PRESETS["paper"].patch
    for spec in specs:
        _, _, h, w = _frame_shape(spec)
        if (h // side) * (w // side) < PAPER_MIN_PATCHES:
            return "small"
    return "paper"


def resolve_preset(specs: Sequence[ModalitySpec], size: str = "auto", **changes) -> tuple[str, MMTPreset]:
    """The named (or automatically chosen) preset with the given fields replaced."""
    if size not in SIZES:
        raise ValueError(f"MMT size must be one of {', '.join(SIZES)}, got {size!r}")
    name = choose_size(specs) if size == "auto" else size
    return name, dataclasses.replace(PRESETS[name], **changes)


class PatchTokenizer(nn.Module):
    """Non-overlapping p × p patches of every frame → linear embedding + learned positions.

    Frames (C, T, H, W) get a temporal (T) plus a spatial (H/p · W/p) position table, summed; a
    spectrogram (C, H, W) gets one 2-D table over its (H/p) × (W/p) grid. Tokens are ordered
    time-major, then row-major over the patch grid.
    """

    def __init__(self, spec: ModalitySpec, patch: int, width: int) -> None:
        super().__init__()
        c, t, h, w = _frame_shape(spec)
        if h % patch or w % patch:
            raise ValueError(
                f"MMT: modality {spec.name!r} frames of {h}×{w} are not divisible into {patch}×{patch} "
                f"patches; set the patch size (--set patch=...) to a common divisor"
            )
        self.name = spec.name
        self.video = len(spec.shape) == 4
        self.patch = patch
        self.grid = (t, h // patch, w // patch)
        self.embed = nn.Linear(c * patch * patch, width)
        self.spatial_pos = nn.Parameter(torch.zeros(1, 1, self.grid[1] * self.grid[2], width))
        self.temporal_pos = nn.Parameter(torch.zeros(1, t, 1, width)) if self.video else None

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    def forward(self, x: Tensor) -> Tensor:
        if not self.video:
            x = x.unsqueeze(2)
        b, c = x.shape[:2]
        t, gh, gw = self.grid
        p = self.patch
        patches = x.reshape(b, c, t, gh, p, gw, p).permute(0, 2, 3, 5, 1, 4, 6).reshape(b, t, gh * gw, c * p * p)
        tokens = self.embed(patches) + self.spatial_pos
        if self.temporal_pos is not None:
            tokens = tokens + self.temporal_pos
        return tokens.flatten(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (fused kernels, any length)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, d)))


class Block(nn.Module):
    """Pre-LN transformer layer: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ModalityStream(nn.Module):
    """One modality's tokeniser, CLS token and modality-specific layers: x → (B, 1 + N, width), CLS first."""

    def __init__(self, spec: ModalitySpec, preset: MMTPreset) -> None:
        super().__init__()
        self.tokenizer = PatchTokenizer(spec, preset.patch, preset.width)
        self.cls = nn.Parameter(torch.zeros(1, 1, preset.width))
        self.drop = nn.Dropout(preset.dropout)
        self.blocks = nn.Sequential(
            *(
                Block(preset.width, preset.heads, preset.mlp_ratio, preset.dropout)
                for _ in range(preset.unimodal_layers)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.tokenizer(x)
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        return self.blocks(self.drop(tokens))


def _init_vit(module: nn.Module) -> None:
    """ViT initialisation: truncated-normal(0.02) linears, positions and CLS tokens; zero biases."""
    for name, param in module.named_parameters():
        if name.endswith(("pos", "cls")):
            nn.init.trunc_normal_(param, std=0.02)
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


class MMTNet(MultiModalNet):
    """MultiModalNet whose ``encoders[m]`` are the per-modality streams and whose :meth:`encode`
    runs the joint layers over all streams before reading each modality's final CLS token."""

    def __init__(
        self, streams: Mapping[str, ModalityStream], head: nn.Module, preset: MMTPreset, size: str = "custom"
    ) -> None:
        super().__init__(streams, head)
        self.preset = preset
        self.size = size
        self.fusion = nn.Sequential(
            *(Block(preset.width, preset.heads, preset.mlp_ratio, preset.dropout) for _ in range(preset.fusion_layers))
        )
        self.norms = nn.ModuleDict({m: nn.LayerNorm(preset.width) for m in self.modalities})
        _init_vit(self.encoders)
        _init_vit(self.fusion)

    def stream_tokens(self, batch: Batch) -> dict[str, Tensor]:
        """Each modality's sequence after its own layers, before any joint layer: (B, 1 + N_m, width)."""
        return {m: self.encoders[m](batch[m]) for m in self.modalities}

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        streams = self.stream_tokens(batch)
        joint = self.fusion(torch.cat([streams[m] for m in self.modalities], dim=1))
        feats, start = {}, 0
        for m in self.modalities:
            feats[m] = self.norms[m](joint[:, start])
            start += streams[m].shape[1]
        for m in self.dropped_features:
            feats[m] = feats[m] * 0
        return feats


def build_mmt(
    specs: Sequence[ModalitySpec],
    num_classes: int,
    *,
    head: str = "concat",
    size: str = "auto",
    own_groups: str = "full",
    **changes,
) -> MMTNet:
    """An MMT for these modality specs: preset ``size`` (``auto``/``paper``/``small``) with ``changes``
    (width, heads, mlp_ratio, unimodal_layers, fusion_layers, dropout, patch) applied."""
    name, preset = resolve_preset(specs, size, **changes)
    names = [s.name for s in specs]
    streams = {s.name: ModalityStream(s, preset) for s in specs}
    dims = [preset.width] * len(names)
    if head == "concat":
        fusion: nn.Module = ConcatHead(names, dims, num_classes)
    elif head == "crmt":
        fusion = CRMTHead(names, dims, num_classes, own_groups=own_groups)
    else:
        raise ValueError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    return MMTNet(streams, fusion, preset, size=name)


__all__ = [
    "MMTPreset",
    "PRESETS",
    "SIZES",
    "choose_size",
    "resolve_preset",
    "PatchTokenizer",
    "Attention",
    "Block",
    "ModalityStream",
    "MMTNet",
    "build_mmt",
]
