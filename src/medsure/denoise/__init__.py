"""Diffusion denoiser for denoised smoothing (layer 3: a model and its training).

MONAI's ``DiffusionModelUNet`` + the linear ``DDPMScheduler`` schedule, trained here per dataset
domain and applied one-shot at the step whose noise-to-signal ratio matches sigma (Carlini et
al. 2023; Laousy et al. 2023). Needs ``einops`` (``pip install 'medsure[certify]'``).
"""

from medsure.denoise.diffusion import (
    DiffusionDenoiser,
    alpha_bar_at,
    build_unet,
    noise_to_signal,
    sigma_to_timestep,
    target_alpha_bar,
)
from medsure.denoise.train import DenoiserConfig, focused_timesteps, load_denoiser, train_denoiser

__all__ = [
    "DiffusionDenoiser",
    "DenoiserConfig",
    "alpha_bar_at",
    "build_unet",
    "focused_timesteps",
    "load_denoiser",
    "noise_to_signal",
    "sigma_to_timestep",
    "target_alpha_bar",
    "train_denoiser",
]
