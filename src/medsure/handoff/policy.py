"""A saved hand-off policy: everything fitted on labelled calibration data that decides a new case.

:class:`Policy` is an estimator (the constructor stores its arguments, :meth:`Policy.fit` learns the
attributes ending in ``_``); :func:`save_policy` / :func:`load_policy` keep it as a JSON record, and
:func:`medsure.handoff.triage.triage` applies it to unlabelled cases.

What a policy holds
-------------------
classification
    ``conformal_``: deterministic split-conformal thresholds (marginal or class-conditional) of a
    registered score (:mod:`medsure.conformal`), so a case's prediction set never depends on a
    random draw; ``review_``: the guaranteed-risk threshold of a confidence scoring function
    (:class:`medsure.failure.SelectiveRiskThreshold`, Geifman & El-Yaniv 2017) when ``risk`` is
    given; ``range_``: the calibration range of ``logsumexp`` of the logits (an input outside it
    goes to review).
segmentation
    ``mask_``: the conformal-mask thresholds λ (conformal risk control of the per-image FNR,
    :class:`medsure.segmentation.ConformalMask`) when ``seg_alpha`` is given; limits on the image
    uncertainty and on the abstained area (pixels inside a conformal mask but not predicted as that
    label).
both
    ``limits_``: named per-case scores with a limit, fitted as the conformal quantile of the
    calibration scores at ``1 - review_rate`` (an exchangeable new case exceeds it with probability
    at most ``review_rate``). Optional scores that other medsure features write into the prediction
    file (``meta__evidential_u``, ``meta__certified_radius``, see :data:`OPTIONAL_SCORES`) become
    limits when the calibration file carries them; a new kind is one entry there, with nothing to
    import.

Why the calibration data are split
----------------------------------
The risk guarantee is about the cases the whole rule accepts: a singleton prediction set, inside
the calibration range, under every limit, *and* a confidence above the review threshold. When the
set thresholds and limits are fitted on the same cases that fit the review threshold, that rule is
no longer independent of the data that certify it. With ``risk`` given, a seeded uniformly random
``split`` share of the calibration cases therefore fits the thresholds and limits, and the rest fits
the review threshold on the cases the fixed label-free part of the rule accepts; then the
Clopper-Pearson bound of :class:`~medsure.failure.SelectiveRiskThreshold` holds for the final rule
(exchangeability with the calibration data assumed).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from scipy.special import logsumexp

from medsure import __version__
from medsure.artifact import Predictions
from medsure.conformal.classifier import SplitConformalClassifier, random_split
from medsure.conformal.quantile import conformal_quantile
from medsure.conformal.scores import check_method, prediction_sets
from medsure.failure.csf import LOGIT_CSFS, SAMPLE_CSFS, confidence
from medsure.failure.review import SelectiveRiskThreshold
from medsure.segmentation.conformal_mask import ConformalMask
from medsure.segmentation.uncertainty import entropy as pixel_entropy
from medsure.utils.io import atomic_write_text, to_jsonable
from medsure.validation import Interval, NoneOk, Options, check_alpha, describe, input_error, validate_params

__all__ = [
    "POLICY_FORMAT",
    "OPTIONAL_SCORES",
    "OptionalScore",
    "Policy",
    "save_policy",
    "load_policy",
    "file_sha256",
    "case_confidence",
    "range_score",
    "segmentation_scores",
    "class_sets",
    "limit_threshold",
]

#: Bumped when the JSON record's keys change.
POLICY_FORMAT = 1


@dataclass(frozen=True)
class OptionalScore:
    """A per-case score that another feature writes into the prediction file as ``meta__<name>``.

    Attributes
    ----------
    name : the meta key (without the ``meta__`` prefix)
    direction : ``"above"`` (review when the score is above its limit) or ``"below"``
    reason : the review reason shown to the expert
    """

    name: str
    direction: str
    reason: str


#: Scores a policy picks up when the calibration file carries them (pluggable: one entry each).
OPTIONAL_SCORES: dict[str, OptionalScore] = {
    s.name: s
    for s in (
        OptionalScore("evidential_u", "above", "high evidential uncertainty u"),
        OptionalScore("certified_radius", "below", "certified radius below its limit"),
    )
}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- per-case scores shared by fit and triage (pure functions) -----------------------------------


def case_confidence(pred: Predictions, csf: str) -> np.ndarray:
    """The CSF ``csf`` of every case, oriented higher = more confident, shape (N,).

    ``csf`` is a name of :data:`medsure.failure.csf.LOGIT_CSFS` (computed on the log of the mean
    softmax for probability-only CSFs, on the mean logits otherwise) or ``samples_<name>`` of
    :data:`~medsure.failure.csf.SAMPLE_CSFS` (needs a sample axis).
    """
    if csf in LOGIT_CSFS:
        spec = LOGIT_CSFS[csf]
        if spec.probability_only:
            # the mean softmax of a sample axis is what the sets use too; log keeps softmax(x) = p
            data = np.log(np.clip(pred.probabilities().astype(np.float64), 1e-300, None))
        else:
            data = pred.mean_logits()
        return confidence(spec, data)
    name = csf.removeprefix("samples_")
    if csf.startswith("samples_") and name in SAMPLE_CSFS:
        if not pred.has_samples:
            raise input_error(
                "csf",
                csf,
                "a CSF of single logits for predictions without a sample axis",
                "use msr, or predictions with MC-dropout / ensemble samples",
            )
        return confidence(SAMPLE_CSFS[name], pred.sample_logits())
    choices = list(LOGIT_CSFS) + [f"samples_{n}" for n in SAMPLE_CSFS]
    raise input_error("csf", csf, "one of " + ", ".join(choices))


def range_score(pred: Predictions) -> np.ndarray:
    """``logsumexp`` of the mean logits (N,): how much total evidence the model sees in a case
    (the negative free energy, Liu et al. 2020); far outside the calibration range suggests an
    input unlike the calibration data."""
    return np.asarray(logsumexp(pred.mean_logits().astype(np.float64), axis=1))


def class_sets(probs: np.ndarray, logits: np.ndarray, conformal: dict[str, Any]) -> np.ndarray:
    """Deterministic conformal prediction sets (N, K) from a policy's ``conformal_`` record."""
    spec = check_method(conformal["method"])
    values = probs if spec.input_kind == "probabilities" else logits
    thresholds = np.array([np.inf if t is None else t for t in conformal["thresholds"]], dtype=np.float64)
    threshold: float | np.ndarray = thresholds[0] if conformal["conditional"] == "marginal" else thresholds
    return prediction_sets(conformal["method"], values, threshold, None, **conformal["params"])


def segmentation_scores(
    probs: np.ndarray, lambdas: np.ndarray | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-image scores and per-pixel maps of segmentation probabilities.

    Parameters
    ----------
    probs : ndarray (N, K, H, W), predictive probabilities
    lambdas : ndarray (K - 1,) conformal-mask thresholds, or None

    Returns
    -------
    scores : dict with ``"seg_uncertainty"`` (N,) the mean pixel entropy (nats) and, with
        ``lambdas``, ``"abstained_area"`` (N,) the share of pixels inside some label's conformal
        mask but not predicted as that label
    maps : dict with ``"predicted"`` int (N, H, W), ``"uncertainty"`` float32 (N, H, W) and, with
        ``lambdas``, ``"conformal_mask"`` bool (N, K - 1, H, W)
    """
    predicted = probs.argmax(axis=1)
    umap = pixel_entropy(probs, axis=1).astype(np.float32)
    scores = {"seg_uncertainty": umap.reshape(umap.shape[0], -1).mean(axis=1).astype(np.float64)}
    maps: dict[str, np.ndarray] = {"predicted": predicted, "uncertainty": umap}
    if lambdas is not None:
        k = probs.shape[1]
        cmask = probs[:, 1:] >= np.asarray(lambdas, dtype=np.float64)[None, :, None, None]
        labels = np.arange(1, k)[None, :, None, None]
        abstained = (cmask & (predicted[:, None] != labels)).any(axis=1)
        scores["abstained_area"] = abstained.reshape(abstained.shape[0], -1).mean(axis=1)
        maps["conformal_mask"] = cmask
    return scores, maps


def limit_threshold(scores: np.ndarray, review_rate: float, direction: str, what: str) -> float:
    """The limit a new case's score is compared with: the conformal quantile at ``1 - review_rate``.

    For ``"above"`` a case goes to review when its score exceeds the limit; for ``"below"`` when it
    is under it. For an exchangeable new case either happens with probability at most
    ``review_rate``.
    """
    oriented = scores if direction == "above" else -scores
    q = conformal_quantile(oriented, review_rate, what)
    return q if direction == "above" else -q


def _csf_choices() -> list[str]:
    return list(LOGIT_CSFS) + [f"samples_{n}" for n in SAMPLE_CSFS]


class _CSFName:
    """Constraint: a CSF name :func:`case_confidence` knows."""

    def check(self, what: str, value: Any) -> Any:
        if isinstance(value, str) and value in _csf_choices():
            return value
        raise input_error(what, value, "one of " + ", ".join(_csf_choices()))


# ---- the estimator -------------------------------------------------------------------------------


class Policy:
    """Everything fitted on labelled calibration data that decides a new case.

    Parameters
    ----------
    method : str
        Conformal score (a key of :data:`medsure.conformal.SCORES`), classification only.
    alpha : float in (0, 1)
        Miscoverage of the prediction sets.
    conditional : {"marginal", "class"}
        One set threshold, or one per class (Mondrian; coverage within every class).
    fallback : {None, "marginal", "include"}
        For a class with too few calibration cases (class-conditional): None refuses; "marginal" uses
        the marginal threshold there, "include" always includes the label (as
        :class:`~medsure.conformal.SplitConformalClassifier`).
    risk : float in (0, 1) or None
        Highest acceptable error rate among auto-accepted cases (classification); None: no review
        threshold (then no risk guarantee is made).
    delta : float in (0, 1)
        Allowed probability that the risk guarantee fails, over the draw of the calibration data.
    csf : str
        Confidence scoring function of the review threshold (:func:`case_confidence`).
    seg_alpha : float in (0, 1) or None
        Target expected per-image FNR of the conformal masks (segmentation); None: no masks.
    seg_review_rate : float in (0, 1)
        Share of exchangeable new images each segmentation limit may send to review.
    meta_review_rate : float in (0, 1)
        The same for the optional scores of :data:`OPTIONAL_SCORES`.
    split : float in (0, 1)
        Share of calibration cases that fit the sets and limits when ``risk`` is given (module
        docstring); the rest fits the review threshold.
    seed : int
        Seed of that split.

    Attributes
    ----------
    task_, class_names_, n_classes_, n_cal_ : the calibration file's task, classes and size
    conformal_ : dict or None — method, conditional, alpha, thresholds, params, n_cal
    review_ : dict or None — csf, target_risk, delta, threshold, risk_bound, cal_coverage,
        cal_risk, n_cal (cases of the review part) and n_eligible (those the rest of the rule accepts)
    mask_ : dict or None — alpha, labels, lambda (one per foreground label), n_cal
    range_ : dict or None — score, low, high
    limits_ : dict of name -> {score, direction, limit, review_rate, reason, n_cal}
    cal_sha256_, medsure_version_, created_ : provenance of the fit
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "method": [Options(("lac", "aps", "raps", "topk", "saps"))],
        "alpha": [Interval(float, 0.0, 1.0, closed="neither")],
        "conditional": [Options(("marginal", "class"))],
        "fallback": [Options(("marginal", "include")), NoneOk],
        "risk": [Interval(float, 0.0, 1.0, closed="neither"), NoneOk],
        "delta": [Interval(float, 0.0, 1.0, closed="neither")],
        "csf": [_CSFName()],
        "seg_alpha": [Interval(float, 0.0, 1.0, closed="neither"), NoneOk],
        "seg_review_rate": [Interval(float, 0.0, 1.0, closed="neither")],
        "meta_review_rate": [Interval(float, 0.0, 1.0, closed="neither")],
        "split": [Interval(float, 0.0, 1.0, closed="neither")],
        "seed": [Interval(int, 0, None)],
    }

    def __init__(
        self,
        method: str = "aps",
        alpha: float = 0.1,
        *,
        conditional: str = "marginal",
        fallback: str | None = None,
        risk: float | None = None,
        delta: float = 0.05,
        csf: str = "msr",
        seg_alpha: float | None = None,
        seg_review_rate: float = 0.1,
        meta_review_rate: float = 0.05,
        split: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.method = method
        self.alpha = alpha
        self.conditional = conditional
        self.fallback = fallback
        self.risk = risk
        self.delta = delta
        self.csf = csf
        self.seg_alpha = seg_alpha
        self.seg_review_rate = seg_review_rate
        self.meta_review_rate = meta_review_rate
        self.split = split
        self.seed = seed

    # ---- fit -------------------------------------------------------------------------------------
    def fit(self, cal: Predictions, *, cal_sha256: str | None = None, created: str | None = None) -> Policy:
        """Fit every component on the labelled calibration predictions ``cal``.

        Parameters
        ----------
        cal : Predictions with labels (classification) or masks (segmentation)
        cal_sha256 : SHA-256 of the calibration file, recorded for the audit trail
        created : ISO time stamp to record (default: now, UTC)

        Returns
        -------
        self
        """
        validate_params(self)
        if not isinstance(cal, Predictions):
            raise input_error("cal", type(cal).__name__, "a Predictions object (medsure.load_predictions)")
        if cal.targets is None:
            key = "labels" if cal.task == "classification" else "masks"
            raise input_error(
                "cal predictions",
                f"a file without '{key}'",
                f"labelled calibration data ('{key}' key)",
                "a policy is fitted on labelled cases",
                raw=True,
            )
        self.task_ = cal.task
        self.class_names_ = [str(c) for c in cal.class_names]
        self.n_classes_ = cal.n_classes
        self.n_cal_ = cal.n_samples
        self.cal_sha256_ = cal_sha256
        self.medsure_version_ = __version__
        self.created_ = created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.conformal_: dict[str, Any] | None = None
        self.review_: dict[str, Any] | None = None
        self.mask_: dict[str, Any] | None = None
        self.range_: dict[str, Any] | None = None
        self.limits_: dict[str, dict[str, Any]] = {}

        split_needed = self.task_ == "classification" and self.risk is not None
        if split_needed:
            first, rest = random_split(cal.n_samples, float(self.split), np.random.default_rng(int(self.seed)))
            if first.size < 2 or rest.size < 2:
                raise input_error(
                    "cal predictions",
                    f"{cal.n_samples} cases",
                    "enough cases for both parts of the split (at least 2 each)",
                    raw=True,
                )
            part_a, part_b = cal.subset(first), cal.subset(rest)
        else:
            part_a, part_b = cal, None
        if self.task_ == "classification":
            self._fit_classification(part_a)
        else:
            self._fit_segmentation(part_a)
        self._fit_optional(part_a)
        if part_b is not None:
            self._fit_review(part_b)
        return self

    def _fit_classification(self, cal: Predictions) -> None:
        check_alpha(float(self.alpha), cal.n_samples, where="the calibration cases for the sets")
        conditional: Literal["marginal", "class"] = "class" if self.conditional == "class" else "marginal"
        clf = SplitConformalClassifier(
            self.method,
            float(self.alpha),
            conditional=conditional,
            fallback=self.fallback,
            randomized=False,
            seed=int(self.seed),
        ).fit(cal)
        self.conformal_ = {
            "method": self.method,
            "conditional": self.conditional,
            "alpha": float(self.alpha),
            "randomized": False,
            "thresholds": [float(t) if np.isfinite(t) else None for t in clf.thresholds_],
            "fallbacks": list(clf.fallbacks_),
            "params": {k: (float(v) if isinstance(v, float) else v) for k, v in clf.params_.items()},
            "n_cal": int(clf.n_cal_),
            "n_tune": int(clf.n_tune_),
        }
        scores = range_score(cal)
        self.range_ = {"score": "logsumexp", "low": float(scores.min()), "high": float(scores.max())}

    def _fit_segmentation(self, cal: Predictions) -> None:
        lambdas = None
        if self.seg_alpha is not None:
            mask = ConformalMask(alpha=float(self.seg_alpha)).fit(cal)
            lambdas = mask.lambda_
            self.mask_ = {
                "alpha": float(self.seg_alpha),
                "labels": [str(c) for c in mask.class_names_],
                "lambda": [float(v) for v in mask.lambda_],
                "n_cal": int(cal.n_samples),
            }
        scores, _ = segmentation_scores(cal.probabilities(), lambdas)
        reasons = {
            "seg_uncertainty": "segmentation uncertainty above its limit",
            "abstained_area": "abstained (uncertain) mask area above its limit",
        }
        for name, values in scores.items():
            self.limits_[name] = {
                "score": name,
                "direction": "above",
                "limit": limit_threshold(values, float(self.seg_review_rate), "above", f"calibration {name}"),
                "review_rate": float(self.seg_review_rate),
                "reason": reasons[name],
                "n_cal": int(values.size),
            }

    def _fit_optional(self, cal: Predictions) -> None:
        for name, spec in OPTIONAL_SCORES.items():
            if name not in cal.meta:
                continue
            values = _numeric_meta(cal, name)
            self.limits_[name] = {
                "score": f"meta__{name}",
                "direction": spec.direction,
                "limit": limit_threshold(
                    values, float(self.meta_review_rate), spec.direction, f"calibration meta__{name}"
                ),
                "review_rate": float(self.meta_review_rate),
                "reason": spec.reason,
                "n_cal": int(values.size),
            }

    def _fit_review(self, cal: Predictions) -> None:
        """The review threshold on the cases the fixed label-free part of the rule accepts."""
        from medsure.handoff.triage import label_free_reasons  # the one definition of the rule

        labels = cal.labels
        if labels is None:  # checked in fit; kept for the type checker
            raise input_error("cal predictions", "no labels", "labels")
        reasons, _codes, _ = label_free_reasons(self, cal)
        eligible = ~reasons.any(axis=1)
        conf = case_confidence(cal, self.csf)
        errors = cal.probabilities().argmax(axis=1) != labels
        n_eligible = int(eligible.sum())
        record: dict[str, Any] = {
            "csf": self.csf,
            "target_risk": float(self.risk) if self.risk is not None else None,
            "delta": float(self.delta),
            "n_cal": int(cal.n_samples),
            "n_eligible": n_eligible,
        }
        if n_eligible == 0:
            record.update(threshold=None, risk_bound=1.0, cal_coverage=0.0, cal_risk=0.0)
        else:
            srt = SelectiveRiskThreshold(target_risk=float(self.risk or 0.0), delta=float(self.delta))
            srt.fit(conf[eligible], errors[eligible])
            accepted = int((conf[eligible] >= srt.threshold_).sum())
            record.update(
                threshold=float(srt.threshold_) if math.isfinite(srt.threshold_) else None,
                risk_bound=float(srt.risk_bound_),
                cal_coverage=accepted / cal.n_samples,
                cal_risk=float(srt.cal_risk_),
            )
        self.review_ = record

    # ---- checks ----------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "task_"):
            raise input_error("Policy", "an unfitted policy", "a fitted one", "call fit(cal) first", raw=True)

    def check_compatible(self, pred: Predictions, what: str = "--pred") -> None:
        """Refuse predictions of another task, number of classes or class list."""
        self._check_fitted()
        hint = "triage predictions of the model the policy was fitted for"
        if pred.task != self.task_:
            raise input_error(f"{what} task", pred.task, f"{self.task_!r} like the policy", hint)
        if pred.n_classes != self.n_classes_:
            raise input_error(
                f"{what} classes", f"K={pred.n_classes}", f"K={self.n_classes_} like the policy", hint, raw=True
            )
        names = [str(c) for c in pred.class_names]
        if names != self.class_names_:
            raise input_error(
                f"{what} class_names", describe(names), f"{describe(self.class_names_)} like the policy", hint, raw=True
            )

    # ---- record ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON record (what :func:`save_policy` writes)."""
        self._check_fitted()
        return to_jsonable(
            {
                "format": "medsure-policy",
                "format_version": POLICY_FORMAT,
                "medsure_version": self.medsure_version_,
                "created": self.created_,
                "task": self.task_,
                "class_names": self.class_names_,
                "n_cal": self.n_cal_,
                "cal_sha256": self.cal_sha256_,
                "params": {
                    "method": self.method,
                    "alpha": self.alpha,
                    "conditional": self.conditional,
                    "fallback": self.fallback,
                    "risk": self.risk,
                    "delta": self.delta,
                    "csf": self.csf,
                    "seg_alpha": self.seg_alpha,
                    "seg_review_rate": self.seg_review_rate,
                    "meta_review_rate": self.meta_review_rate,
                    "split": self.split,
                    "seed": self.seed,
                },
                "conformal": self.conformal_,
                "review": self.review_,
                "mask": self.mask_,
                "range": self.range_,
                "limits": self.limits_,
            }
        )

    @classmethod
    def from_dict(cls, record: dict[str, Any], *, source: str = "policy") -> Policy:
        """Rebuild a fitted policy from :meth:`to_dict`'s record; refuses a newer medsure's record."""
        if not isinstance(record, dict) or record.get("format") != "medsure-policy":
            raise input_error(
                source, "a JSON file that is not a medsure policy", "a file written by `medsure policy fit`"
            )
        written_by = str(record.get("medsure_version", "?"))
        if _version_tuple(written_by) > _version_tuple(__version__):
            raise input_error(
                source,
                f"a policy written by medsure {written_by}",
                f"one written by medsure {__version__} or older",
                "upgrade medsure, or fit the policy again with this version",
                raw=True,
            )
        if int(record.get("format_version", 0)) > POLICY_FORMAT:
            raise input_error(
                source, f"policy format {record.get('format_version')}", f"format {POLICY_FORMAT} or older", raw=True
            )
        try:
            policy = cls(**record["params"])
            policy.task_ = record["task"]
            policy.class_names_ = [str(c) for c in record["class_names"]]
            policy.n_classes_ = len(policy.class_names_)
            policy.n_cal_ = int(record["n_cal"])
            policy.cal_sha256_ = record.get("cal_sha256")
            policy.medsure_version_ = written_by
            policy.created_ = record["created"]
            policy.conformal_ = record.get("conformal")
            policy.review_ = record.get("review")
            policy.mask_ = record.get("mask")
            policy.range_ = record.get("range")
            policy.limits_ = dict(record.get("limits") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise input_error(
                source, f"a damaged policy record ({exc!r})", "a file written by `medsure policy fit`"
            ) from None
        validate_params(policy)
        if policy.task_ == "classification" and policy.conformal_ is None:
            raise input_error(source, "a classification policy without set thresholds", "a complete policy record")
        return policy


def _numeric_meta(pred: Predictions, name: str) -> np.ndarray:
    values = np.asarray(pred.meta[name])
    if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)):
        raise input_error(
            f"prediction key 'meta__{name}'",
            f"dtype {values.dtype}" if not np.issubdtype(values.dtype, np.number) else "NaN or infinite values",
            "finite numbers, one per case",
            raw=True,
        )
    return values.astype(np.float64)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def save_policy(path: str | os.PathLike, policy: Policy) -> Path:
    """Write the policy record as JSON atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps(policy.to_dict(), indent=2, allow_nan=False) + "\n")
    return path


def load_policy(path: str | os.PathLike, option: str = "--policy") -> Policy:
    """Read a policy written by :func:`save_policy`; every failure is one line naming ``option``."""
    path = Path(path)
    if not path.is_file():
        raise input_error(
            option, f"'{path}', which is not a file", "a policy.json written by `medsure policy fit`", raw=True
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise input_error(
            option,
            f"'{path}', which is not valid JSON ({exc})",
            "a policy.json written by `medsure policy fit`",
            raw=True,
        ) from None
    return Policy.from_dict(record, source=f"{option} '{path}'")
