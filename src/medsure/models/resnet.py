"""ResNet-18/50 for small medical images, written in plain torch.

Two stems, picked from the input size, because a 28 px MedMNIST image downsampled 4x by the
ImageNet stem leaves a 7 px map before the first block (the MedMNIST v2 paper's "ResNet-18 (28)"
uses a 3x3 stride-1 stem without max-pool for that reason):

- ``image_size < 64``: 3x3 conv, stride 1, no max-pool (MedMNIST 28 px variant);
- ``64 <= image_size < 128``: light stem, 3x3 conv stride 2, no max-pool (4x fewer pixels,
  the first stage still sees 32 px at 64 px input);
- ``image_size >= 128``: ImageNet stem, 7x7 conv stride 2 + 3x3 max-pool stride 2.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with shortcut (ResNet v1.5 stride placement)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


def stem_for(image_size: int) -> str:
    """Name of the stem used for square inputs of ``image_size`` pixels."""
    if image_size < 64:
        return "small"
    if image_size < 128:
        return "light"
    return "imagenet"


class ResNet(nn.Module):
    """ResNet classifier returning logits ``(N, num_classes)`` for input ``(N, C, H, W)``.

    Parameters
    ----------
    block : BasicBlock or Bottleneck
    layers : four block counts, e.g. ``(2, 2, 2, 2)`` for ResNet-18
    in_channels, num_classes : int
    stem : "small", "light" or "imagenet" (see module docstring)
    dropout : float
        Dropout probability before the final linear layer (enables MC dropout when > 0).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        in_channels: int,
        num_classes: int,
        stem: str = "small",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        width = 64
        if stem == "small":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
        elif stem == "light":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            raise ValueError(f"stem {stem!r}, expected 'small', 'light' or 'imagenet'")
        stages = []
        in_planes = width
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            blocks = []
            for j in range(count):
                stride = 2 if (index > 0 and j == 0) else 1
                blocks.append(block(in_planes, planes, stride))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual branch: every block starts as identity,
        # which makes short CPU trainings converge faster (Goyal et al. 2017).
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)
            elif isinstance(module, Bottleneck):
                nn.init.zeros_(module.bn3.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features ``(N, D)``."""
        return torch.flatten(self.pool(self.layers(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))
