"""Conformal prediction sets for classifiers: LAC, APS, RAPS, Top-K and SAPS scores (a registry of
:class:`~medsure.conformal.scores.ScoreSpec`); marginal, class-conditional (Mondrian) and
group-conditional thresholds; metrics checked against the exact finite-sample coverage band.

Layers: :mod:`.scores`, :mod:`.quantile`, :mod:`.metrics` are pure array functions;
:class:`SplitConformalClassifier` is the estimator (``fit`` / ``predict`` / ``score``);
:mod:`.analysis` computes the results (:func:`evaluate_conformal`, :func:`evaluate_conformal_study`);
:mod:`.plots` and :mod:`.report` render them (outer layer only).
"""

from medsure.conformal.analysis import ConformalRun, ConformalStudy, evaluate_conformal, evaluate_conformal_study
from medsure.conformal.classifier import SplitConformalClassifier, to_probabilities
from medsure.conformal.metrics import class_overlap, set_metrics, validity
from medsure.conformal.quantile import conformal_quantile, coverage_band, expected_coverage, min_calibration_size
from medsure.conformal.scores import (
    METHODS,
    SCORES,
    ScoreParam,
    ScoreSpec,
    candidate_scores,
    label_scores,
    prediction_sets,
    tune_raps,
)

__all__ = [
    "SplitConformalClassifier",
    "to_probabilities",
    "tune_raps",
    "evaluate_conformal",
    "evaluate_conformal_study",
    "ConformalRun",
    "ConformalStudy",
    "set_metrics",
    "class_overlap",
    "validity",
    "conformal_quantile",
    "coverage_band",
    "expected_coverage",
    "min_calibration_size",
    "METHODS",
    "SCORES",
    "ScoreSpec",
    "ScoreParam",
    "candidate_scores",
    "label_scores",
    "prediction_sets",
]
