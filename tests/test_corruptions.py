"""Image corruptions for robustness studies: seeded, graded, inputs untouched, and each one what
its definition says on hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest

from medsure.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corruption_name
from medsure.errors import MedsureInputError


def _images(shape=(4, 32, 32, 3)) -> np.ndarray:
    gen = np.random.default_rng(0)
    return gen.integers(40, 216, shape, dtype=np.uint8)


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_shape_dtype_inputs_untouched_and_graded(kind):
    # 112 px: blur SDs are set at 224 px and scaled, so severity 1 is 0.5 px here (at 32 px it would
    # be 0.14 px and round away)
    images = _images((3, 112, 112, 3))
    before = images.copy()
    distances = []
    for severity in SEVERITIES:
        out = corrupt(images, kind, severity, seed=3)
        assert out.shape == images.shape and out.dtype == np.uint8
        distances.append(np.abs(out.astype(float) - images).mean())
    np.testing.assert_array_equal(images, before)
    assert distances[0] > 0 and distances[0] < distances[1] < distances[2]  # stronger at each severity


def test_noise_is_seeded_and_has_its_sd():
    images = np.full((2, 64, 64, 3), 128, dtype=np.uint8)
    a, b, c = (corrupt(images, "noise", 2, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # mid-grey: clipping is rare at SD 0.18, so the empirical SD is the nominal one (rounding adds 1/255)
    assert (a / 255.0 - 128 / 255.0).std() == pytest.approx(0.18, rel=0.03)


def test_contrast_keeps_the_mean_and_scales_deviations():
    images = np.zeros((1, 2, 2, 1), dtype=np.uint8)
    images[0, :, :, 0] = [[50, 150], [100, 100]]  # mean 100
    out = corrupt(images, "contrast", 1)[0, :, :, 0]
    np.testing.assert_array_equal(out, [[80, 120], [100, 100]])  # 100 + 0.4 * (x - 100)


def test_blur_of_a_constant_is_the_constant_and_spreads_a_point():
    flat = np.full((1, 16, 16), 77, dtype=np.uint8)
    np.testing.assert_array_equal(corrupt(flat, "blur", 3), flat)
    point = np.zeros((1, 224, 224), dtype=np.uint8)
    point[0, 112, 112] = 255
    out = corrupt(point, "blur", 1).astype(float)  # SD 1 px at 224 px
    assert out[0, 112, 112] < 255 and out[0, 112, 113] > 0 and out[0, 112, 120] == 0
    # Gaussian of SD 1: the neighbour over the centre is exp(-1/2)
    assert out[0, 112, 113] / out[0, 112, 112] == pytest.approx(np.exp(-0.5), abs=0.03)


def test_blur_does_not_mix_images_or_channels():
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    images[0, ..., 0] = 200
    out = corrupt(images, "blur", 3)
    assert out[1].max() == 0 and out[0, ..., 1:].max() == 0


def test_bad_arguments_are_one_line():
    with pytest.raises(MedsureInputError, match="corruption"):
        corrupt(_images(), "fog", 1)
    with pytest.raises(MedsureInputError, match="severity"):
        corrupt(_images(), "noise", 4)
    with pytest.raises(MedsureInputError, match="uint8"):
        corrupt(_images().astype(np.float32), "noise", 1)
    assert corruption_name("blur", 2) == "blur2"
