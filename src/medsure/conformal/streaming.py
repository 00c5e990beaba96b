"""Split conformal prediction over a shard folder, one shard in memory at a time.

The same estimator (:class:`~medsure.conformal.classifier.SplitConformalClassifier`), the same
thresholds and the same sets as the in-memory path, for prediction sets too large to load whole
(:mod:`medsure.shards`). Fitting keeps only the 1-D calibration scores (the quantile needs them
all); predicting yields one shard's sets at a time; scoring keeps per test case only whether the
set covers, its size and the label (and group), from which every set metric is computed exactly
as :meth:`SplitConformalClassifier.score` does.

>>> clf = fit_streaming(SplitConformalClassifier("aps", alpha=0.1), "cal_shards/")
>>> for ids, sets in predict_streaming(clf, "test_shards/"): ...
>>> result = score_streaming(clf, "test_shards/")          # == clf.score(load_predictions(...))

Randomized scores draw their ``u`` from the estimator's seed in case order, shard after shard,
so the draws are those of one call on the whole set. Scores whose parameters are tuned on a
random part of the calibration data (RAPS without ``lam``/``k_reg``, SAPS without ``weight``)
need every row at once: give the parameters explicitly to stream them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from medsure.artifact import Predictions
from medsure.conformal.classifier import SplitConformalClassifier, _groups_of, _labels_of, _stream
from medsure.conformal.metrics import DEFAULT_DELTA
from medsure.conformal.scores import check_params, label_scores, rank_score_table, true_label_rank
from medsure.shards import ShardSource, shards_of
from medsure.validation import input_error, validate_params

__all__ = ["fit_streaming", "predict_streaming", "score_streaming", "set_metrics_from_hits"]


#: Rows scored at a time within a shard: the score's (rows, K) temporaries stay small whatever
#: the shard size (scores, sets and randomization are per row, so blocks change no result).
_BLOCK_ROWS = 1 << 16


def _row_blocks(parts: Iterable[Predictions]) -> Iterator[Predictions]:
    """Every part cut into consecutive blocks of at most :data:`_BLOCK_ROWS` cases, in order."""
    for part in parts:
        if part.n_samples <= _BLOCK_ROWS:
            yield part
            continue
        for start in range(0, part.n_samples, _BLOCK_ROWS):
            yield part.subset(np.arange(start, min(start + _BLOCK_ROWS, part.n_samples)))
        del part  # the shard is released before the next one is read


def _small_int(bound: int) -> type[np.signedinteger]:
    """The smallest signed integer type holding ``0 .. bound`` (per-case labels and set sizes)."""
    return np.int16 if bound < 2**15 else np.int32 if bound < 2**31 else np.int64


def _check_part(clf: SplitConformalClassifier, part: Predictions, k: int, what: str) -> None:
    if k != clf.n_classes_ or [str(c) for c in part.class_names] != clf.class_names_:
        raise input_error(
            what,
            f"a shard with K={k} classes {[str(c) for c in part.class_names]}",
            f"K={clf.n_classes_} classes {clf.class_names_} like the first shard",
            "every shard of a set must come from the same model",
            raw=True,
        )


def fit_streaming(clf: SplitConformalClassifier, cal: ShardSource) -> SplitConformalClassifier:
    """:meth:`SplitConformalClassifier.fit` over the shards of ``cal``; returns ``clf``, fitted
    with the same attributes and thresholds as ``clf.fit(<cal loaded whole>)``.

    Memory: one shard plus the 1-D scores, labels (and groups) of the calibration set.
    """
    validate_params(clf)
    spec = clf.spec
    given = check_params(spec, dict(clf.params or {}), allow_missing=True)
    if spec.tune is not None and spec.needs_tuning(given):
        raise input_error(
            "params",
            f"{clf.method} without {', '.join(q.name for q in spec.params if given.get(q.name) is None)}",
            "explicit score parameters when fitting over shards",
            "tuning needs every calibration row at once; tune on a sample, then pass the parameters",
            raw=True,
        )
    params = check_params(spec, given)
    clf.randomized_ = bool(clf.randomized and spec.randomizable)
    # one generator for the whole pass: chunked draws equal one draw of N values
    rng = _stream(clf.seed, 2) if clf.randomized_ else None
    scores_parts: list[np.ndarray] = []
    labels_parts: list[np.ndarray] = []
    group_parts: list[np.ndarray] = []
    rank_counts: np.ndarray | None = None
    first = True
    for part in _row_blocks(shards_of(cal)):
        values = clf._score_input(part, "cal")
        n, k = values.shape
        if first:
            clf.n_classes_ = k
            clf.class_names_ = [str(c) for c in part.class_names]
            first = False
        _check_part(clf, part, k, "cal")
        y = _labels_of(part, None, n, k, "cal")
        if clf.conditional == "group":
            group_parts.append(_groups_of(part, None, clf.group_key, n, "cal"))
        u = None if rng is None else rng.random((n,))
        if spec.rank_only:
            rank0 = true_label_rank(values, y) - 1
            scores = rank_score_table(spec, k, params)[rank0]
            counts = np.bincount(rank0, minlength=k)
            rank_counts = counts if rank_counts is None else rank_counts + counts
        else:
            scores = label_scores(clf.method, values, y, u, **params)
        scores_parts.append(np.asarray(scores))
        labels_parts.append(y.astype(_small_int(k)))  # class indices: 2 bytes per case instead of 8
    if first:
        raise input_error("cal", "no shards", "at least one calibration case", raw=True)
    scores = np.concatenate(scores_parts)
    y = np.concatenate(labels_parts)
    del scores_parts, labels_parts, part, values  # only the 1-D values stay for the quantile
    clf.params_ = params
    clf.n_tune_ = 0
    clf._fit_thresholds(scores, y, np.concatenate(group_parts) if group_parts else None, rank_counts)
    return clf


def predict_streaming(clf: SplitConformalClassifier, test: ShardSource) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(ids (n,), sets bool (n, K))`` per shard of ``test``: the rows of
    ``clf.predict(<test loaded whole>)``, in order."""
    clf._check_fitted()
    rng = _stream(clf.seed, 3) if clf.randomized_ else None
    for shard in shards_of(test):
        ids, blocks = [], []
        for part in _row_blocks([shard]):
            u = None if rng is None else rng.random((part.n_samples,))
            sets = clf.predict(part, u=u)
            _check_part(clf, part, sets.shape[1], "test")
            ids.append(part.ids)
            blocks.append(sets)
        yield np.concatenate(ids), np.concatenate(blocks)


def set_metrics_from_hits(
    hit: np.ndarray, sizes: np.ndarray, labels: np.ndarray, k: int, alpha: float
) -> dict[str, Any]:
    """:func:`medsure.conformal.metrics.set_metrics` from per-case coverage ``hit (N,)``, set
    ``sizes (N,)`` and ``labels (N,)`` (what a stream keeps instead of the ``(N, K)`` sets).
    Same formulas, same operations: the same numbers."""
    if hit.size == 0:
        raise input_error("sets", "0 samples", "at least 1 sample (coverage is undefined without)", raw=True)
    n_c = np.bincount(labels, minlength=k)
    hits_c = np.bincount(labels, weights=hit, minlength=k)
    size_c = np.bincount(labels, weights=sizes, minlength=k)
    pcc = [float(h / c) if c else None for h, c in zip(hits_c, n_c, strict=True)]
    present = [c for c in pcc if c is not None]
    stratified = []
    for s in np.unique(sizes):
        mask = sizes == s
        stratified.append({"size": int(s), "count": int(mask.sum()), "coverage": float(hit[mask].mean())})
    return {
        "n": int(labels.size),
        "coverage": float(hit.mean()),
        "mean_set_size": float(sizes.mean()),
        "median_set_size": float(np.median(sizes)),
        "size_histogram": np.bincount(sizes, minlength=k + 1).tolist(),
        "empty_rate": float(np.mean(sizes == 0)),
        "singleton_rate": float(np.mean(sizes == 1)),
        "full_rate": float(np.mean(sizes == k)),
        "per_class_coverage": pcc,
        "per_class_size": [float(s / c) if c else None for s, c in zip(size_c, n_c, strict=True)],
        "per_class_count": n_c.tolist(),
        "worst_class_coverage": float(min(present)) if present else None,
        "size_stratified_coverage": stratified,
        "coverage_gap": float(np.mean(np.abs(np.asarray(present) - (1 - alpha)))),
    }


def score_streaming(
    clf: SplitConformalClassifier, test: ShardSource, *, delta: float = DEFAULT_DELTA
) -> dict[str, Any]:
    """:meth:`SplitConformalClassifier.score` over the shards of ``test`` (labelled): the same dict.

    Memory: one shard plus, per test case, coverage, set size and label (and group).
    """
    clf._check_fitted()
    alpha = float(clf.alpha)
    hits: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    rng = _stream(clf.seed, 3) if clf.randomized_ else None
    for part in _row_blocks(shards_of(test)):
        u = None if rng is None else rng.random((part.n_samples,))
        sets = clf.predict(part, u=u)
        y = _labels_of(part, None, sets.shape[0], clf.n_classes_, "test")
        if clf.conditional == "group":
            groups.append(_groups_of(part, None, clf.group_key, sets.shape[0], "test"))
        hits.append(sets[np.arange(y.size), y])
        small = _small_int(clf.n_classes_ + 1)  # sizes and labels are small integers: same values, less memory
        sizes.append(sets.sum(axis=1).astype(small))
        labels.append(y.astype(small))
    if not labels:
        raise input_error("test", "no shards", "at least one test case", raw=True)
    hit, size, y = np.concatenate(hits), np.concatenate(sizes), np.concatenate(labels)
    result: dict[str, Any] = clf.describe()
    result["class_names"] = list(clf.class_names_)
    result.update(set_metrics_from_hits(hit, size, y, clf.n_classes_, alpha))
    g = np.concatenate(groups) if groups else None
    result.update(clf._validity_of_hits(hit, result["coverage"], y, g, delta))
    return result
