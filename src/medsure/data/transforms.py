"""Array-level resizing for whole datasets (vectorised through torch)."""

from __future__ import annotations

import numpy as np

from medsure.validation import input_error


def resize_images(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize (N, H, W, C) images with antialiased bilinear interpolation; dtype is kept.

    uint8 results are rounded and clipped to [0, 255]; float results are clipped to the input range.
    """
    import torch
    import torch.nn.functional as F

    height, width = (size, size) if isinstance(size, (int, np.integer)) else size
    images = np.asarray(images)
    if images.ndim != 4:
        raise input_error("images", f"shape {images.shape}", "shape (N, H, W, C)", raw=True)
    if images.shape[1:3] == (height, width):
        return images.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    out = (
        F.interpolate(tensor, size=(int(height), int(width)), mode="bilinear", align_corners=False, antialias=True)
        .permute(0, 2, 3, 1)
        .numpy()
    )
    if images.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.clip(out, images.min(), images.max()).astype(images.dtype)


def resize_masks(masks: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize (N, H, W) integer label maps with nearest neighbour (labels are never blended)."""
    height, width = (size, size) if isinstance(size, (int, np.integer)) else size
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise input_error("masks", f"shape {masks.shape}", "shape (N, H, W)", raw=True)
    # pixel-centre sampling, the same rule as PIL's NEAREST
    rows = np.minimum(((np.arange(height) + 0.5) * masks.shape[1] / height).astype(np.int64), masks.shape[1] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * masks.shape[2] / width).astype(np.int64), masks.shape[2] - 1)
    return masks[:, rows][:, :, cols].copy()
