"""The certificates' guarantee, tested as a statistic over fresh seeds on a real JSRT chest X-ray.

The models are fixed (no training), so the smoothed classifier's class probabilities are known in
closed form: a 3x3 mean filter turns N(0, sigma^2) pixel noise into N(0, (sigma sqrt(k) / 9)^2)
(k in-image taps), and the class is the nearest of three intensity centres. A certified pixel is
*falsely* certified when its certified class has true probability <= tau. SegCertify with Holm
promises P(any false certification in the image) <= alpha; we check that frequency over R seeds
against alpha plus three binomial standard errors, and that the test has power (the uncorrected
per-pixel test breaks the bound on the same noise).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from medsure.certify import certify_classification, certify_segmentation, image_seed
from medsure.certify.stats import binomial_pvalue_greater
from test_certify import Thresholds

from conftest import shared_path

pytestmark = [pytest.mark.realdata, pytest.mark.slow]  # about 1-3 min on 2 busy cores

SIGMA, TAU, ALPHA, N0, N = 0.25, 0.75, 0.05, 10, 100
EDGES = np.array([-np.inf, 0.35, 0.65, np.inf])  # class boundaries of the centres 0.2 / 0.5 / 0.8


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    from medsure.data import load_dataset

    root = shared_path("jsrt").parent
    ds = load_dataset("jsrt", root=root, image_size=64)
    return torch.from_numpy(ds.images[0]).permute(2, 0, 1).float() / 255.0  # (1, 64, 64)


def _true_probabilities(model: Thresholds, image: torch.Tensor) -> np.ndarray:
    """(3, H, W) exact class probabilities of the smoothed fixed segmenter."""
    with torch.no_grad():
        mean = model.blur(image[None])[0, 0].numpy().astype(np.float64)
        taps = torch.nn.functional.conv2d(torch.ones(1, 1, *image.shape[1:]), torch.ones(1, 1, 3, 3), padding=1)
    std = SIGMA * np.sqrt(taps[0, 0].numpy()) / 9.0
    cdf = norm.cdf((EDGES[:, None, None] - mean[None]) / std[None])
    return np.diff(cdf, axis=0)


def _slack(r: int) -> float:
    return 3.0 * np.sqrt(ALPHA * (1 - ALPHA) / r)


SEQUENTIAL_RULES = {"sequential": True, "looks": "late", "futility": 0.01, "tolerance": 0.04}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"sequential": True, "round_size": 10},
        SEQUENTIAL_RULES,  # late looks, futility and tolerance: stopping early must not break the bound
        {"selection": "union"},  # the n0 passes counted too, union bound over classes
        {"selection": "union", **SEQUENTIAL_RULES},
    ],
    ids=["fixed", "sequential-rounds", "sequential-rules", "union", "union-sequential"],
)
def test_segmentation_false_certification_rate_is_at_most_alpha(image: torch.Tensor, options: dict) -> None:
    model = Thresholds().eval()
    truth = _true_probabilities(model, image)
    # the case is informative: many pixels have a class probability near tau
    assert ((truth.max(0) > 0.55) & (truth.max(0) < 0.9)).sum() > 100
    reps = 100
    false_any, false_uncorrected, majority_wrong, certified_share = 0, 0, 0, []
    for r in range(reps):
        gen = torch.Generator().manual_seed(image_seed(2026, r))
        cert = certify_segmentation(
            model,
            image,
            n_classes=3,
            sigma=SIGMA,
            n0=N0,
            n=N,
            alpha=ALPHA,
            tau=TAU,
            generator=gen,
            batch_size=64,
            **options,
        )
        ok = cert.certified >= 0
        # the true probability of the class each pixel is certified as (its selected class with "split")
        p_certified = np.take_along_axis(truth, np.where(ok, cert.certified, cert.selected)[None], 0)[0]
        false_any += bool(np.any(ok & (p_certified <= TAU)))
        majority_wrong += bool(np.any(ok & (cert.certified != truth.argmax(0))))
        certified_share.append(ok.mean())
        if not options:  # the same counts without the correction across pixels
            p_selected = np.take_along_axis(truth, cert.selected[None], 0)[0]
            raw = binomial_pvalue_greater(cert.counts, N, TAU) <= ALPHA
            false_uncorrected += bool(np.any(raw & (p_selected <= TAU)))
    bound = ALPHA + _slack(reps)
    assert false_any / reps <= bound, (false_any, reps)
    assert majority_wrong / reps <= bound
    assert np.mean(certified_share) > 0.3  # it certifies, it does not just abstain
    if not options:
        assert false_uncorrected / reps > bound  # the check would catch a missing correction


def test_classification_lower_bound_holds_with_probability_one_minus_alpha(image: torch.Tensor) -> None:
    """A fixed classifier on the mean of a 4x4 patch: its smoothed probability is exact."""
    patch = image[0, 30:34, 30:34].double().mean().item()
    s = SIGMA / 4.0  # std of the mean of 16 independent noise pixels
    threshold = patch - s * norm.ppf(0.8)  # class 1 with probability exactly 0.8

    class PatchMean(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            up = (x[:, 0, 30:34, 30:34].double().mean((1, 2)) > threshold).float()
            return torch.stack([1 - up, up], dim=1)

    p_true = np.array([0.2, 0.8])
    alpha, reps, too_high = 0.1, 300, 0
    for r in range(reps):
        cert = certify_classification(
            PatchMean(),
            image,
            n_classes=2,
            sigma=SIGMA,
            n0=10,
            n=200,
            alpha=alpha,
            generator=torch.Generator().manual_seed(image_seed(7, r)),
            batch_size=200,
        )
        too_high += cert.p_lower > p_true[cert.selected]
    assert too_high / reps <= alpha + 3.0 * np.sqrt(alpha * (1 - alpha) / reps)
    assert too_high > 0  # the bound is tight enough to be exceeded sometimes, as a level-alpha bound should
