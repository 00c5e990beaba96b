"""Grad-CAM (Selvaraju et al. 2017): channel weights are the spatially averaged gradients.

``w_c = mean_{ij} dy/dA_cij`` — identical to captum's ``LayerGradCam`` (pinned by the tests).

>>> with GradCAM(model) as cam:
...     maps = cam(images, targets)      # (N, H, W)
"""

from __future__ import annotations

import torch

from medsure.explain.base import BaseCAM

__all__ = ["GradCAM"]


class GradCAM(BaseCAM):
    """Grad-CAM; parameters and use as in :class:`~medsure.explain.base.BaseCAM`."""

    name = "gradcam"

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(2, 3), keepdim=True)
