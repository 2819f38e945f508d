"""ResNet-18 encoders of the paper (docs/methods.md §1), trained from scratch.

torchvision's ResNet-18 layout (conv1 7×7/2, max-pool, four stages of two BasicBlocks, module
names ``conv1, bn1, layer1..layer4``) with conv1 taking the modality's channels and no avg-pool/fc:
the pooling is done here so that a video clip can fold its T frames into the batch first.

- ``resnet18_visual`` (3-channel RGB frames) and ``resnet18_flow`` (2-channel u/v flow) take
  (B, C, T, H, W), run the 2-D trunk on the B·T frames and average-pool over (T, H, W) — the
  reference's reshape to (B, 512, T, h, w) + ``AdaptiveAvgPool3d(1)``.
- ``resnet18_audio`` (1-channel fbank) takes (B, 1, F, M) and average-pools over (F, M).

The stage widths are ``feature_dim/8, /4, /2, 1×``: ``feature_dim=512`` (the paper's schedule) is
exactly ResNet-18, a smaller ``feature_dim`` gives a slimmer ResNet-18 for CPU-sized experiments.
Initialisation is the reference one (:func:`~mmrobust_bench.models.encoders.init_weights`).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..contracts import ModalitySpec
from .encoders import ENCODERS, init_weights

RESNET18_BLOCKS = (2, 2, 2, 2)


class ResNet18Trunk(nn.Module):
    """ResNet-18 without avg-pool and fc: (N, C, H, W) -> (N, 8·width, H/32, W/32)."""

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, RESNET18_BLOCKS[0], stride=1)
        self.layer2 = self._make_layer(2 * width, RESNET18_BLOCKS[1], stride=2)
        self.layer3 = self._make_layer(4 * width, RESNET18_BLOCKS[2], stride=2)
        self.layer4 = self._make_layer(8 * width, RESNET18_BLOCKS[3], stride=2)
        self.out_channels = 8 * width
        init_weights(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        # imported here: torchvision.models costs more than a second (it loads torch._dynamo), which every
        # command listing or using only the small encoders would otherwise pay
        from torchvision.models.resnet import BasicBlock, conv1x1

        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ResNet18Image(nn.Module):
    """(B, C, H, W) -> (B, feature_dim): trunk + global average pool (the audio encoder)."""

    def __init__(self, in_channels: int, feature_dim: int) -> None:
        super().__init__()
        self.trunk = ResNet18Trunk(in_channels, _width(feature_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.trunk(x).mean(dim=(2, 3))


class ResNet18Clip(nn.Module):
    """(B, C, T, H, W) -> (B, feature_dim): frames through the trunk, then mean over (T, h, w)."""

    def __init__(self, in_channels: int, feature_dim: int) -> None:
        super().__init__()
        self.trunk = ResNet18Trunk(in_channels, _width(feature_dim))

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        feats = self.trunk(x.transpose(1, 2).reshape(b * t, c, h, w))
        return feats.reshape(b, t, feats.shape[1], -1).mean(dim=(1, 3))


def _width(feature_dim: int) -> int:
    if feature_dim < 8 or feature_dim % 8:
        raise ValueError(
            f"ResNet-18 encoders need feature_dim divisible by 8 (512 is ResNet-18 proper), got {feature_dim}"
        )
    return feature_dim // 8


def _check(spec: ModalitySpec, encoder: str, channels: int, ndim: int) -> None:
    if len(spec.shape) != ndim or spec.shape[0] != channels:
        layout = "(C, T, H, W)" if ndim == 4 else "(C, H, W)"
        raise ValueError(
            f"{encoder} needs {layout} inputs with C={channels}; modality {spec.name!r} has shape {spec.shape}"
        )


@ENCODERS.register("resnet18_visual")
def resnet18_visual(spec: ModalitySpec, feature_dim: int) -> nn.Module:
    """ResNet-18 over RGB frames (3, T, H, W), averaged over frames, as the paper's visual encoder."""
    _check(spec, "resnet18_visual", 3, 4)
    return ResNet18Clip(3, feature_dim)


@ENCODERS.register("resnet18_flow")
def resnet18_flow(spec: ModalitySpec, feature_dim: int) -> nn.Module:
    """ResNet-18 over optical-flow frames (2, T, H, W), averaged over frames (UCF101)."""
    _check(spec, "resnet18_flow", 2, 4)
    return ResNet18Clip(2, feature_dim)


@ENCODERS.register("resnet18_audio")
def resnet18_audio(spec: ModalitySpec, feature_dim: int) -> nn.Module:
    """ResNet-18 over a one-channel spectrogram (1, F, T), as the paper's audio encoder."""
    _check(spec, "resnet18_audio", 1, 3)
    return ResNet18Image(1, feature_dim)


__all__ = ["ResNet18Trunk", "ResNet18Image", "ResNet18Clip", "resnet18_visual", "resnet18_flow", "resnet18_audio"]
