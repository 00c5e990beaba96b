"""Post-hoc calibrators: ``fit`` on calibration logits and labels, ``transform`` new logits.

All calibrators take logits ``(N, K)``, or ``(T, N, K)`` with a sample axis (MC dropout,
ensemble members, TTA views), and return calibrated probabilities ``(N, K)``.
The API only ever sees calibration data in ``fit``: the test split is never used for fitting.

- :class:`TemperatureScaling` (Guo et al. 2017): one scalar T, ``softmax(z / T)``.
- :class:`VectorScaling`: per-class scale and bias, ``softmax(w * z + b)``.
- :class:`IsotonicCalibration`: one-vs-rest isotonic regression of each ``p_k``, rows renormalised.
- :class:`HistogramBinning` (Zadrozny & Elkan 2001): one-vs-rest equal-width bins of ``p_k``,
  each replaced by the observed frequency of class k in its bin; rows renormalised.

Minimum calibration sizes
-------------------------
Each calibrator declares :meth:`Calibrator.min_cal_samples`, the fewest labelled calibration
cases :func:`medsure.calibration.evaluate_calibration` (and ``medsure calibration``) accept for it:
10 per fitted parameter group — temperature 10 (one scalar), vector scaling and isotonic
``10 K`` (one scale/bias or one regression per class), histogram binning ``2 n_bins`` (every
bin of every class needs cases). Below that the fit memorises a handful of cases (one sample
moved a test NLL from 0.87 to 8.63). ``fit`` itself still accepts any non-empty set, for
callers who know what they do.

The registry :data:`CALIBRATORS` maps a name to its class; the command line offers its keys.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax, logsumexp

from medsure.core import softmax
from medsure.validation import Interval, input_error, validate_params

__all__ = [
    "Calibrator",
    "TemperatureScaling",
    "VectorScaling",
    "IsotonicCalibration",
    "HistogramBinning",
    "make_calibrator",
    "CALIBRATORS",
]


def _as_sample_logits(logits: np.ndarray, name: str = "logits") -> np.ndarray:
    """Return logits as float64 ``(T, N, K)``."""
    arr = np.asarray(logits)
    if arr.ndim not in (2, 3) or arr.shape[-1] < 2:
        raise input_error(name, f"shape {arr.shape}", "(N, K) or (T, N, K) with K >= 2", raw=True)
    if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
        raise input_error(
            name, f"dtype {arr.dtype}, with NaN/inf or not floats", "finite floating-point logits", raw=True
        )
    arr = arr.astype(np.float64)
    return arr if arr.ndim == 3 else arr[None]


def _check_labels(labels: np.ndarray, n: int, k: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise input_error("labels", f"shape {labels.shape}, dtype {labels.dtype}", f"integers ({n},)", raw=True)
    if n == 0:
        raise input_error("labels", "0 calibration samples", "labelled calibration data (N >= 1)", raw=True)
    if labels.min() < 0 or labels.max() >= k:
        raise input_error("labels", f"labels in [{labels.min()}, {labels.max()}]", f"labels in [0, {k})", raw=True)
    return labels.astype(np.int64)


def _mean_probs(sample_logits: np.ndarray) -> np.ndarray:
    return softmax(sample_logits, axis=2).mean(axis=0)


class Calibrator:
    """Base class: ``fit(logits, labels)`` then ``transform(logits) -> probs``."""

    #: calibration cases per fitted parameter group (see the module docstring)
    samples_per_group: int = 10
    #: number of classes seen in ``fit`` (set there; absent before)
    n_classes_: int

    def min_cal_samples(self, n_classes: int) -> int:
        """Fewest calibration cases the analyses accept for this calibrator with ``n_classes``."""
        return self.samples_per_group * int(n_classes)

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> Calibrator:
        raise NotImplementedError

    def transform(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not getattr(self, "n_classes_", None):
            raise input_error(
                type(self).__name__,
                "an unfitted calibrator",
                "a fitted one",
                "call fit(cal_logits, cal_labels) first",
                raw=True,
            )

    def _check_k(self, k: int) -> None:
        if k != self.n_classes_:
            raise input_error(
                "logits",
                f"K={k} classes",
                f"K={self.n_classes_} (the classes the calibrator was fitted with)",
                raw=True,
            )

    def _transform_probs(self, logits: np.ndarray) -> np.ndarray:
        """Predictive probabilities (N, K) of new logits, checked against the fitted state
        (for the calibrators that act on probabilities: isotonic, histogram binning)."""
        probs = _mean_probs(_as_sample_logits(logits))
        self._check_fitted()
        self._check_k(probs.shape[1])
        return probs


class TemperatureScaling(Calibrator):
    """Divide logits by one temperature fitted by minimising the calibration NLL.

    Parameters
    ----------
    bounds : (float, float)
        Search interval for T. The NLL is convex in ``1/T`` for a single model, so a bounded
        scalar search finds the global minimum.

    Attributes
    ----------
    temperature_ : float
    at_bound_ : bool
        True when the optimum lies at or beyond a bound of ``bounds``: the search ended within
        0.1 % of it, or the NLL there is no higher than at the fitted value (separable calibration
        data, where the NLL falls to 0 as T -> 0). The fitted temperature is then arbitrary.
    """

    def __init__(self, bounds: tuple[float, float] = (0.01, 100.0)) -> None:
        self.bounds = bounds

    def min_cal_samples(self, n_classes: int) -> int:
        return self.samples_per_group  # one scalar, whatever K

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> TemperatureScaling:
        bounds = tuple(self.bounds) if isinstance(self.bounds, (tuple, list)) else ()
        if len(bounds) != 2 or not all(np.isfinite(bounds)) or not 0 < bounds[0] < bounds[1]:
            raise input_error("TemperatureScaling(bounds=...)", self.bounds, "(low, high) with 0 < low < high")
        z = _as_sample_logits(logits)
        labels = _check_labels(labels, z.shape[1], z.shape[2])
        rows = np.arange(z.shape[1])

        def nll(log_t: float) -> float:
            logp = log_softmax(z / np.exp(log_t), axis=2)[:, rows, labels]  # (T, N)
            # log of the mean over samples of p(y | x)
            return float(-np.mean(logsumexp(logp, axis=0) - np.log(z.shape[0])))

        lo, hi = np.log(self.bounds[0]), np.log(self.bounds[1])
        result = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
        self.temperature_ = float(np.exp(result.x))
        # the optimum is at (or beyond) a bound when the search stopped next to one, or when the
        # NLL at a bound is no higher than at the fit (flat in float64: separable data, T -> 0)
        near = min(abs(result.x - lo), abs(result.x - hi)) < 1e-3
        flat = min(nll(lo), nll(hi)) <= result.fun + 1e-12 * (1.0 + abs(result.fun))
        self.at_bound_ = bool(near or flat)
        self.n_classes_ = int(z.shape[2])
        return self

    def transform_logits(self, logits: np.ndarray) -> np.ndarray:
        """Scaled logits, same shape as the input."""
        self._check_fitted()
        z = np.asarray(logits)
        self._check_k(z.shape[-1])
        return z / self.temperature_

    def transform(self, logits: np.ndarray) -> np.ndarray:
        z = _as_sample_logits(logits)
        self._check_fitted()
        self._check_k(z.shape[2])
        return _mean_probs(z / self.temperature_)


class VectorScaling(Calibrator):
    """``softmax(w * z + b)`` with per-class ``w`` and ``b`` fitted by L-BFGS on the NLL.

    Parameters
    ----------
    l2 : float
        Ridge penalty on ``(w - 1/T0, b)`` relative to the temperature-scaling solution
        ``T0`` (0 = plain maximum likelihood). Small calibration sets benefit from a little.

    Attributes
    ----------
    weights_ : ndarray (K,)
    bias_ : ndarray (K,)
    """

    def __init__(self, l2: float = 0.0) -> None:
        self.l2 = l2

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"l2": [Interval(float, 0.0, None)]}

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> VectorScaling:
        validate_params(self)
        z = _as_sample_logits(logits).mean(axis=0)  # one model output per sample
        n, k = z.shape
        labels = _check_labels(labels, n, k)
        onehot = np.zeros((n, k))
        onehot[np.arange(n), labels] = 1.0
        w0 = 1.0 / TemperatureScaling().fit(z, labels).temperature_
        prior = np.concatenate([np.full(k, w0), np.zeros(k)])

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:k], theta[k:]
            s = z * w + b
            logp = log_softmax(s, axis=1)
            loss = -np.sum(onehot * logp) / n
            residual = (np.exp(logp) - onehot) / n  # dloss/ds
            grad = np.concatenate([np.sum(residual * z, axis=0), np.sum(residual, axis=0)])
            diff = theta - prior
            return loss + 0.5 * self.l2 * float(diff @ diff), grad + self.l2 * diff

        result = minimize(objective, prior, jac=True, method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-10})
        self.weights_ = result.x[:k].copy()
        self.bias_ = result.x[k:].copy()
        self.n_classes_ = int(k)
        return self

    def transform_logits(self, logits: np.ndarray) -> np.ndarray:
        self._check_fitted()
        z = np.asarray(logits)
        self._check_k(z.shape[-1])
        return z * self.weights_ + self.bias_

    def transform(self, logits: np.ndarray) -> np.ndarray:
        # fitted on the logits averaged over samples, so applied to that average too
        z = _as_sample_logits(logits).mean(axis=0, keepdims=True)
        self._check_fitted()
        self._check_k(z.shape[2])
        return _mean_probs(z * self.weights_ + self.bias_)


def _renormalise(probs: np.ndarray) -> np.ndarray:
    """Rows divided by their sum; a row of zeros (every class mapped to 0) becomes uniform."""
    sums = probs.sum(axis=1, keepdims=True)
    uniform = np.full_like(probs, 1.0 / probs.shape[1])
    return np.where(sums > 0, probs / np.where(sums > 0, sums, 1.0), uniform)


class IsotonicCalibration(Calibrator):
    """One-vs-rest isotonic regression of ``p_k`` against ``1[y = k]``, rows renormalised.

    Attributes
    ----------
    regressors_ : list of sklearn ``IsotonicRegression``, one per class
    """

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> IsotonicCalibration:
        from sklearn.isotonic import IsotonicRegression

        probs = _mean_probs(_as_sample_logits(logits))
        n, k = probs.shape
        labels = _check_labels(labels, n, k)
        self.regressors_ = [
            IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probs[:, c], labels == c)
            for c in range(k)
        ]
        self.n_classes_ = int(k)
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        probs = self._transform_probs(logits)
        calibrated = np.stack([r.predict(probs[:, c]) for c, r in enumerate(self.regressors_)], axis=1)
        return _renormalise(calibrated)


class HistogramBinning(Calibrator):
    """One-vs-rest histogram binning with ``n_bins`` equal-width bins of ``p_k`` on [0, 1].

    A bin with no calibration sample keeps its midpoint as value.

    Attributes
    ----------
    bin_values_ : ndarray (K, n_bins): frequency of class k among calibration samples per bin
    bin_counts_ : ndarray (K, n_bins)
    """

    def __init__(self, n_bins: int = 10) -> None:
        self.n_bins = n_bins

    def min_cal_samples(self, n_classes: int) -> int:
        return 2 * int(self.n_bins)

    def _bin_index(self, scores: np.ndarray) -> np.ndarray:
        # bins (lo, hi], first bin closed: the same convention as the calibration metrics
        edges = np.linspace(0.0, 1.0, self.n_bins + 1)
        return np.searchsorted(edges[1:-1], scores, side="left")

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"n_bins": [Interval(int, 1, None)]}

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> HistogramBinning:
        validate_params(self)
        probs = _mean_probs(_as_sample_logits(logits))
        n, k = probs.shape
        labels = _check_labels(labels, n, k)
        midpoints = (np.arange(self.n_bins) + 0.5) / self.n_bins
        values = np.empty((k, self.n_bins))
        counts = np.empty((k, self.n_bins), dtype=np.int64)
        for c in range(k):
            index = self._bin_index(probs[:, c])
            counts[c] = np.bincount(index, minlength=self.n_bins)
            hits = np.bincount(index, weights=(labels == c).astype(float), minlength=self.n_bins)
            values[c] = np.where(counts[c] > 0, hits / np.maximum(counts[c], 1), midpoints)
        self.bin_values_, self.bin_counts_ = values, counts
        self.n_classes_ = int(k)
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        probs = self._transform_probs(logits)
        index = self._bin_index(probs)  # (N, K)
        calibrated = self.bin_values_[np.arange(probs.shape[1])[None, :], index]
        return _renormalise(calibrated)


#: the calibrator registry: name -> class (the command line's ``--method`` choices)
CALIBRATORS: dict[str, type[Calibrator]] = {
    "temperature": TemperatureScaling,
    "vector": VectorScaling,
    "isotonic": IsotonicCalibration,
    "histogram": HistogramBinning,
}


def make_calibrator(method: str, **kwargs) -> Calibrator:
    """Build a calibrator by name: ``temperature``, ``vector``, ``isotonic`` or ``histogram``."""
    if method not in CALIBRATORS:
        raise input_error("method", method, "one of " + ", ".join(sorted(CALIBRATORS)))
    return CALIBRATORS[method](**kwargs)
