"""Failure-detection metrics over a shard folder, one shard in memory at a time.

Every confidence scoring function (CSF) is a number per case, so a stream keeps only those
``(N,)`` columns and the ``(N,)`` errors; the risk-coverage metrics (a ranking of all cases) are
then the in-memory functions on the same values: the same numbers as
``failure_metrics(compute_csfs(pred)[name], prediction_errors(pred))`` on the set loaded whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medsure.failure.evaluate import compute_csfs, prediction_errors
from medsure.failure.metrics import failure_metrics
from medsure.shards import ShardSource, shards_of
from medsure.validation import input_error

__all__ = ["csfs_streaming", "failure_metrics_streaming"]


def csfs_streaming(source: ShardSource) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every CSF ``(N,)`` (higher = confident) and the errors ``(N,)`` of a streamed, labelled
    classification set; the values of :func:`compute_csfs` and :func:`prediction_errors`."""
    columns: dict[str, list[np.ndarray]] = {}
    errors: list[np.ndarray] = []
    for i, part in enumerate(shards_of(source)):
        errors.append(prediction_errors(part, "test"))
        csfs = compute_csfs(part)
        if i and sorted(csfs) != sorted(columns):
            raise input_error(
                f"shard {i}", f"CSFs {sorted(csfs)}", f"the CSFs of shard 0 ({sorted(columns)})", raw=True
            )
        for name, values in csfs.items():
            columns.setdefault(name, []).append(np.asarray(values))
    if not errors:
        raise input_error("predictions", "no shards", "at least one labelled case", raw=True)
    return {name: np.concatenate(parts) for name, parts in columns.items()}, np.concatenate(errors)


def failure_metrics_streaming(
    source: ShardSource,
    *,
    csfs: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    coverages: Sequence[float] = (0.5, 0.8, 0.9, 0.95),
) -> dict[str, dict[str, Any]]:
    """:func:`~medsure.failure.metrics.failure_metrics` of each CSF (all, or ``csfs``) on a
    streamed, labelled classification set: ``{csf: metrics}``."""
    confidences, errors = csfs_streaming(source)
    names = list(confidences) if csfs is None else list(csfs)
    unknown = sorted(set(names) - set(confidences))
    if unknown:
        raise input_error("csfs", unknown, f"CSFs of these predictions: {', '.join(sorted(confidences))}")
    return {
        name: failure_metrics(confidences[name], errors, n_boot=n_boot, seed=seed, coverages=coverages)
        for name in names
    }
