"""Heat-map overlays of CAMs on images (uint8 arrays; no file I/O here)."""

from __future__ import annotations

import numpy as np

from medsure.validation import input_error

__all__ = ["normalize_cam", "overlay_cam", "to_rgb"]


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """Scale one map ``(H, W)`` to [0, 1] by its maximum (all-zero maps stay zero)."""
    cam = np.asarray(cam, dtype=np.float32)
    top = float(cam.max()) if cam.size else 0.0
    return cam / top if top > 0 else np.zeros_like(cam)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` uint8 or [0, 1] float → uint8 ``(H, W, 3)``."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise input_error("image", f"shape {image.shape}", "(H, W), (H, W, 1) or (H, W, 3)", raw=True)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return image


def overlay_cam(image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Blend a colour-mapped, max-normalised ``cam (H, W)`` over ``image``; returns uint8 RGB."""
    import matplotlib

    rgb = to_rgb(image).astype(np.float32)
    if cam.shape != rgb.shape[:2]:
        raise input_error("cam", f"shape {cam.shape}", f"{rgb.shape[:2]} to match the image", raw=True)
    heat = matplotlib.colormaps[cmap](normalize_cam(cam))[..., :3] * 255.0
    return ((1 - alpha) * rgb + alpha * heat).round().clip(0, 255).astype(np.uint8)
