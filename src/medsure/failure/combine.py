"""A learned combination of CSFs: logistic regression on standardised CSFs predicting
correctness, fitted on calibration data only and applied to new data."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from medsure.errors import MedsureInputError

__all__ = ["CombinedCSF"]


class CombinedCSF:
    """Weighted combination of CSFs (higher = more confident).

    Parameters
    ----------
    names : sequence of str or None
        Which CSFs to combine; None = every key given to :meth:`fit`.
    C : float
        Inverse L2 strength of the logistic regression.

    Attributes
    ----------
    names_ : list of str
    mean_, scale_ : ndarray (F,) standardisation fitted on calibration data
    weights_ : ndarray (F,), intercept_ : float
    """

    def __init__(self, names: Sequence[str] | None = None, C: float = 1.0) -> None:
        self.names = names
        self.C = C

    def _matrix(self, csfs: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
        missing = [n for n in names if n not in csfs]
        if missing:
            raise MedsureInputError(f"csfs: missing {missing}; the combination needs {list(names)}")
        return np.stack([np.asarray(csfs[n], dtype=np.float64) for n in names], axis=1)

    def fit(self, cal_csfs: Mapping[str, np.ndarray], cal_errors: np.ndarray) -> "CombinedCSF":
        """Fit on calibration CSFs (each ``(n,)``, higher = confident) and errors ``(n,)``."""
        from sklearn.linear_model import LogisticRegression

        names = list(self.names) if self.names is not None else sorted(cal_csfs)
        if not names:
            raise MedsureInputError("csfs: no CSF given to combine")
        x = self._matrix(cal_csfs, names)
        errors = np.asarray(cal_errors).astype(int)
        if errors.shape != (x.shape[0],):
            raise MedsureInputError(f"errors: shape {errors.shape}, expected ({x.shape[0]},)")
        if errors.min() == errors.max():
            raise MedsureInputError(
                "the combined CSF needs both correct and wrong calibration predictions; "
                f"got {int(errors.sum())} errors out of {errors.shape[0]}")
        self.mean_ = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        model = LogisticRegression(C=self.C, max_iter=1000).fit((x - self.mean_) / self.scale_, 1 - errors)
        self.weights_ = model.coef_[0].copy()
        self.intercept_ = float(model.intercept_[0])
        self.names_ = names
        return self

    def score(self, csfs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Combined confidence ``(N,)``: the log-odds of a correct prediction."""
        if not hasattr(self, "weights_"):
            raise MedsureInputError("CombinedCSF is not fitted: call fit(cal_csfs, cal_errors) first")
        x = self._matrix(csfs, self.names_)
        return (x - self.mean_) / self.scale_ @ self.weights_ + self.intercept_
