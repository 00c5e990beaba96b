"""A small, fast CNN for tests, demos and CPU-only experiments."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks with 2x max-pool, global average pool, dropout, linear.

    Parameters
    ----------
    in_channels, num_classes : int
    image_size : int
        Inputs of 64 px and more get one extra downsampling block so that compute stays small.
    width : int
        Channels of the first block; doubled at each following block.
    dropout : float
        Dropout before the classifier (MC dropout when > 0).
    """

    def __init__(
        self, *, in_channels: int, num_classes: int, image_size: int = 28, width: int = 16, dropout: float = 0.0
    ) -> None:
        super().__init__()
        n_blocks = 3 if image_size < 64 else 4
        layers: list[nn.Module] = []
        channels = in_channels
        for index in range(n_blocks):
            out = width * 2 ** min(index, 3)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if index < n_blocks - 1:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features ``(N, D)``."""
        return torch.flatten(self.pool(self.body(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))
