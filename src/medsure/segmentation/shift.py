"""Distribution-shift detection from image-level uncertainty (pure functions)."""

from __future__ import annotations

import numpy as np

from medsure.core import binary_auroc
from medsure.validation import check_finite, input_error


def shift_auroc(in_distribution: np.ndarray, shifted: np.ndarray) -> float:
    """AUROC of an image-level score for telling shifted images from in-distribution ones.

    Shifted images are the positive class and a higher score should mean "more likely shifted"
    (e.g. higher mean entropy). :func:`medsure.core.binary_auroc` (ties count 1/2), which
    equals ``sklearn.metrics.roc_auc_score`` on the concatenated scores.

    Parameters
    ----------
    in_distribution : float ndarray (N_in,)
    shifted : float ndarray (N_shift,)

    Returns
    -------
    float in [0, 1]; 0.5 means the score cannot tell the domains apart.
    """
    a = np.asarray(in_distribution, dtype=np.float64).ravel()
    b = np.asarray(shifted, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise input_error(
            "shift AUROC images",
            f"{a.size} in-distribution and {b.size} shifted",
            "at least one image in each group",
            raw=True,
        )
    for what, scores in (("in-distribution scores", a), ("shifted scores", b)):
        check_finite(what, scores)
    return binary_auroc(np.concatenate([a, b]), np.r_[np.zeros(a.size, bool), np.ones(b.size, bool)])
