"""One voice for bad input: the message format, the common checks, declared parameter constraints.

Every error a user can cause is a :class:`~medsure.errors.MedsureInputError` whose message reads

    ``<what>: got <given>; expected <expected>[. <what to do>]``

built by :func:`input_error`. Checks used in more than one place live here, so the same mistake
gets the same sentence everywhere. Public estimators declare their constructor parameters in a
``_parameter_constraints`` class attribute (the scikit-learn manner) and call
:func:`validate_params` at the start of ``fit``/``calibrate`` — constructors only store arguments.

This module sits at the bottom of the package (it imports only numpy and :mod:`medsure.errors`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medsure.errors import MedsureError, MedsureInputError

__all__ = [
    "input_error",
    "describe",
    "check_choice",
    "check_int",
    "check_float",
    "check_alpha",
    "min_calibration_size",
    "n_excluded",
    "check_array",
    "check_finite",
    "check_probabilities",
    "check_labels",
    "Interval",
    "Options",
    "Boolean",
    "NoneOk",
    "Callable",
    "validate_params",
]


# ---- message format ------------------------------------------------------------------------


def describe(value: Any, limit: int = 200) -> str:
    """A short, plain rendering of a user's value for an error message.

    numpy scalars print as Python values (never ``np.str_('x')``), arrays by shape and dtype,
    strings longer than ``limit`` are cut (the default keeps whole file paths readable).
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return f"an array of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        head = ", ".join(describe(v, 20) for v in value[:4])
        return f"{type(value).__name__} of {len(value)} ([{head}, ...])"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{describe(k, 20)}: {describe(v, 20)}" for k, v in list(value.items())[:8])
        return "{" + inner + (", ..." if len(value) > 8 else "") + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe(v, 20) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def input_error(
    what: str,
    given: Any,
    expected: str,
    hint: str | None = None,
    *,
    raw: bool = False,
    kind: type[MedsureError] = MedsureInputError,
) -> MedsureError:
    """Build the one-format error ``<what>: got <given>; expected <expected>[. <hint>]``.

    Parameters
    ----------
    what : the name of the value as the user knows it (``"--alpha"``, ``"prediction key 'labels'"``)
    given : the value (rendered with :func:`describe`) or, with ``raw=True``, a ready description
    expected : what would have been accepted
    hint : what to do about it, optional
    kind : the exception class, :class:`~medsure.errors.MedsureInputError` unless a more specific
        medsure error applies (``DataUnavailableError`` for a missing dataset file, ``ChecksumError``)

    Returns
    -------
    MedsureError
        the exception (the caller raises it, so tracebacks point at the caller)
    """
    given_text = str(given) if raw else describe(given)
    message = f"{what}: got {given_text}; expected {expected}"
    if hint:
        hint = hint.rstrip(".")
        message += f". {hint[0].upper()}{hint[1:]}"
    return kind(message)


# ---- scalar checks ---------------------------------------------------------------------------


def check_choice(what: str, value: Any, choices: Iterable[Any], hint: str | None = None) -> Any:
    """Return ``value`` if it is one of ``choices``; otherwise raise naming them all."""
    choices = list(choices)
    if value not in choices:
        raise input_error(what, value, "one of " + ", ".join(describe(c) for c in choices), hint)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(
    what: str, value: Any, *, low: int | None = None, high: int | None = None, hint: str | None = None
) -> int:
    """Return ``int(value)`` when it is an integer in ``[low, high]`` (bounds optional)."""
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise input_error(what, value, _range_text("an integer", low, high, "[", "]"), hint)
    return int(value)


def check_float(
    what: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    closed: str = "both",
    hint: str | None = None,
) -> float:
    """Return ``float(value)`` when it is a finite real in the interval.

    ``closed`` is ``"both"``, ``"left"``, ``"right"`` or ``"neither"``.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        left_ok = low is None or (v >= low if closed in ("both", "left") else v > low)
        right_ok = high is None or (v <= high if closed in ("both", "right") else v < high)
        ok = left_ok and right_ok
    if not ok:
        lb = "[" if closed in ("both", "left") else "("
        rb = "]" if closed in ("both", "right") else ")"
        raise input_error(what, value, _range_text("a finite number", low, high, lb, rb), hint)
    return float(value)


def _range_text(kind: str, low: Any, high: Any, lb: str, rb: str) -> str:
    if low is None and high is None:
        return kind
    if high is None:
        return f"{kind} {'>=' if lb == '[' else '>'} {low}"
    if low is None:
        return f"{kind} {'<=' if rb == ']' else '<'} {high}"
    return f"{kind} in {lb}{low}, {high}{rb}"


#: ``(n + 1) * alpha`` is computed in floating point; this slack keeps e.g. 1000 * 0.1 = 100 exact.
_FLOOR_SLACK = 1e-9


def n_excluded(n: int, alpha: float) -> int:
    """``l = floor((n + 1) alpha)``: how many of ``n`` calibration scores lie above the conformal
    threshold (the threshold exists only when ``l >= 1``)."""
    return math.floor((n + 1) * alpha + _FLOOR_SLACK)


def min_calibration_size(alpha: float) -> int:
    """Smallest ``n`` with ``floor((n + 1) alpha) >= 1``, i.e. ``ceil(1/alpha) - 1``."""
    alpha = check_alpha(alpha)
    n = max(0, math.ceil(1.0 / alpha - _FLOOR_SLACK) - 1)
    while n_excluded(n, alpha) < 1:  # guard against rounding in 1/alpha
        n += 1
    return n


def check_alpha(
    alpha: Any, n: int | None = None, *, what: str = "alpha", where: str | None = None, hint: str | None = None
) -> float:
    """Check a miscoverage/risk level in (0, 1) and, given ``n`` calibration samples, that
    ``alpha >= 1/(n+1)`` — below that no finite-sample threshold exists.

    Parameters
    ----------
    alpha : the level
    n : number of calibration samples, optional
    what : the name of ``alpha`` as the user knows it (``"--alpha"``)
    where : the calibration data the ``n`` samples are, for the message (``"--cal 'cal.npz'"``,
        ``"class 'benign'"``), optional
    hint : what else the user can do, added to the message's advice (e.g. a fallback), optional

    Notes
    -----
    The message states ``n``, the bound ``1/(n+1)`` and the number of samples this ``alpha`` needs.
    """
    alpha = check_float(what, alpha, low=0.0, high=1.0, closed="neither")
    if n is not None and n_excluded(n, alpha) < 1:
        needed = min_calibration_size(alpha)
        samples = "calibration samples" + (f" in {where}" if where else "")
        advice = f"use at least {needed} {samples} or a larger {what}"
        raise input_error(
            what,
            alpha,
            f"alpha >= 1/(n+1) = {1.0 / (n + 1):.4g} with n = {n} {samples}",
            f"{advice}, or {hint}" if hint else advice,
        )
    return alpha


# ---- array checks ----------------------------------------------------------------------------


def check_array(
    what: str,
    value: Any,
    *,
    ndim: int | Sequence[int] | None = None,
    dtype_kind: str | None = None,
    min_len: int | None = None,
) -> np.ndarray:
    """Return ``np.asarray(value)`` after checking its number of axes, dtype kind and length.

    ``dtype_kind`` is a string of numpy kind letters (``"f"`` float, ``"iu"`` integers,
    ``"b"`` bool). The input is never modified or copied.
    """
    arr = np.asarray(value)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise input_error(what, f"shape {tuple(arr.shape)}", " or ".join(f"{d} axes" for d in allowed), raw=True)
    if dtype_kind is not None and arr.dtype.kind not in dtype_kind:
        names = {"f": "floating-point", "i": "integer", "u": "unsigned integer", "b": "boolean"}
        raise input_error(
            what, f"dtype {arr.dtype}", " or ".join(names.get(k, k) for k in dtype_kind) + " values", raw=True
        )
    if min_len is not None and (arr.ndim == 0 or arr.shape[0] < min_len):
        n = 0 if arr.ndim == 0 else arr.shape[0]
        raise input_error(what, f"{n} sample{'s' if n != 1 else ''}", f"at least {min_len}", raw=True)
    return arr


def check_finite(what: str, arr: np.ndarray) -> np.ndarray:
    """Raise naming how many values are NaN or infinite (and the first position)."""
    arr = np.asarray(arr)
    if arr.dtype.kind in "fc":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise input_error(
                what, f"{int(bad.sum())} NaN or infinite value(s), first at index {first}", "finite values", raw=True
            )
    return arr


def check_probabilities(what: str, probs: Any, *, axis: int = -1, atol: float = 1e-3) -> np.ndarray:
    """Check values in [0, 1] that sum to 1 along ``axis`` (within ``atol``)."""
    probs = check_finite(what, check_array(what, probs, dtype_kind="f"))
    if probs.size and (probs.min() < -atol or probs.max() > 1 + atol):
        raise input_error(
            what,
            f"values in [{probs.min():.4g}, {probs.max():.4g}]",
            "probabilities in [0, 1]",
            "pass probabilities (softmax of the logits), not logits",
            raw=True,
        )
    if probs.size:
        sums = probs.sum(axis=axis)
        worst = float(np.max(np.abs(sums - 1.0)))
        if worst > atol:
            raise input_error(what, f"rows summing to as far as {worst:.3g} from 1", "rows that sum to 1", raw=True)
    return probs


def check_labels(what: str, labels: Any, n_classes: int, *, length: int | None = None) -> np.ndarray:
    """Integer labels in ``[0, n_classes)``, optionally of a given length."""
    labels = check_array(what, labels, dtype_kind="iu")
    if length is not None and labels.shape[:1] != (length,):
        raise input_error(
            what, f"{labels.shape[0] if labels.ndim else 0} labels", f"{length} (one per sample)", raw=True
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise input_error(what, f"labels in [{labels.min()}, {labels.max()}]", f"labels in [0, {n_classes})", raw=True)
    return labels


# ---- declared parameter constraints (scikit-learn manner) -------------------------------------


def _int_low(low: float, closed: bool) -> int:
    """The smallest integer in ``[low, ...)`` (closed) or ``(low, ...)`` (open)."""
    return math.ceil(low) if closed else math.floor(low) + 1


@dataclass(frozen=True)
class Interval:
    """A real (``kind=float``) or integer (``kind=int``) interval; ``None`` bounds are open-ended."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"

    def check(self, what: str, value: Any) -> Any:
        if self.kind is int:
            # integer intervals are always closed in the declaration; open ends are shifted
            # (the smallest integer above an open low end is floor(low) + 1; at a closed one, ceil(low))
            low = None if self.low is None else _int_low(self.low, self.closed in ("both", "left"))
            high = None if self.high is None else -_int_low(-self.high, self.closed in ("both", "right"))
            return check_int(what, value, low=low, high=high)
        return check_float(what, value, low=self.low, high=self.high, closed=self.closed)


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple

    def check(self, what: str, value: Any) -> Any:
        return check_choice(what, value, self.values)


@dataclass(frozen=True)
class Boolean:
    def check(self, what: str, value: Any) -> Any:
        if not isinstance(value, (bool, np.bool_)):
            raise input_error(what, value, "True or False")
        return bool(value)


@dataclass(frozen=True)
class Callable:
    def check(self, what: str, value: Any) -> Any:
        if not callable(value):
            raise input_error(what, value, "a callable")
        return value


class _NoneOk:
    def check(self, what: str, value: Any) -> Any:
        if value is not None:
            raise input_error(what, value, "None")
        return value


NoneOk = _NoneOk()


def validate_params(obj: Any, constraints: Mapping[str, Sequence[Any]] | None = None) -> None:
    """Check ``obj``'s constructor arguments against its declared ``_parameter_constraints``.

    Each entry maps a parameter name to a list of accepted constraints (:class:`Interval`,
    :class:`Options`, :class:`Boolean`, :class:`Callable`, ``NoneOk``); the value must satisfy one.
    The error names the estimator, the parameter, the value and every accepted form.
    """
    constraints = constraints if constraints is not None else getattr(type(obj), "_parameter_constraints", {})
    owner = type(obj).__name__
    for name, accepted in constraints.items():
        if not accepted:  # a declaration without constraints accepts anything
            continue
        value = getattr(obj, name)
        errors = []
        for constraint in accepted:
            try:
                constraint.check(f"{owner}({name})", value)
                break
            except MedsureInputError as exc:
                errors.append(str(exc).split("; expected ", 1)[-1])
        else:
            raise input_error(f"{owner}({name}=...)", value, " or ".join(errors))
