"""Grad-CAM++ (Chattopadhay et al. 2018): pixel-weighted positive gradients.

With the exponential class score ``exp(y)`` the second and third derivatives are powers of the
first, which gives the closed form used here (as in the paper and pytorch-grad-cam)::

    alpha_cij = g^2 / (2 g^2 + sum_ab A_cab * g^3),   w_c = sum_ij alpha_cij ReLU(g_cij)

with ``g = dy/dA`` and ``alpha = 0`` where the denominator is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medsure.explain.base import BaseCAM

__all__ = ["GradCAMPlusPlus"]


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++; parameters and use as in :class:`~medsure.explain.base.BaseCAM`."""

    name = "gradcam++"

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        g2, g3 = gradients**2, gradients**3
        denom = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3
        nonzero = denom != 0
        alpha = torch.where(nonzero, g2 / torch.where(nonzero, denom, torch.ones_like(denom)), torch.zeros_like(denom))
        return (alpha * F.relu(gradients)).sum(dim=(2, 3), keepdim=True)
