"""Test-time augmentation views and their inverses.

A view maps an image batch ``(N, C, H, W)`` to a transformed batch; for segmentation the
model's logits ``(N, K, H, W)`` are mapped back with the inverse transform before the views are
stacked, so every view's output is aligned with the original image.

Names: ``"identity"``, ``"hflip"``, ``"vflip"``, ``"hvflip"`` (exact, their own inverses) and
``"rot<deg>"`` e.g. ``"rot+10"``/``"rot-10"`` (small rotation about the centre, bilinear; pixels
rotated in from outside the image are 0 on input and border-extended on the way back).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medsure.validation import input_error

CLASSIFICATION_VIEWS = ("identity", "hflip", "vflip", "hvflip")
SEGMENTATION_VIEWS = ("identity", "hflip", "vflip", "rot+10", "rot-10")
_ROT = re.compile(r"^rot([+-]?\d+(?:\.\d+)?)$")
_VIEW_NAMES = "identity, hflip, vflip, hvflip or rot<degrees> such as rot+10"


def default_views(task: str) -> tuple[str, ...]:
    """Views used by ``predict(..., tta=True)`` for a task."""
    return SEGMENTATION_VIEWS if task == "segmentation" else CLASSIFICATION_VIEWS


def views_for_training(task: str, *, hflip: bool, vflip: bool) -> tuple[str, ...]:
    """TTA views a model trained with these flips has seen: identity, the trained flips (and
    their composition for classification) and, for segmentation, the ±10° rotations.

    A flip never seen in training is a shifted input, not an augmentation: on lateralised
    anatomy (chest X-rays trained without h-flip) it degrades the averaged prediction and its
    calibration instead of improving them.
    """
    views = ["identity"] + (["hflip"] if hflip else []) + (["vflip"] if vflip else [])
    if task == "segmentation":
        views += ["rot+10", "rot-10"]
    elif hflip and vflip:
        views.append("hvflip")
    return tuple(views)


def check_views(views: Sequence[str]) -> tuple[str, ...]:
    views = tuple(views)
    if not views:
        raise input_error("tta views", "an empty list", "at least one view name", raw=True)
    for name in views:
        if name not in ("identity", "hflip", "vflip", "hvflip") and not _ROT.match(name):
            raise input_error("tta view", name, _VIEW_NAMES)
    if len(set(views)) != len(views):
        raise input_error("tta views", views, "distinct view names", "remove the duplicates")
    return views


def _rotate(x: torch.Tensor, degrees: float, padding_mode: str) -> torch.Tensor:
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def apply_view(name: str, images: torch.Tensor) -> torch.Tensor:
    """Transform an image batch ``(N, C, H, W)`` by the view ``name``."""
    if name == "identity":
        return images
    if name == "hflip":
        return images.flip(-1)
    if name == "vflip":
        return images.flip(-2)
    if name == "hvflip":
        return images.flip(-2, -1)
    match = _ROT.match(name)
    if match is None:
        raise input_error("tta view", name, _VIEW_NAMES)
    if images.shape[-1] != images.shape[-2]:
        raise input_error(
            "images", f"size {tuple(images.shape[-2:])}", "square images (H == W) for rotation views", raw=True
        )
    return _rotate(images, float(match.group(1)), "zeros")


def invert_view(name: str, maps: torch.Tensor) -> torch.Tensor:
    """Map per-pixel outputs ``(N, K, H, W)`` of a transformed batch back to the original frame."""
    if name in ("identity", "hflip", "vflip", "hvflip"):
        return apply_view(name, maps)  # flips are their own inverse
    match = _ROT.match(name)
    if match is None:
        raise input_error("tta view", name, _VIEW_NAMES)
    return _rotate(maps, -float(match.group(1)), "border")
