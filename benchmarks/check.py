"""Rerun a quick subset of every benchmark and compare it with the recorded numbers (issue 16).

    python -m benchmarks.check                  # rerun, compare, print a table; exit 1 on a mismatch
    python -m benchmarks.check --only failure_isic train_speed
    python -m benchmarks.check --record         # rerun and store the numbers and their environment
    make bench-check                            # the same as the first line

Protocol: how a benchmark takes part
------------------------------------
A module ``benchmarks/<name>.py`` takes part when it defines, at module level (found by reading
the source for ``def quick(``, so a new benchmark plugs in by defining it; no list to edit):

``quick() -> dict[str, float]``
    A small, seeded subset of the benchmark (seconds to about a minute on one CPU thread), returning
    named numbers. It must give the same numbers bit for bit when rerun in the same environment
    (seeded data, seeded training, ``num_threads=1``); it writes nothing into the repository.
``QUICK_TOLERANCE: dict[str, float]``
    For every number ``quick`` returns, the absolute tolerance that applies when the environment
    differs from the recorded one (another CPU kind, bf16 autocast switched, other library versions):
    the size of the change that such a difference can explain, which a reader should not mistake
    for a real change. A number without a tolerance is an error of the benchmark.
``QUICK_UNREPEATABLE: frozenset[str]`` (optional)
    Numbers that are not bit-repeatable even in one environment (timings and their ratios); they
    are always compared within their tolerance.

Each ``quick`` runs in a fresh Python process (``--run-one``), with one torch thread and no
progress bars, so one benchmark's global state cannot reach another's; the process records
:func:`medsure.training.environment.describe_environment` beside the numbers.

Comparison rules
----------------
- The environment *matches* when the fields in :data:`ENV_KEYS` are equal: Python, torch, numpy and
  MONAI versions, CPU model, native bf16, device, thread count and bf16 autocast. The medsure version
  and git commit are shown but not compared: they are what the check checks.
- Matching environment: every number must equal the recorded one exactly (``QUICK_UNREPEATABLE``
  numbers: within tolerance). Other environment: ``|now - recorded| <= tolerance``; the table says
  which rule applied to each number and names the environment fields that differ.
- A recorded number that ``quick`` no longer returns, a number that was never recorded (run
  ``--record``), and a ``quick`` that fails are mismatches too.
- A ``quick`` whose data is absent (it raises :class:`medsure.errors.DataUnavailableError`, as
  every medsure loader does when ``../shared/data`` or ``MEDSURE_DATA_ROOT`` lacks the folder)
  is *skipped*: one row says so and why, its record is kept, and it is not a mismatch (nothing
  was compared; the summary line counts the skipped benchmarks).

Exit status: 0 when everything matches, 1 on any mismatch, 2 on bad input (unknown benchmark name,
unreadable record file). ``--record`` stores the numbers of the benchmarks it ran (the others'
records are kept) in benchmarks/check_recorded.json; record on the machine whose numbers the
tables report, and commit the file with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RECORD_PATH = HERE / "check_recorded.json"
RECORD_FORMAT = 1
QUICK_THREADS = 1
# the describe_environment fields that change a benchmark's arithmetic (medsure version and commit
# are what the check checks; platform and cpu_count do not change the numbers by themselves)
ENV_KEYS = ("python", "torch", "numpy", "monai", "cpu_model", "cpu_bf16", "device", "num_threads", "autocast_bf16")

OK, MISMATCH, SKIPPED = "ok", "MISMATCH", "SKIPPED"


class CheckInputError(ValueError):
    """Bad input to the check: one line for the user, exit status 2."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One compared number."""

    benchmark: str
    metric: str
    recorded: float | None
    now: float | None
    rule: str  # "exact", "±tol (env differs)", "±tol (timing)", or why nothing was compared
    status: str  # OK, MISMATCH or SKIPPED

    @property
    def diff(self) -> float | None:
        if self.recorded is None or self.now is None:
            return None
        if math.isnan(self.recorded) and math.isnan(self.now):
            return 0.0
        return abs(self.now - self.recorded)


# ---- pure comparison -----------------------------------------------------------------------


def environment_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The :data:`ENV_KEYS` fields whose values differ: ``{field: (recorded, current)}``."""
    return {k: (recorded.get(k), current.get(k)) for k in ENV_KEYS if recorded.get(k) != current.get(k)}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def compare_metrics(
    benchmark: str,
    recorded: Mapping[str, float],
    now: Mapping[str, float],
    tolerance: Mapping[str, float],
    *,
    same_environment: bool,
    unrepeatable: Iterable[str] = (),
) -> list[Row]:
    """Compare one benchmark's numbers with its record (rules: module docstring).

    Parameters
    ----------
    recorded, now : metric name -> value
    tolerance : metric name -> absolute tolerance when the environment differs (``QUICK_TOLERANCE``)
    same_environment : whether the :data:`ENV_KEYS` of the record and of this run agree
    unrepeatable : metrics compared within tolerance even in the same environment (timings)

    Returns
    -------
    list of Row, recorded metrics first (in record order), then metrics never recorded
    """
    unrepeatable = set(unrepeatable)
    rows = []
    for metric, old in recorded.items():
        if metric not in now:
            rows.append(Row(benchmark, metric, old, None, "no longer returned by quick()", MISMATCH))
            continue
        new = now[metric]
        if metric not in tolerance:
            rows.append(Row(benchmark, metric, old, new, "no tolerance in QUICK_TOLERANCE", MISMATCH))
            continue
        tol = tolerance[metric]
        if same_environment and metric not in unrepeatable:
            rows.append(
                Row(benchmark, metric, old, new, "exact (same environment)", OK if _same(old, new) else MISMATCH)
            )
            continue
        why = "timing" if metric in unrepeatable else "environment differs"
        within = _same(old, new) or abs(new - old) <= tol
        rows.append(Row(benchmark, metric, old, new, f"±{tol:g} ({why})", OK if within else MISMATCH))
    for metric, new in now.items():
        if metric not in recorded:
            rows.append(Row(benchmark, metric, None, new, "not recorded: run --record", MISMATCH))
    return rows


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}"


def format_table(rows: list[Row]) -> str:
    """A plain-text table, one line per compared number."""
    header = ("benchmark", "metric", "recorded", "now", "|diff|", "rule", "result")
    body = [(r.benchmark, r.metric, _num(r.recorded), _num(r.now), _num(r.diff), r.rule, r.status) for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*line) for line in body]
    return "\n".join(lines)


def describe_differences(diffs: Mapping[str, tuple[Any, Any]]) -> str:
    if not diffs:
        return "environment matches the record: numbers must be identical"
    return (
        "environment differs from the record in "
        + ", ".join(f"{k} ({old!r} -> {new!r})" for k, (old, new) in diffs.items())
        + ": tolerances apply"
    )


# ---- benchmarks and their records ---------------------------------------------------------------


def discover(folder: Path = HERE) -> list[str]:
    """Names of the benchmark modules in ``folder`` that define ``quick()`` (protocol above)."""
    pattern = re.compile(r"^def quick\(", re.M)
    return sorted(
        p.stem
        for p in folder.glob("*.py")
        if not p.name.startswith("_") and p.stem != "check" and pattern.search(p.read_text(encoding="utf-8"))
    )


def read_record(path: Path) -> dict[str, Any]:
    """The record file's ``benchmarks`` section; empty when the file does not exist yet."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckInputError(
            f"record file {path}: not readable JSON ({exc}); expected the file --record writes"
        ) from exc
    if (
        not isinstance(data, dict)
        or data.get("format") != RECORD_FORMAT
        or not isinstance(data.get("benchmarks"), dict)
    ):
        raise CheckInputError(
            f"record file {path}: not a format-{RECORD_FORMAT} record; expected the file --record writes"
        )
    return data["benchmarks"]


def write_record(path: Path, records: Mapping[str, Any]) -> None:
    from medsure.utils.io import atomic_write_text

    text = json.dumps({"format": RECORD_FORMAT, "benchmarks": dict(sorted(records.items()))}, indent=1)
    atomic_write_text(path, text + "\n")


def run_one(name: str) -> dict[str, Any]:
    """Import ``benchmarks.<name>``, run its ``quick()`` on one torch thread; numbers + environment."""
    import torch

    from medsure.errors import DataUnavailableError
    from medsure.training.environment import describe_environment

    os.environ.setdefault("MEDSURE_NO_PROGRESS", "1")
    torch.set_num_threads(QUICK_THREADS)
    module = importlib.import_module(f"benchmarks.{name}")
    start = time.perf_counter()
    try:
        numbers = module.quick()
    except DataUnavailableError as exc:  # no data here: nothing to compare, which is not a mismatch
        return {"skipped": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    metrics = {str(k): float(v) for k, v in numbers.items()}
    wall = time.perf_counter() - start
    return {
        "metrics": metrics,
        "tolerance": {k: float(v) for k, v in module.QUICK_TOLERANCE.items()},
        "unrepeatable": sorted(getattr(module, "QUICK_UNREPEATABLE", ())),
        "environment": describe_environment("cpu", num_threads=QUICK_THREADS, wall_time_s=wall),
    }


def run_in_subprocess(name: str, timeout_s: float) -> dict[str, Any]:
    """:func:`run_one` in a fresh interpreter; ``{"error": ...}`` when it fails or times out,
    ``{"skipped": reason}`` when its data is absent."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "quick.json"
        cmd = [sys.executable, "-m", "benchmarks.check", "--run-one", name, "--run-one-out", str(out)]
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"quick() did not finish within {timeout_s:g} s"}
        if proc.returncode != 0 or not out.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"error": f"quick() failed (exit {proc.returncode}): {last}"}
        result: dict[str, Any] = json.loads(out.read_text())
        return result


# ---- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.check", description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="store the numbers instead of comparing")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these benchmarks only (default: every one)")
    parser.add_argument("--recorded", type=Path, default=RECORD_PATH, help="record file (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per benchmark (default 900)")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--run-one-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:  # child process: run one quick() and write its JSON
        if args.run_one_out is None:
            parser.error("--run-one needs --run-one-out")
        args.run_one_out.write_text(json.dumps(run_one(args.run_one)))
        return 0
    try:
        return _check(args)
    except CheckInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace) -> int:
    available = discover()
    names = args.only or available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise CheckInputError(
            f"--only: unknown benchmark {', '.join(map(repr, unknown))}; expected one of {', '.join(available)}"
        )
    if not args.timeout > 0:
        raise CheckInputError(f"--timeout: got {args.timeout:g}; expected a positive number of seconds")
    records = read_record(args.recorded)
    rows: list[Row] = []
    notes: list[str] = []
    failed = False
    for name in names:
        print(f"[bench-check] {name} ...", file=sys.stderr, flush=True)
        result = run_in_subprocess(name, args.timeout)
        if "error" in result:
            rows.append(Row(name, "(quick)", None, None, result["error"], MISMATCH))
            failed = True
            continue
        if "skipped" in result:
            rows.append(Row(name, "(quick)", None, None, f"skipped, data absent: {result['skipped']}", SKIPPED))
            notes.append(f"{name}: skipped (data absent); " + ("its record is kept" if args.record else "not compared"))
            continue
        env = result["environment"]
        if args.record:
            records[name] = {
                "recorded_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "environment": env,
                "metrics": result["metrics"],
                "tolerance": result["tolerance"],
            }
            notes.append(f"{name}: recorded {len(result['metrics'])} numbers in {env['wall_time_s']} s")
            continue
        if name not in records:
            rows += compare_metrics(name, {}, result["metrics"], result["tolerance"], same_environment=False)
            notes.append(f"{name}: no record yet (run --record)")
            continue
        diffs = environment_differences(records[name]["environment"], env)
        rows += compare_metrics(
            name,
            records[name]["metrics"],
            result["metrics"],
            result["tolerance"],
            same_environment=not diffs,
            unrepeatable=result["unrepeatable"],
        )
        rec = records[name]["environment"]
        notes.append(
            f"{name}: {describe_differences(diffs)} (recorded {records[name]['recorded_at']} with medsure "
            f"{rec.get('medsure_version')} at {rec.get('git_commit')}; now medsure {env.get('medsure_version')} at "
            f"{env.get('git_commit')}; quick() took {env['wall_time_s']} s)"
        )
    if args.record:
        if rows:  # keep the old record of a benchmark whose quick() failed or was skipped, and say so
            print(format_table(rows))
        write_record(args.recorded, records)
        print("\n".join(notes + [f"wrote {args.recorded}"]))
        return 1 if failed else 0
    print(format_table(rows))
    print()
    print("\n".join(notes))
    print(summary_line(rows))
    return 1 if any(r.status == MISMATCH for r in rows) else 0


def summary_line(rows: list[Row]) -> str:
    """``"<ok> of <compared> numbers match; <n> mismatch(es)[; <s> benchmark(s) skipped (data absent)]"``."""
    bad = sum(r.status == MISMATCH for r in rows)
    skipped = sum(r.status == SKIPPED for r in rows)
    compared = len(rows) - skipped
    line = f"\n{compared - bad} of {compared} numbers match; {bad} mismatch" + ("es" if bad != 1 else "")
    if skipped:
        line += f"; {skipped} benchmark{'s' if skipped != 1 else ''} skipped (data absent)"
    return line


if __name__ == "__main__":
    sys.exit(main())
