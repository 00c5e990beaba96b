"""``coverage_band`` of one stratum, computed in chunks (memory O(chunk), not O(m)).

References: the previous whole-pmf implementation (copied below, unchanged) and
``scipy.stats.betabinom.ppf``.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import stats

from medsure.conformal import quantile
from medsure.conformal.quantile import coverage_band, coverage_beta_params, coverage_pmf


def _old_band(n_cal: int, alpha: float, n_test: int, delta: float) -> tuple[float, float]:
    """The implementation before the chunked one: the whole pmf over 0..m in memory."""
    pmf = np.convolve(np.ones(1), coverage_pmf(n_cal, n_test, alpha))
    cdf = np.cumsum(pmf)
    cdf /= cdf[-1]
    low = int(np.searchsorted(cdf, delta / 2 - 1e-12))
    high = int(np.searchsorted(cdf, 1 - delta / 2 - 1e-12))
    return low / n_test, min(high, n_test) / n_test


def _cases(count: int, seed: int) -> list[tuple[int, float, int, float]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        alpha = float(rng.choice([0.01, 0.05, 0.1, 0.2, 0.5]))
        n_cal = int(rng.integers(int(np.ceil(1 / alpha)), 3000))
        cases.append((n_cal, alpha, int(rng.integers(1, 5000)), float(rng.choice([0.001, 0.01, 0.05, 0.2]))))
    return cases + [(9, 0.1, 1, 0.01), (99, 0.05, 1, 0.5), (19, 0.05, 3, 0.9), (1000, 0.1, 2, 0.01)]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 18])
def test_equal_to_the_whole_pmf_implementation(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # small chunks put the crossings at chunk starts, ends and inside; the default is one chunk here
    monkeypatch.setattr(quantile, "_BAND_CHUNK", chunk)
    for n_cal, alpha, m_drawn, delta in _cases(60 if chunk > 1 else 15, seed=chunk):
        m = m_drawn % 400 + 1 if chunk == 1 else m_drawn  # one value per chunk: keep it short
        assert coverage_band(n_cal, alpha, m, delta) == _old_band(n_cal, alpha, m, delta), (n_cal, alpha, m, delta)


def test_equal_to_scipy_betabinom_ppf() -> None:
    # the band's ends are the delta/2 and 1 - delta/2 quantiles of BetaBinomial(m, a, b)
    for n_cal, alpha, m, delta in _cases(40, seed=1):
        a, b = coverage_beta_params(n_cal, alpha)
        low, high = stats.betabinom.ppf([delta / 2, 1 - delta / 2], m, a, b)
        assert coverage_band(n_cal, alpha, m, delta) == (low / m, high / m), (n_cal, alpha, m, delta)


def test_strata_with_one_non_empty_stratum_is_the_single_band() -> None:
    single = coverage_band(500, 0.1, 800, 0.01)
    assert coverage_band(np.array([500, 300]), 0.1, np.array([800, 0]), 0.01) == single


def _peak_bytes(m: int) -> int:
    tracemalloc.start()
    try:
        coverage_band(m, 0.1, m, 0.01)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_m() -> None:
    # the whole pmf held about 80 bytes per count (82 MB at m = 1e6, 328 MB at 4e6); chunks hold
    # scipy's temporaries for one chunk only, whatever m
    small, large = _peak_bytes(500_000), _peak_bytes(4_000_000)
    assert large < 40e6, f"peak {large / 1e6:.1f} MB at m = 4e6"
    assert large < 1.5 * small, f"peak {small / 1e6:.1f} MB at m = 5e5, {large / 1e6:.1f} MB at m = 4e6"
    low, high = coverage_band(4_000_000, 0.1, 4_000_000, 0.01)
    assert low < 0.9 < high and high - low < 0.002
