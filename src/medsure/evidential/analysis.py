"""The joint analysis of a joint (UML) prediction file: one call computes everything its report shows.

:func:`evaluate_joint` reads the calibration and test parts of joint predictions
(:class:`~medsure.artifact.JointPredictions`) and returns a :class:`JointResults`: conformal
prediction sets of the image class on the expected probabilities, their coverage and size,
classification accuracy and ECE, how well the image uncertainty ``u`` flags errors, per-image
Dice and pixel uncertainty, and a gallery of test cases (image, mask, predicted mask, pixel ``u``,
predicted class set, image ``u``) for the report's joint view.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from medsure.artifact import JointPredictions, Predictions
from medsure.calibration.metrics import expected_calibration_error
from medsure.conformal.classifier import SplitConformalClassifier
from medsure.core import binary_auroc, dice_per_label, nanmean
from medsure.evidential.dirichlet import joint_reliability, vacuity
from medsure.utils.io import to_jsonable
from medsure.validation import check_alpha, check_int, input_error

__all__ = ["JointCase", "JointResults", "evaluate_joint"]


@dataclass
class JointCase:
    """One test case of the gallery.

    Attributes
    ----------
    id, true_class : the case and its label name (None when unlabelled)
    prediction_set : class names in the conformal set
    class_u : image vacuity ``K / S``
    dice : foreground Dice of the predicted mask (None when undefined)
    thumbnail : uint8 ``(h, w[, C])`` or None; mask, predicted_mask : int ``(H, W)``;
    pixel_u : float32 ``(H, W)``
    """

    id: str
    true_class: str | None
    prediction_set: list[str]
    class_u: float
    dice: float | None
    thumbnail: np.ndarray | None
    mask: np.ndarray | None
    predicted_mask: np.ndarray
    pixel_u: np.ndarray


@dataclass
class JointResults:
    """Everything the joint report shows (arrays only in ``cases``; :meth:`to_dict` leaves them out)."""

    n_cal: int
    n_test: int
    alpha: float
    method: str
    class_names: list[str]
    accuracy: float
    ece: float
    coverage: float
    mean_set_size: float
    mean_class_u: float
    u_error_auroc: float | None
    mean_dice: float | None
    mean_seg_u: float
    seg_u_dice_spearman: float | None
    conformal: dict[str, Any] = field(default_factory=dict)
    cases: list[JointCase] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "cases"}
        out["cases"] = [
            {
                "id": c.id,
                "true_class": c.true_class,
                "prediction_set": c.prediction_set,
                "class_u": c.class_u,
                "dice": c.dice,
            }
            for c in self.cases
        ]
        return to_jsonable(out)  # NaN (undefined) becomes None


def _alpha_of(pred: Predictions, what: str) -> np.ndarray:
    if not pred.evidential:
        raise input_error(
            what, "a file without alpha", "an evidential (joint) prediction file", "predict with a uml run", raw=True
        )
    return np.exp(pred.mean_logits().astype(np.float64))


def evaluate_joint(
    cal: JointPredictions,
    test: JointPredictions,
    *,
    alpha: float = 0.1,
    method: str = "lac",
    n_examples: int = 6,
    seed: int = 0,
) -> JointResults:
    """The joint analysis of a calibration and a test joint prediction file.

    Parameters
    ----------
    cal, test : joint predictions of one joint model (labelled; the test masks are needed for Dice)
    alpha : miscoverage of the class sets (``alpha >= 1/(n_cal+1)``)
    method : conformal score (``"lac"``, ``"aps"``, ...); scores read the expected probabilities
    n_examples : gallery size: half the most uncertain test cases (by image ``u``), half the least
    seed : seed of randomised scores

    Returns
    -------
    JointResults
    """
    cls_cal, _ = cal.split()
    cls_test, seg_test = test.split()
    if cls_cal.labels is None or cls_test.labels is None or seg_test.masks is None:
        raise input_error("joint predictions", "unlabelled cases", "labels in cal and test, masks in test", raw=True)
    check_alpha(alpha, cls_cal.n_samples, what="alpha", where="cal")
    n_examples = check_int("n_examples", n_examples, low=0)
    class_alpha = _alpha_of(cls_test, "test")
    seg_alpha = _alpha_of(seg_test, "test segmentation")
    _alpha_of(cls_cal, "cal")
    estimator = SplitConformalClassifier(method=method, alpha=alpha, seed=seed).fit(cls_cal)
    sets = estimator.predict(cls_test)
    conformal = estimator.score_sets(sets, cls_test.labels)
    probs = class_alpha / class_alpha.sum(axis=1, keepdims=True)
    labels = cls_test.labels
    errors = (probs.argmax(1) != labels).astype(int)
    class_u = vacuity(class_alpha)
    reliability = joint_reliability(class_alpha, seg_alpha)
    predicted = seg_alpha.argmax(axis=1)
    dice = nanmean(dice_per_label(predicted, seg_test.masks, seg_test.n_classes), axis=1)
    finite = np.isfinite(dice)
    rho = float(spearmanr(reliability.seg_u[finite], dice[finite]).statistic) if finite.sum() > 2 else float("nan")
    names = [str(c) for c in cls_test.class_names]
    order = np.argsort(-class_u, kind="stable")
    half = (n_examples + 1) // 2
    picked = list(dict.fromkeys([*order[:half].tolist(), *order[::-1][: n_examples - half].tolist()]))
    pixel_u = vacuity(seg_alpha)
    cases = [
        JointCase(
            id=str(cls_test.ids[i]),
            true_class=names[int(labels[i])],
            prediction_set=[names[k] for k in np.flatnonzero(sets[i])],
            class_u=float(class_u[i]),
            dice=float(dice[i]) if np.isfinite(dice[i]) else None,
            thumbnail=None if cls_test.thumbnails is None else cls_test.thumbnails[i],
            mask=seg_test.masks[i],
            predicted_mask=predicted[i],
            pixel_u=pixel_u[i].astype(np.float32),
        )
        for i in picked
    ]
    return JointResults(
        n_cal=cls_cal.n_samples,
        n_test=cls_test.n_samples,
        alpha=float(alpha),
        method=method,
        class_names=names,
        accuracy=float(1.0 - errors.mean()),
        ece=float(expected_calibration_error(probs, labels)),
        coverage=float(sets[np.arange(len(labels)), labels].mean()),
        mean_set_size=float(sets.sum(axis=1).mean()),
        mean_class_u=float(class_u.mean()),
        u_error_auroc=float(binary_auroc(class_u, errors)) if 0 < errors.sum() < len(errors) else None,
        mean_dice=float(np.nanmean(dice)) if finite.any() else None,
        mean_seg_u=float(reliability.seg_u.mean()),
        seg_u_dice_spearman=rho,
        conformal=conformal,
        cases=cases,
    )
