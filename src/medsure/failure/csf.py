"""Confidence scoring functions (CSFs): one number per case saying how much to trust the
prediction, used to rank cases for review.

Each CSF is a pure function with a declared input and direction, listed in :data:`CSF_SPECS`:

- input ``"logits"``: one model output ``(N, K)``;
- input ``"samples"``: a sample axis ``(T, N, K)`` from MC dropout, a deep ensemble or TTA views;
- input ``"cam"``: Grad-CAM maps of the predicted class ``(N, H, W)``;
- input ``"alpha"``: Dirichlet concentrations ``(N, K)`` of an evidential model (a prediction
  file with ``alpha``; :mod:`medsure.evidential`);
- ``higher_is_confident``: True when larger values mean "more likely correct".

:func:`confidence` applies the sign so that every returned score is oriented "higher = more
confident", which is what the failure metrics and the review threshold expect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from medsure.core import entropy, entropy_decomposition, softmax
from medsure.evidential.dirichlet import (
    check_concentration,
    dirichlet_summary,
    dissonance,
    expected_entropy,
    vacuity,
)
from medsure.validation import input_error

__all__ = [
    "CSFSpec",
    "CSF_SPECS",
    "msr",
    "max_logit",
    "predictive_entropy",
    "margin",
    "topk_margin",
    "energy",
    "doctor",
    "sample_msr",
    "sample_predictive_entropy",
    "sample_expected_entropy",
    "sample_mutual_information",
    "sample_variance",
    "cam_concentration",
    "evidential_u",
    "evidential_dissonance",
    "evidential_expected_entropy",
    "evidential_mutual_information",
    "evidential_csfs",
    "EVIDENTIAL_CSFS",
    "confidence",
    "logit_csfs",
    "sample_csfs",
    "LOGIT_CSFS",
    "SAMPLE_CSFS",
    "CAM_CSFS",
]


def _logits(x: np.ndarray, ndim: int = 2) -> np.ndarray:
    arr = np.asarray(x)
    want = "(N, K)" if ndim == 2 else "(T, N, K)"
    if arr.ndim != ndim or arr.shape[-1] < 2:
        raise input_error("logits", f"shape {arr.shape}", f"{want} with K >= 2", raw=True)
    if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
        raise input_error(
            "logits",
            f"dtype {arr.dtype} with non-finite values or not floats",
            "finite floating-point values",
            raw=True,
        )
    return arr.astype(np.float64)


# ---- single-output CSFs (N, K) -----------------------------------------------------------


def msr(logits: np.ndarray) -> np.ndarray:
    """Maximum softmax response ``max_k p_k`` (Hendrycks & Gimpel 2017). Higher = confident."""
    return softmax(_logits(logits), axis=1).max(axis=1)


def max_logit(logits: np.ndarray) -> np.ndarray:
    """Largest logit. Higher = confident."""
    return _logits(logits).max(axis=1)


def predictive_entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy of the softmax (nats). Lower = confident."""
    return entropy(softmax(_logits(logits), axis=1), axis=1)


def margin(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability. Higher = confident."""
    return topk_margin(logits, k=2)


def topk_margin(logits: np.ndarray, k: int = 3) -> np.ndarray:
    """Top-1 probability minus the k-th largest probability (``k=2`` is :func:`margin`).

    ``k`` larger than the number of classes K is clipped to K. Higher = confident.
    """
    p = softmax(_logits(logits), axis=1)
    if k < 2:
        raise input_error("k", k, "k >= 2")
    k = min(int(k), p.shape[1])
    kth = -np.partition(-p, k - 1, axis=1)[:, k - 1]  # partition fixes only position k-1
    return p.max(axis=1) - kth


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Free energy ``-T logsumexp(z / T)`` (Liu et al. 2020). Lower = confident."""
    return -temperature * logsumexp(_logits(logits) / temperature, axis=1)


def doctor(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """DOCTOR ``D_alpha = (1 - g) / g`` with ``g = sum_k p_k^2`` (Granese et al. 2021),
    without input perturbation. Lower = confident."""
    g = np.sum(softmax(_logits(logits) / temperature, axis=1) ** 2, axis=1)
    return (1.0 - g) / g


# ---- sample-based CSFs (T, N, K) ------------------------------------------------------------


def _sample_probs(sample_logits: np.ndarray) -> np.ndarray:
    return softmax(_logits(sample_logits, ndim=3), axis=2)


def sample_msr(sample_logits: np.ndarray) -> np.ndarray:
    """Max of the mean softmax over samples. Higher = confident."""
    return _sample_probs(sample_logits).mean(axis=0).max(axis=1)


def _decomposition(sample_logits: np.ndarray):
    """:func:`medsure.core.entropy_decomposition` of the per-sample softmax (float64)."""
    return entropy_decomposition(_sample_probs(sample_logits), sample_axis=0, class_axis=2)


def sample_predictive_entropy(sample_logits: np.ndarray) -> np.ndarray:
    """Entropy of the mean softmax (total uncertainty). Lower = confident."""
    return _decomposition(sample_logits).total


def sample_expected_entropy(sample_logits: np.ndarray) -> np.ndarray:
    """Mean over samples of the per-sample entropy (aleatoric part). Lower = confident."""
    return _decomposition(sample_logits).aleatoric


def sample_mutual_information(sample_logits: np.ndarray) -> np.ndarray:
    """Predictive minus expected entropy (epistemic part, BALD), clipped at 0 against rounding.
    Lower = confident."""
    return _decomposition(sample_logits).epistemic


def sample_variance(sample_logits: np.ndarray) -> np.ndarray:
    """Variance over samples of the probability of the predicted class (argmax of the mean).
    Lower = confident."""
    p = _sample_probs(sample_logits)
    predicted = p.mean(axis=0).argmax(axis=1)
    return p[:, np.arange(p.shape[1]), predicted].var(axis=0)


# ---- CAM-derived -------------------------------------------------------------------------------


def cam_concentration(cams: np.ndarray) -> np.ndarray:
    """How concentrated each Grad-CAM map ``(N, H, W)`` is: ``1 - H(m / sum m) / log(HW)``.

    1 when all attribution sits on one pixel, 0 when it is uniform or empty. Declared
    higher = confident (a focused explanation); whether that holds is an empirical question
    answered by the failure metrics.
    """
    cams = np.asarray(cams, dtype=np.float64)
    if cams.ndim != 3 or cams.shape[1] * cams.shape[2] < 2:
        raise input_error("cams", f"shape {cams.shape}", "(N, H, W) with H*W >= 2", raw=True)
    if np.any(cams < 0) or not np.all(np.isfinite(cams)):
        raise input_error(
            "cams", "negative or non-finite values", "finite non-negative maps (Grad-CAM after ReLU)", raw=True
        )
    flat = cams.reshape(cams.shape[0], -1)
    total = flat.sum(axis=1, keepdims=True)
    dist = np.where(total > 0, flat / np.where(total > 0, total, 1.0), 1.0 / flat.shape[1])
    return 1.0 - entropy(dist, axis=1) / np.log(flat.shape[1])


# ---- evidential (Dirichlet) CSFs (N, K) alpha ----------------------------------------------------


def evidential_u(alpha: np.ndarray) -> np.ndarray:
    """Vacuity ``u = K / S`` of Dirichlet concentrations ``(N, K)`` (Sensoy et al. 2018: the
    uncertainty mass; Zhao et al. 2020 call it vacuity). Lower = confident."""
    return vacuity(check_concentration("alpha", alpha), axis=1)


def evidential_dissonance(alpha: np.ndarray) -> np.ndarray:
    """Dissonance (conflicting evidence, :func:`medsure.evidential.dissonance`). Lower = confident."""
    return dissonance(check_concentration("alpha", alpha), axis=1)


def evidential_expected_entropy(alpha: np.ndarray) -> np.ndarray:
    """Expected entropy ``E_Dir[H(p)]`` (aleatoric part). Lower = confident."""
    return expected_entropy(check_concentration("alpha", alpha), axis=1)


def evidential_mutual_information(alpha: np.ndarray) -> np.ndarray:
    """Entropy of ``alpha / S`` minus the expected entropy (distributional, epistemic part).
    Lower = confident."""
    return dirichlet_summary(alpha, axis=1).mutual_information


# ---- registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CSFSpec:
    """A confidence scoring function with its declared input and direction."""

    name: str
    input: str  # "logits" | "samples" | "cam"
    higher_is_confident: bool
    fn: Callable[[np.ndarray], np.ndarray]
    description: str = ""
    #: a logit CSF that depends on the logits only through the softmax probabilities, so it can
    #: score log-probabilities (e.g. the mean softmax of a sample axis) in place of logits
    probability_only: bool = False


LOGIT_CSFS: dict[str, CSFSpec] = {
    s.name: s
    for s in [
        CSFSpec("msr", "logits", True, msr, "maximum softmax response", probability_only=True),
        CSFSpec("max_logit", "logits", True, max_logit, "largest logit"),
        CSFSpec("predictive_entropy", "logits", False, predictive_entropy, "softmax entropy", probability_only=True),
        CSFSpec("margin", "logits", True, margin, "top-1 minus top-2 probability", probability_only=True),
        CSFSpec(
            "topk_margin",
            "logits",
            True,
            topk_margin,
            "top-1 minus top-3 probability (k clipped to K)",
            probability_only=True,
        ),
        CSFSpec("energy", "logits", False, energy, "free energy -logsumexp(z)"),
        CSFSpec("doctor", "logits", False, doctor, "DOCTOR D_alpha (Granese et al. 2021)", probability_only=True),
    ]
}
SAMPLE_CSFS: dict[str, CSFSpec] = {
    s.name: s
    for s in [
        CSFSpec("msr", "samples", True, sample_msr, "max of mean softmax"),
        CSFSpec("predictive_entropy", "samples", False, sample_predictive_entropy, "entropy of mean softmax"),
        CSFSpec("expected_entropy", "samples", False, sample_expected_entropy, "mean per-sample entropy"),
        CSFSpec("mutual_information", "samples", False, sample_mutual_information, "BALD mutual information"),
        CSFSpec("variance", "samples", False, sample_variance, "variance of predicted-class probability"),
    ]
}
CAM_CSFS: dict[str, CSFSpec] = {
    "cam_concentration": CSFSpec(
        "cam_concentration", "cam", True, cam_concentration, "1 - normalised entropy of the predicted-class Grad-CAM"
    ),
}
EVIDENTIAL_CSFS: dict[str, CSFSpec] = {
    s.name: s
    for s in [
        CSFSpec("evidential_u", "alpha", False, evidential_u, "vacuity u = K/S of the Dirichlet"),
        CSFSpec("evidential_dissonance", "alpha", False, evidential_dissonance, "dissonance of the evidence"),
        CSFSpec("evidential_expected_entropy", "alpha", False, evidential_expected_entropy, "expected entropy E[H(p)]"),
        CSFSpec(
            "evidential_mutual_information",
            "alpha",
            False,
            evidential_mutual_information,
            "H(alpha/S) - E[H(p)] (epistemic part)",
        ),
    ]
}
CSF_SPECS = {**LOGIT_CSFS, **{f"samples_{k}": v for k, v in SAMPLE_CSFS.items()}, **CAM_CSFS}
# kept out of CSF_SPECS (whose entries read logits, samples or CAMs): they apply only to files with alpha


def confidence(spec: CSFSpec, data: np.ndarray) -> np.ndarray:
    """Evaluate ``spec`` on ``data`` and orient it so that higher = more confident."""
    raw = spec.fn(data)
    return raw if spec.higher_is_confident else -raw


def logit_csfs(logits: np.ndarray) -> dict[str, np.ndarray]:
    """All single-output CSFs, oriented higher = confident, keyed by name."""
    return {name: confidence(spec, logits) for name, spec in LOGIT_CSFS.items()}


def evidential_csfs(alpha: np.ndarray) -> dict[str, np.ndarray]:
    """The evidential family on Dirichlet concentrations ``(N, K)``, oriented higher = confident."""
    return {name: confidence(spec, alpha) for name, spec in EVIDENTIAL_CSFS.items()}


def sample_csfs(sample_logits: np.ndarray, prefix: str = "mc_dropout") -> dict[str, np.ndarray]:
    """The sample family on ``(T, N, K)`` logits, keyed ``"{prefix}_{name}"`` (prefix is the
    sample kind: ``mc_dropout``, ``ensemble`` or ``tta``), oriented higher = confident."""
    return {f"{prefix}_{name}": confidence(spec, sample_logits) for name, spec in SAMPLE_CSFS.items()}
