"""Randomized smoothing: statistics against scipy/statsmodels, radii, hand cases, seeding, bad input."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from medsure.certify import (
    ABSTAIN,
    certify_classification,
    certify_segmentation,
    evaluate_certification,
    segmentation_radius,
    smoothed_predict,
)
from medsure.certify.metrics import abstain_rate, certified_accuracy_curve, certified_dice, non_abstained_dice
from medsure.certify.stats import (
    adjust_pvalues,
    binomial_pvalue_greater,
    binomial_pvalue_two_sided,
    clopper_pearson_lower,
    never_rejected,
    reject,
    sequential_pvalues,
)
from medsure.errors import MedsureInputError

# ---- statistics against trusted references ---------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 100, 1000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_equals_scipy_beta_quantile_and_statsmodels(n: int, alpha: float) -> None:
    k = np.arange(n + 1)
    ours = clopper_pearson_lower(k, n, alpha)
    reference = np.where(k > 0, sps.beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-14)
    # statsmodels' two-sided interval at level 2 alpha has the same lower end
    lower, _ = proportion_confint(k, n, alpha=2 * alpha, method="beta")
    np.testing.assert_allclose(ours, np.nan_to_num(lower), atol=1e-10)
    # hand case: all n successes give alpha^(1/n)
    assert ours[-1] == pytest.approx(alpha ** (1.0 / n), rel=1e-12)


def test_binomial_pvalues_equal_scipy_binomtest() -> None:
    for n, tau in ((10, 0.75), (100, 0.75), (37, 0.9)):
        k = np.arange(n + 1)
        ours = binomial_pvalue_greater(k, n, tau)
        ref = [sps.binomtest(int(j), n, tau, alternative="greater").pvalue for j in k]
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-300)
    k, n = np.array([0, 3, 5, 9, 50, 61]), np.array([1, 10, 10, 10, 100, 100])
    ref = [sps.binomtest(int(a), int(b), 0.5).pvalue for a, b in zip(k, n, strict=True)]
    np.testing.assert_allclose(binomial_pvalue_two_sided(k, n), ref, rtol=1e-10)


@pytest.mark.parametrize("ours, theirs", [("holm", "holm"), ("bonferroni", "bonferroni"), ("bh", "fdr_bh")])
def test_corrections_equal_statsmodels_multipletests(ours: str, theirs: str) -> None:
    rng = np.random.default_rng(0)
    # a mix of tiny, moderate and tied p-values, several families (rows) at once
    rows = np.concatenate(
        [rng.uniform(0, 1e-4, (5, 60)), rng.uniform(0, 0.2, (5, 140)), np.full((5, 20), 0.01)], axis=1
    )
    rows = rng.permuted(rows, axis=1)
    for alpha in (0.001, 0.05, 0.2):
        decided = reject(rows, alpha, ours)
        adjusted = adjust_pvalues(rows, ours)
        for r in range(rows.shape[0]):
            ref_reject, ref_adjusted, _, _ = multipletests(rows[r], alpha=alpha, method=theirs)
            np.testing.assert_array_equal(decided[r], ref_reject)
            np.testing.assert_allclose(adjusted[r], ref_adjusted, rtol=1e-12)
        if alpha < 0.1:
            assert 0 < decided.sum() < decided.size  # the case decides some but not all


def test_sequential_pvalues_are_a_running_minimum_of_spent_pvalues() -> None:
    k1, k2 = np.array([10, 5]), np.array([20, 9])
    first = sequential_pvalues(np.ones(2), k1, 10, 0.5, 0.75)
    np.testing.assert_allclose(first, np.minimum(1.0, binomial_pvalue_greater(k1, 10, 0.75) / 0.5))
    second = sequential_pvalues(first, k2, 20, 0.5, 0.75)
    np.testing.assert_allclose(second, np.minimum(first, np.minimum(1.0, binomial_pvalue_greater(k2, 20, 0.75) / 0.5)))
    assert np.all(second <= first)


@pytest.mark.parametrize("method", ["holm", "bonferroni", "bh"])
def test_futile_pixels_are_never_rejected_and_the_rule_is_tighter_than_alpha(method: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        best = np.concatenate([rng.uniform(0, 1e-5, 50), rng.uniform(0, 0.01, 200), rng.uniform(0, 1, 200)])
        futile = never_rejected(best, 0.01, method)
        # p-values can only stay at or above ``best``; corrections are monotone, so ``best`` is the worst case
        assert not np.any(futile & reject(best, 0.01, method))
        assert not np.any(futile & reject(np.minimum(1, best * rng.uniform(1, 3, best.size)), 0.01, method))
        if method != "bonferroni":  # the closed form equals the iteration it summarises
            assert np.array_equal(futile, _futile_by_iteration(best, 0.01, method))
    if method != "bonferroni":
        assert futile.sum() > (best > 0.01).sum()  # tighter than the loosest threshold alone


def _futile_by_iteration(best: np.ndarray, alpha: float, method: str) -> np.ndarray:
    m, futile = best.size, best > alpha
    while True:
        r = m - int(futile.sum())
        if r == 0:
            return futile
        grown = best > (alpha / (m - r + 1) if method == "holm" else alpha * r / m)
        if np.array_equal(grown, futile):
            return futile
        futile = grown


# ---- radii ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma, tau", [(0.25, 0.75), (0.12, 0.6), (0.5, 0.99)])
def test_segmentation_radius_is_sigma_times_normal_quantile(sigma: float, tau: float) -> None:
    assert abs(segmentation_radius(sigma, tau) - sigma * statistics.NormalDist().inv_cdf(tau)) < 1e-12


class Constant(torch.nn.Module):
    """Logits favouring one class everywhere (noise never changes its decision)."""

    def __init__(self, k: int, winner: int, seg: bool) -> None:
        super().__init__()
        self.k, self.winner, self.seg = k, winner, seg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], self.k, *x.shape[2:]) if self.seg else (x.shape[0], self.k)
        logits = torch.zeros(shape)
        logits[:, self.winner] = 1.0
        return logits


class CoinFlip(torch.nn.Module):
    """Class 1 where the noisy pixel is above the clean value: p = 1/2 exactly (seg), or on pixel 0 (cls)."""

    def __init__(self, clean: torch.Tensor, seg: bool) -> None:
        super().__init__()
        self.clean, self.seg = clean, seg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = (x[:, 0] > self.clean[0]).float()
        if not self.seg:
            up = up.flatten(1)[:, 0]
            return torch.stack([1 - up, up], dim=1)
        return torch.stack([1 - up, up], dim=1)


def test_classification_radius_hand_case() -> None:
    """A constant classifier wins all n passes: pA = alpha^(1/n), radius sigma Phi^-1(pA)."""
    image = torch.full((1, 4, 4), 0.5)
    n, alpha, sigma = 200, 0.001, 0.5
    cert = certify_classification(
        Constant(3, 2, seg=False),
        image,
        n_classes=3,
        sigma=sigma,
        n0=10,
        n=n,
        alpha=alpha,
        generator=torch.Generator().manual_seed(0),
    )
    p_lower = alpha ** (1.0 / n)
    assert cert.prediction == 2 and cert.count == n
    assert abs(cert.p_lower - p_lower) < 1e-12
    assert abs(cert.radius - sigma * statistics.NormalDist().inv_cdf(p_lower)) < 1e-12


def test_coin_flip_abstains_and_constant_certifies() -> None:
    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    flip = certify_segmentation(CoinFlip(image, True), image, n_classes=2, n=100, generator=gen)
    assert np.all(flip.certified == ABSTAIN)
    const = certify_segmentation(Constant(3, 1, True), image, n_classes=3, n=100, generator=gen)
    assert np.all(const.certified == 1) and np.all(const.counts == 100)
    cls = certify_classification(CoinFlip(image, False), image, n_classes=2, n0=10, n=200, generator=gen)
    assert cls.prediction == ABSTAIN and cls.radius == 0.0
    assert (
        smoothed_predict(CoinFlip(image, False), image, n_classes=2, sigma=0.25, n=200, alpha=0.01, generator=gen)
        == ABSTAIN
    )
    assert smoothed_predict(Constant(2, 1, False), image, n_classes=2, sigma=0.25, n=50, alpha=0.01, generator=gen) == 1


# ---- metrics (hand-computed) -----------------------------------------------------------------


def test_certified_dice_counts_abstain_as_wrong() -> None:
    truth = np.array([[[1, 1, 0, 0]]])
    cert = np.array([[[1, ABSTAIN, 0, ABSTAIN]]])
    # label 1: TP 1, predicted 1, truth 2 -> 2/3; on certified pixels only: truth 1 (pixel 0), pred 1 -> 1
    assert certified_dice(cert, truth, 2)[0, 0] == pytest.approx(2 / 3)
    assert non_abstained_dice(cert, truth, 2)[0, 0] == pytest.approx(1.0)
    assert abstain_rate(cert)[0] == pytest.approx(0.5)
    curve = certified_accuracy_curve(
        np.array([1, 0, ABSTAIN]), np.array([0.3, 0.1, 0.0]), np.array([1, 1, 0]), np.array([0.0, 0.2, 0.5])
    )
    np.testing.assert_allclose(curve, [1 / 3, 1 / 3, 0.0])


# ---- the whole evaluation: seeding, batching, sequential -------------------------------------


class Thresholds(torch.nn.Module):
    """A fixed-weight segmenter: 3x3 mean filter, then the nearest of the centres 0.2 / 0.5 / 0.8."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.blur = torch.nn.Conv2d(channels, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.blur.weight.fill_(1.0 / (9 * channels))
        self.register_buffer("centres", torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -20.0 * (self.blur(x) - self.centres).abs()


def _images(n: int = 3, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size)[None, :, None] * np.ones((size, 1, 1))
    images = (np.clip(ramp[None] + rng.normal(0, 0.05, (n, size, size, 1)), 0, 1) * 255).astype(np.uint8)
    masks = np.digitize(images[..., 0] / 255.0, [0.35, 0.65])
    return images, masks


def test_same_seed_same_certificates_whatever_the_batch_size_or_subset() -> None:
    images, masks = _images()
    model = Thresholds().eval()
    kw = {"task": "segmentation", "class_names": ["b", "m", "h"], "n": 60, "alpha": 0.05, "n_boot": 50}
    a = evaluate_certification(model, images, masks, batch_size=7, **kw)
    b = evaluate_certification(model, images, masks, batch_size=32, **kw)
    part = evaluate_certification(model, images[1:], masks[1:], batch_size=5, index_offset=1, **kw)
    other = evaluate_certification(model, images, masks, batch_size=7, seed=1, **kw)
    np.testing.assert_array_equal(a.certified, b.certified)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.certified[1:], part.certified)
    assert not np.array_equal(a.counts, other.counts)
    assert 0 < a.summary["abstain_rate"]["mean"] < 1
    d = a.to_dict()
    assert {
        "sigma",
        "n0",
        "n",
        "alpha",
        "tau",
        "radius",
        "correction",
        "certified_dice",
        "abstain_rate",
        "per_image",
        "samples_used",
    } <= set(d)
    assert set(a.arrays()) >= {"certified", "counts", "selected", "ids", "n"}


def test_sequential_matches_the_full_run_of_its_pvalues_and_can_stop_early() -> None:
    images, masks = _images(2, 8)
    kw = {"task": "segmentation", "class_names": ["b", "m", "h"], "n": 300, "alpha": 0.01, "n_boot": 0}
    fixed = evaluate_certification(Thresholds().eval(), images, masks, **kw)
    seq = evaluate_certification(Thresholds().eval(), images, masks, sequential=True, round_size=20, **kw)
    # same noise stream: the same selected classes; a certified pixel keeps its selected class
    np.testing.assert_array_equal(seq.selected, fixed.selected)
    certified = seq.certified >= 0
    np.testing.assert_array_equal(seq.certified[certified], fixed.selected[certified])
    assert certified.any()
    assert np.all(seq.samples_used <= 10 + 300)
    const = evaluate_certification(Constant(3, 1, True), images, masks, sequential=True, round_size=10, **kw)
    assert np.all(const.certified == 1) and np.all(const.samples_used < 10 + 300)


def test_classification_evaluation_curve_and_json() -> None:
    images = np.full((2, 4, 4, 1), 128, np.uint8)
    r = evaluate_certification(
        Constant(2, 1, False),
        images,
        np.array([1, 0]),
        task="classification",
        class_names=["a", "b"],
        n0=10,
        n=100,
        n_boot=20,
    )
    assert r.certified.tolist() == [1, 1]
    assert r.summary["certified_accuracy"]["mean"] == pytest.approx(0.5)
    d = r.to_dict()
    assert d["certified_accuracy"]["curve"][0]["certified_accuracy"] == pytest.approx(0.5)
    assert d["tau"] is None and d["correction"] is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -0.1}, "sigma"),
        ({"n0": 0}, "n0"),
        ({"n": 0}, "n: got 0"),
        ({"tau": 0.5}, "tau"),
        ({"tau": 1.0}, "tau"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"correction": "fdr"}, "correction"),
    ],
)
def test_bad_settings_are_refused_with_one_clear_error(kwargs: dict, match: str) -> None:
    images, masks = _images(1, 8)
    with pytest.raises(MedsureInputError, match=match):
        evaluate_certification(Thresholds(), images, masks, task="segmentation", class_names=["b", "m", "h"], **kwargs)


def test_sequential_needs_segmentation() -> None:
    with pytest.raises(MedsureInputError, match="sequential"):
        evaluate_certification(
            Constant(2, 1, False),
            np.zeros((1, 4, 4, 1), np.uint8),
            np.array([0]),
            task="classification",
            class_names=["a", "b"],
            sequential=True,
        )
