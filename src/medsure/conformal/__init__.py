"""Conformal prediction sets for classifiers: LAC, APS, RAPS, Top-K and SAPS scores; marginal,
class-conditional (Mondrian) and group-conditional calibration; metrics checked against the exact
finite-sample coverage band.

Layers: :mod:`.scores`, :mod:`.quantile`, :mod:`.metrics` are pure array functions;
:class:`SplitConformalClassifier` is the stateful estimator; :mod:`.analysis` runs the studies;
:mod:`.plots` and :mod:`.report` draw and write (outer layer only).
"""
from medsure.conformal.classifier import SplitConformalClassifier, to_probabilities, tune_raps
from medsure.conformal.metrics import class_overlap, set_metrics, validity
from medsure.conformal.quantile import (conformal_quantile, coverage_band, expected_coverage,
                                        min_calibration_size)
from medsure.conformal.scores import (METHODS, SCORES, candidate_scores, label_scores,
                                      prediction_sets)

__all__ = [
    "SplitConformalClassifier", "to_probabilities", "tune_raps",
    "set_metrics", "class_overlap", "validity",
    "conformal_quantile", "coverage_band", "expected_coverage", "min_calibration_size",
    "METHODS", "SCORES", "candidate_scores", "label_scores", "prediction_sets",
]
