"""CAMs of chosen cases as one results object, and the choice of cases worth explaining.

:class:`CAMResults` is what :func:`medsure.predict.predict_cams` returns, what the report renders
and what ``medsure explain`` saves as ``cams.npz`` (:meth:`CAMResults.to_npz_arrays`):

=============== ================== ============================================================
key             shape, dtype       meaning
=============== ================== ============================================================
``ids``         (M,) str           case id of each map; cases in the order asked for, the maps
                                   of one case consecutive (one per explained class)
``classes``     (M,) int64         class index each map explains (into ``class_names``)
``maps``        (M, H, W) float32  the CAM at the input's resolution; >= 0 (ReLU), not normalised
``class_names`` (K,) str           the model's classes
``method``      () str             the CAM method (a name of ``medsure.explain.CAM_METHODS``)
=============== ================== ============================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medsure.artifact import Predictions
from medsure.validation import check_int

__all__ = ["CAMResults", "cases_to_explain"]


@dataclass
class CAMResults:
    """CAMs of several cases, one row per (case, explained class).

    Attributes
    ----------
    method : the CAM method's registry name
    class_names : (K,) the model's classes
    ids : (M,) str, case id per map (a case's maps consecutive)
    classes : (M,) int64, explained class per map
    maps : (M, H, W) float32
    images : (M, H, W[, C]) the input image of each map (uint8, or float in [0, 1]); not saved
    """

    method: str
    class_names: list[str]
    ids: np.ndarray
    classes: np.ndarray
    maps: np.ndarray
    images: np.ndarray

    def to_npz_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of ``cams.npz`` (see the module docstring for the keys)."""
        return {
            "ids": np.asarray(self.ids).astype(str),
            "classes": np.asarray(self.classes, dtype=np.int64),
            "maps": np.asarray(self.maps, dtype=np.float32),
            "class_names": np.asarray(self.class_names).astype(str),
            "method": np.array(self.method),
        }


def cases_to_explain(pred: Predictions, n: int) -> list[str]:
    """Ids of the ``n`` cases most worth a look: the most confident wrong predictions first, then
    the most confident correct ones (all "correct" when ``pred`` has no labels).

    Parameters
    ----------
    pred : classification predictions (single pass or with a sample axis; its mean
        probabilities are ranked)
    n : number of ids (fewer when ``pred`` has fewer cases)
    """
    check_int("n", n, low=1)
    probs = pred.probabilities()
    conf = probs.max(1)
    wrong = probs.argmax(1) != pred.labels if pred.labels is not None else np.zeros(len(conf), bool)
    order = np.r_[
        np.flatnonzero(wrong)[np.argsort(-conf[wrong], kind="stable")],
        np.flatnonzero(~wrong)[np.argsort(-conf[~wrong], kind="stable")],
    ]
    return [str(pred.ids[i]) for i in order[:n]]
