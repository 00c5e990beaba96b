"""Speed and peak memory of conformal calibration + prediction: medsure vs MAPIE, same inputs.

    .venv/bin/python benchmarks/conformal_speed.py            # both sizes, all methods
    .venv/bin/python benchmarks/conformal_speed.py --quick    # 47,280 x 8 only

Inputs: random logits (seeded) turned into float64 probabilities; the first half is calibration,
the second half test (so 1,000,000 x 100 means 500,000 calibration + 500,000 test rows). Small inputs report the
best of 5 runs, 1,000,000 x 100 a single run. Each
(library, method, size) runs in a fresh subprocess; time is wall-clock of calibrate + predict;
peak memory is the process's peak RSS minus its RSS just before calibrate (inputs are built in
chunks, so their construction does not raise the peak). MAPIE 1.6 gets the
probabilities through a pre-fitted lookup estimator and runs with its defaults
(include_last_label=True); medsure runs with its defaults (randomized APS/RAPS/SAPS). TorchCP could
not be benchmarked: it is not installable here (its dependency torchsort fails to build).
Rewrites only the ``conformal_speed`` block of benchmarks/results.md.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results.md"
SIZES = [(47_280, 8), (1_000_000, 100)]
METHODS = ["lac", "aps", "raps", "topk", "saps"]
MAPIE_NAME = {"lac": "lac", "aps": "aps", "raps": "raps", "topk": "top_k"}


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _data(n: int, k: int):
    """Seeded probabilities and labels drawn from them, built in chunks so that creating them
    never needs much more memory than the result (keeps the peak-RSS measurement clean)."""
    rng = np.random.default_rng(0)
    probs = np.empty((n, k))
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, 50_000):
        stop = min(start + 50_000, n)
        z = rng.standard_normal((stop - start, k)) * 2.0
        z = np.exp(z - z.max(axis=1, keepdims=True))
        z /= z.sum(axis=1, keepdims=True)
        probs[start:stop] = z
        labels[start:stop] = (rng.random(stop - start)[:, None] > np.cumsum(z, axis=1)).sum(axis=1)
    np.clip(labels, 0, k - 1, out=labels)
    half = n // 2
    return probs[:half], labels[:half], probs[half:], labels[half:]


def _worker(lib: str, method: str, n: int, k: int, queue) -> None:
    repeats = 5 if n * k < 5_000_000 else 1  # small inputs: best of 5 (timer noise)
    try:
        cal_p, cal_y, test_p, test_y = _data(n, k)
        if lib == "medsure":
            from medsure.conformal import SplitConformalClassifier

            base = _rss_mb()
            elapsed = np.inf
            for _ in range(repeats):
                start = time.perf_counter()
                clf = SplitConformalClassifier(method, 0.1, input="probs", seed=0).calibrate(cal_p, cal_y)
                sets = clf.predict_set(test_p)
                elapsed = min(elapsed, time.perf_counter() - start)
        else:
            from sklearn.base import BaseEstimator, ClassifierMixin
            from mapie.classification import SplitConformalClassifier as MapieSCC

            class Lookup(ClassifierMixin, BaseEstimator):
                def __init__(self, probs=None):
                    self.probs = probs

                def fit(self, X=None, y=None):
                    self.classes_ = np.arange(self.probs.shape[1])
                    return self

                def predict_proba(self, X):
                    return self.probs[np.asarray(X)[:, 0]]

            both = np.concatenate([cal_p, test_p])
            del cal_p, test_p
            idx_cal = np.arange(cal_y.size)[:, None]
            idx_test = np.arange(cal_y.size, both.shape[0])[:, None]
            base = _rss_mb()
            elapsed = np.inf
            for _ in range(repeats):
                start = time.perf_counter()
                model = MapieSCC(estimator=Lookup(both).fit(), confidence_level=0.9,
                                 conformity_score=MAPIE_NAME[method], prefit=True, random_state=0)
                model.conformalize(idx_cal, cal_y)
                _, sets = model.predict_set(idx_test)
                elapsed = min(elapsed, time.perf_counter() - start)
            sets = sets[:, :, 0]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
        cov = float(sets[np.arange(test_y.size), test_y].mean())
        queue.put({"ok": True, "seconds": elapsed, "peak_mb": peak, "coverage": cov,
                   "mean_size": float(sets.sum(axis=1).mean())})
    except BaseException as exc:  # report any failure (MemoryError included) to the parent
        queue.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]})


def measure(lib: str, method: str, n: int, k: int, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(lib, method, n, k, queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"ok": False, "error": f"did not finish within {timeout:.0f} s"}
    if queue.empty():
        return {"ok": False, "error": f"worker died (exit code {proc.exitcode}; out of memory?)"}
    return queue.get()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only 47,280 x 8")
    parser.add_argument("--timeout", type=float, default=420.0, help="per-run limit in seconds")
    parser.add_argument("--no-write", action="store_true", help="print only, leave results.md alone")
    args = parser.parse_args(argv)
    sizes = SIZES[:1] if args.quick else SIZES
    rows = []
    for n, k in sizes:
        for method in METHODS:
            ours = measure("medsure", method, n, k, args.timeout)
            theirs = (measure("mapie", method, n, k, args.timeout) if method in MAPIE_NAME
                      else {"ok": False, "error": "not in MAPIE"})
            rows.append((n, k, method, ours, theirs))
            print(n, k, method, ours, theirs, flush=True)
    table = _table(rows)
    print(table)
    if not args.no_write:
        _write_block(table, " ".join(["benchmarks/conformal_speed.py"] + (argv or sys.argv[1:])))
    return 0


def _fmt(res: dict, key: str, fmt: str) -> str:
    return fmt.format(res[key]) if res.get("ok") else "-"


def _table(rows) -> str:
    lines = ["| N x K | method | medsure s | medsure peak MB | MAPIE s | MAPIE peak MB | speed-up | "
             "coverage medsure / MAPIE | TorchCP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, k, method, ours, theirs in rows:
        speed = (f"{theirs['seconds'] / ours['seconds']:.1f}x" if ours.get("ok") and theirs.get("ok")
                 else (theirs.get("error", "-") if not theirs.get("ok") else "-"))
        lines.append(
            f"| {n:,} x {k} | {method} | {_fmt(ours, 'seconds', '{:.2f}')} | {_fmt(ours, 'peak_mb', '{:.0f}')} | "
            f"{_fmt(theirs, 'seconds', '{:.2f}')} | {_fmt(theirs, 'peak_mb', '{:.0f}')} | {speed} | "
            f"{_fmt(ours, 'coverage', '{:.4f}')} / {_fmt(theirs, 'coverage', '{:.4f}')} | not installable |")
    return "\n".join(lines)


def _write_block(table: str, command: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    body = (f"### Conformal classification speed (calibrate + predict)\n\n"
            f"Command: `.venv/bin/python {command}` on {platform.processor() or platform.machine()}, "
            f"{mp.cpu_count()} CPU cores, numpy {np.__version__}. Half of the rows calibrate, half are "
            "predicted; 47,280 x 8: best of 5 runs, 1,000,000 x 100: one run; alpha = 0.1; float64 probabilities as input to both libraries. Peak MB = peak "
            "RSS of a fresh process minus its RSS just before calibration (inputs excluded). TorchCP: not installable "
            "in this environment (torchsort fails to build), so not measured. MAPIE has no SAPS. Set rules differ for APS and RAPS: medsure randomizes (exact coverage), MAPIE's default includes the last label (conservative), hence the coverage column. MAPIE's time and memory include the lookup estimator's copy of the probabilities. The 2 cores were shared with other jobs during the run, so timings carry roughly 10-20% noise.\n\n"
            f"{table}\n")
    block = f"<!-- BEGIN conformal_speed -->\n{body}<!-- END conformal_speed -->"
    pattern = re.compile(r"<!-- BEGIN conformal_speed -->.*?<!-- END conformal_speed -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
