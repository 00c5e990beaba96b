"""CAM methods by name: the one place ``medsure explain --method`` and every caller look them up.

A new method is one file in ``medsure/explain/`` with a :class:`~medsure.explain.base.BaseCAM`
subclass, and one line in :data:`CAM_METHODS`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medsure.explain.base import BaseCAM, Targets
from medsure.explain.gradcam import GradCAM
from medsure.explain.gradcam_plusplus import GradCAMPlusPlus
from medsure.validation import check_choice

__all__ = ["CAM_METHODS", "cam_method", "grad_cam"]

CAM_METHODS: dict[str, type[BaseCAM]] = {cls.name: cls for cls in (GradCAM, GradCAMPlusPlus)}


def cam_method(name: str, *, what: str = "method") -> type[BaseCAM]:
    """The CAM class registered as ``name`` (one of :data:`CAM_METHODS`); ``what`` names the
    argument in the error (e.g. ``"--method"``)."""
    return CAM_METHODS[check_choice(what, name, CAM_METHODS)]


def grad_cam(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    targets: Targets = None,
    *,
    target_layer: nn.Module | None = None,
    method: str = "gradcam",
    relu: bool = True,
    upsample: bool = True,
    batch_size: int = 32,
):
    """One-shot CAM with the method named ``method``: hooks are registered and released inside
    this call. Returns what :meth:`BaseCAM.__call__` returns."""
    with cam_method(method)(model, target_layer, relu=relu, upsample=upsample, batch_size=batch_size) as cam:
        return cam(images, targets)
