"""Split conformal classification: marginal, class-conditional (Mondrian) and group-conditional.

>>> clf = SplitConformalClassifier("aps", alpha=0.1, conditional="class", seed=0)
>>> sets = clf.fit(cal_predictions).predict(test_predictions)   # bool (N, K)
>>> clf.score(test_predictions)["coverage"]

The constructor only stores its arguments; :meth:`SplitConformalClassifier.fit` learns the
thresholds (attributes ending in ``_``), :meth:`SplitConformalClassifier.predict` builds the
sets ``{y : score(x, y) <= q}`` with the threshold ``q`` of the sample's stratum, and
:meth:`SplitConformalClassifier.score` measures them on labelled test data. The score's
:class:`~medsure.conformal.scores.ScoreSpec` says what it takes, whether it randomizes and which
parameters it has; the estimator reads only that.

Inputs are :class:`medsure.artifact.Predictions` or arrays. By default arrays (and the ``logits``
of a prediction file) are **logits** and are turned into probabilities by softmax (mean of the
per-sample softmax over a leading T axis). ``input="probs"`` declares that they already are
probabilities: they must be finite, in [0, 1] and each row must sum to 1 within 1e-3; anything
else is a :class:`~medsure.errors.MedsureInputError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeGuard

import numpy as np

from medsure.artifact import Predictions
from medsure.conformal.metrics import DEFAULT_DELTA, set_metrics, stratified_validity, validity
from medsure.conformal.quantile import conformal_quantile, conformal_quantile_of_counts, min_calibration_size
from medsure.conformal.scores import (
    RAPS_LAMBDA_GRID,
    SCORES,
    ScoreSpec,
    check_method,
    check_params,
    label_scores,
    label_scores_checked,
    prediction_sets,
    prediction_sets_per_sample,
    rank_score_table,
    sets_checked,
    true_label_rank,
    tune_raps,
)
from medsure.core import softmax
from medsure.errors import MedsureInputError
from medsure.validation import (
    Boolean,
    Interval,
    NoneOk,
    Options,
    check_alpha,
    check_choice,
    input_error,
    validate_params,
)

InputKind = Literal["logits", "probs"]
Conditional = Literal["marginal", "class", "group"]
FALLBACKS = (None, "marginal", "include")
__all__ = ["SplitConformalClassifier", "to_probabilities", "stratified_quantiles", "random_split", "tune_raps"]
PROB_SUM_TOLERANCE = 1e-3
#: Rows are validated (and test rows turned into sets) in blocks of about this many bytes, small
#: enough to stay in cache between the passes over a block.
_CACHE_BLOCK_BYTES = 2**21


# ---- input conversion -----------------------------------------------------------------------


def to_probabilities(data: Predictions | np.ndarray, *, input: InputKind = "logits", what: str = "input") -> np.ndarray:
    """Probabilities ``(N, K)`` from a :class:`Predictions` or an array ``(N, K)`` / ``(T, N, K)``.

    Parameters
    ----------
    data : Predictions or ndarray
    input : {"logits", "probs"}
        How to read the values (see module docstring).
    what : str
        Name for error messages (e.g. ``"cal"``).

    Returns
    -------
    ndarray (N, K), float32 or float64 (a new array; ``data`` is not modified)
    """
    if input not in ("logits", "probs"):
        raise input_error("input", input, "'logits' or 'probs'")
    if isinstance(data, Predictions):
        if data.task != "classification":
            raise input_error(
                what,
                f"a {data.task} prediction file",
                "a classification prediction file",
                "conformal sets need classes",
                raw=True,
            )
        if input == "logits":
            return data.probabilities()
        values = data.sample_logits()
    else:
        values = np.asarray(data)
        if not np.issubdtype(values.dtype, np.floating):
            raise input_error(what, f"dtype {values.dtype}", f"floating-point {input}", raw=True)
        if values.ndim == 2:
            values = values[None]
        if values.ndim != 3 or values.shape[2] < 2:
            raise input_error(what, f"shape {np.shape(data)}", "(N, K) or (T, N, K) with K >= 2", raw=True)
        if input == "logits":
            if not np.all(np.isfinite(values)):
                bad = int(values.size - np.count_nonzero(np.isfinite(values)))
                raise input_error(what, f"{bad} NaN or infinite logits", "finite values", raw=True)
            return softmax(values.astype(np.float32), axis=2).mean(axis=0)
    return _validated_probs(values, what)


def _is_large_matrix(data: Any) -> TypeGuard[np.ndarray]:
    """A 2-D array big enough that checking and scoring it block by block pays off."""
    return isinstance(data, np.ndarray) and data.ndim == 2 and data.nbytes > 2 * _CACHE_BLOCK_BYTES


def _validated_probs(values: np.ndarray, what: str) -> np.ndarray:
    # Row sums and the minimum are all a valid input needs; everything else works on the (T, N)
    # sums. Few classes: one BLAS matrix-vector product (numpy's row reduction has a K-long inner
    # loop). Many classes: blocks of rows small enough to stay in cache, so the minimum reads the
    # block the sum just brought in (one pass over memory instead of two).
    t, n, k = values.shape
    flat = values.reshape(-1, k)
    if k <= 16:
        sums = flat @ np.ones(k, dtype=values.dtype)
        lo = float(flat.min()) if flat.size else 0.0
    else:
        sums = np.empty(flat.shape[0], dtype=np.result_type(values.dtype, np.float32))
        lo = np.inf
        step = max(256, _CACHE_BLOCK_BYTES // (k * values.itemsize))
        for start in range(0, flat.shape[0], step):
            block = flat[start : start + step]
            np.add.reduce(block, axis=1, out=sums[start : start + step])
            lo = min(lo, float(block.min()))
    sums = sums.reshape(t, n)
    deviation = np.abs(sums - 1.0)
    # NaN/inf make their row's sum non-finite, so `deviation.max() <= tol` is False for them too:
    # the common case of valid input costs one product, one minimum and one max of (T, N)
    if lo >= 0 and (deviation.size == 0 or float(deviation.max()) <= PROB_SUM_TOLERANCE):
        return values[0] if values.shape[0] == 1 else values.mean(axis=0)
    if not np.isfinite(sums).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise input_error(what, f"{bad} NaN or infinite probabilities", "finite values", raw=True)
    worst = np.unravel_index(np.argmax(deviation), sums.shape)
    off = float(deviation[worst]) > PROB_SUM_TOLERANCE
    # non-negative rows summing to 1 cannot exceed 1, so the max is needed only for the message
    if lo < 0 or (off and float(values.max()) > 1 + PROB_SUM_TOLERANCE):
        raise input_error(
            what,
            f"values in [{lo:.4g}, {float(values.max()):.4g}]",
            "probabilities in [0, 1]",
            "drop input='probs' / --input probs if these are logits",
            raw=True,
        )
    raise input_error(
        what,
        f"probabilities that do not sum to 1 (row {int(worst[-1])} sums to {sums[worst]:.6g})",
        f"rows that sum to 1 within {PROB_SUM_TOLERANCE}",
        "pass logits, or normalised probabilities",
        raw=True,
    )


def _labels_of(data: Predictions | np.ndarray, labels: Any, n: int, k: int, what: str) -> np.ndarray:
    if labels is None and isinstance(data, Predictions):
        labels = data.labels
    if labels is None:
        raise input_error(
            f"{what} labels", "none", "the true class of every sample", "pass labels= or a labelled file", raw=True
        )
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (n,):
        raise input_error(f"{what} labels", f"shape {labels.shape}", f"({n},): one per sample", raw=True)
    if not np.issubdtype(labels.dtype, np.integer):
        raise input_error(f"{what} labels", f"dtype {labels.dtype}", "integers", raw=True)
    if n and (labels.min() < 0 or labels.max() >= k):
        raise input_error(
            f"{what} labels",
            f"labels in [{labels.min()}, {labels.max()}]",
            f"labels in [0, {k}) for K={k} classes",
            raw=True,
        )
    return labels.astype(np.int64)


def _groups_of(data: Predictions | np.ndarray, groups: Any, group_key: str | None, n: int, what: str) -> np.ndarray:
    if groups is None and isinstance(data, Predictions) and group_key is not None:
        if group_key not in data.meta:
            raise input_error("group_key", group_key, f"a meta key of {what} (available: {sorted(data.meta)})")
        groups = data.meta[group_key]
    if groups is None:
        raise input_error(
            f"{what} groups",
            "none",
            "a group per sample for group-conditional conformal",
            "pass groups=... or group_key naming a Predictions.meta entry",
            raw=True,
        )
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise input_error(f"{what} groups", f"shape {groups.shape}", f"({n},): one per sample", raw=True)
    return groups.astype(str)


def _stream(seed: int | None, stream: int) -> np.random.Generator:
    """Independent generator per use (tuning split, calibration u, test u) from one seed."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


# ---- pure helpers -----------------------------------------------------------------------------


def stratified_quantiles(
    scores: np.ndarray,
    strata: np.ndarray,
    alpha: float,
    *,
    names: Sequence[str],
    fallback: str | None = None,
    kind: str = "class",
) -> tuple[np.ndarray, list[dict]]:
    """One conformal threshold per stratum (Mondrian conformal).

    Parameters
    ----------
    scores : ndarray (n,)
        Calibration scores of the true labels.
    strata : ndarray of int (n,)
        Stratum index in ``[0, len(names))`` of each calibration sample.
    alpha : float
    names : sequence of str
        Stratum names, for messages.
    fallback : None, "marginal" or "include"
        What to do for a stratum with too few samples: None raises; "marginal" uses the threshold
        of all calibration scores; "include" uses ``+inf`` (the label / the whole set is always
        included: coverage 1 for that stratum).
    kind : str
        "class" or "group", for messages.

    Returns
    -------
    thresholds : ndarray (S,)
    fallbacks : list of dict
        ``{"stratum", "count", "needed", "fallback"}`` for every stratum that used the fallback.
    """
    check_choice("fallback", fallback, FALLBACKS)
    counts = np.bincount(strata, minlength=len(names))
    need = min_calibration_size(alpha)
    small = [s for s in range(len(names)) if counts[s] < need]
    if small and fallback is None:
        # the one alpha-vs-n message, for the smallest stratum; the hint lists every short one
        smallest = min(small, key=lambda s: counts[s])
        detail = ", ".join(f"{kind} {names[s]!r} has {counts[s]}" for s in small)
        check_alpha(
            alpha,
            int(counts[smallest]),
            where=f"{kind} {names[smallest]!r}",
            hint=f"an explicit fallback ('marginal' or 'include'); too few for alpha: {detail}",
        )
    thresholds = np.empty(len(names))
    fallbacks: list[dict[str, Any]] = []
    order = np.argsort(strata, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    marginal = None
    for s in range(len(names)):
        if s in small:
            if fallback == "marginal":
                if marginal is None:
                    marginal = conformal_quantile(scores, alpha, "the whole calibration set")
                thresholds[s] = marginal
            else:
                thresholds[s] = np.inf
            fallbacks.append({"stratum": str(names[s]), "count": int(counts[s]), "needed": need, "fallback": fallback})
        else:
            members = order[bounds[s] : bounds[s + 1]]
            thresholds[s] = conformal_quantile(scores[members], alpha, f"{kind} {names[s]!r}")
    return thresholds, fallbacks


def random_split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(first, rest)`` of a uniformly random split with ``round(fraction * n)`` first.

    Uniform (not stratified) on purpose: then the remaining calibration points and the test
    points stay exchangeable given the held-out part, so the coverage law is exact.
    """
    perm = rng.permutation(n)
    cut = round(fraction * n)
    return np.sort(perm[:cut]), np.sort(perm[cut:])


# ---- the estimator ----------------------------------------------------------------------------


class _Text:
    """Constraint: a string."""

    def check(self, what: str, value: Any) -> Any:
        if not isinstance(value, str):
            raise input_error(what, value, "a string")
        return value


class _RegisteredScore:
    """Constraint: a key of the score registry (read at check time, so new entries count)."""

    def check(self, what: str, value: Any) -> Any:
        if isinstance(value, str) and value in SCORES:
            return value
        raise input_error(what, value, "one of " + ", ".join(SCORES))


class _ParamsMapping:
    """Constraint: a mapping of score-parameter names to values (checked against the score)."""

    def check(self, what: str, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise input_error(what, value, "a dict of score parameters, e.g. {'lam': 0.1}")
        return value


class SplitConformalClassifier:
    """Split conformal prediction sets with a finite-sample coverage guarantee.

    Parameters
    ----------
    method : str
        Conformity score: a key of :data:`medsure.conformal.scores.SCORES`
        (``"lac"``, ``"aps"``, ``"raps"``, ``"topk"``, ``"saps"``).
    alpha : float in (0, 1)
        Target miscoverage: sets contain the true label with probability >= 1 - alpha.
    conditional : {"marginal", "class", "group"}
        ``"marginal"``: one threshold. ``"class"``: Mondrian by label — one threshold per true
        class, label ``y`` enters when its score passes class ``y``'s threshold, so coverage holds
        within every class. ``"group"``: one threshold per group (e.g. sex), coverage holds within
        every group; groups come from ``groups=`` or ``Predictions.meta[group_key]``.
    group_key : str, optional
        ``Predictions.meta`` key holding the groups for ``conditional="group"``.
    randomized : bool
        Randomized scores (``u ~ U[0,1)``) for scores declared ``randomizable`` (aps, raps,
        saps): exact coverage, sets may be empty. False uses ``u = 0``: never-empty,
        conservative sets. Ignored by the others (lac, topk).
    fallback : {None, "marginal", "include"}
        For class/group strata with fewer than ``ceil(1/alpha) - 1`` calibration samples: None raises
        naming the stratum and its count; "marginal" uses the marginal threshold there (no
        per-stratum guarantee); "include" always includes (coverage 1). Used fallbacks are listed
        in ``fallbacks_``.
    params : dict, optional
        The score's declared parameters (``ScoreSpec.params``): RAPS ``k_reg`` and ``lam``, SAPS
        ``weight``. A parameter without a default that is not given is tuned by the score's
        ``tune`` function on ``tune_fraction`` of the calibration data (a uniformly random part,
        as the RAPS paper's code), which is then *not* used for the threshold.
    tune_fraction : float in (0, 1)
        Share of calibration data held out for tuning (0.3 as the RAPS reference code).
    lambda_grid : sequence of float
        RAPS λ candidates when ``lam`` is tuned.
    input : {"logits", "probs"}
        How array inputs and artifact ``logits`` are read (module docstring).
    seed : int or None
        Seed of the tuning split and the randomization; None draws fresh entropy.

    Attributes
    ----------
    thresholds_ : ndarray (S,)
        Threshold per stratum (S = 1 marginal, K classes, or the number of groups).
    strata_ : list of str
        Stratum names (``["all"]``, class names, or group values).
    stratum_counts_ : ndarray (S,)
        Calibration samples per stratum.
    n_cal_ : int
        Calibration samples used for thresholds (after the tuning hold-out).
    n_tune_ : int
        Samples held out for tuning (0 otherwise).
    params_ : dict
        Score parameters in use (``k_reg``, ``lam`` or ``weight``).
    randomized_ : bool
        Whether the score is randomized (False for lac and topk).
    fallbacks_ : list of dict
        Strata that used the fallback.
    cal_scores_ : ndarray (n_cal_,)
    n_classes_ : int
    class_names_ : list of str
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "method": [_RegisteredScore()],
        "alpha": [Interval(float, 0.0, 1.0, closed="neither")],
        "conditional": [Options(("marginal", "class", "group"))],
        "group_key": [_Text(), NoneOk],
        "randomized": [Boolean()],
        "fallback": [Options(("marginal", "include")), NoneOk],
        "params": [_ParamsMapping(), NoneOk],
        "tune_fraction": [Interval(float, 0.0, 1.0, closed="neither")],
        "input": [Options(("logits", "probs"))],
        "seed": [Interval(int, 0, None), NoneOk],
    }

    def __init__(
        self,
        method: str = "lac",
        alpha: float = 0.1,
        *,
        conditional: Conditional = "marginal",
        group_key: str | None = None,
        randomized: bool = True,
        fallback: str | None = None,
        params: Mapping[str, Any] | None = None,
        tune_fraction: float = 0.3,
        lambda_grid: Sequence[float] = RAPS_LAMBDA_GRID,
        input: InputKind = "logits",
        seed: int | None = 0,
    ) -> None:
        self.method = method
        self.alpha = alpha
        self.conditional = conditional
        self.group_key = group_key
        self.randomized = randomized
        self.fallback = fallback
        self.params = params
        self.tune_fraction = tune_fraction
        self.lambda_grid = lambda_grid
        self.input = input
        self.seed = seed

    @property
    def spec(self) -> ScoreSpec:
        """The registry entry of ``method``."""
        return check_method(self.method)

    def _score_input(self, data: Predictions | np.ndarray, what: str) -> np.ndarray:
        """What the score function takes, per its ``ScoreSpec.input_kind``, shape (N, K)."""
        if self.spec.input_kind == "probabilities":
            return to_probabilities(data, input=self.input, what=what)
        if self.input != "logits":
            raise input_error("input", self.input, "'logits'", f"the {self.method} score takes logits")
        values = data.sample_logits() if isinstance(data, Predictions) else np.asarray(data)
        if values.ndim == 3 and values.shape[0] == 1:
            values = values[0]
        if values.ndim != 2:
            raise input_error(what, f"shape {values.shape}", "logits (N, K) without a sample axis", raw=True)
        return values

    # ---- fit --------------------------------------------------------------------------------
    def fit(
        self,
        cal: Predictions | np.ndarray,
        labels: np.ndarray | None = None,
        *,
        groups: np.ndarray | None = None,
        u: np.ndarray | None = None,
    ) -> SplitConformalClassifier:
        """Learn the threshold(s) from labelled calibration data.

        Parameters
        ----------
        cal : Predictions or ndarray (N, K) / (T, N, K)
        labels : ndarray (N,), optional
            Required when ``cal`` is an array (or a Predictions without labels).
        groups : ndarray (N,), optional
            Group of each sample for ``conditional="group"``.
        u : ndarray (N,), optional
            Randomization of the calibration scores (drawn from ``seed`` when None). With
            parameter tuning it indexes the full calibration set. For exact reproduction of
            other libraries.

        Returns
        -------
        self
        """
        validate_params(self)
        spec = self.spec
        alpha = float(self.alpha)
        given = check_params(spec, dict(self.params or {}), allow_missing=True)
        # a large array is checked and scored a block of rows at a time (see _predict_blocks)
        large = cal if _is_large_matrix(cal) and not spec.needs_tuning(given) else None
        # for a large array ``values`` is the raw array, used for its shape; it is checked block by block below
        values = large if large is not None else self._score_input(cal, "cal")
        n, k = values.shape
        y = _labels_of(cal, labels, n, k, "cal")
        g = _groups_of(cal, groups, self.group_key, n, "cal") if self.conditional == "group" else None
        self.n_classes_ = k
        self.class_names_ = (
            list(map(str, cal.class_names)) if isinstance(cal, Predictions) else [f"class_{j}" for j in range(k)]
        )
        self.randomized_ = bool(self.randomized and spec.randomizable)
        u_all: np.ndarray | None
        if u is None:
            u_all = _stream(self.seed, 2).random((n,)) if self.randomized_ else None
        else:
            self._check_u_allowed()
            u_all = np.asarray(u, dtype=np.float64)
            if u_all.shape != (n,):
                raise input_error("u", f"shape {u_all.shape}", f"({n},): one value per calibration sample", raw=True)

        self.n_tune_ = 0
        if spec.tune is not None and spec.needs_tuning(given):  # then ``large`` is None
            tune, keep = random_split(n, float(self.tune_fraction), _stream(self.seed, 1))
            # a parameter the user gave is kept; only the missing ones are chosen on the tuning part
            tuned = spec.tune(values[tune], y[tune], alpha, given, lambda_grid=self.lambda_grid)
            self.params_ = check_params(spec, tuned)
            self.n_tune_ = int(tune.size)
            values, y = values[keep], y[keep]
            u_all = None if u_all is None else u_all[keep]
            if g is not None:
                g = g[keep]
        else:
            self.params_ = check_params(spec, given)
        rank_counts = None
        if large is not None:
            scores = self._label_scores_blocks(large, y, u_all)
        elif spec.rank_only:  # the score of the rank: keep the rank counts for the quantile
            rank0 = true_label_rank(values, y) - 1
            scores = rank_score_table(spec, k, self.params_)[rank0]
            rank_counts = np.bincount(rank0, minlength=k)
        else:
            scores = label_scores(self.method, values, y, u_all, **self.params_)
        self._fit_thresholds(scores, y, g, rank_counts)
        return self

    def _fit_thresholds(
        self, scores: np.ndarray, y: np.ndarray, g: np.ndarray | None, rank_counts: np.ndarray | None
    ) -> None:
        """The thresholds from the calibration scores ``(n,)`` and labels ``(n,)`` (and groups):
        marginal, per class or per group. Shared by :meth:`fit` and the streaming fit, which keeps
        only these 1-D values. ``rank_counts`` (K,) replaces the scores for rank-only scores."""
        alpha, k = float(self.alpha), self.n_classes_
        self.cal_scores_ = scores
        self.n_cal_ = int(y.size)
        self.fallbacks_: list[dict[str, Any]]
        self.thresholds_: np.ndarray
        if self.conditional == "marginal":
            self.strata_ = ["all"]
            self.stratum_counts_ = np.array([y.size])
            if rank_counts is not None:  # K distinct values: count instead of partitioning
                threshold = conformal_quantile_of_counts(
                    rank_score_table(self.spec, k, self.params_), rank_counts, alpha, "the calibration set"
                )
            else:
                threshold = conformal_quantile(scores, alpha, "the calibration set")
            self.thresholds_ = np.array([threshold])
            self.fallbacks_ = []
        elif self.conditional == "class":
            self.strata_ = list(self.class_names_)
            self.stratum_counts_ = np.bincount(y, minlength=k)
            self.thresholds_, self.fallbacks_ = stratified_quantiles(
                scores, y, alpha, names=self.strata_, fallback=self.fallback, kind="class"
            )
        elif g is not None:  # group-conditional (g is read for it above)
            names, strata = np.unique(g, return_inverse=True)
            self.strata_ = [str(v) for v in names]
            self.stratum_counts_ = np.bincount(strata, minlength=len(names))
            self.thresholds_, self.fallbacks_ = stratified_quantiles(
                scores, strata, alpha, names=self.strata_, fallback=self.fallback, kind="group"
            )
            if self.fallback == "marginal":
                self._marginal_threshold = conformal_quantile(scores, alpha, "the calibration set")

    # ---- prediction -------------------------------------------------------------------------
    def _check_u_allowed(self) -> None:
        # a deterministic score with a randomization on one side only would break the guarantee
        if not self.randomized_:
            raise input_error(
                "u",
                "a randomization",
                f"no u: the {self.method} score is deterministic here "
                f"(randomized={self.randomized}, randomizable={self.spec.randomizable})",
                "pass u only to randomized scores",
                raw=True,
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "thresholds_"):
            raise input_error(
                type(self).__name__,
                "an unfitted estimator",
                "a fitted one",
                "call fit(cal) before predict(test)",
                raw=True,
            )

    def predict(
        self, test: Predictions | np.ndarray, *, groups: np.ndarray | None = None, u: np.ndarray | None = None
    ) -> np.ndarray:
        """Prediction sets for ``test``.

        Parameters
        ----------
        test : Predictions or ndarray (N, K) / (T, N, K)
        groups : ndarray (N,), optional
            Groups for ``conditional="group"`` (else read from ``meta[group_key]``).
        u : ndarray (N,), optional
            Randomization of the test scores. By default drawn from ``seed`` (the same draws on
            every call, so repeated calls give the same sets).

        Returns
        -------
        ndarray of bool (N, K)
            ``sets[i, y]`` is True when label ``y`` is in the set of sample ``i``.
        """
        self._check_fitted()
        if _is_large_matrix(test):
            return self._predict_blocks(test, groups, u)
        values = self._score_input(test, "test")
        u, per_sample = self._prepare_predict(test, values.shape, groups, u)
        return self._sets(values, u, per_sample)

    def _prepare_predict(
        self, test: Predictions | np.ndarray, shape: tuple[int, ...], groups: np.ndarray | None, u: np.ndarray | None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Checked randomization (N,) and, for group-conditional runs, per-sample thresholds (N,)."""
        n, k = shape
        if k != self.n_classes_:
            raise input_error(
                "test",
                f"K={k} classes",
                f"K={self.n_classes_} like cal",
                "both must come from the same model",
                raw=True,
            )
        if u is None:
            u = _stream(self.seed, 3).random(n) if self.randomized_ else None
        else:
            self._check_u_allowed()
        if self.conditional != "group":
            return u, None
        g = _groups_of(test, groups, self.group_key, n, "test")
        lookup = {name: i for i, name in enumerate(self.strata_)}
        present, inverse = np.unique(g, return_inverse=True)
        unseen = sorted(set(present.tolist()) - set(lookup))
        if unseen and self.fallback is None:
            raise input_error(
                "test groups",
                unseen,
                f"groups with calibration samples ({', '.join(self.strata_)})",
                "use fallback='marginal' or 'include'",
            )
        fallback_q = self._marginal_threshold if self.fallback == "marginal" else np.inf
        table = np.append(self.thresholds_, fallback_q)
        index = np.array([lookup.get(v, len(self.strata_)) for v in present.tolist()])
        return u, table[index[inverse]]

    def _sets(
        self, values: np.ndarray, u: np.ndarray | None, per_sample: np.ndarray | None, out: np.ndarray | None = None
    ) -> np.ndarray:
        if per_sample is not None:  # group-conditional: the threshold of each sample's group
            return prediction_sets_per_sample(self.method, values, per_sample, u, out=out, **self.params_)
        threshold = self.thresholds_[0] if self.conditional == "marginal" else self.thresholds_
        return prediction_sets(self.method, values, threshold, u, out=out, **self.params_)

    def _predict_blocks(self, test: np.ndarray, groups: np.ndarray | None, u: np.ndarray | None) -> np.ndarray:
        """:meth:`predict` for a large (N, K) array, a block of rows at a time: each block is
        checked and turned into sets while it is still in cache. Same checks, same sets."""
        n, k = test.shape
        u, per_sample = self._prepare_predict(test, test.shape, groups, u)
        sets = np.empty((n, k), dtype=bool)
        spec = self.spec
        threshold = self.thresholds_[0] if self.conditional == "marginal" else self.thresholds_
        for rows, values in self._checked_blocks(test, "test"):
            sets_checked(
                spec,
                values,
                threshold if per_sample is None else per_sample[rows, None],
                None if u is None else u[rows],
                self.params_,
                out=sets[rows],
            )
        return sets

    def _label_scores_blocks(self, cal: np.ndarray, y: np.ndarray, u: np.ndarray | None) -> np.ndarray:
        """Calibration scores of a large (N, K) array, checked and scored block by block."""
        scores = np.empty(cal.shape[0])
        spec = self.spec
        for rows, values in self._checked_blocks(cal, "cal"):
            scores[rows] = label_scores_checked(spec, values, y[rows], None if u is None else u[rows], self.params_)
        return scores

    def _checked_blocks(self, data: np.ndarray, what: str) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(rows, score input of those rows)`` for blocks of rows that fit in cache. The
        checks are those of the whole array; a failing block re-checks the whole array so the
        message describes all of it."""
        n, k = data.shape
        step = max(256, _CACHE_BLOCK_BYTES // (k * data.itemsize))
        # probabilities given as float64: only their values need checking, block by block
        direct = (
            self.input == "probs" and self.spec.input_kind == "probabilities" and data.dtype == np.float64 and k >= 2
        )
        for start in range(0, n, step):
            rows = slice(start, min(start + step, n))
            try:
                values = _validated_probs(data[None, rows], what) if direct else self._score_input(data[rows], what)
            except MedsureInputError:
                self._score_input(data, what)  # raises the message about the whole input
                raise
            yield rows, values

    # ---- scoring ------------------------------------------------------------------------------
    @property
    def exact_(self) -> bool:
        """Whether the fitted score is tie-free, so the coverage band's upper end applies too.

        Randomized scores are; Top-K and deterministic APS/RAPS/SAPS over-cover by design. An
        elementwise score (LAC) is tie-free in theory, but saturated float softmax outputs
        (p = 1.0) tie in practice: it counts as exact only when no two calibration scores tie at
        a threshold.
        """
        self._check_fitted()
        if self.randomized_:
            return True
        if self.spec.form != "elementwise":
            return False
        finite = self.thresholds_[np.isfinite(self.thresholds_)]
        return all(np.count_nonzero(self.cal_scores_ == t) <= 1 for t in finite)

    def score(
        self,
        test: Predictions | np.ndarray,
        labels: np.ndarray | None = None,
        *,
        groups: np.ndarray | None = None,
        delta: float = DEFAULT_DELTA,
    ) -> dict[str, Any]:
        """Set metrics, coverage band and validity on labelled test data.

        Parameters
        ----------
        test : Predictions or ndarray (N, K) / (T, N, K)
        labels : ndarray (N,), optional
            True test labels (read from ``test`` when it is a labelled Predictions).
        groups : ndarray (N,), optional
            Test groups for ``conditional="group"`` (else ``meta[group_key]``).
        delta : float
            Mass outside the coverage band.

        Returns
        -------
        dict
            See :meth:`score_sets`.
        """
        self._check_fitted()
        sets = self.predict(test, groups=groups)
        y = _labels_of(test, labels, sets.shape[0], self.n_classes_, "test")
        if self.conditional == "group":
            groups = _groups_of(test, groups, self.group_key, sets.shape[0], "test")
        return self.score_sets(sets, y, groups=groups, delta=delta)

    def score_sets(
        self, sets: np.ndarray, labels: np.ndarray, *, groups: np.ndarray | None = None, delta: float = DEFAULT_DELTA
    ) -> dict[str, Any]:
        """:meth:`score` for sets already built by :meth:`predict` (no second prediction).

        Returns
        -------
        dict
            :meth:`describe`, :func:`~medsure.conformal.metrics.set_metrics` and
            :func:`~medsure.conformal.metrics.validity` merged; for class/group runs also
            ``per_stratum`` (coverage and band of every stratum). For strata that used a
            fallback the band is approximate (``"include"`` strata count as always covered;
            ``"marginal"`` strata use the marginal calibration size).
        """
        self._check_fitted()
        alpha = float(self.alpha)
        labels = np.asarray(labels)
        result: dict[str, Any] = self.describe()
        result["class_names"] = list(self.class_names_)
        result.update(set_metrics(sets, labels, alpha))
        hit = sets[np.arange(labels.size), labels]
        result.update(self._validity_of_hits(hit, result["coverage"], labels, groups, delta))
        return result

    def _validity_of_hits(
        self,
        hit: np.ndarray,
        coverage: float,
        labels: np.ndarray,
        groups: np.ndarray | None,
        delta: float,
    ) -> dict[str, Any]:
        """Coverage band and validity from the per-case hits ``(N,)`` (true label in the set):
        marginal, or per stratum for class/group runs. Shared by :meth:`score_sets` and the
        streaming scorer, which keeps only the hits."""
        alpha, exact = float(self.alpha), self.exact_
        if self.conditional == "marginal":
            return validity(coverage, alpha, self.n_cal_, labels.size, exact=exact, delta=delta)
        if self.conditional == "class":
            test_strata, names = labels, list(self.strata_)
        else:
            if groups is None:
                raise input_error("groups", None, "the test groups (group-conditional scoring)")
            groups = np.asarray(groups).astype(str)
            names = sorted(set(self.strata_) | set(np.unique(groups).tolist()))
            test_strata = np.searchsorted(np.asarray(names), groups)
        fallback_of = {f["stratum"]: f["fallback"] for f in self.fallbacks_}
        cal_count = dict(zip(self.strata_, (int(c) for c in self.stratum_counts_), strict=True))
        modes = [fallback_of.get(name, None if name in cal_count else self.fallback) for name in names]
        return stratified_validity(
            hit,
            test_strata,
            names,
            [cal_count.get(name, 0) for name in names],
            modes,
            alpha,
            n_cal_marginal=self.n_cal_,
            exact=exact,
            delta=delta,
            kind=self.conditional,
        )

    # ---- description ------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of the fitted state."""
        self._check_fitted()
        return {
            "method": self.method,
            "alpha": float(self.alpha),
            "conditional": self.conditional,
            "randomized": self.randomized_,
            "params": dict(self.params_),
            "n_cal_used": self.n_cal_,
            "n_tune": self.n_tune_,
            "strata": list(self.strata_),
            "stratum_counts": [int(c) for c in self.stratum_counts_],
            "thresholds": [float(t) if np.isfinite(t) else None for t in self.thresholds_],
            "fallbacks": list(self.fallbacks_),
        }
