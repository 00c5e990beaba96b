"""Gaussian-noise augmentation in the trainer (``TrainConfig.noise_sigma``, ``medsure train --noise-sigma``).

The baseline of randomized smoothing (Cohen et al. 2019): a model trained on images with N(0, σ²) noise,
certified at the same σ without a denoiser.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from medsure.data.base import ImageDataset
from medsure.errors import MedsureInputError
from medsure.training import TrainConfig, load_checkpoint, train
from medsure.training.augment import add_gaussian_noise, random_flip_shift
from medsure.training.loop import Augmentation
from medsure.training.trainer import plan_run


@pytest.fixture(autouse=True)
def single_thread():
    """One torch thread: the test machine's cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _squares(n: int, seed: int, size: int = 16) -> ImageDataset:
    """Toy segmentation data: a bright centred square of random half-width is label 1."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), np.int64)
    for i in range(n):
        r = int(rng.integers(2, size // 2))
        masks[i, size // 2 - r : size // 2 + r, size // 2 - r : size // 2 + r] = 1
    images = np.clip(rng.normal(0.3, 0.05, (n, size, size, 1)) + 0.4 * masks[..., None], 0, 1)
    return ImageDataset(
        images=(images * 255).astype(np.uint8),
        targets=masks,
        ids=np.array([f"s{seed}_{i}" for i in range(n)]),
        class_names=np.array(["background", "square"]),
        task="segmentation",
        meta={},
        provenance={"source": "synthetic", "seed": seed},
    )


def _data() -> dict[str, ImageDataset]:
    return {"train": _squares(24, 1), "val": _squares(8, 2)}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoint.pt")["model"]


@pytest.mark.parametrize("sigma", [0.12, 0.25, 0.5])
def test_noise_on_a_constant_image_has_mean_zero_and_sd_sigma(sigma: float) -> None:
    images = torch.full((32, 1, 32, 32), 0.5)
    noisy = add_gaussian_noise(images, [sigma], generator=_gen(0))
    noise = (noisy - images).flatten().double().numpy()
    n = noise.size  # 32768 draws
    # mean within 5 standard errors of 0; sd within 5 of its own standard errors (≈ σ/√(2n)) of σ
    assert abs(noise.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(noise.std(ddof=1) - sigma) < 5 * sigma / np.sqrt(2 * n)
    # Gaussian, not only the right two moments (Kolmogorov–Smirnov against N(0, σ²))
    assert stats.kstest(noise[:5000], "norm", args=(0.0, sigma)).pvalue > 1e-3
    assert torch.equal(images, torch.full((32, 1, 32, 32), 0.5))  # input not modified
    # not clipped: randomized smoothing certifies with unclipped noise
    assert noisy.min() < 0 or noisy.max() > 1


def test_a_list_of_sigmas_draws_one_sigma_per_image() -> None:
    images = torch.zeros((64, 1, 32, 32))
    noisy = add_gaussian_noise(images, [0.1, 0.5], generator=_gen(1))
    sds = noisy.flatten(1).std(dim=1)
    near = torch.minimum((sds - 0.1).abs(), (sds - 0.5).abs())
    assert bool((near < 0.05).all())  # every image carries one of the two levels, not a mix
    n_high = int((sds > 0.3).sum())
    assert 16 <= n_high <= 48  # about half each: Binomial(64, 1/2) is within these bounds with p > 0.9999


def test_noise_is_seeded_by_the_generator() -> None:
    images = torch.rand((4, 3, 8, 8), generator=_gen(5))
    a = add_gaussian_noise(images, [0.25], generator=_gen(7))
    b = add_gaussian_noise(images, [0.25], generator=_gen(7))
    c = add_gaussian_noise(images, [0.25], generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    before = torch.get_rng_state()
    add_gaussian_noise(images, [0.1, 0.3], generator=_gen(9))
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is not used


def test_augmentation_noise_follows_flips_and_leaves_masks_untouched() -> None:
    x = torch.rand((6, 1, 16, 16), generator=_gen(2))
    y = torch.randint(0, 3, (6, 16, 16), generator=_gen(3))
    y_before = y.clone()
    noisy = Augmentation(hflip=True, vflip=True, max_shift=0.2, noise_sigma=(0.25,))
    plain = Augmentation(hflip=True, vflip=True, max_shift=0.2)
    xn, yn = noisy(x, y, "segmentation", _gen(4))
    xp, yp = plain(x, y, "segmentation", _gen(4))
    # the same flips and shifts (drawn first), masks moved exactly as without noise
    assert torch.equal(yn, yp)
    assert torch.equal(y, y_before)
    # the images differ from the flipped/shifted ones by noise of sd σ, everywhere (also on padding)
    diff = (xn - xp).flatten()
    assert abs(float(diff.std()) - 0.25) < 0.02
    assert float((diff == 0).float().mean()) == 0.0
    # classification: labels pass through
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    _, out_labels = noisy(x, labels, "classification", _gen(4))
    assert torch.equal(out_labels, labels)


def test_noise_off_by_default_is_bit_identical_and_draws_nothing() -> None:
    assert TrainConfig().noise_sigma == 0.0
    x = torch.rand((5, 1, 16, 16), generator=_gen(2))
    y = torch.randint(0, 2, (5, 16, 16), generator=_gen(3))
    for aug in (
        Augmentation(hflip=True, vflip=False, max_shift=0.1),
        Augmentation(hflip=True, vflip=False, max_shift=0.1, noise_sigma=(0.0,)),
    ):
        g1, g2 = _gen(11), _gen(11)
        xa, ya = aug(x, y, "segmentation", g1)
        xb, yb = random_flip_shift(x, y, generator=g2, hflip=True, vflip=False, max_shift=0.1)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(g1.get_state(), g2.get_state())  # no extra draw: later batches unchanged
    assert torch.equal(add_gaussian_noise(x, [0.0], generator=_gen(0)), x)


def test_the_plan_turns_noise_on_only_when_asked(tmp_path: Path) -> None:
    data = _data()
    off = plan_run(TrainConfig(model="unet"), data["train"], data["val"]).augment
    assert off is not None and off.noise_sigma == ()
    on = plan_run(TrainConfig(model="unet", noise_sigma=[0.0, 0.5]), data["train"], data["val"]).augment
    assert on is not None and on.noise_sigma == (0.0, 0.5)
    # --no-augment turns off flips and shifts, not the noise that was asked for
    only_noise = plan_run(TrainConfig(model="unet", augment=False, noise_sigma=0.25), data["train"], data["val"])
    assert only_noise.augment == Augmentation(hflip=False, vflip=False, max_shift=0.0, noise_sigma=(0.25,))
    assert plan_run(TrainConfig(model="unet", augment=False), data["train"], data["val"]).augment is None


def test_training_with_noise_is_seeded_recorded_and_zero_equals_default(tmp_path: Path) -> None:
    data = _data()
    base = {"model": "unet", "epochs": 1, "batch_size": 8, "patience": 0, "width": 4, "seed": 0}
    train(TrainConfig(**base), data, tmp_path / "default")
    train(TrainConfig(**base, noise_sigma=0.0), data, tmp_path / "zero")
    train(TrainConfig(**base, noise_sigma=0.25), data, tmp_path / "noise_a")
    train(TrainConfig(**base, noise_sigma=0.25), data, tmp_path / "noise_b")
    default, zero, a, b = (_weights(tmp_path / x) for x in ("default", "zero", "noise_a", "noise_b"))
    assert all(torch.equal(default[k], zero[k]) for k in default)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], default[k]) for k in a)
    record = json.loads((tmp_path / "noise_a" / "config.json").read_text())
    assert record["train"]["noise_sigma"] == 0.25


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), [0.25, -1.0], [], "0.25", True], ids=str)
def test_bad_noise_sigma_in_the_config_is_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(MedsureInputError, match="noise_sigma"):
        train(TrainConfig(model="unet", epochs=1, noise_sigma=value), _data(), tmp_path / "run")  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["-0.5", "nan", "inf", "abc"])
def test_cli_bad_noise_sigma_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    from medsure.cli import main

    out = tmp_path / "run"
    argv = ["train", "--dataset", "pneumoniamnist", "--noise-sigma", "0.25", value, "--out", str(out)]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own type errors exit from inside the parser
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--noise-sigma" in err[0]
    assert value in err[0]
    assert not out.exists()
