"""Distribution-shift detection from image-level uncertainty (pure functions)."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from medsure.errors import MedsureInputError


def shift_auroc(in_distribution: np.ndarray, shifted: np.ndarray) -> float:
    """AUROC of an image-level score for telling shifted images from in-distribution ones.

    Shifted images are the positive class and a higher score should mean "more likely shifted"
    (e.g. higher mean entropy). Computed as the Mann–Whitney statistic with ties counted as 1/2,
    which equals ``sklearn.metrics.roc_auc_score`` on the concatenated scores.

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
        raise MedsureInputError(
            f"shift AUROC needs images in both groups, got {a.size} in-distribution and {b.size} shifted")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise MedsureInputError("shift scores must be finite")
    ranks = rankdata(np.concatenate([a, b]))  # average ranks give ties 1/2
    u_stat = ranks[a.size:].sum() - b.size * (b.size + 1) / 2.0
    return float(u_stat / (a.size * b.size))
