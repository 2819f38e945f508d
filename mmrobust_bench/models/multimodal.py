"""The multi-modal classifier: one encoder per modality, then a fusion head."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn

from ..contracts import Batch, ModalitySpec, ModelOutput
from .encoders import build_encoder
from .heads import ConcatHead, CRMTHead

FeatureTransform = Callable[[dict[str, Tensor]], dict[str, Tensor]]


class MultiModalNet(nn.Module):
    """Encoders keyed by modality name plus a head; returns :class:`ModelOutput`.

    ``dropped_features`` zeroes the pooled features of the named modalities (the feature-level
    missing-modality evaluation); the input-level variant lives in the attacks.
    """

    def __init__(self, encoders: Mapping[str, nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.modalities = tuple(encoders)
        self.encoders = nn.ModuleDict(dict(encoders))
        self.head = head
        self.dropped_features: frozenset[str] = frozenset()

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        return {m: self.encode_one(m, batch[m]) for m in self.modalities}

    def encode_one(self, modality: str, x: Tensor) -> Tensor:
        """One modality's features (zeroed when it is in ``dropped_features``): they depend on that input alone."""
        feats = self.encoders[modality](x)
        return feats * 0 if modality in self.dropped_features else feats

    def classify(self, features: dict[str, Tensor]) -> ModelOutput:
        logits, unimodal = self.head(features)
        return ModelOutput(logits=logits, unimodal=unimodal, features=features)

    def forward(self, batch: Batch) -> ModelOutput:
        return self.classify(self.encode(batch))


HEADS = ("concat", "crmt")


def build_model(
    specs: Sequence[ModalitySpec],
    num_classes: int,
    encoders: Mapping[str, str],
    *,
    head: str = "concat",
    feature_dim: int = 64,
    own_groups: str = "full",
) -> MultiModalNet:
    """Assemble encoders (by registered id, per modality) and a head (``concat`` or ``crmt``)."""
    names = [s.name for s in specs]
    missing = [m for m in names if m not in encoders]
    if missing:
        raise ValueError(f"no encoder chosen for modality {', '.join(missing)}")
    modules = {s.name: build_encoder(encoders[s.name], s, feature_dim) for s in specs}
    dims = [feature_dim] * len(names)
    if head == "concat":
        fusion: nn.Module = ConcatHead(names, dims, num_classes)
    elif head == "crmt":
        fusion = CRMTHead(names, dims, num_classes, own_groups=own_groups)
    else:
        raise ValueError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    return MultiModalNet(modules, fusion)
