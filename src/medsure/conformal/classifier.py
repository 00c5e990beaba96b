"""Split conformal classification: marginal, class-conditional (Mondrian) and group-conditional.

>>> clf = SplitConformalClassifier("aps", alpha=0.1, conditional="class", seed=0)
>>> sets = clf.calibrate(cal_predictions).predict_set(test_predictions)   # bool (N, K)

The constructor only stores its arguments; :meth:`SplitConformalClassifier.calibrate` learns the
thresholds (attributes ending in ``_``) and :meth:`SplitConformalClassifier.predict_set` builds the
sets ``{y : score(x, y) <= q}`` with the threshold ``q`` of the sample's stratum.

Inputs are :class:`medsure.artifact.Predictions` or arrays. By default arrays (and the ``logits``
of a prediction file) are **logits** and are turned into probabilities by softmax (mean of the
per-sample softmax over a leading T axis). ``input="probs"`` declares that they already are
probabilities: they must be finite, in [0, 1] and each row must sum to 1 within 1e-3; anything else is a :class:`~medsure.errors.MedsureInputError`.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np

from medsure.artifact import Predictions, softmax
from medsure.conformal.quantile import check_alpha, conformal_quantile, min_calibration_size
from medsure.conformal.scores import (CHUNK_ROWS, RAPS_LAMBDA_GRID, SAPS_DEFAULT_WEIGHT, _chunks,
                                      _sorted_scores, check_method, label_scores, prediction_sets,
                                      prediction_sets_per_sample, true_label_rank)
from medsure.errors import MedsureInputError

InputKind = Literal["logits", "probs"]
Conditional = Literal["marginal", "class", "group"]
FALLBACKS = (None, "marginal", "include")
PROB_SUM_TOLERANCE = 1e-3


# ---- input conversion -----------------------------------------------------------------------

def to_probabilities(data: Predictions | np.ndarray, *, input: InputKind = "logits",
                     what: str = "input") -> np.ndarray:
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
        raise MedsureInputError(f"input={input!r}, expected 'logits' or 'probs'")
    if isinstance(data, Predictions):
        if data.task != "classification":
            raise MedsureInputError(f"{what} is a {data.task} artifact; conformal sets need classification")
        if input == "logits":
            return data.probabilities()
        values = data.sample_logits()
    else:
        values = np.asarray(data)
        if not np.issubdtype(values.dtype, np.floating):
            raise MedsureInputError(f"{what}: dtype {values.dtype}, expected float {input}")
        if values.ndim == 2:
            values = values[None]
        if values.ndim != 3 or values.shape[2] < 2:
            raise MedsureInputError(f"{what}: shape {np.shape(data)}, expected (N, K) or (T, N, K) with K >= 2")
        if input == "logits":
            if not np.all(np.isfinite(values)):
                bad = int(values.size - np.count_nonzero(np.isfinite(values)))
                raise MedsureInputError(f"{what}: {bad} NaN or infinite logits; all values must be finite")
            return softmax(values.astype(np.float32), axis=2).mean(axis=0)
    return _validated_probs(values, what)


def _validated_probs(values: np.ndarray, what: str) -> np.ndarray:
    sums = values.sum(axis=2, dtype=np.float64)
    if not np.all(np.isfinite(sums)):  # any NaN/inf makes its row sum non-finite (one pass)
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise MedsureInputError(f"{what}: {bad} NaN or infinite probabilities; all values must be finite")
    lo = float(values.min())
    worst = np.unravel_index(np.argmax(np.abs(sums - 1)), sums.shape)
    # non-negative rows summing to 1 cannot exceed 1, so the max is needed only for the message
    if lo < 0 or (abs(sums[worst] - 1) > PROB_SUM_TOLERANCE and float(values.max()) > 1 + PROB_SUM_TOLERANCE):
        raise MedsureInputError(
            f"{what}: values span [{lo:.4g}, {float(values.max()):.4g}], not probabilities in [0, 1] "
            "(drop input='probs' / --input probs if these are logits)")
    if abs(sums[worst] - 1) > PROB_SUM_TOLERANCE:
        raise MedsureInputError(
            f"{what}: probabilities do not sum to 1 (row {int(worst[-1])} sums to {sums[worst]:.6g}; "
            f"tolerance {PROB_SUM_TOLERANCE}); pass logits, or normalised probabilities")
    # rows within the tolerance are used as given (no copy for a single (N, K) array)
    return values[0] if values.shape[0] == 1 else values.mean(axis=0)


def _labels_of(data: Predictions | np.ndarray, labels: Any, n: int, k: int, what: str) -> np.ndarray:
    if labels is None and isinstance(data, Predictions):
        labels = data.labels
    if labels is None:
        raise MedsureInputError(f"{what} has no labels; calibration needs the true class of every sample")
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (n,):
        raise MedsureInputError(f"{what} labels have shape {labels.shape}, expected ({n},)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise MedsureInputError(f"{what} labels have dtype {labels.dtype}, expected integers")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise MedsureInputError(
            f"{what} labels span [{labels.min()}, {labels.max()}], expected labels in [0, {k}) for K={k}")
    return labels.astype(np.int64)


def _groups_of(data: Predictions | np.ndarray, groups: Any, group_key: str | None, n: int,
               what: str) -> np.ndarray:
    if groups is None and isinstance(data, Predictions) and group_key is not None:
        if group_key not in data.meta:
            raise MedsureInputError(
                f"{what} has no meta key {group_key!r} (available: {sorted(data.meta)})")
        groups = data.meta[group_key]
    if groups is None:
        raise MedsureInputError(f"group-conditional conformal needs a group per {what} sample "
                                "(groups=... or group_key naming a Predictions.meta entry)")
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise MedsureInputError(f"{what} groups have shape {groups.shape}, expected ({n},)")
    return groups.astype(str)


def _stream(seed: int | None, stream: int) -> np.random.Generator:
    """Independent generator per use (tuning split, calibration u, test u) from one seed."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


# ---- pure helpers -----------------------------------------------------------------------------

def stratified_quantiles(scores: np.ndarray, strata: np.ndarray, alpha: float, *,
                         names: Sequence[str], fallback: str | None = None,
                         kind: str = "class") -> tuple[np.ndarray, list[dict]]:
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
    if fallback not in FALLBACKS:
        raise MedsureInputError(f"fallback={fallback!r}, expected one of {list(FALLBACKS)}")
    counts = np.bincount(strata, minlength=len(names))
    need = min_calibration_size(alpha)
    small = [s for s in range(len(names)) if counts[s] < need]
    if small and fallback is None:
        detail = ", ".join(f"{kind} {names[s]!r} has {counts[s]}" for s in small)
        raise MedsureInputError(
            f"too few calibration samples for alpha={alpha:g} (each {kind} needs at least {need}): "
            f"{detail}. Use a larger alpha, more calibration data, or an explicit fallback "
            "('marginal' or 'include')")
    thresholds = np.empty(len(names))
    fallbacks = []
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
            fallbacks.append({"stratum": str(names[s]), "count": int(counts[s]), "needed": need,
                              "fallback": fallback})
        else:
            members = order[bounds[s]:bounds[s + 1]]
            thresholds[s] = conformal_quantile(scores[members], alpha, f"{kind} {names[s]!r}")
    return thresholds, fallbacks


def random_split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(first, rest)`` of a uniformly random split with ``round(fraction * n)`` first.

    Uniform (not stratified) on purpose: then the remaining calibration points and the test
    points stay exchangeable given the held-out part, so the coverage law is exact.
    """
    perm = rng.permutation(n)
    cut = int(round(fraction * n))
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def tune_raps(probs: np.ndarray, labels: np.ndarray, alpha: float, *, k_reg: int | None = None,
              lambda_grid: Sequence[float] = RAPS_LAMBDA_GRID) -> tuple[int, float]:
    """Choose RAPS ``(k_reg, lam)`` on held-out tuning data, as the RAPS paper's procedure.

    ``k_reg`` (unless given) is the ``(1 - alpha)`` empirical quantile (numpy ``method="higher"``)
    of the true label's 1-based rank; ``lam`` is the grid value whose conformal sets — calibrated and measured
    on the tuning data, deterministic scores — have the smallest mean size (first on ties).
    (Angelopoulos et al. 2021, Sec. 2 and their reference code ``pick_kreg``/``pick_lamda_size``.)

    Parameters
    ----------
    probs : ndarray (n, K)
    labels : ndarray (n,)
    alpha : float
    lambda_grid : sequence of float

    Returns
    -------
    (k_reg, lam)
    """
    ranks = true_label_rank(probs, labels)
    if k_reg is None:
        k_reg = int(np.quantile(ranks, 1 - alpha, method="higher"))
    grid = [float(lam) for lam in lambda_grid]
    n = probs.shape[0]
    # Every λ shares one sort per chunk: the scores in rank order give both the label scores and
    # (prefix sets) the set sizes, exactly as label_scores / prediction_sets compute them.
    label_sc = np.empty((len(grid), n))
    for rows in _chunks(n, CHUNK_ROWS):
        p = probs[rows].astype(np.float64)
        sp = np.sort(p, axis=1)[:, ::-1]
        at = (np.arange(sp.shape[0]), ranks[rows] - 1)
        for g, lam in enumerate(grid):
            label_sc[g, rows] = _sorted_scores("raps", sp, np.zeros(sp.shape[0]), {"k_reg": k_reg, "lam": lam})[at]
    # The tuning part only ranks λ values (coverage comes from the other calibration points), so
    # a split too small for the (n+1)-corrected quantile falls back to the empirical one.
    if alpha >= 1.0 / (n + 1):
        thresholds = [conformal_quantile(label_sc[g], alpha, "RAPS tuning split") for g in range(len(grid))]
    else:
        thresholds = [float(np.quantile(label_sc[g], 1 - alpha, method="higher")) for g in range(len(grid))]
    set_sizes = np.zeros(len(grid))
    for rows in _chunks(n, CHUNK_ROWS):
        sp = np.sort(probs[rows].astype(np.float64), axis=1)[:, ::-1]
        for g, lam in enumerate(grid):
            scores = _sorted_scores("raps", sp, np.zeros(sp.shape[0]), {"k_reg": k_reg, "lam": lam})
            set_sizes[g] += np.count_nonzero(scores <= thresholds[g])
    return k_reg, grid[int(np.argmin(set_sizes))]  # first λ on ties


# ---- the estimator ----------------------------------------------------------------------------

class SplitConformalClassifier:
    """Split conformal prediction sets with a finite-sample coverage guarantee.

    Parameters
    ----------
    method : {"lac", "aps", "raps", "topk", "saps"}
        Conformity score (see :mod:`medsure.conformal.scores`).
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
        Randomized scores (``u ~ U[0,1)``) for aps, raps and saps: exact coverage, sets may be
        empty. False uses ``u = 0``: never-empty, conservative sets. Ignored by lac and topk.
    fallback : {None, "marginal", "include"}
        For class/group strata with fewer than ``ceil(1/alpha) - 1`` calibration samples: None raises
        naming the stratum and its count; "marginal" uses the marginal threshold there (no
        per-stratum guarantee); "include" always includes (coverage 1). Used fallbacks are listed
        in ``fallbacks_``.
    k_reg, lam : int, float, optional
        RAPS regularisation. When either is None both are tuned on ``tune_fraction`` of the
        calibration data (a uniformly random part, as the paper's code), which is then *not*
        used for the threshold.
    tune_fraction : float
        Share of calibration data held out for RAPS tuning (0.3 as the RAPS reference code).
    lambda_grid : sequence of float
        RAPS λ candidates.
    weight : float, optional
        SAPS rank weight (default 0.2).
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
        Calibration samples used for thresholds (after the RAPS tuning hold-out).
    n_tune_ : int
        Samples held out for RAPS tuning (0 otherwise).
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

    def __init__(self, method: str = "lac", alpha: float = 0.1, *, conditional: Conditional = "marginal",
                 group_key: str | None = None, randomized: bool = True, fallback: str | None = None,
                 k_reg: int | None = None, lam: float | None = None, tune_fraction: float = 0.3,
                 lambda_grid: Sequence[float] = RAPS_LAMBDA_GRID, weight: float | None = None,
                 input: InputKind = "logits", seed: int | None = 0) -> None:
        self.method = method
        self.alpha = alpha
        self.conditional = conditional
        self.group_key = group_key
        self.randomized = randomized
        self.fallback = fallback
        self.k_reg = k_reg
        self.lam = lam
        self.tune_fraction = tune_fraction
        self.lambda_grid = lambda_grid
        self.weight = weight
        self.input = input
        self.seed = seed

    # ---- calibration ------------------------------------------------------------------------
    def calibrate(self, cal: Predictions | np.ndarray, labels: np.ndarray | None = None, *,
                  groups: np.ndarray | None = None, u: np.ndarray | None = None
                  ) -> "SplitConformalClassifier":
        """Learn the threshold(s) from labelled calibration data.

        Parameters
        ----------
        cal : Predictions or ndarray (N, K) / (T, N, K)
        labels : ndarray (N,), optional
            Required when ``cal`` is an array (or a Predictions without labels).
        groups : ndarray (N,), optional
            Group of each sample for ``conditional="group"``.
        u : ndarray (N,), optional
            Randomization of the calibration scores (drawn from ``seed`` when None). With RAPS
            tuning it indexes the full calibration set. For exact reproduction of other libraries.

        Returns
        -------
        self
        """
        spec = check_method(self.method)
        alpha = check_alpha(self.alpha)
        if self.conditional not in ("marginal", "class", "group"):
            raise MedsureInputError(
                f"conditional={self.conditional!r}, expected 'marginal', 'class' or 'group'")
        if self.fallback not in FALLBACKS:
            raise MedsureInputError(f"fallback={self.fallback!r}, expected one of {list(FALLBACKS)}")
        probs = to_probabilities(cal, input=self.input, what="cal")
        n, k = probs.shape
        y = _labels_of(cal, labels, n, k, "cal")
        g = _groups_of(cal, groups, self.group_key, n, "cal") if self.conditional == "group" else None
        self.n_classes_ = k
        self.class_names_ = (list(map(str, cal.class_names)) if isinstance(cal, Predictions)
                             else [f"class_{j}" for j in range(k)])
        self.randomized_ = bool(self.randomized and spec.randomizable)
        if u is None:
            u_all = _stream(self.seed, 2).random(n) if self.randomized_ else None
        else:
            self._check_u_allowed()
            u_all = np.asarray(u, dtype=np.float64)
            if u_all.shape != (n,):
                raise MedsureInputError(f"u has shape {u_all.shape}, expected ({n},)")

        keep = np.arange(n)
        self.n_tune_ = 0
        if self.method == "raps":
            if self.k_reg is None or self.lam is None:
                if not 0 < self.tune_fraction < 1:
                    raise MedsureInputError(f"tune_fraction={self.tune_fraction}, expected 0 < f < 1")
                tune, keep = random_split(n, self.tune_fraction, _stream(self.seed, 1))
                # a parameter the user gave is kept; only the missing one is chosen on the tuning part
                k_reg, lam = tune_raps(probs[tune], y[tune], alpha, k_reg=self.k_reg,
                                       lambda_grid=self.lambda_grid if self.lam is None else (self.lam,))
                self.n_tune_ = int(tune.size)
            else:
                k_reg, lam = self.k_reg, self.lam
            self.params_ = {"k_reg": int(k_reg), "lam": float(lam)}
        elif self.method == "saps":
            self.params_ = {"weight": float(SAPS_DEFAULT_WEIGHT if self.weight is None else self.weight)}
        else:
            self.params_ = {}

        if self.n_tune_:
            probs, y = probs[keep], y[keep]
            u_all = None if u_all is None else u_all[keep]
            if g is not None:
                g = g[keep]
        scores = label_scores(self.method, probs, y, u_all, **self.params_)
        self.cal_scores_ = scores
        self.n_cal_ = int(keep.size)
        if self.conditional == "marginal":
            self.strata_ = ["all"]
            self.stratum_counts_ = np.array([keep.size])
            self.thresholds_ = np.array([conformal_quantile(scores, alpha, "calibration set")])
            self.fallbacks_ = []
        elif self.conditional == "class":
            self.strata_ = list(self.class_names_)
            strata = y
            self.stratum_counts_ = np.bincount(strata, minlength=k)
            self.thresholds_, self.fallbacks_ = stratified_quantiles(
                scores, strata, alpha, names=self.strata_, fallback=self.fallback, kind="class")
        else:
            names, strata = np.unique(g, return_inverse=True)
            self.strata_ = [str(v) for v in names]
            self.stratum_counts_ = np.bincount(strata, minlength=len(names))
            self.thresholds_, self.fallbacks_ = stratified_quantiles(
                scores, strata, alpha, names=self.strata_, fallback=self.fallback, kind="group")
            if self.fallback == "marginal":
                self._marginal_threshold = conformal_quantile(scores, alpha, "calibration set")
        return self

    # ---- prediction -------------------------------------------------------------------------
    def _check_u_allowed(self) -> None:
        # a deterministic score with a randomization on one side only would break the guarantee
        if not self.randomized_:
            raise MedsureInputError(f"u given but the {self.method} score is deterministic here "
                                    f"(randomized={self.randomized}); pass u only to randomized scores")

    def _check_calibrated(self) -> None:
        if not hasattr(self, "thresholds_"):
            raise MedsureInputError("call calibrate(cal) before predict_set(test)")

    def predict_set(self, test: Predictions | np.ndarray, *, groups: np.ndarray | None = None,
                    u: np.ndarray | None = None) -> np.ndarray:
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
        self._check_calibrated()
        probs = to_probabilities(test, input=self.input, what="test")
        n, k = probs.shape
        if k != self.n_classes_:
            raise MedsureInputError(
                f"test has K={k} classes but calibration had K={self.n_classes_}; "
                "both must come from the same model")
        if u is None:
            u = _stream(self.seed, 3).random(n) if self.randomized_ else None
        else:
            self._check_u_allowed()
        if self.conditional == "marginal":
            return prediction_sets(self.method, probs, self.thresholds_[0], u, **self.params_)
        if self.conditional == "class":
            return prediction_sets(self.method, probs, self.thresholds_, u, **self.params_)
        g = _groups_of(test, groups, self.group_key, n, "test")
        lookup = {name: i for i, name in enumerate(self.strata_)}
        unseen = sorted(set(np.unique(g).tolist()) - set(lookup))
        if unseen and self.fallback is None:
            raise MedsureInputError(
                f"test groups {unseen} have no calibration samples (calibrated groups: {self.strata_}); "
                "use fallback='marginal' or 'include'")
        fallback_q = (self._marginal_threshold if self.fallback == "marginal" else np.inf)
        table = np.append(self.thresholds_, fallback_q)
        index = np.array([lookup.get(v, len(self.strata_)) for v in np.unique(g)])
        per_sample = table[index[np.searchsorted(np.unique(g), g)]]
        return prediction_sets_per_sample(self.method, probs, per_sample, u, **self.params_)

    # ---- description ------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of the calibrated state."""
        self._check_calibrated()
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
