"""The diffusion denoiser: sigma -> t* mapping, one-shot denoising, seeded resumable training, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from medsure.data.base import ImageDataset
from medsure.denoise import (
    DenoiserConfig,
    DiffusionDenoiser,
    alpha_bar_at,
    build_unet,
    load_denoiser,
    noise_to_signal,
    sigma_to_timestep,
    target_alpha_bar,
    train_denoiser,
)
from medsure.denoise.diffusion import linear_alpha_bar
from medsure.errors import MedsureInputError

ALPHA_BAR = linear_alpha_bar(1000)


def test_schedule_is_monai_ddpm_linear() -> None:
    np.testing.assert_allclose(
        ALPHA_BAR.numpy(), DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double().numpy()
    )
    for t in (0, 17, 500, 999):  # the interpolation passes through the schedule's steps
        assert alpha_bar_at(float(t), ALPHA_BAR) == pytest.approx(float(ALPHA_BAR[t]), rel=1e-12)


@pytest.mark.parametrize("sigma", [0.05, 0.12, 0.25, 0.5, 1.0])
def test_noise_to_signal_ratio_matches_sigma_in_model_units(sigma: float) -> None:
    """x in [0, 1] + sigma eps is 2x - 1 + 2 sigma eps in [-1, 1] units; after scaling by sqrt(abar(t*))
    the noise coefficient must equal the diffusion's sqrt(1 - abar(t*))."""
    t_star = sigma_to_timestep(sigma, ALPHA_BAR)
    ab = alpha_bar_at(t_star, ALPHA_BAR)
    assert abs(noise_to_signal(ab) - 2.0 * sigma) < 1e-6
    assert abs(math.sqrt(ab) * 2.0 * sigma - math.sqrt(1.0 - ab)) < 1e-6
    assert abs(ab - target_alpha_bar(sigma)) < 1e-6
    assert 0 <= t_star <= 999


def test_sigma_beyond_the_schedule_is_refused() -> None:
    with pytest.raises(MedsureInputError, match="sigma"):
        sigma_to_timestep(100.0, ALPHA_BAR)
    with pytest.raises(MedsureInputError, match="sigma"):
        sigma_to_timestep(0.0, ALPHA_BAR)


def _dataset(n: int = 6, size: int = 16) -> ImageDataset:
    rng = np.random.default_rng(0)
    images = (rng.uniform(0.2, 0.8, (n, size, size, 1)) * 255).astype(np.uint8)
    return ImageDataset(
        images=images,
        targets=np.zeros((n, size, size), np.int64),
        ids=np.array([f"i{i}" for i in range(n)]),
        class_names=np.array(["bg", "fg"]),
        task="segmentation",
        meta={},
        provenance={"source": "synthetic"},
    )


def _config(epochs: int) -> DenoiserConfig:
    return DenoiserConfig(epochs=epochs, batch_size=3, lr=1e-3, seed=3, channels=(8, 8), sigmas=(0.25,))


def test_training_is_seeded_and_resumable(tmp_path: Path) -> None:
    ds = _dataset()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)  # the global RNG must play no part
        train_denoiser(_config(2), ds, tmp_path / "a")
    train_denoiser(_config(2), ds, tmp_path / "b")
    train_denoiser(_config(1), ds, tmp_path / "c")
    train_denoiser(_config(2), ds, tmp_path / "c", resume=True)  # continue the interrupted run
    weights = [torch.load(tmp_path / r / "denoiser.pt", weights_only=True)["model"] for r in "abc"]
    for key, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][key], rtol=0, atol=0)
        torch.testing.assert_close(value, weights[2][key], rtol=0, atol=0)
    with pytest.raises(MedsureInputError, match="--out"):
        train_denoiser(_config(2), ds, tmp_path / "a")  # an existing run without resume
    denoiser = load_denoiser(tmp_path / "a")
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    out = denoiser(x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)), 0.25)
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    with pytest.raises(MedsureInputError, match="denoiser trained on 1-channel 16x16"):
        denoiser.check_fits(1, 32)
    with pytest.raises(MedsureInputError, match="denoiser"):
        denoiser.check_fits(3, 16)


def test_an_ideal_noise_predictor_recovers_the_image() -> None:
    """With the true noise as the network's answer, one-shot denoising is exact: checks the scaling."""
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    sigma = 0.25

    class Oracle(torch.nn.Module):
        def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return eps  # the noise in model units, standardised: (2 sigma eps) / (2 sigma)

    denoiser = DiffusionDenoiser(Oracle(), in_channels=1, image_size=8)
    torch.testing.assert_close(denoiser((x + sigma * eps).double(), sigma), x.double().clamp(0, 1), atol=1e-6, rtol=0)


def test_load_refuses_a_folder_that_is_not_a_denoiser(tmp_path: Path) -> None:
    with pytest.raises(MedsureInputError, match="--denoiser"):
        load_denoiser(tmp_path)
    (tmp_path / "config.json").write_text('{"task": "segmentation", "model": {}}')
    with pytest.raises(MedsureInputError, match="denoiser run"):
        load_denoiser(tmp_path)


def test_unet_shapes() -> None:
    net = build_unet(3, (8, 8))
    out = net(torch.zeros(2, 3, 16, 16), torch.tensor([1.5, 200.0]))
    assert out.shape == (2, 3, 16, 16)
