"""Pixel regions used by the segmentation metrics: label boundaries and the band around them.

Pure, vectorised functions on label maps ``(N, H, W)``; no per-pixel Python loops.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medsure.validation import input_error


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from at least one 4-neighbour.

    Both sides of every interface are marked (the inner and the outer contour), including
    interfaces between two foreground labels. The image border is not a boundary: pixels outside
    the image are treated as having the same label as their neighbour inside.

    Parameters
    ----------
    labels : int ndarray (N, H, W)

    Returns
    -------
    bool ndarray (N, H, W)
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise input_error("label maps", f"shape {labels.shape}", "(N, H, W)", raw=True)
    out = np.zeros(labels.shape, dtype=bool)
    vertical = labels[:, 1:, :] != labels[:, :-1, :]
    horizontal = labels[:, :, 1:] != labels[:, :, :-1]
    out[:, 1:, :] |= vertical
    out[:, :-1, :] |= vertical
    out[:, :, 1:] |= horizontal
    out[:, :, :-1] |= horizontal
    return out


def boundary_band(predicted: np.ndarray, masks: np.ndarray, width: int = 2) -> np.ndarray:
    """Band around structure boundaries: (boundaries of GT ∪ boundaries of prediction) dilated.

    The band holds only pixels within ``width`` pixels (chessboard distance) of a boundary of the
    ground truth or of the prediction, so calibration measured inside it is not dominated by the
    large, easy background. An image with no structure in either map has an empty band.

    Parameters
    ----------
    predicted, masks : int ndarray (N, H, W)
    width : int >= 0; 0 keeps the boundary pixels only

    Returns
    -------
    bool ndarray (N, H, W)
    """
    predicted = np.asarray(predicted)
    masks = np.asarray(masks)
    if predicted.shape != masks.shape:
        raise input_error("predicted labels", f"shape {predicted.shape}", f"the masks' shape {masks.shape}", raw=True)
    if int(width) != width or width < 0:
        raise input_error("band width", width, "a non-negative integer")
    edges = label_boundaries(predicted) | label_boundaries(masks)
    if width == 0:
        return edges
    size = (1, 2 * int(width) + 1, 2 * int(width) + 1)  # no growth across the image axis
    return ndimage.maximum_filter(edges, size=size, mode="constant", cval=False)
