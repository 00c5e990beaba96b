"""Scale benchmarks (issue 15): streaming peak memory, Ray engine overhead, measured-then-projected wall times.

    .venv/bin/python benchmarks/scale.py              # everything (about 10-15 min on 2 cores)
    .venv/bin/python benchmarks/scale.py --quick      # 1,000,000 x 10 streaming, fewer images

Writes benchmarks/scale.md (and benchmarks/scale.json with every measurement and the environment).

1. Streaming memory. A shard folder of N x 10 logits (seeded standard normal x 2, labels drawn
   from the softmax) in shards of 500,000 cases is written; then a fresh subprocess fits APS
   conformal sets over the folder and scores them over it (``fit_streaming`` +
   ``score_streaming``; calibration and test are the same folder here: memory, not coverage, is
   measured). Peak memory is the subprocess's peak RSS minus its RSS before the first shard.
   The same for ``segmentation_metrics_streaming`` over 2,000 synthetic 256 x 256 two-class maps
   (float16 logits, shards of 50 images).
2. Engine overhead. ``medsure predict --shard-size 500 --mc-samples 20`` on the whole
   PneumoniaMNIST data set (5,856 images, 28 px, the test suite's cached small CNN, 20 MC-dropout
   passes each), local engine vs ``--engine ray`` with 1 and 2 workers, in one process with a Ray
   instance started beforehand and a discarded warm-up call. Times are after start-up: the time a
   Ray call spends starting its actors (each loads the run) is measured and reported apart.
3. Projection. Wall time = cases x passes / (per-worker throughput x workers x scaling
   efficiency); throughput measured here on this CPU (per worker: 1 Ray worker), efficiency from
   the 2-worker run. GPU throughput is not measured here (no GPU in this environment): the
   projected rows use this CPU's per-worker throughput and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

MD_PATH = HERE / "scale.md"
JSON_PATH = HERE / "scale.json"
SHARD = 500_000
PASSES = 20  # MC-dropout passes per image in the engine benchmark (as in the projection)


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# ---- 1. streaming memory ---------------------------------------------------------------------


def write_classification(folder: Path, n: int, k: int = 10) -> None:
    from medsure.artifact import make_predictions
    from medsure.shards import ShardWriter, shard_ranges

    ranges = shard_ranges(n, SHARD)
    writer = ShardWriter(folder, task="classification", class_names=[f"c{j}" for j in range(k)], n_shards=len(ranges))
    for i, (a, b) in enumerate(ranges):
        if writer.is_done(i):
            continue
        rng = np.random.default_rng([0, i])
        logits = (rng.standard_normal((b - a, k)) * 2).astype(np.float32)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        labels = (p.cumsum(1) > rng.random((b - a, 1))).argmax(1)
        ids = np.char.add("case", np.arange(a, b).astype(str))
        writer.write(i, make_predictions(logits, labels=labels, ids=ids, class_names=[f"c{j}" for j in range(k)]))
    writer.finish()


def write_segmentation(folder: Path, n: int = 2000, size: int = 256, per_shard: int = 50) -> None:
    from medsure.artifact import make_predictions
    from medsure.shards import ShardWriter, shard_ranges

    ranges = shard_ranges(n, per_shard)
    writer = ShardWriter(folder, task="segmentation", class_names=["background", "lesion"], n_shards=len(ranges))
    yy, xx = np.mgrid[0:size, 0:size]
    for i, (a, b) in enumerate(ranges):
        if writer.is_done(i):
            continue
        rng = np.random.default_rng([1, i])
        m = b - a
        cy, cx, r = rng.uniform(64, 192, m), rng.uniform(64, 192, m), rng.uniform(15, 50, m)
        dist = np.sqrt((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) - r[:, None, None]
        masks = (dist < 0).astype(np.int64)
        noisy = -dist / 4 + rng.normal(0, 1.5, dist.shape)
        logits = np.stack([np.zeros_like(noisy), noisy], axis=1).astype(np.float16)
        ids = np.char.add("img", np.arange(a, b).astype(str))
        pred = make_predictions(logits, masks=masks, ids=ids, task="segmentation", class_names=["background", "lesion"])
        writer.write(i, pred)
    writer.finish()


def _measure_child(kind: str, folder: str) -> None:
    """Run in a fresh process: peak RSS above the start, and wall time, printed as JSON."""
    from medsure.conformal import SplitConformalClassifier
    from medsure.conformal.streaming import fit_streaming, score_streaming
    from medsure.segmentation.streaming import segmentation_metrics_streaming

    base = _rss_mb()
    started = time.perf_counter()
    if kind == "conformal":
        clf = fit_streaming(SplitConformalClassifier("aps", alpha=0.1, seed=0), folder)
        result = score_streaming(clf, folder)
        summary = {"coverage": result["coverage"], "n": result["n"], "n_cal": clf.n_cal_}
    else:
        result = segmentation_metrics_streaming(folder)
        summary = {"dice_mean": result["dice_mean"], "n": result["n_images"], "ece": result["ece"]}
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak - base, "rss_start_mb": base, "wall_s": wall, **summary}))


def streaming(work: Path, n: int) -> dict:
    out = {}
    for kind, writer, label in (
        ("conformal", lambda f: write_classification(f, n), f"{n:,} x 10, shards of {SHARD:,}"),
        ("segmentation", write_segmentation, "2,000 x 256 x 256, 2 classes, shards of 50 images"),
    ):
        folder = work / f"{kind}-{n}"
        t = time.perf_counter()
        writer(folder)
        written = time.perf_counter() - t
        size = sum(p.stat().st_size for p in folder.glob("*.npz"))
        child = subprocess.run(
            [sys.executable, __file__, "--child", kind, str(folder)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "MEDSURE_NO_PROGRESS": "1"},
        )
        out[kind] = {"set": label, "folder_mb": size / 2**20, "write_s": written, **json.loads(child.stdout.strip())}
        print(kind, out[kind], flush=True)
    return out


# ---- 2. engine overhead ------------------------------------------------------------------------


def engine(work: Path, quick: bool) -> dict:
    import ray
    import torch

    from medsure.cli import main
    from medsure.cli._engine import TIMINGS

    from realpreds import trained_run

    run = str(trained_run("pneumoniamnist").run_dir)
    base = ["predict", "--run", run, "--dataset", "pneumoniamnist", "--split", "all", "--shard-size", "500"]
    base += ["--mc-samples", str(PASSES)]
    from medsure.training.datasets import dataset_record, load_whole

    record = dataset_record("pneumoniamnist", root=None, image_size=28, options={}, split_seed=0, max_samples=None)
    n_images = len(load_whole(record))
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"MEDSURE_NO_PROGRESS": "1"}}
    )
    results = {"n_images": n_images, "torch_threads_local": torch.get_num_threads()}
    try:
        # the plain command with torch's default threads (one per core), and with one thread as the
        # Ray actors run (Ray gives each actor OMP_NUM_THREADS=1): threads that wait on each other on
        # a busy 2-core machine make the default far slower, which is not the engine's doing
        configs = [("local", []), ("local, 1 torch thread", []),
                   ("ray, 1 worker", ["--engine", "ray", "--workers", "1"]),
                   ("ray, 2 workers", ["--engine", "ray", "--workers", "2"])]  # fmt: skip
        warmup = Path(tempfile.mkdtemp(dir=work)) / "warmup"
        main([*base, "--engine", "ray", "--workers", "2", "--out", str(warmup)])  # start-up, discarded
        repeats = 1 if quick else 2
        for name, extra in configs:
            times, startups = [], []
            for r in range(repeats):
                folder = Path(tempfile.mkdtemp(dir=work)) / f"engine-{name.replace(' ', '').replace(',', '')}-{r}"
                TIMINGS.clear()
                threads = torch.get_num_threads()
                if "1 torch thread" in name:
                    torch.set_num_threads(1)
                t = time.perf_counter()
                code = main([*base, *extra, "--out", str(folder)])
                elapsed = time.perf_counter() - t
                torch.set_num_threads(threads)
                if code != 0:
                    raise RuntimeError(f"predict failed: {name}")
                startups.append(TIMINGS.get("startup_s", 0.0))
                times.append(elapsed - startups[-1])  # after start-up
            best = int(np.argmin(times))
            results[name] = {
                "best_s": times[best],
                "times_s": times,
                "startup_s": startups[best],
                "images_per_s": n_images * PASSES / times[best],
            }
            print(name, results[name], flush=True)
    finally:
        ray.shutdown()
    return results


# ---- 3. projection and the report --------------------------------------------------------------


def project(eng: dict) -> dict:
    per_worker = eng["ray, 1 worker"]["images_per_s"]
    efficiency = eng["ray, 2 workers"]["images_per_s"] / (2 * per_worker)
    rows = []
    for workers in (1, 8, 64):
        eff = 1.0 if workers == 1 else efficiency
        cls = 1_000_000 * 20 / (per_worker * workers * eff)
        rows.append({"workers": workers, "efficiency": eff, "classification_1M_T20_s": cls})
    return {"per_worker_images_per_s": per_worker, "efficiency_2_workers": efficiency, "rows": rows}


def _hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


def write_report(data: dict, command: str) -> None:
    from _env import environment_line

    s, e, p = data["streaming"], data["engine"], data["projection"]
    local = e["local"]["best_s"]
    lines = [
        "# Scale: streaming memory, Ray engine overhead, projections",
        "",
        f"Command: `{command}` (wall time of the last run {data['wall_s'] / 60:.1f} min).",
        "",
        environment_line(data["environment"]),
        "",
        "## Streaming peak memory (measured)",
        "",
        "| analysis | set | folder on disk | peak RSS above start | wall time | target |",
        "|---|---|---|---|---|---|",
        f"| conformal APS fit + score (`fit_streaming`, `score_streaming`) | {s['conformal']['set']} "
        f"| {s['conformal']['folder_mb']:.0f} MB | **{s['conformal']['peak_mb']:.0f} MB** | "
        f"{s['conformal']['wall_s']:.0f} s | < 1 GB |",
        f"| segmentation metrics (`segmentation_metrics_streaming`) | {s['segmentation']['set']} "
        f"| {s['segmentation']['folder_mb']:.0f} MB | **{s['segmentation']['peak_mb']:.0f} MB** | "
        f"{s['segmentation']['wall_s']:.0f} s | < 1 GB |",
        "",
        f"Peak RSS of the whole process (interpreter and imports included): conformal "
        f"{s['conformal']['peak_mb'] + s['conformal']['rss_start_mb']:.0f} MB, segmentation "
        f"{s['segmentation']['peak_mb'] + s['segmentation']['rss_start_mb']:.0f} MB. Where the conformal peak "
        "comes from (RSS sampled between the steps in a separate run): reading and checking one shard of "
        "500,000 cases peaks at about 260 MB, fitting keeps the 1-D calibration scores (80 MB), and the largest "
        "allocation of scoring is not the stream but the exact coverage band of 10,000,000 test cases "
        "(`medsure.conformal.quantile.coverage_band`: a beta-binomial pmf over m + 1 counts, about 0.5 GB), "
        "computed the same way by the in-memory path. Without it the streamed scoring stays near 0.5 GB.",
        "",
        f"Coverage of the streamed APS sets: {s['conformal']['coverage']:.4f} at alpha 0.1 "
        f"({s['conformal']['n']:,} cases; calibration and test are the same folder here, so this is a sanity "
        "check, not a guarantee check).",
        "",
        "## Engine overhead (measured, this CPU)",
        "",
        f"`medsure predict --shard-size 500 --mc-samples {PASSES}` on {e['n_images']:,} PneumoniaMNIST images "
        "(28 px, small CNN), Ray instance started beforehand (`ray.init(num_cpus=2)`), best of the repeats, "
        "after start-up (the actors' start-up, which loads the run in each, is the last column):",
        "",
        "| engine | wall time | image-passes/s | vs local | actor start-up |",
        "|---|---|---|---|---|",
    ]
    for name in ("local", "local, 1 torch thread", "ray, 1 worker", "ray, 2 workers"):
        r = e[name]
        startup = "-" if name.startswith("local") else f"{r['startup_s']:.1f} s"
        lines.append(
            f"| {name} | {r['best_s']:.2f} s | {r['images_per_s']:.0f} | {r['best_s'] / local:.2f}x | {startup} |"
        )
    lines += [
        "",
        "Targets: 1 Ray worker within 1.3x of local; 2 workers faster than 1 on this 2-core machine. "
        f"Engine overhead proper (1 Ray worker vs local with the same single thread): "
        f"{e['ray, 1 worker']['best_s'] / e['local, 1 torch thread']['best_s']:.2f}x. The machine is shared "
        "with other jobs, so repeats vary (all times are in scale.json).",
        "",
        "## Projected wall time (model: cases x passes / (per-worker throughput x workers x efficiency))",
        "",
        f"Per-worker throughput measured here: {p['per_worker_images_per_s']:.0f} image-passes/s (1 Ray worker, "
        "this CPU, "
        f"small CNN at 28 px); scaling efficiency measured with 2 workers: {p['efficiency_2_workers']:.2f}, "
        "assumed to hold at 8 and 64 workers. No GPU was available for this run: the rows below are for CPU "
        "workers like this one. For GPUs, replace the per-worker throughput by one measured on the GPU "
        "(same formula).",
        "",
        "| workers | 1,000,000 classification images, T = 20 MC passes |",
        "|---|---|",
    ]
    for row in p["rows"]:
        lines.append(f"| {row['workers']} | {_hours(row['classification_1M_T20_s'])} |")
    lines += [
        "",
        "Certified segmentation (10,000 images at n = 100 noisy passes) is not projected here: `medsure certify` "
        "does not run on Ray yet (see docs/scale.md).",
        "",
    ]
    MD_PATH.write_text("\n".join(lines))


def main_() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2, default=None)
    parser.add_argument("--work", default=None, help="folder for the shard folders, kept (default: a temporary one)")
    parser.add_argument("--report-only", action="store_true", help="rewrite scale.md from scale.json")
    parser.add_argument("--engine-only", action="store_true", help="rerun the engine part; streaming from scale.json")
    args = parser.parse_args()
    if args.child:
        _measure_child(*args.child)
        return
    if args.report_only:
        data = json.loads(JSON_PATH.read_text())
        write_report(data, data.get("command", ".venv/bin/python benchmarks/scale.py"))
        return
    from medsure.training.environment import describe_environment

    started = time.perf_counter()
    n = 1_000_000 if args.quick else 10_000_000
    if args.work is not None:  # kept: a rerun resumes the shard folders instead of writing them again
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        previous = json.loads(JSON_PATH.read_text())["streaming"] if args.engine_only else None
        data = {"streaming": previous or streaming(work, n), "engine": engine(work, args.quick)}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            data = {"streaming": streaming(work, n), "engine": engine(work, args.quick)}
    data["projection"] = project(data["engine"])
    data["wall_s"] = time.perf_counter() - started
    data["environment"] = describe_environment("cpu", wall_time_s=data["wall_s"])
    command = ".venv/bin/python benchmarks/scale.py" + (" --quick" if args.quick else "")
    if args.engine_only:  # the streaming numbers come from the previous full run's scale.json
        command = f"{command} --work DIR (streaming), then {command} --work DIR --engine-only (engine)"
    data["command"] = command
    JSON_PATH.write_text(json.dumps(data, indent=1, default=float) + "\n")
    write_report(data, command)
    print(MD_PATH.read_text())


if __name__ == "__main__":
    main_()
