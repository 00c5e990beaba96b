"""Conformity scores for split conformal classification (pure numpy, no I/O).

Every score here is a *non-conformity* score: **higher means less conforming**, and a label ``y``
enters the prediction set of ``x`` when ``score(x, y) <= q`` for a threshold ``q`` fitted on calibration data.
Every score declares its input, direction, randomization and parameters in a :class:`ScoreSpec` of
the registry :data:`SCORES`; the classifier, the set builders and the CLI read it. All scores
registered today take **probabilities** ``(N, K)`` (rows summing to one). A new score is one
function here and one ``ScoreSpec`` entry.

Notation: ``p`` are the probabilities of one sample, ``r(y)`` the 1-based rank of label ``y`` when
the labels are sorted by decreasing probability (**ties broken by class index**: among equal
probabilities the lower index ranks first), ``ahead(y) = sum of p_j over the labels ranked before
y``, and ``u`` in [0, 1] is the share of the label's own mass that counts (one ``u`` per sample,
shared by all its candidate labels, so every set is a prefix of the ranking).

========  ===========================================================  =======================
score     definition                                                   reference
========  ===========================================================  =======================
``lac``   ``1 - p_y``                                                  Sadinle et al. 2019
``aps``   ``ahead(y) + u * p_y``                                       Romano et al. 2020
``raps``  ``ahead(y) + u * p_y + lam * max(r(y) - k_reg, 0)``          Angelopoulos et al. 2021
``topk``  ``r(y)``                                                     Angelopoulos et al. 2021
``saps``  ``u * p_max`` if ``r(y) = 1`` else                           Huang et al. 2023
          ``p_max + (r(y) - 2 + u) * weight``
========  ===========================================================  =======================

Randomized scores draw ``u ~ Uniform[0, 1)`` independently per sample (exact coverage, sets may be
empty). Deterministic scores use ``u = 0``: the top label always scores 0 (APS, RAPS with
``k_reg >= 1``, SAPS), so the set is never empty; coverage is then at least ``1 - alpha`` but can be
conservative because the scores have an atom at 0.

Convention differences to other libraries (all checked in ``tests/test_conformal_reference.py``):

* **MAPIE 1.6** writes the APS/RAPS score as ``C_r - u_M p_y`` with ``C_r`` the inclusive cumulative
  mass, i.e. ``u = 1 - u_M``. MAPIE ``include_last_label="randomized"`` equals medsure randomized
  APS with ``u = 1 - u_M`` on both calibration and test. MAPIE's default ``include_last_label=True``
  fits its threshold with *randomized* scores but predicts *deterministic* sets that always contain the
  label crossing the threshold (``{y: ahead(y) < q}``): a hybrid that is valid but conservative;
  medsure keeps calibration and prediction consistent instead. For RAPS, MAPIE's default sets are
  ``{y: ahead(y) + lam * max(r(y) - 1 - k_reg, 0) < q}`` (the penalty of the previous rank), and its
  randomized tie-break divides by ``p_L - lam*max(L - k, 0) + lam*[L > k]`` instead of the paper's
  ``p_L``; medsure follows the paper. RAPS tuning: MAPIE 1.6's v1 API holds out 10% of the
  calibration data (its ``size_raps`` is reset to None), stratified, takes ``k_reg`` as the
  (n+1)-corrected quantile of the rank and picks λ with its include-last-label sets; medsure holds
  out 30% uniformly at random and takes the empirical ``"higher"`` quantile, as the RAPS paper's
  reference code (same λ grid, smallest mean set size). MAPIE Top-K uses the 0-based rank (same sets). MAPIE compares
  with a tolerance of 1e-8 and includes every label tied in probability with the last one; medsure
  compares exactly and breaks probability ties by class index.
* **TorchCP** (not installable here: its dependency ``torchsort`` fails to build) writes
  ``C_r - U p_y`` like MAPIE; its deterministic APS/RAPS (``U = 1``) equals medsure's ``u = 0``. Its
  deterministic SAPS gives the top label ``p_max`` where medsure gives 0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from medsure.conformal.quantile import conformal_quantile
from medsure.validation import Interval, input_error

#: Rows processed at once: bounds the temporaries of the sort-based scores to a few MB.
CHUNK_ROWS = 8192
#: λ grid of the RAPS paper's reference code (``pick_lamda_size``).
RAPS_LAMBDA_GRID = (0.001, 0.01, 0.1, 0.2, 0.5)
#: SAPS rank weight used when none is given (TorchCP's example value; the paper tunes it).
SAPS_DEFAULT_WEIGHT = 0.2
#: Up to this many classes, row-wise loops run over columns (faster than numpy's short inner loops).
_FEW_COLUMNS = 16


# ---- the registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreParam:
    """A keyword parameter of a score.

    Attributes
    ----------
    name : str
        Keyword name (``k_reg``); the CLI option is ``--`` + name with ``_`` as ``-``.
    constraint : Interval
        Accepted values (:mod:`medsure.validation`).
    default : float, int or None
        Used when the parameter is not given; None means "required", unless the score declares a
        ``tune`` function that chooses it on held-out calibration data.
    help : str
    """

    name: str
    constraint: Interval
    default: Any
    help: str

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class ScoreSpec:
    """What a score takes, how it is computed and how to read it. Code reads these fields; a new
    score is one function and one entry in :data:`SCORES`.

    Attributes
    ----------
    name : str
    input_kind : "probabilities" or "logits"
        What the score function takes (the classifier converts its input accordingly).
    higher_is_less_conforming : bool
        Direction of ``function``'s output. True: large values are atypical. False: the values
        are conformities, negated before use. After orientation a label enters a set when its
        score is at most the threshold.
    randomizable : bool
        Whether the score uses ``u ~ U[0,1)`` (a randomized variant exists).
    params : tuple of ScoreParam
        Keyword parameters of the score.
    description : str
    form : "elementwise" or "ranked"
        ``"elementwise"``: ``function(values, params)`` maps an array of input values (any
        shape) to the scores of those labels; a label's score depends on its own value only.
        ``"ranked"``: ``function(sorted_values, u, params)`` takes each row sorted in decreasing
        order ``(n, K)`` and ``u`` ``(n,)`` and returns the score of the label at each rank
        ``(n, K)``; it must be non-decreasing along the rank (after orientation), so every set is
        a prefix of the ranking.
    function : callable
    rank_only : bool
        Ranked scores that depend on the rank alone (Top-K): counting replaces sorting.
    tune : callable, optional
        ``tune(values, labels, alpha, given) -> params`` chooses the parameters the user left at
        None on a held-out part of the calibration data (RAPS).
    value_cutoff : callable, optional
        For an elementwise score that does not increase with the input value (LAC):
        ``value_cutoff(threshold, params)`` is the smallest float ``v`` whose score is at most
        ``threshold``, so a set is ``{y : value_y >= v}`` — one comparison per label, and exactly
        the labels with ``score <= threshold`` (the cutoff is found on the float grid itself).
    """

    name: str
    input_kind: Literal["probabilities", "logits"]
    higher_is_less_conforming: bool
    randomizable: bool
    params: tuple[ScoreParam, ...]
    description: str
    form: Literal["elementwise", "ranked"]
    function: Callable[..., np.ndarray] = field(repr=False)
    rank_only: bool = False
    tune: Callable[..., dict] | None = field(default=None, repr=False)
    value_cutoff: Callable[[float, Mapping[str, Any]], float] | None = field(default=None, repr=False)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def needs_tuning(self, given: Mapping[str, Any]) -> bool:
        """Whether some parameter is missing and has no default (then ``tune`` chooses it)."""
        return self.tune is not None and any(given.get(p.name) is None and p.default is None for p in self.params)


# ---- score functions (the math; one per score) ---------------------------------------------


def lac_score(values: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """LAC: ``1 - p`` for every given probability (any shape)."""
    return 1.0 - values


def aps_score(sorted_probs: np.ndarray, u: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """APS in rank order: mass ranked ahead (exclusive cumulative sum) + ``u`` times own mass."""
    out = _exclusive_cumsum(sorted_probs)
    if np.any(u):  # deterministic scores (u = 0) skip an (n, K) multiply-add
        out += u[:, None] * sorted_probs
    return out


def smallest_passing_value(score_of: Callable[[float], float], threshold: float, guess: float) -> float:
    """Smallest float64 ``v`` with ``score_of(v) <= threshold``, for ``score_of`` non-increasing.

    Bisection on the float grid around ``guess``: the answer is exact (its predecessor fails),
    whatever rounding ``score_of`` does, so ``values >= v`` selects exactly the values whose
    score passes. ``+inf`` thresholds pass everything (``-inf``).
    """
    threshold = float(threshold)
    if threshold == np.inf:
        return -np.inf
    width = 1e-9 * (1.0 + abs(guess))
    lo, hi = guess - width, guess + width
    while score_of(hi) > threshold:  # widen until the bracket holds the answer
        hi += 2 * (hi - lo)
    while score_of(lo) <= threshold:
        lo -= 2 * (hi - lo)
    while True:  # score_of(lo) fails, score_of(hi) passes; ends when they are adjacent floats
        mid = lo + (hi - lo) / 2
        if mid <= lo or mid >= hi:
            return hi
        if score_of(mid) <= threshold:
            hi = mid
        else:
            lo = mid


def lac_cutoff(threshold: float, params: Mapping[str, Any]) -> float:
    """Smallest probability ``p`` with ``1 - p <= threshold`` in float64 arithmetic."""
    return _lac_cutoff(float(threshold))


@functools.lru_cache(maxsize=256)
def _lac_cutoff(threshold: float) -> float:
    # cached: a large input is turned into sets block by block with the same threshold
    return smallest_passing_value(lambda p: 1.0 - p, threshold, 1.0 - threshold)


def _exclusive_cumsum(values: np.ndarray) -> np.ndarray:
    """``out[:, j] = values[:, 0] + ... + values[:, j-1]`` (``out[:, 0] = 0``), summed left to right.

    For few columns a loop over columns (K vector additions) is several times faster than
    ``np.cumsum(axis=1)``, whose inner loop is only K long; both add in the same order, so the
    results are bitwise identical.
    """
    k = values.shape[1]
    out = np.empty_like(values, dtype=np.float64)  # same memory order as the input
    out[:, 0] = 0.0
    if k <= _FEW_COLUMNS:
        for j in range(1, k):
            np.add(out[:, j - 1], values[:, j - 1], out=out[:, j])
    else:
        np.cumsum(values[:, :-1], axis=1, out=out[:, 1:])
    return out


def _row_count(mask: np.ndarray) -> np.ndarray:
    """Number of True values in each row of a boolean (n, K) array, int (n,).

    A float32 matrix-vector product (BLAS) is ~7x faster than ``count_nonzero(axis=1)`` for small
    K; it is exact for any count below 2**24.
    """
    return (mask.astype(np.float32) @ np.ones(mask.shape[1], dtype=np.float32)).astype(np.intp)


def raps_score(sorted_probs: np.ndarray, u: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """RAPS in rank order: APS + ``lam * max(rank - k_reg, 0)``."""
    out = aps_score(sorted_probs, u, params)
    if params["lam"] > 0:
        ranks = np.arange(1, sorted_probs.shape[1] + 1, dtype=np.float64)
        out += params["lam"] * np.maximum(ranks - params["k_reg"], 0.0)
    return out


def topk_score(sorted_probs: np.ndarray, u: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Top-K: the 1-based rank."""
    n, k = sorted_probs.shape
    return np.broadcast_to(np.arange(1, k + 1, dtype=np.float64), (n, k))


def saps_score(sorted_probs: np.ndarray, u: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """SAPS in rank order: ``u * p_max`` at rank 1, ``p_max + (rank - 2 + u) * weight`` after."""
    ranks = np.arange(1, sorted_probs.shape[1] + 1, dtype=np.float64)
    out = sorted_probs[:, :1] + (ranks - 2.0 + u[:, None]) * params["weight"]
    out[:, 0] = u * sorted_probs[:, 0]
    return out


def tune_raps(
    probs: np.ndarray,
    labels: np.ndarray,
    alpha: float,
    given: Mapping[str, Any] | None = None,
    *,
    lambda_grid: Sequence[float] = RAPS_LAMBDA_GRID,
) -> dict[str, Any]:
    """Choose RAPS ``k_reg`` and ``lam`` on held-out tuning data, as the RAPS paper's procedure.

    ``k_reg`` (unless given) is the ``(1 - alpha)`` empirical quantile (numpy ``method="higher"``)
    of the true label's 1-based rank; ``lam`` (unless given) is the grid value whose conformal
    sets — fitted and measured on the tuning data, deterministic scores — have the smallest
    mean size (first on ties). (Angelopoulos et al. 2021, Sec. 2 and their reference code
    ``pick_kreg``/``pick_lamda_size``.)

    Parameters
    ----------
    probs : ndarray (n, K)
    labels : ndarray (n,)
    alpha : float
    given : dict, optional
        ``k_reg`` / ``lam`` the user fixed (None or absent: tuned).
    lambda_grid : sequence of float

    Returns
    -------
    dict ``{"k_reg": int, "lam": float}``
    """
    given = dict(given or {})
    ranks = true_label_rank(probs, labels)
    k_reg = given.get("k_reg")
    if k_reg is None:
        k_reg = int(np.quantile(ranks, 1 - alpha, method="higher"))
    grid = [float(given["lam"])] if given.get("lam") is not None else [float(lam) for lam in lambda_grid]
    n, k = probs.shape
    penalty = np.maximum(np.arange(1, k + 1, dtype=np.float64) - k_reg, 0.0)
    # One sort and one APS cumulative sum per chunk serve every λ: raps_score adds
    # lam * penalty to the APS score (u = 0 while tuning), so base + lam * penalty reproduces it
    # bit for bit, for the label scores (gathered) and for the set sizes (prefix sets).
    label_sc = np.empty((len(grid), n))
    bases = []
    for rows in _chunks(n, CHUNK_ROWS):
        base = aps_score(_sorted_desc(probs[rows]), np.zeros(rows.stop - rows.start), {})
        bases.append(base)
        rank0 = ranks[rows] - 1
        base_at = base[np.arange(rank0.size), rank0]
        for g, lam in enumerate(grid):
            label_sc[g, rows] = base_at + lam * penalty[rank0] if lam > 0 else base_at
    # The tuning part only ranks λ values (coverage comes from the other calibration points), so
    # a split too small for the (n+1)-corrected quantile falls back to the empirical one.
    if alpha >= 1.0 / (n + 1):
        thresholds = [conformal_quantile(label_sc[g], alpha, "RAPS tuning split") for g in range(len(grid))]
    else:
        thresholds = [float(np.quantile(label_sc[g], 1 - alpha, method="higher")) for g in range(len(grid))]
    set_sizes = np.zeros(len(grid))
    for base in bases:
        for g, lam in enumerate(grid):
            scores = base + lam * penalty if lam > 0 else base
            set_sizes[g] += np.count_nonzero(scores <= thresholds[g])
    return {"k_reg": int(k_reg), "lam": grid[int(np.argmin(set_sizes))]}  # first λ on ties


_NONNEG_INT = Interval(int, 0, None)
_NONNEG = Interval(float, 0.0, None)

SCORES: dict[str, ScoreSpec] = {
    "lac": ScoreSpec(
        "lac",
        "probabilities",
        True,
        False,
        (),
        "1 - probability of the label",
        "elementwise",
        lac_score,
        value_cutoff=lac_cutoff,
    ),
    "aps": ScoreSpec(
        "aps",
        "probabilities",
        True,
        True,
        (),
        "probability mass ranked ahead of the label (+ u * its own probability)",
        "ranked",
        aps_score,
    ),
    "raps": ScoreSpec(
        "raps",
        "probabilities",
        True,
        True,
        (
            ScoreParam("k_reg", _NONNEG_INT, None, "RAPS k_reg (default: tuned with lam)"),
            ScoreParam("lam", _NONNEG, None, "RAPS lambda (default: tuned)"),
        ),
        "APS + lam * max(rank - k_reg, 0)",
        "ranked",
        raps_score,
        tune=tune_raps,
    ),
    "topk": ScoreSpec(
        "topk", "probabilities", True, False, (), "1-based rank of the label", "ranked", topk_score, rank_only=True
    ),
    "saps": ScoreSpec(
        "saps",
        "probabilities",
        True,
        True,
        (
            ScoreParam(
                "weight",
                Interval(float, 0.0, None, closed="neither"),
                SAPS_DEFAULT_WEIGHT,
                f"SAPS rank weight (default {SAPS_DEFAULT_WEIGHT})",
            ),
        ),
        "u * p_max for the top label, else p_max + (rank - 2 + u) * weight",
        "ranked",
        saps_score,
    ),
}
#: The score names registered at import, in registry order (code that must see later entries
#: reads ``SCORES`` itself).
METHODS = tuple(SCORES)


# ---- helpers -----------------------------------------------------------------------------


def check_method(method: str) -> ScoreSpec:
    """Return the :class:`ScoreSpec` of ``method`` or raise naming the valid choices."""
    spec = SCORES.get(method) if isinstance(method, str) else None
    if spec is None:
        raise input_error("conformal method", method, "one of " + ", ".join(SCORES))
    return spec


def check_params(spec: ScoreSpec, params: Mapping[str, Any], *, allow_missing: bool = False) -> dict[str, Any]:
    """The score's parameters, checked against its declaration, defaults filled in.

    Parameters
    ----------
    spec : ScoreSpec
    params : mapping
        Given values (None means "not given").
    allow_missing : bool
        Leave required parameters that are missing as None (to be tuned) instead of raising.

    Returns
    -------
    dict over ``spec.param_names``
    """
    unknown = sorted(name for name, value in params.items() if value is not None and name not in spec.param_names)
    if unknown:
        takes = ", ".join(spec.param_names) or "no parameters"
        raise input_error(f"{spec.name} score parameters", unknown, f"{takes} for {spec.name}")
    checked: dict[str, Any] = {}
    for p in spec.params:
        value = params.get(p.name)
        if value is None:
            value = p.default
        if value is None:
            if allow_missing:
                checked[p.name] = None
                continue
            raise input_error(
                f"{spec.name} {p.name}",
                None,
                f"a value ({p.help})",
                f"give {p.name}, or let SplitConformalClassifier tune it",
            )
        checked[p.name] = p.constraint.check(f"{spec.name} {p.name}", value)
    return checked


def sort_descending(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable descending sort of each row.

    Parameters
    ----------
    probs : ndarray (N, K)

    Returns
    -------
    order : ndarray of int (N, K)
        ``order[i, j]`` is the label at rank ``j + 1`` (ties: lower class index first).
    sorted_probs : ndarray (N, K)
        ``probs`` in that order.
    """
    order = np.argsort(-probs, axis=1, kind="stable")
    return order, np.take_along_axis(probs, order, axis=1)


def _oriented(spec: ScoreSpec, scores: np.ndarray) -> np.ndarray:
    """Scores with "higher = less conforming" whatever the function's declared direction."""
    return scores if spec.higher_is_less_conforming else -scores


def _ranked_scores(spec: ScoreSpec, sorted_values: np.ndarray, u: np.ndarray, params: dict) -> np.ndarray:
    return _oriented(spec, spec.function(sorted_values, u, params))


def _elementwise_scores(spec: ScoreSpec, values: np.ndarray, params: dict) -> np.ndarray:
    return _oriented(spec, spec.function(values, params))


def _sorted_desc(values: np.ndarray) -> np.ndarray:
    """Each row sorted in decreasing order (the value sequence of the stable argsort path), (n, K).

    Few classes (K <= 16): a sorting network over the columns of the transposed array — every
    compare-exchange is a min and a max of two length-n vectors, where ``np.sort`` would run n
    tiny sorts; the result is column-major. Otherwise ``np.sort`` of the negated values (negation
    is exact), row-major. Either way the memory is contiguous, so the (n, K) arithmetic that
    follows runs in flat loops. A sort returns the same values whatever its algorithm, so both
    paths give identical arrays.
    """
    n, k = values.shape
    if 2 <= k <= _FEW_COLUMNS:
        width = 1 << (k - 1).bit_length()
        columns = np.empty((width, n))
        columns[:k] = values.T
        columns[k:] = -np.inf  # padding sorts to the end (inputs are finite)
        low = np.empty(n)
        for a, b in _sorting_network(width):
            np.minimum(columns[a], columns[b], out=low)
            np.maximum(columns[a], columns[b], out=columns[a])
            columns[b] = low
        # returned as the transposed view (column-major): the per-rank column operations of the
        # score functions (cumulative sums, u * p) then run over contiguous memory
        return columns[:k].T
    out = np.negative(values)
    out.sort(axis=1)
    return np.negative(out, out=out)


@functools.lru_cache(maxsize=8)
def _sorting_network(width: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort for ``width`` (a power of two) inputs: compare-exchange pairs
    ``(a, b)`` after which position ``a`` holds the larger value (descending order)."""
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < width:
        k = p
        while k >= 1:
            for j in range(k % p, width - k, 2 * k):
                pairs.extend(
                    (i + j, i + j + k)
                    for i in range(min(k, width - j - k))
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p)
                )
            k //= 2
        p *= 2
    return tuple(pairs)


def _chunks(n: int, chunk_rows: int):
    for start in range(0, n, chunk_rows):
        yield slice(start, min(start + chunk_rows, n))


def _check_u(u: np.ndarray | None, n: int) -> np.ndarray:
    if u is None:
        return np.zeros(n)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (n,):
        raise input_error("u", f"shape {u.shape}", f"shape ({n},): one uniform value per sample", raw=True)
    if not ((u.min(initial=0.0) >= 0) and (u.max(initial=0.0) <= 1)):  # NaN fails both
        raise input_error("u", f"values in [{np.nanmin(u):.4g}, {np.nanmax(u):.4g}]", "values in [0, 1]", raw=True)
    return u


def _check_values(values: np.ndarray) -> np.ndarray:
    """Shape and dtype of a score input (N, K); returned as float64 (no copy when it already is)."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] < 2:
        raise input_error("probabilities", f"shape {values.shape}", "(N, K) with K >= 2", raw=True)
    if values.dtype.kind != "f":
        raise input_error("probabilities", f"dtype {values.dtype}", "floating-point values", raw=True)
    return values.astype(np.float64, copy=False)


def _check_labels(labels: np.ndarray, n: int, k: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise input_error("labels", f"shape {labels.shape}", f"({n},)", raw=True)
    if n and (labels.min() < 0 or labels.max() >= k):
        raise input_error("labels", f"labels in [{labels.min()}, {labels.max()}]", f"labels in [0, {k})", raw=True)
    return labels


def rank_score_table(spec: ScoreSpec, k: int, params: dict) -> np.ndarray:
    """Scores of ranks 1..K for a score that depends on the rank only (``rank_only``), shape (K,),
    non-decreasing."""
    return _ranked_scores(spec, np.zeros((1, k)), np.zeros(1), params)[0]


# ---- public score functions --------------------------------------------------------------


def candidate_scores(
    method: str, probs: np.ndarray, u: np.ndarray | None = None, *, chunk_rows: int = CHUNK_ROWS, **params
) -> np.ndarray:
    """Score of every candidate label.

    Parameters
    ----------
    method : str
        A key of :data:`SCORES`.
    probs : ndarray (N, K)
        Score input (probabilities for every score registered today).
    u : ndarray (N,) in [0, 1], optional
        Randomization per sample (randomizable scores); None means deterministic (``u = 0``).
    chunk_rows : int
        Rows sorted at once (memory bound).
    **params
        The score's declared parameters (``k_reg``, ``lam`` for RAPS; ``weight`` for SAPS).

    Returns
    -------
    ndarray (N, K), float64
        ``scores[i, y]`` for every label ``y``.
    """
    spec = check_method(method)
    params = check_params(spec, params)
    probs = _check_values(probs)
    n, k = probs.shape
    u = _check_u(u, n)
    if spec.form == "elementwise":
        return _elementwise_scores(spec, probs, params)
    out = np.empty((n, k), dtype=np.float64)
    for rows in _chunks(n, chunk_rows):
        order, sp = sort_descending(probs[rows])
        np.put_along_axis(out[rows], order, _ranked_scores(spec, sp, u[rows], params), axis=1)
    return out


def label_scores(
    method: str,
    probs: np.ndarray,
    labels: np.ndarray,
    u: np.ndarray | None = None,
    *,
    chunk_rows: int = CHUNK_ROWS,
    **params,
) -> np.ndarray:
    """Score of the given label of each sample (the calibration scores).

    Uses the same sorted values and cumulative sums as :func:`candidate_scores` (but no argsort:
    the rank is counted), so ``label_scores(m, p, y, u)[i] == candidate_scores(m, p, u)[i, y[i]]``.

    Parameters
    ----------
    method, probs, u, chunk_rows, params
        As in :func:`candidate_scores`.
    labels : ndarray of int (N,)

    Returns
    -------
    ndarray (N,), float64
    """
    spec = check_method(method)
    probs = _check_values(probs)
    n, k = probs.shape
    labels = _check_labels(labels, n, k)
    return label_scores_checked(spec, probs, labels, _check_u(u, n), check_params(spec, params), chunk_rows=chunk_rows)


def label_scores_checked(
    spec: ScoreSpec,
    probs: np.ndarray,
    labels: np.ndarray,
    u: np.ndarray | None,
    params: dict,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> np.ndarray:
    """:func:`label_scores` for inputs already checked (float64 ``(N, K)``, labels in range,
    ``u`` (N,) or None, ``params`` from :func:`check_params`): no second pass of checks when an
    estimator scores a large input block by block."""
    n, k = probs.shape
    if spec.form == "elementwise":
        return _elementwise_scores(spec, np.take(probs.ravel(), np.arange(n) * k + labels), params)
    if u is None:
        u = np.zeros(n)
    if spec.rank_only:  # the score is a function of the rank: counting beats sorting
        return rank_score_table(spec, k, params)[_rank_of(probs, labels) - 1]
    out = np.empty(n, dtype=np.float64)
    for rows in _chunks(n, chunk_rows):
        p = probs[rows]
        sp = _sorted_desc(p)
        scores = _ranked_scores(spec, sp, u[rows], params)
        rank0 = _rank_of(p, labels[rows], sp) - 1
        out[rows] = scores[np.arange(rank0.size), rank0]
    return out


def _rank_of(p: np.ndarray, labels: np.ndarray, sorted_desc: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of ``labels`` in each row of ``p`` (ties: lower class index first).

    ``sorted_desc`` (the rows of ``p`` sorted in decreasing order), when at hand, finds the rows
    with ties by one lookup instead of a second comparison of every value.
    """
    rows = np.arange(labels.size)
    p_y = p[rows, labels][:, None]
    rank = _row_count(p > p_y) + 1
    # exact ties with another label are rare with real probabilities: resolve only those rows
    if sorted_desc is not None:
        # the rank-1 labels ahead are larger; another label equal to p_y sits right after them
        after = np.minimum(rank, p.shape[1] - 1)
        tied_rows = np.flatnonzero((rank < p.shape[1]) & (sorted_desc[rows, after] == p_y[:, 0]))
    else:
        tied_rows = np.flatnonzero(_row_count(p == p_y) > 1)
    if tied_rows.size:
        before = np.arange(p.shape[1])[None, :] < labels[tied_rows, None]
        rank[tied_rows] += ((p[tied_rows] == p_y[tied_rows]) & before).sum(axis=1)
    return rank


def _prefix_sets(spec: ScoreSpec, p: np.ndarray, threshold: np.ndarray, u: np.ndarray, params: dict) -> np.ndarray:
    """Sets for a threshold shared by all labels of a row (scalar or (n, 1)), ranked scores.

    Ranked scores are non-decreasing along the ranking, so the set is the top-L labels with
    L = #{ranks whose score <= threshold}. Only the sorted *values* are needed (no argsort):
    the top-L labels are those above the L-th largest value v, plus the lowest-index labels tied
    at v. Identical to ``candidate_scores(...) <= threshold`` (up to 1-ulp rounding in the
    cumulative sums).
    """
    n, k = p.shape
    if spec.rank_only and np.ndim(threshold) == 0:
        # the set length is the same for every row; the L-th largest value comes from a
        # partition (O(K) per row) instead of a sort
        length_all = int(np.count_nonzero(rank_score_table(spec, k, params) <= threshold))
        if length_all == 0:
            return np.zeros((n, k), dtype=bool)
        if length_all == k:
            return np.ones((n, k), dtype=bool)
        length = np.full(n, length_all)
        cutoff = np.partition(p, k - length_all, axis=1)[:, k - length_all][:, None]
    else:
        sp = _sorted_desc(p)
        length = _row_count(_ranked_scores(spec, sp, u, params) <= threshold)
        cutoff = np.where(length > 0, sp[np.arange(n), np.maximum(length - 1, 0)], np.inf)[:, None]
    sets = p >= cutoff
    # rows where more labels tie at the cutoff than fit (rare): keep the lowest class indices only
    split_rows = np.flatnonzero(_row_count(sets) > length)
    if split_rows.size:
        sub, c = p[split_rows], cutoff[split_rows]
        above, tied = sub > c, sub == c
        n_tied_in = (length[split_rows] - above.sum(axis=1))[:, None]
        sets[split_rows] = above | (tied & (np.cumsum(tied, axis=1) <= n_tied_in))
    return sets


def prediction_sets(
    method: str,
    probs: np.ndarray,
    threshold: float | np.ndarray,
    u: np.ndarray | None = None,
    *,
    chunk_rows: int = CHUNK_ROWS,
    out: np.ndarray | None = None,
    **params,
) -> np.ndarray:
    """Sets ``{y : score(x, y) <= threshold}`` without any ``(N, K, K)`` intermediate.

    Rows are scored ``chunk_rows`` at a time, so the only full-size array is the boolean output.

    Parameters
    ----------
    method, probs, u, chunk_rows, params
        As in :func:`candidate_scores`.
    threshold : float, ndarray (K,) or ndarray (N,) with ``per_sample``
        One threshold for all labels, or one per candidate label (class-conditional).
        ``+inf`` includes the label always. For one threshold per *sample* (group-conditional)
        use :func:`prediction_sets_per_sample`.
    out : ndarray of bool (N, K), optional
        Where to write the sets (e.g. a block of rows of a larger result).

    Returns
    -------
    ndarray of bool (N, K)
        ``out`` when given.
    """
    spec = check_method(method)
    probs = _check_values(probs)
    n, k = probs.shape
    threshold = np.asarray(threshold, dtype=np.float64)
    if threshold.ndim == 1 and threshold.shape == (k,):
        threshold = threshold[None, :]
    elif threshold.ndim != 0:
        raise input_error("threshold", f"shape {threshold.shape}", f"a scalar or ({k},)", raw=True)
    return _sets(
        spec, probs, threshold, _check_u(u, n), check_params(spec, params), chunk_rows, out=_check_out(out, n, k)
    )


def prediction_sets_per_sample(
    method: str,
    probs: np.ndarray,
    threshold: np.ndarray,
    u: np.ndarray | None = None,
    *,
    chunk_rows: int = CHUNK_ROWS,
    out: np.ndarray | None = None,
    **params,
) -> np.ndarray:
    """Like :func:`prediction_sets` with one threshold per sample, shape (N,) (group-conditional)."""
    spec = check_method(method)
    probs = _check_values(probs)
    n, k = probs.shape
    threshold = np.asarray(threshold, dtype=np.float64)
    if threshold.shape != (n,):
        raise input_error("per-sample threshold", f"shape {threshold.shape}", f"({n},)", raw=True)
    return _sets(
        spec,
        probs,
        threshold[:, None],
        _check_u(u, n),
        check_params(spec, params),
        chunk_rows,
        out=_check_out(out, n, k),
    )


def _check_out(out: np.ndarray | None, n: int, k: int) -> np.ndarray:
    if out is None:
        return np.empty((n, k), dtype=bool)
    if not isinstance(out, np.ndarray) or out.shape != (n, k) or out.dtype != bool:
        raise input_error("out", out, f"a boolean array of shape ({n}, {k})")
    return out


def sets_checked(
    spec: ScoreSpec,
    probs: np.ndarray,
    threshold: np.ndarray,
    u: np.ndarray | None,
    params: dict,
    out: np.ndarray,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> np.ndarray:
    """:func:`prediction_sets` / :func:`prediction_sets_per_sample` for inputs already checked:
    ``threshold`` a scalar, ``(K,)`` per label or ``(N, 1)`` per sample; sets written to ``out``."""
    threshold = np.asarray(threshold, dtype=np.float64)
    if threshold.ndim == 1:
        threshold = threshold[None, :]
    return _sets(spec, probs, threshold, np.zeros(probs.shape[0]) if u is None else u, params, chunk_rows, out=out)


def _sets(
    spec: ScoreSpec,
    probs: np.ndarray,
    threshold: np.ndarray,
    u: np.ndarray,
    params: dict,
    chunk_rows: int,
    *,
    out: np.ndarray,
) -> np.ndarray:
    """Checked inputs → sets written into ``out``. ``threshold``: scalar, (1, K) per label, or
    (N, 1) per sample."""
    n, k = probs.shape
    per_label = threshold.ndim == 2 and threshold.shape[1] == k  # (1, K); K >= 2, so never (N, 1)
    per_sample = threshold.ndim == 2 and threshold.shape[1] == 1
    if spec.value_cutoff is not None:
        # score <= threshold  <=>  value >= cutoff: one comparison, no score array at all
        cutoff: np.float64 | np.ndarray
        if threshold.ndim == 0:
            cutoff = np.float64(spec.value_cutoff(float(threshold), params))
        else:
            distinct, where = np.unique(threshold, return_inverse=True)
            cutoffs = np.array([spec.value_cutoff(t, params) for t in distinct.tolist()])
            cutoff = cutoffs[where].reshape(threshold.shape)
        np.greater_equal(probs, cutoff, out=out)
        return out
    for rows in _chunks(n, chunk_rows):
        t = threshold[rows] if per_sample else threshold
        if spec.form == "elementwise":
            np.less_equal(_elementwise_scores(spec, probs[rows], params), t, out=out[rows])
        elif per_label:  # per-label thresholds: sets are not prefixes of the ranking, score every label
            order, sp = sort_descending(probs[rows])
            scores = np.empty_like(sp)
            np.put_along_axis(scores, order, _ranked_scores(spec, sp, u[rows], params), axis=1)
            np.less_equal(scores, t, out=out[rows])
        else:
            out[rows] = _prefix_sets(spec, probs[rows], t, u[rows], params)
    return out


def true_label_rank(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of ``labels`` in each row (ties broken by class index), shape (N,)."""
    probs = _check_values(probs)
    labels = _check_labels(labels, probs.shape[0], probs.shape[1])
    return _rank_of(probs, labels)
