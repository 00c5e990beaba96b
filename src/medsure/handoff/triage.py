"""Triage of unlabelled cases with a fitted :class:`~medsure.handoff.policy.Policy`.

:func:`triage` decides, for N cases at once, whether the model handles a case alone (``auto``) or an
expert must see it (``review``), lists every reason that sent a case to review, ranks the review
cases (priority 1 first) and states the guarantee that applies to the auto-accepted cases. All the
statistics are array operations over the N cases; no Python loop runs per case.

Reasons (codes as stored in the worklist)
-----------------------------------------
``set_multiple``
    the prediction set has more than one label;
``set_empty``
    the prediction set is empty;
``outside_calibration_range``
    ``logsumexp`` of the logits outside its calibration range;
``csf_below_threshold``
    the confidence is below the guaranteed-risk review threshold (or no threshold could be
    certified, so every case goes to review);
one code per limit of the policy
    ``seg_uncertainty``, ``abstained_area``, ``evidential_u``, ``certified_radius``, ...: the score
    is on the wrong side of its limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsure.artifact import Predictions
from medsure.handoff.policy import Policy, case_confidence, class_sets, range_score, segmentation_scores
from medsure.validation import input_error

__all__ = ["REASON_TEXT", "TriageResults", "label_free_reasons", "triage", "guarantee_statement", "nearest_neighbours"]

#: The fixed reasons and the text shown to the expert (limits bring their own text).
REASON_TEXT: dict[str, str] = {
    "set_multiple": "prediction set has more than one label",
    "set_empty": "empty prediction set",
    "outside_calibration_range": "input outside the calibration range",
    "csf_below_threshold": "confidence below the guaranteed-risk threshold",
}

ASSUMPTIONS = (
    "The new cases are exchangeable with the calibration cases: drawn from the same population, "
    "scanners and protocols, and predicted by the same model and preprocessing (no distribution shift).",
    "The calibration file is the one whose SHA-256 the policy records, and its labels are correct.",
    "The guarantees are about proportions over many cases, not about any single case.",
)


@dataclass
class TriageResults:
    """What :func:`triage` decided for N cases.

    Attributes
    ----------
    task : "classification" or "segmentation"
    ids : ndarray of str (N,)
    class_names : list of str (K)
    probabilities : ndarray (N, K) or None (classification)
    predicted : ndarray of int (N,) — the model's label (classification) or None
    sets : ndarray of bool (N, K) or None — the conformal prediction sets
    confidence : ndarray (N,) or None — the policy's CSF, higher = more confident
    reasons : ndarray of bool (N, R) — ``reasons[i, r]`` when reason ``reason_codes[r]`` applies
    reason_codes : list of str (R)
    reason_text : dict of code -> text for the expert
    auto : ndarray of bool (N,) — True where the model decides alone
    priority : ndarray of int (N,) — 1 = review first; auto cases come after every review case
    scores : dict of name -> ndarray (N,) — the per-case scores behind the reasons
    labels : ndarray of int (N,) or None — ground truth when the file has it
    maps : dict of name -> ndarray — segmentation maps (``predicted`` (N, H, W), ``uncertainty``
        (N, H, W), ``conformal_mask`` (N, K-1, H, W)) for the overlays
    guarantee : dict — :func:`guarantee_statement`
    summary : dict — counts, review rate, reason counts
    """

    task: str
    ids: np.ndarray
    class_names: list[str]
    probabilities: np.ndarray | None
    predicted: np.ndarray | None
    sets: np.ndarray | None
    confidence: np.ndarray | None
    reasons: np.ndarray
    reason_codes: list[str]
    reason_text: dict[str, str]
    auto: np.ndarray
    priority: np.ndarray
    scores: dict[str, np.ndarray]
    labels: np.ndarray | None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    guarantee: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def n_cases(self) -> int:
        return int(self.ids.shape[0])

    def order(self) -> np.ndarray:
        """Case indices sorted by priority (1 first), shape (N,)."""
        return np.argsort(self.priority, kind="stable")

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary (no per-case arrays)."""
        return {"task": self.task, "class_names": list(self.class_names), **self.summary, "guarantee": self.guarantee}


def label_free_reasons(policy: Policy, pred: Predictions) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Every review reason of ``policy`` except the confidence threshold, for N cases.

    Returns
    -------
    reasons : ndarray of bool (N, R)
    codes : list of str (R)
    context : dict with ``probabilities``, ``sets``, ``scores`` and ``maps`` computed on the way
    """
    policy.check_compatible(pred)
    columns: list[np.ndarray] = []
    codes: list[str] = []
    scores: dict[str, np.ndarray] = {}
    context: dict[str, Any] = {"probabilities": None, "sets": None, "maps": {}}
    if policy.task_ == "classification":
        conformal = policy.conformal_
        if conformal is None:
            raise input_error("policy", "a classification policy without set thresholds", "a complete policy")
        probs = pred.probabilities()
        sets = class_sets(probs, pred.mean_logits(), conformal)
        size = sets.sum(axis=1)
        columns += [size > 1, size == 0]
        codes += ["set_multiple", "set_empty"]
        context["probabilities"], context["sets"] = probs, sets
        if policy.range_ is not None:
            rscore = range_score(pred)
            scores["logsumexp"] = rscore
            columns.append((rscore < policy.range_["low"]) | (rscore > policy.range_["high"]))
            codes.append("outside_calibration_range")
    else:
        lambdas = None if policy.mask_ is None else np.asarray(policy.mask_["lambda"], dtype=np.float64)
        seg_scores, maps = segmentation_scores(pred.probabilities(), lambdas)
        scores.update(seg_scores)
        context["maps"] = maps
    for name, limit in policy.limits_.items():
        values = _limit_score(pred, limit["score"], scores)
        scores[name] = values
        over = values > limit["limit"] if limit["direction"] == "above" else values < limit["limit"]
        columns.append(over)
        codes.append(name)
    n = pred.n_samples
    reasons = np.stack(columns, axis=1) if columns else np.zeros((n, 0), dtype=bool)
    context["scores"] = scores
    return reasons, codes, context


def _limit_score(pred: Predictions, score: str, computed: dict[str, np.ndarray]) -> np.ndarray:
    if score in computed:
        return computed[score]
    if score.startswith("meta__"):
        name = score.removeprefix("meta__")
        if name not in pred.meta:
            raise input_error(
                "--pred",
                f"a prediction file without '{score}'",
                f"the key '{score}' the policy's limit needs (its calibration file had it)",
                "write the same per-case scores for the new cases",
                raw=True,
            )
        values = np.asarray(pred.meta[name])
        if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)):
            raise input_error(
                f"prediction key '{score}'", "non-numeric or non-finite values", "finite numbers", raw=True
            )
        return values.astype(np.float64)
    raise input_error("policy limit", score, "a score this medsure computes", "fit the policy with this version")


def triage(policy: Policy, pred: Predictions) -> TriageResults:
    """Decide auto / review for every case of ``pred`` (labels not needed).

    Parameters
    ----------
    policy : a fitted :class:`Policy`
    pred : predictions of the model the policy was fitted for (same task and class names)

    Returns
    -------
    TriageResults
    """
    reasons, codes, context = label_free_reasons(policy, pred)
    text = dict(REASON_TEXT)
    for name, limit in policy.limits_.items():
        text[name] = str(limit["reason"])
    conf = None
    predicted = None
    if policy.task_ == "classification":
        predicted = context["probabilities"].argmax(axis=1)
        conf = case_confidence(pred, policy.csf)
        if policy.review_ is not None:
            threshold = policy.review_["threshold"]
            below = np.ones(pred.n_samples, dtype=bool) if threshold is None else conf < threshold
            reasons = np.concatenate([reasons, below[:, None]], axis=1)
            codes = [*codes, "csf_below_threshold"]
            text["csf_below_threshold"] = f"confidence ({policy.csf}) below the guaranteed-risk threshold"
    auto: np.ndarray = np.asarray(~reasons.any(axis=1))
    n_reasons = reasons.sum(axis=1)
    if conf is not None:
        tiebreak = conf  # least confident first
    else:
        tiebreak = -context["scores"]["seg_uncertainty"]  # most uncertain first
    # lexsort: the last key is the primary one — review before auto, more reasons first, then tiebreak
    order = np.lexsort((tiebreak, -n_reasons, auto))
    priority = np.empty(pred.n_samples, dtype=np.int64)
    priority[order] = np.arange(1, pred.n_samples + 1)
    n = pred.n_samples
    n_auto = int(auto.sum())
    summary = {
        "n_cases": n,
        "n_auto": n_auto,
        "n_review": n - n_auto,
        "review_rate": (n - n_auto) / n if n else 0.0,
        "reason_counts": {code: int(c) for code, c in zip(codes, reasons.sum(axis=0), strict=True)},
        "reason_text": {code: text[code] for code in codes},
        "policy_created": policy.created_,
        "policy_cal_sha256": policy.cal_sha256_,
    }
    return TriageResults(
        task=policy.task_,
        ids=pred.ids.astype(str),
        class_names=list(policy.class_names_),
        probabilities=context["probabilities"],
        predicted=predicted,
        sets=context["sets"],
        confidence=conf,
        reasons=reasons,
        reason_codes=codes,
        reason_text={code: text[code] for code in codes},
        auto=auto,
        priority=priority,
        scores=context["scores"],
        labels=pred.labels,
        maps=context["maps"],
        guarantee=guarantee_statement(policy),
        summary=summary,
    )


def nearest_neighbours(
    query: np.ndarray, reference: np.ndarray, k: int = 3, *, block_rows: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` reference rows closest to each query row (Euclidean), in blocks of query rows.

    Used with predicted probabilities: the calibration cases the model sees most like a new case
    (a cheap proxy when no image features are stored).

    Parameters
    ----------
    query : ndarray (N, D)
    reference : ndarray (M, D)
    k : neighbours per row (clipped to M)
    block_rows : query rows per block (bounds the (block, M) distance matrix)

    Returns
    -------
    indices : int ndarray (N, k) into ``reference``, nearest first
    distances : ndarray (N, k)
    """
    query = np.asarray(query, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1] or reference.shape[0] == 0:
        raise input_error(
            "neighbour search", f"shapes {query.shape} and {reference.shape}", "(N, D) and (M, D) with M >= 1", raw=True
        )
    k = int(min(max(k, 1), reference.shape[0]))
    n = query.shape[0]
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k))
    ref_sq = (reference**2).sum(axis=1)
    for start in range(0, n, block_rows):
        q = query[start : start + block_rows]
        d2 = np.maximum((q**2).sum(axis=1)[:, None] - 2.0 * q @ reference.T + ref_sq[None, :], 0.0)
        part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < d2.shape[1] else np.tile(np.arange(k), (len(q), 1))
        near = np.take_along_axis(d2, part, axis=1)
        rank = np.lexsort((part, near), axis=1)  # nearest first, equal distances by index
        order = np.take_along_axis(part, rank, axis=1)
        indices[start : start + block_rows] = order
        distances[start : start + block_rows] = np.sqrt(np.take_along_axis(near, rank, axis=1))
    return indices, distances


def guarantee_statement(policy: Policy) -> dict[str, Any]:
    """What the policy promises for new cases, with numbers, in words, and its assumptions.

    Returns
    -------
    dict with ``statements`` (list of str), ``risk`` (the risk guarantee's numbers or None),
    ``coverage`` (the set guarantee's numbers or None), ``mask`` (or None) and ``assumptions``.
    """
    statements: list[str] = []
    risk = None
    if policy.review_ is not None:
        r = policy.review_
        if r["threshold"] is None:
            statements.append(
                f"No confidence threshold could be certified at risk {r['target_risk']} with "
                f"{r['n_eligible']} eligible calibration cases: every case goes to review."
            )
        else:
            statements.append(
                f"Among auto-accepted cases the model's label is wrong in at most {r['target_risk']:.3g} of cases, "
                f"with probability at least {1 - r['delta']:.3g} over the draw of the calibration data "
                f"(certified bound {r['risk_bound']:.3g} at {r['csf']} >= {r['threshold']:.4g}; "
                f"{r['n_cal']} calibration cases fitted it)."
            )
        risk = {
            "target_risk": r["target_risk"],
            "delta": r["delta"],
            "risk_bound": r["risk_bound"],
            "threshold": r["threshold"],
            "csf": r["csf"],
            "n_cal": r["n_cal"],
        }
    elif policy.task_ == "classification":
        statements.append("No review threshold was fitted (no --risk): no error-rate guarantee is made.")
    coverage = None
    if policy.conformal_ is not None:
        c = policy.conformal_
        within = "within every true class" if c["conditional"] == "class" else "on average over cases"
        statements.append(
            f"Each prediction set contains the true label with probability at least {1 - c['alpha']:.3g} "
            f"({within}; {c['method']} score, {c['n_cal']} calibration cases)."
        )
        coverage = {"alpha": c["alpha"], "conditional": c["conditional"], "method": c["method"], "n_cal": c["n_cal"]}
    mask = None
    if policy.mask_ is not None:
        m = policy.mask_
        statements.append(
            f"The conformal mask of each label misses on average at most {m['alpha']:.3g} of its true pixels "
            f"(expected per-image false-negative rate, conformal risk control, {m['n_cal']} calibration images)."
        )
        mask = {"alpha": m["alpha"], "labels": m["labels"], "lambda": m["lambda"]}
    for name, limit in policy.limits_.items():
        statements.append(
            f"Limit '{name}' sends at most {limit['review_rate']:.3g} of exchangeable new cases to review."
        )
    return {
        "statements": statements,
        "risk": risk,
        "coverage": coverage,
        "mask": mask,
        "assumptions": list(ASSUMPTIONS),
    }
