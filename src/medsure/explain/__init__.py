"""Explanations for classifiers: batched Grad-CAM / Grad-CAM++ and overlays."""
from medsure.explain.gradcam import GradCAM, grad_cam, last_conv_layer
from medsure.explain.overlay import normalize_cam, overlay_cam

__all__ = ["GradCAM", "grad_cam", "last_conv_layer", "normalize_cam", "overlay_cam"]
