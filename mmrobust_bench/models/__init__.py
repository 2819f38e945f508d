"""Encoders, fusion heads and the multi-modal network."""

from .encoders import ENCODERS, build_encoder
from .heads import ConcatHead, CRMTHead, centred_unit_rows, orthonormal_rows
from .multimodal import HEADS, MultiModalNet, build_model

__all__ = [
    "ENCODERS",
    "build_encoder",
    "ConcatHead",
    "CRMTHead",
    "centred_unit_rows",
    "orthonormal_rows",
    "HEADS",
    "MultiModalNet",
    "build_model",
]
