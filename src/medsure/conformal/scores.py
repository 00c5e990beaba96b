"""Conformity scores for split conformal classification (pure numpy, no I/O).

Every score here is a *non-conformity* score: **higher means less conforming**, and a label ``y``
enters the prediction set of ``x`` when ``score(x, y) <= q`` for a calibrated threshold ``q``.
All scores take **probabilities** ``(N, K)`` (rows summing to one); convert logits with
:func:`medsure.artifact.softmax` first. :data:`SCORES` records this for each score.

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
  calibrates with *randomized* scores but predicts *deterministic* sets that always contain the
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

from dataclasses import dataclass
from typing import Literal

import numpy as np

from medsure.errors import MedsureInputError

METHODS = ("lac", "aps", "raps", "topk", "saps")
#: Rows processed at once: bounds the temporaries of the sort-based scores to a few MB.
CHUNK_ROWS = 8192
#: λ grid of the RAPS paper's reference code (``pick_lamda_size``).
RAPS_LAMBDA_GRID = (0.001, 0.01, 0.1, 0.2, 0.5)
#: SAPS rank weight used when none is given (TorchCP's example value; the paper tunes it).
SAPS_DEFAULT_WEIGHT = 0.2


@dataclass(frozen=True)
class ScoreSpec:
    """What a score needs and how to read it.

    Attributes
    ----------
    name : str
    input_kind : "probabilities" or "logits"
        What the score function takes.
    higher_is_less_conforming : bool
        Direction: True means large scores are atypical (a label enters a set when its score is at
        most the threshold).
    randomizable : bool
        Whether the score has a randomized (``u ~ U[0,1)``) variant.
    params : tuple of str
        Keyword parameters of the score.
    """

    name: str
    input_kind: Literal["probabilities", "logits"]
    higher_is_less_conforming: bool
    randomizable: bool
    params: tuple[str, ...]
    description: str


SCORES: dict[str, ScoreSpec] = {
    "lac": ScoreSpec("lac", "probabilities", True, False, (), "1 - probability of the label"),
    "aps": ScoreSpec("aps", "probabilities", True, True, (),
                     "probability mass ranked ahead of the label (+ u * its own probability)"),
    "raps": ScoreSpec("raps", "probabilities", True, True, ("k_reg", "lam"),
                      "APS + lam * max(rank - k_reg, 0)"),
    "topk": ScoreSpec("topk", "probabilities", True, False, (), "1-based rank of the label"),
    "saps": ScoreSpec("saps", "probabilities", True, True, ("weight",),
                      "u * p_max for the top label, else p_max + (rank - 2 + u) * weight"),
}


# ---- helpers -----------------------------------------------------------------------------

def check_method(method: str) -> ScoreSpec:
    """Return the :class:`ScoreSpec` of ``method`` or raise naming the valid choices."""
    if method not in SCORES:
        raise MedsureInputError(f"unknown conformal method {method!r}; expected one of {list(METHODS)}")
    return SCORES[method]


def _check_params(method: str, params: dict) -> dict:
    if method == "raps":
        k_reg, lam = params.get("k_reg"), params.get("lam")
        if k_reg is None or lam is None:
            raise MedsureInputError("raps needs k_reg and lam (or let SplitConformalClassifier tune them)")
        if int(k_reg) != k_reg or k_reg < 0:
            raise MedsureInputError(f"raps k_reg={k_reg!r}, expected a non-negative integer")
        if not np.isfinite(lam) or lam < 0:
            raise MedsureInputError(f"raps lam={lam!r}, expected a finite value >= 0")
        return {"k_reg": int(k_reg), "lam": float(lam)}
    if method == "saps":
        weight = params.get("weight", SAPS_DEFAULT_WEIGHT)
        if weight is None:
            weight = SAPS_DEFAULT_WEIGHT
        if not np.isfinite(weight) or weight <= 0:
            raise MedsureInputError(f"saps weight={weight!r}, expected a finite value > 0")
        return {"weight": float(weight)}
    unknown = {k: v for k, v in params.items() if v is not None}
    if unknown:
        raise MedsureInputError(f"method {method!r} takes no parameters, got {sorted(unknown)}")
    return {}


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


def _sorted_scores(method: str, sp: np.ndarray, u: np.ndarray, params: dict) -> np.ndarray:
    """Scores in rank order for a chunk of sorted probabilities ``sp`` (n, K) and ``u`` (n,)."""
    n, k = sp.shape
    ranks = np.arange(1, k + 1, dtype=np.float64)
    if method == "topk":
        return np.broadcast_to(ranks, (n, k))
    if method == "saps":
        out = sp[:, :1] + (ranks - 2.0 + u[:, None]) * params["weight"]
        out[:, 0] = u * sp[:, 0]
        return out
    # aps / raps: exclusive cumulative mass + u * own mass
    out = np.empty_like(sp)
    out[:, 0] = 0.0
    np.cumsum(sp[:, :-1], axis=1, out=out[:, 1:])
    out += u[:, None] * sp
    if method == "raps" and params["lam"] > 0:
        out += params["lam"] * np.maximum(ranks - params["k_reg"], 0.0)
    return out


def _chunks(n: int, chunk_rows: int):
    for start in range(0, n, chunk_rows):
        yield slice(start, min(start + chunk_rows, n))


def _check_u(u: np.ndarray | None, n: int) -> np.ndarray:
    if u is None:
        return np.zeros(n)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (n,):
        raise MedsureInputError(f"u has shape {u.shape}, expected ({n},): one uniform value per sample")
    if not np.all((u >= 0) & (u <= 1)):
        raise MedsureInputError("u must lie in [0, 1]")
    return u


def _check_probs(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise MedsureInputError(f"probabilities have shape {probs.shape}, expected (N, K) with K >= 2")
    if not np.issubdtype(probs.dtype, np.floating):
        raise MedsureInputError(f"probabilities have dtype {probs.dtype}, expected float")
    return probs


# ---- public score functions --------------------------------------------------------------

def candidate_scores(method: str, probs: np.ndarray, u: np.ndarray | None = None, *,
                     chunk_rows: int = CHUNK_ROWS, **params) -> np.ndarray:
    """Score of every candidate label.

    Parameters
    ----------
    method : {"lac", "aps", "raps", "topk", "saps"}
    probs : ndarray (N, K)
        Probabilities.
    u : ndarray (N,) in [0, 1], optional
        Randomization per sample (randomizable scores); None means deterministic (``u = 0``).
    chunk_rows : int
        Rows sorted at once (memory bound).
    **params
        ``k_reg``, ``lam`` for RAPS; ``weight`` for SAPS.

    Returns
    -------
    ndarray (N, K), float64
        ``scores[i, y]`` for every label ``y``.
    """
    check_method(method)
    params = _check_params(method, params)
    probs = _check_probs(probs)
    n, k = probs.shape
    u = _check_u(u, n)
    if method == "lac":
        return 1.0 - probs.astype(np.float64, copy=False)
    out = np.empty((n, k), dtype=np.float64)
    for rows in _chunks(n, chunk_rows):
        order, sp = sort_descending(probs[rows].astype(np.float64, copy=False))
        np.put_along_axis(out[rows], order, _sorted_scores(method, sp, u[rows], params), axis=1)
    return out


def label_scores(method: str, probs: np.ndarray, labels: np.ndarray, u: np.ndarray | None = None, *,
                 chunk_rows: int = CHUNK_ROWS, **params) -> np.ndarray:
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
    check_method(method)
    probs = _check_probs(probs)
    n, k = probs.shape
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise MedsureInputError(f"labels have shape {labels.shape}, expected ({n},)")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise MedsureInputError(f"labels span [{labels.min()}, {labels.max()}], expected [0, {k})")
    params = _check_params(method, params)
    if method == "lac":
        return 1.0 - probs[np.arange(n), labels].astype(np.float64, copy=False)
    u = _check_u(u, n)
    out = np.empty(n, dtype=np.float64)
    for rows in _chunks(n, chunk_rows):
        p = probs[rows].astype(np.float64, copy=False)
        if method == "topk":  # the score is the rank itself: counting beats sorting
            out[rows] = _rank_of(p, labels[rows])
            continue
        sp = np.sort(p, axis=1)[:, ::-1]  # same value sequence as the stable argsort path
        scores = _sorted_scores(method, sp, u[rows], params)
        rank0 = _rank_of(p, labels[rows]) - 1
        out[rows] = scores[np.arange(rank0.size), rank0]
    return out


def _rank_of(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of ``labels`` in each row of ``p`` (ties: lower class index first)."""
    p_y = p[np.arange(labels.size), labels][:, None]
    rank = (p > p_y).sum(axis=1) + 1
    # exact ties with another label are rare with real probabilities: resolve only those rows
    tied_rows = np.flatnonzero((p == p_y).sum(axis=1) > 1)
    if tied_rows.size:
        before = np.arange(p.shape[1])[None, :] < labels[tied_rows, None]
        rank[tied_rows] += ((p[tied_rows] == p_y[tied_rows]) & before).sum(axis=1)
    return rank


def _prefix_sets(method: str, p: np.ndarray, threshold: np.ndarray, u: np.ndarray,
                 params: dict) -> np.ndarray:
    """Sets for a threshold shared by all labels of a row (scalar or (n, 1)).

    Every score here is non-decreasing along the ranking, so the set is the top-L labels with
    L = #{ranks whose score <= threshold}. Only the sorted *values* are needed (no argsort):
    the top-L labels are those above the L-th largest value v, plus the lowest-index labels tied
    at v. Identical to ``candidate_scores(...) <= threshold`` (up to 1-ulp rounding in the
    cumulative sums).
    """
    n, k = p.shape
    if method == "topk" and np.ndim(threshold) == 0:
        # ranks 1..K: the set is the top-L labels, L = floor(threshold), the same for every row;
        # the L-th largest value comes from a partition (O(K) per row) instead of a sort
        length = np.full(n, int(np.clip(np.floor(threshold), 0, k)))
        if length[0] == 0:
            return np.zeros((n, k), dtype=bool)
        cutoff = np.partition(p, k - length[0], axis=1)[:, k - length[0]][:, None]
    else:
        sp = np.sort(p, axis=1)[:, ::-1]
        length = (_sorted_scores(method, sp, u, params) <= threshold).sum(axis=1)
        cutoff = np.where(length > 0, sp[np.arange(n), np.maximum(length - 1, 0)], np.inf)[:, None]
    sets = p >= cutoff
    # rows where more labels tie at the cutoff than fit (rare): keep the lowest class indices only
    split_rows = np.flatnonzero(np.count_nonzero(sets, axis=1) > length)
    if split_rows.size:
        sub, c = p[split_rows], cutoff[split_rows]
        above, tied = sub > c, sub == c
        n_tied_in = (length[split_rows] - above.sum(axis=1))[:, None]
        sets[split_rows] = above | (tied & (np.cumsum(tied, axis=1) <= n_tied_in))
    return sets


def prediction_sets(method: str, probs: np.ndarray, threshold: float | np.ndarray,
                    u: np.ndarray | None = None, *, chunk_rows: int = CHUNK_ROWS, **params) -> np.ndarray:
    """Sets ``{y : score(x, y) <= threshold}`` without any ``(N, K, K)`` intermediate.

    Rows are scored ``chunk_rows`` at a time, so the only full-size array is the boolean output.

    Parameters
    ----------
    method, probs, u, chunk_rows, params
        As in :func:`candidate_scores`.
    threshold : float or ndarray (K,)
        One threshold for all labels, or one per candidate label (class-conditional).
        ``+inf`` includes the label always. For one threshold per *sample* (group-conditional)
        use :func:`prediction_sets_per_sample`.

    Returns
    -------
    ndarray of bool (N, K)
    """
    check_method(method)
    probs = _check_probs(probs)
    n, k = probs.shape
    threshold = np.asarray(threshold, dtype=np.float64)
    if threshold.ndim == 1 and threshold.shape == (k,):
        threshold = threshold[None, :]
    elif threshold.ndim != 0:
        raise MedsureInputError(f"threshold has shape {threshold.shape}, expected a scalar or ({k},)")
    u = _check_u(u, n)
    checked = _check_params(method, params)
    out = np.empty((n, k), dtype=bool)
    for rows in _chunks(n, chunk_rows):
        if method == "lac":
            np.less_equal(1.0 - probs[rows].astype(np.float64, copy=False), threshold, out=out[rows])
        elif threshold.ndim == 0:
            out[rows] = _prefix_sets(method, probs[rows].astype(np.float64, copy=False), threshold, u[rows], checked)
        else:  # per-label thresholds: sets are not prefixes of the ranking, score every label
            scores = candidate_scores(method, probs[rows], u[rows], chunk_rows=chunk_rows, **params)
            np.less_equal(scores, threshold, out=out[rows])
    return out


def prediction_sets_per_sample(method: str, probs: np.ndarray, threshold: np.ndarray,
                               u: np.ndarray | None = None, *, chunk_rows: int = CHUNK_ROWS,
                               **params) -> np.ndarray:
    """Like :func:`prediction_sets` with one threshold per sample, shape (N,) (group-conditional)."""
    check_method(method)
    probs = _check_probs(probs)
    n, k = probs.shape
    threshold = np.asarray(threshold, dtype=np.float64)
    if threshold.shape != (n,):
        raise MedsureInputError(f"per-sample threshold has shape {threshold.shape}, expected ({n},)")
    u = _check_u(u, n)
    checked = _check_params(method, params)
    out = np.empty((n, k), dtype=bool)
    for rows in _chunks(n, chunk_rows):
        if method == "lac":
            np.less_equal(1.0 - probs[rows].astype(np.float64, copy=False), threshold[rows, None], out=out[rows])
        else:
            out[rows] = _prefix_sets(method, probs[rows].astype(np.float64, copy=False), threshold[rows, None],
                                     u[rows], checked)
    return out


def true_label_rank(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of ``labels`` in each row (ties broken by class index), shape (N,)."""
    probs = _check_probs(probs)
    labels = np.asarray(labels)
    p_y = probs[np.arange(len(labels)), labels][:, None]
    classes = np.arange(probs.shape[1])[None, :]
    ahead = (probs > p_y) | ((probs == p_y) & (classes < labels[:, None]))
    return ahead.sum(axis=1) + 1
