"""A combination of CSFs over CSFs standardised on calibration data.

Two modes, one class:

- learned (``weights=None``): logistic regression on the standardised CSFs predicting
  correctness, fitted on labelled calibration data only; the score is the log-odds of a correct
  prediction.
- fixed (``weights={"msr": 1, "energy": 0.5}``): the user's weights. Each CSF (oriented higher =
  confident) is standardised with the calibration mean and standard deviation, and the score is
  ``sum_j w_j (x_j - mean_j) / std_j``: a weight says how much one standard deviation of that CSF
  counts, whatever its units. Needs calibration CSFs but no labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from medsure.validation import Interval, input_error, validate_params

__all__ = ["CombinedCSF"]


class CombinedCSF:
    """Weighted combination of CSFs (higher = more confident).

    Parameters
    ----------
    names : sequence of str or None
        Which CSFs to combine; None = every key given to :meth:`fit` (or of ``weights``).
    C : float
        Inverse L2 strength of the logistic regression.
    weights : mapping of CSF name to float, or None
        Fixed weights over the standardised CSFs; None = learn them.

    Attributes
    ----------
    names_ : list of str
    mean_, scale_ : ndarray (F,) standardisation fitted on calibration data
    weights_ : ndarray (F,), intercept_ : float
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"C": [Interval(float, 0.0, None, closed="neither")]}

    def __init__(
        self, names: Sequence[str] | None = None, C: float = 1.0, weights: Mapping[str, float] | None = None
    ) -> None:
        self.names = names
        self.C = C
        self.weights = weights

    @property
    def mode(self) -> str:
        return "learned" if self.weights is None else "fixed"

    def _matrix(self, csfs: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
        missing = [n for n in names if n not in csfs]
        if missing:
            raise input_error("csfs", sorted(csfs), f"every combined CSF {list(names)}", f"missing: {missing}")
        return np.stack([np.asarray(csfs[n], dtype=np.float64) for n in names], axis=1)

    def fit(self, cal_csfs: Mapping[str, np.ndarray], cal_errors: np.ndarray | None = None) -> CombinedCSF:
        """Fit on calibration CSFs (each ``(n,)``, higher = confident) and errors ``(n,)``
        (errors are not used, and may be None, with fixed weights)."""
        validate_params(self)
        from sklearn.linear_model import LogisticRegression

        if self.weights is not None:
            return self._fit_fixed(cal_csfs, self.weights)
        names = list(self.names) if self.names is not None else sorted(cal_csfs)
        if not names:
            raise input_error("csfs", "no CSF", "at least one CSF to combine", raw=True)
        x = self._matrix(cal_csfs, names)
        if cal_errors is None:
            raise input_error(
                "cal_errors",
                None,
                "the errors of labelled calibration cases for the learned combined CSF",
                "give fixed weights to combine without labels",
            )
        errors = np.asarray(cal_errors).astype(int)
        if errors.shape != (x.shape[0],):
            raise input_error("cal_errors", f"shape {errors.shape}", f"({x.shape[0]},): one per case", raw=True)
        if errors.min() == errors.max():
            raise input_error(
                "cal_errors",
                f"{int(errors.sum())} errors out of {errors.shape[0]}",
                "both correct and wrong calibration predictions for the combined CSF",
                raw=True,
            )
        self._standardise(x)
        model = LogisticRegression(C=self.C, max_iter=1000).fit((x - self.mean_) / self.scale_, 1 - errors)
        self.weights_ = model.coef_[0].copy()
        self.intercept_ = float(model.intercept_[0])
        self.names_ = names
        return self

    def _standardise(self, x: np.ndarray) -> None:
        if x.shape[0] < 2:
            raise input_error(
                "calibration cases",
                x.shape[0],
                "at least 2 to standardise the CSFs of the combined CSF",
            )
        self.mean_ = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)

    def _fit_fixed(self, cal_csfs: Mapping[str, np.ndarray], given: Mapping[str, float]) -> CombinedCSF:
        weights = dict(given)
        names = list(self.names) if self.names is not None else list(weights)
        if not names or set(names) != set(weights):
            raise input_error(
                "weights", f"weights for {sorted(weights)}", f"one weight for each combined CSF {names}", raw=True
            )
        values = np.array([weights[n] for n in names], dtype=np.float64)
        if not np.all(np.isfinite(values)) or not np.any(values != 0):
            raise input_error("weights", weights, "finite numbers, not all zero")
        self._standardise(self._matrix(cal_csfs, names))
        self.weights_ = values
        self.intercept_ = 0.0
        self.names_ = names
        return self

    def predict(self, csfs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Combined confidence ``(N,)``: the log-odds of a correct prediction (learned), or the
        weighted sum of standardised CSFs (fixed)."""
        if not hasattr(self, "weights_"):
            raise input_error(
                "CombinedCSF",
                "an unfitted combination",
                "a fitted one",
                "call fit(cal_csfs, cal_errors) first",
                raw=True,
            )
        x = self._matrix(csfs, self.names_)
        return (x - self.mean_) / self.scale_ @ self.weights_ + self.intercept_
