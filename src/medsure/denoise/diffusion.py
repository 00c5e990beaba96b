"""A DDPM denoiser applied one-shot for denoised smoothing (Carlini et al. 2023).

The diffusion model (MONAI ``DiffusionModelUNet`` predicting the noise, a linear-beta
``DDPMScheduler``) works on images scaled to ``[-1, 1]``. An image in ``[0, 1]`` with Gaussian
noise of standard deviation sigma becomes, in model units, ``x0 + 2 sigma eps``. The diffusion
forward process at step t is ``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``, whose noise-to-signal
ratio is ``sqrt((1 - abar_t) / abar_t)``. So t* solves ``(1 - abar) / abar = 4 sigma^2``, i.e.
``abar(t*) = 1 / (1 + 4 sigma^2)``; the noisy image is scaled by ``sqrt(abar(t*))`` and denoised
in one step: ``x0_hat = (x_t - sqrt(1 - abar) eps_hat(x_t, t*)) / sqrt(abar)``.

t* is generally not an integer: ``abar`` is interpolated log-linearly between the schedule's
steps and the (real) t* is passed to the network's sinusoidal time embedding, so the ratio
matches exactly instead of to the nearest of 1000 steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from medsure.validation import check_float, input_error

__all__ = [
    "DiffusionDenoiser",
    "build_unet",
    "target_alpha_bar",
    "sigma_to_timestep",
    "alpha_bar_at",
    "noise_to_signal",
]


def _require_einops() -> None:
    try:
        import einops  # noqa: F401  (MONAI's diffusion U-Net imports it lazily)
    except ImportError as exc:
        raise input_error(
            "denoiser",
            "the package einops is not installed",
            "einops for MONAI's DiffusionModelUNet",
            "pip install 'medsure[certify]' (or pip install einops)",
            raw=True,
        ) from exc


def build_unet(in_channels: int, channels: tuple[int, ...] = (32, 64, 64)) -> nn.Module:
    """A small MONAI ``DiffusionModelUNet`` (2-D, predicts the noise, no attention: CPU-sized)."""
    _require_einops()
    from monai.networks.nets import DiffusionModelUNet

    groups = math.gcd(*channels, 16)
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=in_channels,
        num_res_blocks=1,
        channels=tuple(channels),
        attention_levels=(False,) * len(channels),
        norm_num_groups=groups,
    )


def linear_alpha_bar(num_train_timesteps: int = 1000) -> torch.Tensor:
    """``abar_t`` of MONAI's ``DDPMScheduler(schedule="linear_beta")`` (the one trained with)."""
    from monai.networks.schedulers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps).alphas_cumprod.double().clone()


def target_alpha_bar(sigma: float) -> float:
    """``abar`` whose noise-to-signal ratio equals sigma in [0, 1] units (2 sigma in [-1, 1] units)."""
    sigma = check_float("sigma", sigma, low=0.0, closed="neither")
    return 1.0 / (1.0 + 4.0 * sigma * sigma)


def alpha_bar_at(t: float, alpha_bar: torch.Tensor) -> float:
    """``abar`` at a real step t, log-linear between the integer steps."""
    log_ab = torch.log(alpha_bar).numpy()
    return float(np.exp(np.interp(t, np.arange(len(log_ab)), log_ab)))


def sigma_to_timestep(sigma: float, alpha_bar: torch.Tensor) -> float:
    """The real step t* with ``abar(t*) = 1 / (1 + 4 sigma^2)`` (module docstring).

    Raises when sigma needs more noise than the schedule's last step holds.
    """
    target = target_alpha_bar(sigma)
    log_ab = torch.log(alpha_bar).numpy()
    if not log_ab[-1] <= math.log(target) <= log_ab[0]:
        top = math.sqrt((1.0 / float(alpha_bar[-1]) - 1.0) / 4.0)
        low = math.sqrt((1.0 / float(alpha_bar[0]) - 1.0) / 4.0)
        raise input_error("sigma", sigma, f"a noise level the denoiser's schedule covers, in [{low:.4g}, {top:.4g}]")
    # log abar decreases with t: interpolate t as a function of log abar on the reversed arrays
    return float(np.interp(math.log(target), log_ab[::-1], np.arange(len(log_ab))[::-1].astype(np.float64)))


def noise_to_signal(alpha_bar_value: float) -> float:
    """``sqrt((1 - abar) / abar)`` in model units."""
    return math.sqrt((1.0 - alpha_bar_value) / alpha_bar_value)


class DiffusionDenoiser(nn.Module):
    """One-shot DDPM denoiser for images in ``[0, 1]`` carrying Gaussian noise of a known sigma.

    Parameters
    ----------
    unet : the noise-predicting network (``build_unet``)
    in_channels, image_size : what it was trained on (checked by :meth:`check_fits`)
    num_train_timesteps : the schedule's length
    """

    alpha_bar: torch.Tensor

    def __init__(self, unet: nn.Module, *, in_channels: int, image_size: int, num_train_timesteps: int = 1000) -> None:
        super().__init__()
        self.unet = unet
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.num_train_timesteps = int(num_train_timesteps)
        self.register_buffer("alpha_bar", linear_alpha_bar(num_train_timesteps), persistent=False)

    def check_fits(self, in_channels: int, image_size: int, what: str = "denoiser") -> None:
        """Raise one clear error unless the images have the channels and size it was trained on."""
        if int(in_channels) != self.in_channels or int(image_size) != self.image_size:
            raise input_error(
                what,
                f"a denoiser trained on {self.in_channels}-channel {self.image_size}x{self.image_size} images",
                f"one trained on {in_channels}-channel {image_size}x{image_size} images, like the model's",
                "train one with medsure train-denoiser on the same dataset and --image-size",
                raw=True,
            )

    @torch.no_grad()
    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """Denoise ``x`` (B, C, H, W), images in [0, 1] plus noise of std ``sigma``; returns [0, 1] images."""
        t_star = sigma_to_timestep(sigma, self.alpha_bar.cpu())
        ab = alpha_bar_at(t_star, self.alpha_bar.cpu())
        x_t = math.sqrt(ab) * (2.0 * x - 1.0)
        t = torch.full((x.shape[0],), t_star, dtype=torch.float32, device=x.device)
        eps = self.unet(x_t.float(), t)
        x0 = (x_t - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)
        return ((x0.clamp(-1.0, 1.0) + 1.0) / 2.0).to(x.dtype)

    def smoothing_model(self, classifier: nn.Module, sigma: float):
        """The callable randomized smoothing runs: ``classifier(denoise(x, sigma))``."""
        check_float("sigma", sigma, low=0.0, closed="neither")

        def model(x: torch.Tensor) -> torch.Tensor:
            return classifier(self(x, sigma))

        return model
