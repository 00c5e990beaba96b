"""Image corruptions at graded severities, for robustness studies (pure, seeded, inputs untouched).

Three corruptions after ImageNet-C (Hendrycks & Dietterich, ICLR 2019), at their severities 1, 3
and 5 (``severity`` 1, 2, 3 here), on images in [0, 1]:

- ``noise``: additive Gaussian noise of SD 0.08, 0.18, 0.38, clipped to [0, 1];
- ``blur``: Gaussian blur of SD 1, 3, 6 pixels *at 224 px*, scaled to the image's size (so a
  64 px image gets SD 0.29, 0.86, 1.71 px) and the same corruption hits the same anatomy at any
  resolution; reflecting borders. At 64 px severity 1 is sub-pixel (SD 0.29 px) and changes
  little: that is what the definition gives at that resolution;
- ``contrast``: each channel pulled towards the image's mean by the factor 0.4, 0.2, 0.05
  (``(x - mean) * c + mean``).

All take and return ``uint8`` images ``(N, H, W, C)`` (or ``(N, H, W)``), like
:class:`medsure.data.base.ImageDataset` stores them.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from medsure.validation import input_error

CORRUPTIONS = ("noise", "blur", "contrast")
SEVERITIES = (1, 2, 3)
NOISE_SD = {1: 0.08, 2: 0.18, 3: 0.38}
BLUR_SD_AT_224 = {1: 1.0, 2: 3.0, 3: 6.0}
CONTRAST_FACTOR = {1: 0.4, 2: 0.2, 3: 0.05}


def corrupt(images: np.ndarray, kind: str, severity: int, *, seed: int = 0) -> np.ndarray:
    """A corrupted copy of ``images``.

    Parameters
    ----------
    images : ndarray uint8 (N, H, W, C) or (N, H, W)
    kind : {"noise", "blur", "contrast"}
    severity : {1, 2, 3}
    seed : int
        Seed of the noise (the other corruptions are deterministic).

    Returns
    -------
    ndarray uint8, the shape of ``images``
    """
    if kind not in CORRUPTIONS:
        raise input_error("corruption", kind, f"one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise input_error("corruption severity", severity, "1, 2 or 3")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise input_error("images", f"{images.dtype} {images.shape}", "uint8 images (N, H, W[, C])", raw=True)
    x = images.astype(np.float32) / 255.0
    if kind == "noise":
        gen = np.random.default_rng(seed)
        x = x + gen.normal(0.0, NOISE_SD[severity], x.shape).astype(np.float32)
    elif kind == "blur":
        sd = BLUR_SD_AT_224[severity] * images.shape[1] / 224.0
        # blur the two spatial axes only: not across images, not across channels
        sigma = (0.0, sd, sd) + ((0.0,) if images.ndim == 4 else ())
        x = gaussian_filter(x, sigma=sigma, mode="reflect")
    else:
        axes = (1, 2)
        mean = x.mean(axis=axes, keepdims=True)
        x = (x - mean) * CONTRAST_FACTOR[severity] + mean
    return (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def corruption_name(kind: str, severity: int) -> str:
    """The short label used in result tables: ``noise1``, ``blur3``, ..."""
    return f"{kind}{severity}"
