"""Explanations for classifiers: class-activation maps, one file per method over one base class.

- :mod:`~medsure.explain.base` — :class:`BaseCAM` (hooks, batching, label sets, upsampling);
- :mod:`~medsure.explain.gradcam` — :class:`GradCAM`; :mod:`~medsure.explain.gradcam_plusplus` —
  :class:`GradCAMPlusPlus`;
- :mod:`~medsure.explain.registry` — :data:`CAM_METHODS` (name → class), :func:`grad_cam`;
- :mod:`~medsure.explain.results` — :class:`CAMResults` (what ``cams.npz`` holds);
- overlays in :mod:`medsure.explain.plots`, the report section in :mod:`medsure.explain.report`;
  CAMs of a dataset's cases with a trained run: :func:`medsure.predict.predict_cams`.
"""

from medsure.explain.base import BaseCAM, last_conv_layer
from medsure.explain.gradcam import GradCAM
from medsure.explain.gradcam_plusplus import GradCAMPlusPlus
from medsure.explain.registry import CAM_METHODS, cam_method, grad_cam
from medsure.explain.results import CAMResults, cases_to_explain

__all__ = [
    "BaseCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "CAM_METHODS",
    "cam_method",
    "grad_cam",
    "last_conv_layer",
    "CAMResults",
    "cases_to_explain",
]
