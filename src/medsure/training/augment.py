"""Batch augmentation: random flips and small shifts, applied jointly to images and masks.

One affine warp per batch (``affine_grid`` + ``grid_sample``) instead of a per-sample loop.
Flips and integer-pixel shifts land exactly on pixel centres, so images are not blurred.
"""

from __future__ import annotations

from typing import overload

import torch
import torch.nn.functional as F


# overloads: masks given come back as a tensor, never None
@overload
def random_flip_shift(
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    generator: torch.Generator,
    hflip: bool = True,
    vflip: bool = False,
    max_shift: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def random_flip_shift(
    images: torch.Tensor,
    masks: None,
    *,
    generator: torch.Generator,
    hflip: bool = True,
    vflip: bool = False,
    max_shift: float = 0.1,
) -> tuple[torch.Tensor, None]: ...
def random_flip_shift(
    images: torch.Tensor,
    masks: torch.Tensor | None,
    *,
    generator: torch.Generator,
    hflip: bool = True,
    vflip: bool = False,
    max_shift: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Randomly flip and translate each sample of a batch.

    Parameters
    ----------
    images : (B, C, H, W) float in [0, 1]
    masks : (B, H, W) int64 label maps, or None; warped with the same transform (nearest).
    generator : CPU torch.Generator driving every random choice (reproducible).
    hflip, vflip : allow left-right / up-down flips, each with probability 1/2
    max_shift : maximal translation as a fraction of the side; rounded to whole pixels.
        Uncovered pixels are 0 (black, background label).

    Returns
    -------
    (images, masks) new tensors; the inputs are not modified.
    """
    b, _, h, w = images.shape
    sign_x = torch.ones(b)
    sign_y = torch.ones(b)
    if hflip:
        sign_x = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    if vflip:
        sign_y = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    shift_x = torch.zeros(b)
    shift_y = torch.zeros(b)
    if max_shift > 0:
        px_x, px_y = int(max_shift * w), int(max_shift * h)
        if px_x > 0:
            shift_x = torch.randint(-px_x, px_x + 1, (b,), generator=generator).float() * 2 / w
        if px_y > 0:
            shift_y = torch.randint(-px_y, px_y + 1, (b,), generator=generator).float() * 2 / h
    if not (hflip or vflip) and max_shift <= 0:
        return images.clone(), None if masks is None else masks.clone()
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = sign_x
    theta[:, 1, 1] = sign_y
    theta[:, 0, 2] = shift_x
    theta[:, 1, 2] = shift_y
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    # Nearest sampling: flips and whole-pixel shifts hit pixel centres, so this is an exact copy.
    out_images = F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    out_masks = None
    if masks is not None:
        warped = F.grid_sample(
            masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        out_masks = warped[:, 0].round().to(masks.dtype)
    return out_images, out_masks


def add_gaussian_noise(
    images: torch.Tensor, sigmas: tuple[float, ...] | list[float], *, generator: torch.Generator
) -> torch.Tensor:
    """Add N(0, σ²) noise to each image, σ in [0, 1] image units (the noise of randomized smoothing).

    Parameters
    ----------
    images : (B, C, H, W) float in [0, 1]
    sigmas : one σ ≥ 0, or several: each sample draws its σ uniformly from them
        (Cohen et al. 2019 train at the σ they certify; a list covers several certification σ)
    generator : CPU torch.Generator driving the σ choice and the noise (reproducible)

    Returns
    -------
    (B, C, H, W) new tensor, not clipped (certification does not clip either); the input is not modified.
    An all-zero ``sigmas`` returns a copy without drawing from ``generator``.
    """
    levels = torch.tensor([float(s) for s in sigmas], dtype=torch.float32)
    if levels.numel() == 0 or bool((levels == 0).all()):
        return images.clone()
    b = images.shape[0]
    if levels.numel() == 1:
        per_sample = levels.expand(b)
    else:  # one σ per sample, uniformly among the given ones
        per_sample = levels[torch.randint(0, levels.numel(), (b,), generator=generator)]
    # drawn on the CPU generator whatever the device of the batch, so runs match across devices
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float32)
    scale = per_sample.view(b, *([1] * (images.dim() - 1)))
    return images + (noise * scale).to(images.device, images.dtype)
