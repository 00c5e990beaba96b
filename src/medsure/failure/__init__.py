"""Silent-failure detection: confidence scoring functions (CSFs), risk-coverage metrics with
bootstrap intervals, a learned CSF combination and review thresholds with a risk guarantee."""

from medsure.failure.combine import CombinedCSF
from medsure.failure.csf import CSF_SPECS, CSFSpec, confidence, logit_csfs, sample_csfs
from medsure.failure.evaluate import FailureResult, compute_csfs, evaluate_failure, prediction_errors, score_csfs
from medsure.failure.metrics import (
    VARIANTS,
    RiskCoverageCurve,
    augrc,
    aupr_error,
    aurc,
    aurc_interpolated,
    auroc_failure,
    bootstrap_ci,
    excess_aurc,
    excess_aurc_interpolated,
    failure_metrics,
    fpr_at_95_tpr,
    fpr_at_95_tpr_fdshifts,
    risk_coverage_curve,
    selective_risk_at_coverage,
)
from medsure.failure.review import SelectiveRiskThreshold, clopper_pearson_upper

__all__ = [
    "CombinedCSF",
    "CSF_SPECS",
    "CSFSpec",
    "confidence",
    "logit_csfs",
    "sample_csfs",
    "FailureResult",
    "VARIANTS",
    "aurc_interpolated",
    "excess_aurc_interpolated",
    "fpr_at_95_tpr_fdshifts",
    "compute_csfs",
    "evaluate_failure",
    "prediction_errors",
    "score_csfs",
    "RiskCoverageCurve",
    "aupr_error",
    "augrc",
    "aurc",
    "auroc_failure",
    "bootstrap_ci",
    "excess_aurc",
    "failure_metrics",
    "fpr_at_95_tpr",
    "risk_coverage_curve",
    "selective_risk_at_coverage",
    "SelectiveRiskThreshold",
    "clopper_pearson_upper",
]
