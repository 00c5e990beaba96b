"""UML: joint classification and segmentation with uncertainty-informed mutual learning.

After Ren et al. (MICCAI 2023), "Uncertainty-informed mutual learning for joint medical image
classification and segmentation", built here from MONAI blocks (no research code copied):

- a **shared encoder** (MONAI residual units, 2x downsampling per stage, the resolution schedule
  of MONAI's U-Net);
- an **evidential segmentation decoder** (U-Net-style, skip connections, features at half
  resolution) whose first head gives per-pixel Dirichlet evidence and its uncertainty map
  ``u0 = K / S``;
- the **uncertainty navigator**: the decoder features are re-weighted by the pixel reliability
  ``1 - u0`` and refined together with ``u0`` before the final segmentation head;
- the **uncertainty instructor**: the classification features (pooled encoder output) are guided
  by the segmentation features pooled where the segmentation is reliable (weights ``1 - u``);
- an evidential classification head.

Ablations (each really removes its modules and connections): ``navigator=False`` (the initial
segmentation is the output; no refinement parameters), ``instructor=False`` (the classifier sees
the encoder only; no guidance parameters), ``shared=False`` (separate networks: a second encoder
for the classifier, no instructor).

The network returns raw outputs (before the evidence function) in a dict: ``"class"`` ``(N, K)``,
``"seg"`` ``(N, K_seg, H, W)`` and ``"seg_initial"`` (the navigator's input, for deep supervision;
the same tensor as ``"seg"`` without navigator). ``alpha = evidence(outputs) + 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medsure.evidential.dirichlet import EVIDENCE_FUNCTIONS, alpha_from_outputs
from medsure.validation import check_choice, check_float, check_int, input_error

JOINT_OUTPUT_KEYS = ("class", "seg", "seg_initial")


def _unit(c_in: int, c_out: int, stride: int, dropout: float) -> nn.Module:
    from monai.networks.blocks import ResidualUnit

    return ResidualUnit(2, c_in, c_out, strides=stride, subunits=1, norm="batch", dropout=dropout or None)


def _conv(c_in: int, c_out: int, kernel_size: int, dropout: float) -> nn.Module:
    from monai.networks.blocks import Convolution

    return Convolution(2, c_in, c_out, kernel_size=kernel_size, norm="batch", dropout=dropout or None)


def _up(c_in: int, c_out: int, dropout: float) -> nn.Module:
    from monai.networks.blocks import Convolution

    return Convolution(
        2, c_in, c_out, strides=2, kernel_size=3, norm="batch", dropout=dropout or None, is_transposed=True
    )


class Encoder(nn.Module):
    """``depth + 1`` residual stages of widths ``width * 2**i``; returns every stage's features.

    As in MONAI's U-Net, the first ``depth`` stages halve the image (the first one already works
    at half resolution) and the last, the bottom, keeps its size: stage ``i`` is at
    ``H / 2**min(i + 1, depth)``. No convolution runs at full resolution, which keeps the cost
    per image close to a MONAI U-Net of the same width.
    """

    def __init__(self, in_channels: int, width: int, depth: int, dropout: float) -> None:
        super().__init__()
        channels = [width * 2**i for i in range(depth + 1)]
        stages = [_unit(in_channels, channels[0], 2, dropout)]
        stages += [_unit(channels[i - 1], channels[i], 2 if i < depth else 1, dropout) for i in range(1, depth + 1)]
        self.stages = nn.ModuleList(stages)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class Decoder(nn.Module):
    """Upsampling path with skip connections; returns features ``(N, width, H/2, W/2)`` (the
    heads upsample to full resolution)."""

    def __init__(self, channels: list[int], dropout: float) -> None:
        super().__init__()
        depth = len(channels) - 1
        ups, current = [], channels[depth]
        for i in range(depth - 1, 0, -1):  # skip i and the path below it -> the resolution of stage i - 1
            ups.append(
                nn.Sequential(
                    _up(current + channels[i], channels[i - 1], dropout),
                    _unit(channels[i - 1], channels[i - 1], 1, dropout),
                )
            )
            current = channels[i - 1]
        self.ups = nn.ModuleList(ups)
        # the top skip joins through a 1x1 convolution: a full residual unit here, at half
        # resolution, would cost as much as the encoder's first stage (MONAI's U-Net has none)
        self.fuse = _conv(current + channels[0], channels[0], 1, dropout)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, skip in zip(self.ups, features[-2:0:-1], strict=True):
            x = up(torch.cat([x, skip], dim=1))
        return self.fuse(torch.cat([x, features[0]], dim=1))


class UncertaintyNavigator(nn.Module):
    """Refine decoder features with the pixel uncertainty ``u0`` ``(N, 1, H, W)``:
    ``f' = f + conv3x3([f * (1 - u0), u0])`` (reliable pixels pass their features, unreliable
    ones are re-estimated from their neighbourhood)."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.refine = _conv(width + 1, width, 3, dropout)

    def forward(self, features: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:
        return features + self.refine(torch.cat([features * (1.0 - u0), u0], dim=1))


class UncertaintyInstructor(nn.Module):
    """Guide classification features ``(N, C)`` by the segmentation features ``(N, w, H, W)``
    pooled with weights ``1 - u`` (where the segmentation is reliable):
    ``g' = g + sigmoid(W_g [g, s]) * W_s s``."""

    def __init__(self, seg_width: int, cls_width: int) -> None:
        super().__init__()
        self.project = nn.Linear(seg_width, cls_width)
        self.gate = nn.Linear(seg_width + cls_width, cls_width)

    def forward(self, cls_features: torch.Tensor, seg_features: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        weight = 1.0 - u  # (N, 1, H, W), in [0, 1)
        pooled = (seg_features * weight).sum(dim=(2, 3)) / weight.sum(dim=(2, 3)).clamp_min(1e-6)
        gate = torch.sigmoid(self.gate(torch.cat([cls_features, pooled], dim=1)))
        return cls_features + gate * self.project(pooled)


class UML(nn.Module):
    """The joint evidential network (see the module docstring).

    Parameters
    ----------
    in_channels : 1 or 3 (any >= 1)
    num_classes : image classes K (>= 2)
    num_seg_classes : mask classes including background (>= 2)
    image_size : square input side; sets the depth (<= 3 halvings that divide it)
    width : channels of the first stage (doubled per stage)
    dropout : dropout in every unit and before the classifier (> 0 allows MC dropout)
    evidence : "softplus" (default, as UML), "relu" or "exp"; the navigator and instructor use it
        to turn the segmentation outputs into ``u``
    navigator, instructor, shared : the ablation switches
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        num_seg_classes: int = 2,
        image_size: int,
        width: int = 16,
        dropout: float = 0.0,
        evidence: str = "softplus",
        navigator: bool = True,
        instructor: bool = True,
        shared: bool = True,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, low=1)
        check_int("num_classes", num_classes, low=2)
        check_int("num_seg_classes", num_seg_classes, low=2, hint="background counts as a class")
        check_int("width", width, low=1)
        check_float("dropout", dropout, low=0.0, high=1.0, closed="left")
        check_choice("evidence function", evidence, EVIDENCE_FUNCTIONS)
        if not shared and instructor:
            raise input_error(
                "UML instructor with shared=False",
                "both",
                "instructor=False for separate networks",
                "separate networks share nothing, so no segmentation features guide the classifier",
                raw=True,
            )
        self.depth = uml_depth(image_size)
        self.evidence = evidence
        self.num_seg_classes = num_seg_classes
        self.encoder = Encoder(in_channels, width, self.depth, dropout)
        self.decoder = Decoder(self.encoder.channels, dropout)
        # heads upsample the half-resolution features to the input size (2x2 transposed convolutions)
        self.seg_initial_head = nn.ConvTranspose2d(width, num_seg_classes, kernel_size=2, stride=2)
        self.navigator = UncertaintyNavigator(width, dropout) if navigator else None
        self.seg_head = nn.ConvTranspose2d(width, num_seg_classes, kernel_size=2, stride=2) if navigator else None
        self.cls_encoder = None if shared else Encoder(in_channels, width, self.depth, dropout)
        top = self.encoder.channels[-1]
        self.instructor = UncertaintyInstructor(width, top) if instructor else None
        self.cls_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(top, num_classes))

    def _u(self, outputs: torch.Tensor) -> torch.Tensor:
        """Pixel uncertainty ``K / S`` of full-resolution outputs, pooled to the features' half resolution."""
        alpha = alpha_from_outputs(outputs, self.evidence)
        return F.avg_pool2d(self.num_seg_classes / alpha.sum(dim=1, keepdim=True), 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs for ``x`` ``(N, C, H, W)``: "class" ``(N, K)``, "seg" and "seg_initial"
        ``(N, K_seg, H, W)``."""
        features = self.encoder(x)
        decoded = self.decoder(features)
        seg_initial = self.seg_initial_head(decoded)
        seg, seg_features = seg_initial, decoded
        if self.navigator is not None and self.seg_head is not None:
            seg_features = self.navigator(decoded, self._u(seg_initial))
            seg = self.seg_head(seg_features)
        top = features[-1] if self.cls_encoder is None else self.cls_encoder(x)[-1]
        pooled = top.mean(dim=(2, 3))
        if self.instructor is not None:
            pooled = self.instructor(pooled, seg_features, self._u(seg))
        return {"class": self.cls_head(pooled), "seg": seg, "seg_initial": seg_initial}


def uml_depth(image_size: int) -> int:
    """Number of 2x downsamplings (at most 3) that divide ``image_size`` (>= 1, else an error)."""
    check_int("image_size", image_size, low=1)
    depth = 0
    while depth < 3 and image_size % 2 ** (depth + 1) == 0:
        depth += 1
    if depth == 0:
        raise input_error("image_size", image_size, "an even size for UML (its encoder halves the image)")
    return depth
