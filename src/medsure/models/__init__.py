"""Models medsure trains: ResNet-18/50 and a small CNN for classification, MONAI U-Net for segmentation.

Every model built here takes images scaled to ``[0, 1]`` (``uint8 / 255``), shape ``(N, C, H, W)``,
and normalises them itself, so :func:`medsure.predict.predict` needs no preprocessing knowledge.

>>> model = build_model("resnet18", in_channels=1, num_classes=2, image_size=28, dropout=0.2)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medsure.models.resnet import BasicBlock, Bottleneck, ResNet, stem_for
from medsure.models.small_cnn import SmallCNN
from medsure.validation import check_choice, check_float, check_int, input_error

CLASSIFIERS = ("resnet18", "resnet50", "small_cnn")
SEGMENTERS = ("unet",)
# joint classification + segmentation (medsure.models.uml): the full model and its three ablations
JOINT_MODELS = ("uml", "uml_no_navigator", "uml_no_instructor", "uml_separate")
MODEL_NAMES = CLASSIFIERS + SEGMENTERS  # single-task models
ALL_MODEL_NAMES = MODEL_NAMES + JOINT_MODELS


class Normalized(nn.Module):
    """Wrap ``net`` so that it takes ``[0, 1]`` images: ``net((x - mean) / std)``.

    Attributes
    ----------
    net : the wrapped network (use it to pick Grad-CAM target layers)
    """

    # buffers (registered below, so they move with .to(device)); declared for the type checker
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: float = 0.5, std: float = 0.25) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    dropout: float = 0.0,
    width: int | None = None,
    num_seg_classes: int = 2,
    evidence: str = "softplus",
) -> nn.Module:
    """Build an untrained model.

    Parameters
    ----------
    name : "resnet18", "resnet50", "small_cnn" or "unet"
    in_channels : int
        1 for grey images, 3 for RGB.
    num_classes : int
        Classes K (background counts as a class for segmentation).
    image_size : int
        Side of the square input; picks the ResNet stem (3x3 stride-1 below 64 px, light
        stride-2 stem below 128 px, ImageNet stem above) and the U-Net depth.
    dropout : float in [0, 1)
        > 0 adds dropout (before the classifier; in every U-Net unit) so MC dropout is possible.
    width : int, optional
        Base channel count for ``small_cnn``, ``unet`` and ``uml*`` (default 16).
    num_seg_classes, evidence : joint models only: mask classes (background included) and the
        evidence function their navigator and instructor use (:mod:`medsure.models.uml`)

    Returns
    -------
    torch.nn.Module
        Takes ``(N, C, H, W)`` float in [0, 1]; returns logits ``(N, K)`` or ``(N, K, H, W)``.
    """
    check_choice("model name", name, ALL_MODEL_NAMES)
    check_int("in_channels", in_channels, low=1)
    check_int("num_classes", num_classes, low=2, hint="background counts as a class for segmentation")
    check_int("image_size", image_size, low=1)
    check_float("dropout", dropout, low=0.0, high=1.0, closed="left")
    net: nn.Module
    if name == "resnet18":
        net = ResNet(
            BasicBlock,
            (2, 2, 2, 2),
            in_channels=in_channels,
            num_classes=num_classes,
            stem=stem_for(image_size),
            dropout=dropout,
        )
    elif name == "resnet50":
        net = ResNet(
            Bottleneck,
            (3, 4, 6, 3),
            in_channels=in_channels,
            num_classes=num_classes,
            stem=stem_for(image_size),
            dropout=dropout,
        )
    elif name == "small_cnn":
        net = SmallCNN(
            in_channels=in_channels, num_classes=num_classes, image_size=image_size, width=width or 16, dropout=dropout
        )
    elif name in JOINT_MODELS:
        from medsure.models.uml import UML

        net = UML(
            in_channels,
            num_classes,
            num_seg_classes=num_seg_classes,
            image_size=image_size,
            width=width or 16,
            dropout=dropout,
            evidence=evidence,
            navigator=name not in ("uml_no_navigator", "uml_separate"),
            instructor=name not in ("uml_no_instructor", "uml_separate"),
            shared=name != "uml_separate",
        )
    else:
        net = _unet(in_channels, num_classes, image_size, dropout, width or 16)
    return Normalized(net)


def _unet(in_channels: int, num_classes: int, image_size: int, dropout: float, width: int) -> nn.Module:
    from monai.networks.nets import UNet

    # Depth: as many 2x downsamplings (at most 3) as divide the image size evenly, so the
    # decoder's skip connections line up without padding.
    depth = 0
    while depth < 3 and image_size % 2 ** (depth + 1) == 0:
        depth += 1
    if depth == 0:
        raise input_error("image_size", image_size, "an even size for the U-Net (it halves the image at least once)")
    channels = tuple(width * 2**i for i in range(depth + 1))
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=channels,
        strides=(2,) * depth,
        num_res_units=1,
        dropout=dropout,
        norm="batch",
    )


def task_of(name: str) -> str:
    """ "classification", "segmentation" or "joint" (both, :data:`JOINT_MODELS`) for a model name."""
    if name in JOINT_MODELS:
        return "joint"
    return "segmentation" if name in SEGMENTERS else "classification"


def gradcam_target_layer(model: nn.Module) -> nn.Module:
    """The last convolutional stage of a medsure classifier (a sensible Grad-CAM target).

    ResNet: the last residual stage; small CNN: the last ReLU of the conv body.
    """
    net = model.net if isinstance(model, Normalized) else model
    if isinstance(net, ResNet):
        return net.layers[-1]
    if isinstance(net, SmallCNN):
        return net.body[-1]
    raise input_error(
        "Grad-CAM target layer of the model",
        f"a {type(net).__name__}, which has no default layer",
        "a medsure ResNet or small CNN",
        "pass a target layer explicitly",
        raw=True,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(int(p.numel()) for p in model.parameters())


def describe(model: nn.Module) -> dict[str, Any]:
    return {"class": type(getattr(model, "net", model)).__name__, "parameters": count_parameters(model)}


__all__ = [
    "MODEL_NAMES",
    "CLASSIFIERS",
    "SEGMENTERS",
    "JOINT_MODELS",
    "ALL_MODEL_NAMES",
    "Normalized",
    "build_model",
    "task_of",
    "gradcam_target_layer",
    "count_parameters",
]
