"""The environment of a benchmark run, written beside its numbers (issue 16).

Every benchmark calls :func:`medsure.training.environment.describe_environment` once its numbers
are in and writes the result beside them: as one readable line in its Markdown block
(:func:`environment_line`) and whole in its JSON (``"environment"`` key). The same numbers
computed on another CPU kind, with another thread count or with bf16 autocast switched differently
are not expected to agree to the last digit; this record is what lets a reader tell such a
difference from a real change (``python -m benchmarks.check`` compares it too).
"""

from __future__ import annotations

from typing import Any

from medsure.training.environment import describe_environment

__all__ = ["describe_environment", "environment_line", "format_wall_time"]


def format_wall_time(seconds: float | None) -> str:
    """``"71 s"``, ``"12.3 min"`` or ``"1.52 h"``; ``"not measured"`` for None."""
    if seconds is None:
        return "not measured"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def environment_line(env: dict[str, Any]) -> str:
    """One Markdown line with every field of ``describe_environment`` a reader compares."""
    commit = env.get("git_commit") or "no git checkout"
    autocast = "on" if env.get("autocast_bf16") else "off"
    bf16 = "yes" if env.get("cpu_bf16") else "no"
    return (
        f"Environment: medsure {env.get('medsure_version')} (commit `{commit}`); Python {env.get('python')}, "
        f"torch {env.get('torch')}, numpy {env.get('numpy')}, MONAI {env.get('monai') or 'not installed'}; "
        f"CPU `{env.get('cpu_model')}` ({env.get('cpu_count')} cores visible, native bf16: {bf16}), "
        f"{env.get('platform')}; device {env.get('device')}, {env.get('num_threads')} torch thread(s), "
        f"bf16 autocast {autocast}; wall time {format_wall_time(env.get('wall_time_s'))}."
    )
