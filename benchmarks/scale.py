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
3. Certification on Ray. ``medsure certify`` (SegCertify, n0 = 10, n = 100) of a few MSD lung
   test images with the test suite's cached U-Net (48 px): local vs ``--engine ray`` with 1 and 2
   workers, after start-up; per-image seconds.
4. MC dropout seeded per case vs the former global-RNG dropout (same model, data and passes),
   the price of samples that do not depend on batch, shard or worker.
5. Projection. Wall time = cases x passes / (per-worker throughput x workers x scaling
   efficiency); throughput measured here on this CPU (per worker: 1 Ray worker), efficiency from
   the 2-worker run. GPU throughput is not measured here (no GPU in this environment): the
   projected rows use this CPU's per-worker throughput and say so.

``--only conformal certify ...`` reruns those parts; the others are taken from scale.json (the
report says which run measured what).
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


def streaming(work: Path, n: int, kinds: tuple[str, ...] = ("conformal", "segmentation")) -> dict:
    out = {}
    for kind, writer, label in (
        ("conformal", lambda f: write_classification(f, n), f"{n:,} x 10, shards of {SHARD:,}"),
        ("segmentation", write_segmentation, "2,000 x 256 x 256, 2 classes, shards of 50 images"),
    ):
        if kind not in kinds:
            continue
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
    """Plain ``medsure predict`` vs ``--engine ray`` with 1 and 2 workers, every process at one torch
    thread: a Ray instance with as many CPUs as workers gives each actor ``cpus // workers = 1``
    thread, and the plain command runs with ``torch.set_num_threads(1)``. One thread per worker
    also keeps the comparison meaningful on a machine shared with other jobs, where two OpenMP
    threads that wait on each other can be ten times slower than one."""
    import ray
    import torch

    from medsure.cli import main
    from medsure.cli._engine import TIMINGS
    from medsure.training.datasets import dataset_record, load_whole

    from realpreds import trained_run

    run = str(trained_run("pneumoniamnist").run_dir)
    base = ["predict", "--run", run, "--dataset", "pneumoniamnist", "--split", "all", "--shard-size", "500"]
    base += ["--mc-samples", str(PASSES)]
    record = dataset_record("pneumoniamnist", root=None, image_size=28, options={}, split_seed=0, max_samples=None)
    n_images = len(load_whole(record))
    results: dict = {"n_images": n_images, "torch_threads": 1}
    repeats = 1 if quick else 2
    threads = torch.get_num_threads()
    env = {"env_vars": {"MEDSURE_NO_PROGRESS": "1"}}

    def measure(name: str, extra: list[str]) -> None:
        times, startups, busy = [], [], []
        for r in range(repeats):
            folder = Path(tempfile.mkdtemp(dir=work)) / f"engine-{name.replace(' ', '').replace(',', '')}-{r}"
            TIMINGS.clear()
            t = time.perf_counter()
            code = main([*base, *extra, "--out", str(folder)])
            elapsed = time.perf_counter() - t
            if code != 0:
                raise RuntimeError(f"predict failed: {name}")
            startups.append(TIMINGS.get("startup_s", 0.0))
            busy.append(TIMINGS.get("worker_busy_s", 0.0))
            times.append(elapsed - startups[-1])  # after start-up
        best = int(np.argmin(times))
        results[name] = {
            "best_s": times[best],
            "times_s": times,
            "startup_s": startups[best],
            "worker_busy_s": busy[best],
            "images_per_s": n_images * PASSES / times[best],
        }
        print(name, results[name], flush=True)

    torch.set_num_threads(1)
    try:
        main([*base, "--out", str(Path(tempfile.mkdtemp(dir=work)) / "warmup")])  # imports, first calls
        measure("local", [])
        for workers in (1, 2):
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, runtime_env=env)
            try:
                label = f"ray, {workers} worker" + ("s" if workers > 1 else "")
                measure(label, ["--engine", "ray", "--workers", str(workers)])
            finally:
                ray.shutdown()
    finally:
        torch.set_num_threads(threads)
    return results


# ---- 3. certification on Ray -------------------------------------------------------------------

CERT_IMAGES = 40
CERT_N0, CERT_N = 10, 100


def certify_engine(work: Path, quick: bool) -> dict:
    """``medsure certify`` local vs Ray (1 and 2 workers) on the same images, one torch thread per
    process as in :func:`engine`: wall time after start-up, and the certification loop's own
    seconds per image (``seconds_per_image`` of cert.json: under Ray the actors' seconds)."""
    import ray
    import torch

    from medsure.cli import main
    from medsure.cli._engine import TIMINGS

    from realpreds import trained_run

    run = str(trained_run("msd_lung").run_dir)
    images = 4 if quick else CERT_IMAGES
    base = ["certify", "--run", run, "--n0", str(CERT_N0), "--n", str(CERT_N), "--batch-size", "55", "--device", "cpu"]
    results: dict = {"n_images": images, "n0": CERT_N0, "n": CERT_N, "model": "U-Net, MSD lung 48 px"}
    env = {"env_vars": {"MEDSURE_NO_PROGRESS": "1"}}
    threads = torch.get_num_threads()

    def measure(name: str, extra: list[str]) -> None:
        out = Path(tempfile.mkdtemp(dir=work)) / "cert.json"
        TIMINGS.clear()
        t = time.perf_counter()
        if main([*base, "--limit", str(images), *extra, "--out", str(out)]) != 0:
            raise RuntimeError(f"certify failed: {name}")
        startup = TIMINGS.get("certify_startup_s", 0.0)
        wall = time.perf_counter() - t - startup
        per_image = json.loads(out.read_text())["seconds_per_image"]
        results[name] = {"wall_s": wall, "startup_s": startup, "per_image_s": per_image}
        print(name, results[name], flush=True)

    torch.set_num_threads(1)
    try:
        main([*base, "--limit", "1", "--out", str(Path(tempfile.mkdtemp(dir=work)) / "warmup.json")])
        measure("local", [])
        for workers in (1, 2):
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, runtime_env=env)
            try:
                label = f"ray, {workers} worker" + ("s" if workers > 1 else "")
                measure(label, ["--engine", "ray", "--workers", str(workers), "--shard-size", "2"])
            finally:
                ray.shutdown()
    finally:
        torch.set_num_threads(threads)
    return results


# ---- 4. MC dropout seeded per case ---------------------------------------------------------------


def mc_seeding(quick: bool) -> dict:
    """Per-case seeded MC dropout (medsure.predict) vs dropout drawn from the global RNG per batch
    (the former implementation), same model, data, passes and threads; best of alternating repeats."""
    import torch

    from medsure.predict import _dropout_modules, _prepared, _stacked
    from medsure.training.environment import resolve_device

    from realpreds import split_datasets, trained_run

    out = {}
    device = resolve_device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every part of this script: one thread per process on a shared machine
    for name, label in (("pneumoniamnist", "small CNN, 28 px"), ("msd_lung", "U-Net, 48 px")):
        run = trained_run(name)
        data = split_datasets(name)["test"]
        data = data.subset(np.arange(min(len(data), 300 if quick else 600)))
        times: dict[str, list[float]] = {"global RNG": [], "per case": []}
        for _ in range(2 if quick else 5):
            for mode in times:
                with _prepared(run.model, device, mc=True):
                    if mode == "global RNG":  # dropout layers in training mode: torch's own masks
                        for module in _dropout_modules(run.model):
                            module.train()
                    t = time.perf_counter()
                    _stacked([None] * 5, run.model, data, 64, device, 0, "mc", None if mode == "global RNG" else 0)
                    times[mode].append(time.perf_counter() - t)
        out[name] = {"model": label, "images": len(data), "passes": 5, "threads": torch.get_num_threads()}
        out[name].update({mode: min(v) for mode, v in times.items()})
        print(name, out[name], flush=True)
    torch.set_num_threads(threads)
    return out


# ---- 5. projection and the report --------------------------------------------------------------


def project(eng: dict, cert: dict | None = None) -> dict:
    per_worker = eng["ray, 1 worker"]["images_per_s"]
    efficiency = eng["ray, 2 workers"]["images_per_s"] / (2 * per_worker)
    rows = []
    for workers in (1, 8, 64):
        eff = 1.0 if workers == 1 else efficiency
        cls = 1_000_000 * 20 / (per_worker * workers * eff)
        rows.append({"workers": workers, "efficiency": eff, "classification_1M_T20_s": cls})
    out = {"per_worker_images_per_s": per_worker, "efficiency_2_workers": efficiency, "rows": rows}
    if cert is not None:
        per_image = cert["ray, 1 worker"]["per_image_s"]  # the actor's certification loop, per image
        cert_eff = cert["ray, 1 worker"]["wall_s"] / (2 * cert["ray, 2 workers"]["wall_s"])
        out["certify_per_image_s"] = per_image
        out["certify_efficiency_2_workers"] = cert_eff
        for row in rows:
            eff = 1.0 if row["workers"] == 1 else min(cert_eff, 1.0)
            row["segmentation_10k_n100_s"] = 10_000 * per_image / (row["workers"] * eff)
    return out


def _hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


def write_report(data: dict, command: str) -> None:
    from _env import environment_line

    s, e, p = data["streaming"], data["engine"], data["projection"]
    measured = data.get("measured", {})

    def when(*parts: str) -> str:
        found = [measured[x] for x in parts if x in measured]
        if not found:
            return "Measured by an earlier run of this script (see scale.json)"
        return f"Measured {found[0]['date']} by `{found[0]['command']}`"

    local = e["local"]["best_s"]
    lines = [
        "# Scale: streaming memory, Ray engine overhead, projections",
        "",
        f"Command of the last run: `{command}` (wall time {data['wall_s'] / 60:.1f} min); parts not rerun keep "
        "the numbers of the run that measured them (named under each table; every number is in scale.json). "
        "`--only PART ...` reruns parts; `--report-only` rewrites this file.",
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
        f"Conformal row: {when('conformal')}. Segmentation row: {when('segmentation')}.",
        "",
        f"Peak RSS of the whole process (interpreter and imports included): conformal "
        f"{s['conformal']['peak_mb'] + s['conformal']['rss_start_mb']:.0f} MB, segmentation "
        f"{s['segmentation']['peak_mb'] + s['segmentation']['rss_start_mb']:.0f} MB. Reading and checking one "
        "shard of 500,000 cases peaks at about 260 MB and fitting keeps the 1-D calibration scores (80 MB). The "
        "exact coverage band of the 10,000,000 test cases (`medsure.conformal.quantile.coverage_band`, "
        "the same in the in-memory path) used to be the largest allocation, a beta-binomial pmf over m + 1 counts "
        "(about 0.5 GB, whole process 1,013 MB); it is now evaluated in chunks of 262,144 counts (one pass for "
        "the cumulative sums at chunk ends, then the two chunks holding the quantiles again), the same counts bit "
        "for bit (`tests/test_coverage_band.py`) in a few MB.",
        "",
        f"Coverage of the streamed APS sets: {s['conformal']['coverage']:.4f} at alpha 0.1 "
        f"({s['conformal']['n']:,} cases; calibration and test are the same folder here, so this is a sanity "
        "check, not a guarantee check).",
        "",
        "## Engine overhead (measured, this CPU)",
        "",
        f"`medsure predict --shard-size 500 --mc-samples {PASSES}` on {e['n_images']:,} PneumoniaMNIST images "
        "(28 px, small CNN), Ray instance started beforehand (`ray.init(num_cpus=workers)`), best of the repeats, "
        "after start-up (the actors' start-up, which imports medsure, loads the run and runs one warm-up batch "
        "in each, is the last column). Every process runs one torch thread: the plain command with "
        "`torch.set_num_threads(1)`, each actor in a Ray instance with as many CPUs as workers. On this "
        "machine, shared with other engineers' jobs (load average about 8 on 2 cores during the run), the plain "
        "command at torch's default of 2 threads took 223 s instead of 24 s in the aborted first attempt of "
        "this run (two OpenMP threads waiting on each other), which would have compared thread contention, "
        "not the engine.",
        "",
        "| engine | wall time | image-passes/s | vs local | actor start-up | actors predicting + writing |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("local", "ray, 1 worker", "ray, 2 workers"):
        r = e[name]
        startup = "-" if name.startswith("local") else f"{r['startup_s']:.1f} s"
        busy = "-" if not r.get("worker_busy_s") else f"{r['worker_busy_s']:.2f} s (all actors)"
        lines.append(
            f"| {name} | {r['best_s']:.2f} s | {r['images_per_s']:.0f} | {r['best_s'] / local:.2f}x | {startup} "
            f"| {busy} |"
        )
    lines += [
        "",
        f"Targets: 1 Ray worker within 1.3x of local (here {e['ray, 1 worker']['best_s'] / local:.2f}x); 2 workers "
        f"faster than 1 (here {e['ray, 1 worker']['best_s'] / e['ray, 2 workers']['best_s']:.2f}x the speed). "
        f"{when('engine')}. The machine is shared with other jobs, so repeats vary (all times are in "
        "scale.json).",
        "",
        "What the engine costs and what was changed: the first shard an actor predicted used to pay for importing "
        "medsure's prediction code (torch, MONAI, SciPy) and for the first forward pass (oneDNN primitive "
        "creation), both counted as prediction time; actors now do both while starting. Each actor also gets two "
        "shards queued, so it starts the next one without waiting for the driver's round trip (record the shard, "
        "rewrite the manifest, send the next call). The images go to the object store once; a call reads them "
        "zero-copy.",
        "",
    ]
    if "certify" in data:
        c = data["certify"]
        lines += [
            "## Certification on Ray (measured, this CPU)",
            "",
            f"`medsure certify --n0 {c['n0']} --n {c['n']}` (SegCertify, Holm) of {c['n_images']} MSD lung test "
            f"images, {c['model']} (the test suite's cached run), parts of 2 images, one torch thread per "
            "process, after start-up (wall time includes loading the data and the bootstrap summaries; seconds "
            "per image is the certification loop's own time, `seconds_per_image` of cert.json, under Ray summed "
            "over the actors):",
            "",
            "| engine | wall time | seconds per image | vs local | actor start-up |",
            "|---|---|---|---|---|",
        ]
        for name in ("local", "ray, 1 worker", "ray, 2 workers"):
            r = c[name]
            startup = "-" if name == "local" else f"{r['startup_s']:.1f} s"
            lines.append(
                f"| {name} | {r['wall_s']:.1f} s | {r['per_image_s']:.2f} | "
                f"{r['wall_s'] / c['local']['wall_s']:.2f}x | {startup} |"
            )
        lines += ["", f"{when('certify')}. The certificates are the same whichever engine ran.", ""]
    if "mc_seeding" in data:
        lines += [
            "## MC dropout seeded per case (measured, this CPU)",
            "",
            "Dropout masks now come from a counter-based hash of (seed, case index, pass, dropout call), so a "
            "case's MC samples do not depend on the batch, the shard size or the Ray worker. Price against the "
            "former masks drawn from torch's global RNG per batch (same model, images, 5 passes, best of "
            "alternating repeats):",
            "",
            "| model | images | global RNG | per case | ratio |",
            "|---|---|---|---|---|",
        ]
        for r in data["mc_seeding"].values():
            lines.append(
                f"| {r['model']} | {r['images']} | {r['global RNG']:.2f} s | {r['per case']:.2f} s | "
                f"{r['per case'] / r['global RNG']:.2f}x |"
            )
        lines += ["", f"{when('mc')}.", ""]
    lines += [
        "## Projected wall time (model: cases x passes / (per-worker throughput x workers x efficiency))",
        "",
        f"Per-worker throughput measured here: {p['per_worker_images_per_s']:.0f} image-passes/s (1 Ray worker, "
        "this CPU, "
        f"small CNN at 28 px); scaling efficiency measured with 2 workers: {p['efficiency_2_workers']:.2f}, "
        "assumed to hold at 8 and 64 workers (a pessimistic one when the 2 cores were shared with other jobs: "
        "then two workers do not get two cores). No GPU was available for this run: the rows below are for CPU "
        "workers like this one. For GPUs, replace the per-worker throughput by one measured on the GPU "
        "(same formula).",
        "",
    ]
    if "certify_per_image_s" in p:
        lines += [
            f"Certification: {p['certify_per_image_s']:.2f} s per image in a Ray actor (n0 + n = "
            f"{data['certify']['n0'] + data['certify']['n']} noisy passes of the 48 px U-Net, one CPU thread), "
            f"scaling efficiency from the wall times with 2 workers {p['certify_efficiency_2_workers']:.2f} "
            "(capped at 1 in the rows). Images are independent (per-image seeds) and each part is one call, so "
            "the rows assume the efficiency holds with more workers. The time of one image scales with its "
            "passes and pixels: for another model or size multiply by its measured time per image.",
            "",
            "| workers | 1,000,000 classification images, T = 20 MC passes | 10,000 segmentation images certified "
            "at n = 100 |",
            "|---|---|---|",
        ]
        for row in p["rows"]:
            lines.append(
                f"| {row['workers']} | {_hours(row['classification_1M_T20_s'])} | "
                f"{_hours(row['segmentation_10k_n100_s'])} |"
            )
    else:
        lines += ["| workers | 1,000,000 classification images, T = 20 MC passes |", "|---|---|"]
        for row in p["rows"]:
            lines.append(f"| {row['workers']} | {_hours(row['classification_1M_T20_s'])} |")
    lines.append("")
    MD_PATH.write_text("\n".join(lines))


PARTS = ("conformal", "segmentation", "engine", "certify", "mc")


def main_() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2, default=None)
    parser.add_argument("--work", default=None, help="folder for the shard folders, kept (default: a temporary one)")
    parser.add_argument("--report-only", action="store_true", help="rewrite scale.md from scale.json")
    parser.add_argument("--engine-only", action="store_true", help="= --only engine certify mc")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=None, help="rerun these; the rest from scale.json")
    args = parser.parse_args()
    if args.child:
        _measure_child(*args.child)
        return
    if args.report_only:
        data = json.loads(JSON_PATH.read_text())
        write_report(data, data.get("command", ".venv/bin/python benchmarks/scale.py"))
        return
    from medsure.training.environment import describe_environment

    only = ("engine", "certify", "mc") if args.engine_only else tuple(args.only or PARTS)
    data = json.loads(JSON_PATH.read_text()) if set(only) != set(PARTS) and JSON_PATH.is_file() else {}
    started = time.perf_counter()
    n = 1_000_000 if args.quick else 10_000_000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work is not None else Path(tmp)  # kept: a rerun resumes the shard folders
        work.mkdir(parents=True, exist_ok=True)
        kinds = tuple(k for k in ("conformal", "segmentation") if k in only)
        if kinds:
            data.setdefault("streaming", {}).update(streaming(work, n, kinds))
        if "engine" in only:
            data["engine"] = engine(work, args.quick)
        if "certify" in only:
            data["certify"] = certify_engine(work, args.quick)
        if "mc" in only:
            data["mc_seeding"] = mc_seeding(args.quick)
    data["projection"] = project(data["engine"], data.get("certify"))
    wall = time.perf_counter() - started
    data["environment"] = describe_environment("cpu", wall_time_s=wall)
    command = ".venv/bin/python benchmarks/scale.py" + (" --quick" if args.quick else "")
    command += f" --only {' '.join(only)}" if set(only) != set(PARTS) else ""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    measured = data.get("measured", {})
    for part in only:
        measured[part] = {"command": command, "date": stamp, "wall_s": wall}
    data["measured"] = measured
    data["wall_s"] = wall
    data["command"] = command
    JSON_PATH.write_text(json.dumps(data, indent=1, default=float) + "\n")
    write_report(data, command)
    print(MD_PATH.read_text())


if __name__ == "__main__":
    main_()


# --- bench-check hook (issue 16) ---
# ``python -m benchmarks.check`` reruns quick() and compares it with benchmarks/check_recorded.json
# (protocol: benchmarks/check.py). It uses only medsure's public API (medsure.shards, the streaming
# and in-memory estimators), not this file's helpers, so that changes to the study code above do
# not move it. No data needed: the sets are synthetic and seeded; memory is not measured here.

QUICK_TOLERANCE = {
    # streamed and in-memory results must agree bit for bit everywhere: 1 = identical, no tolerance
    "conformal_streamed_equals_in_memory": 0.0,
    "segmentation_streamed_equals_in_memory": 0.0,
    "mask_streamed_equals_in_memory": 0.0,
    # the numbers themselves: seeded numpy data; float64 sums in another BLAS / numpy may move the
    # last digits, and a quantile can move by one calibration case (1 / 20,000 of coverage)
    "conformal_threshold": 1e-6,
    "conformal_coverage": 1e-4,
    "conformal_mean_size": 1e-3,
    "segmentation_dice_mean": 1e-6,
    "segmentation_ece": 1e-6,
    "mask_lambda": 1e-6,
}


def quick() -> dict[str, float]:
    """Streamed vs in-memory on small seeded shard folders (seconds): APS conformal sets (20,000
    calibration and 20,000 test cases x 10 classes, shards of 5,000), segmentation metrics and a
    conformal mask (60 maps of 64 x 64, 2 classes, shards of 16). Whether each streamed result
    equals the in-memory one exactly (1 or 0), and the numbers."""
    import tempfile

    from medsure.artifact import make_predictions
    from medsure.conformal import SplitConformalClassifier
    from medsure.conformal.streaming import fit_streaming, score_streaming
    from medsure.segmentation.conformal_mask import ConformalMask
    from medsure.segmentation.evaluate import evaluate_segmentation
    from medsure.segmentation.streaming import fit_mask_streaming, segmentation_metrics_streaming
    from medsure.shards import ShardWriter, load_sharded, shard_ranges

    def classification(folder: Path, n: int, seed: int) -> None:
        names = [f"c{j}" for j in range(10)]
        ranges = shard_ranges(n, 5000)
        writer = ShardWriter(folder, task="classification", class_names=names, n_shards=len(ranges))
        for i, (a, b) in enumerate(ranges):
            rng = np.random.default_rng([seed, i])
            logits = (rng.standard_normal((b - a, 10)) * 2).astype(np.float32)
            p = np.exp(logits - logits.max(1, keepdims=True))
            labels = (np.cumsum(p / p.sum(1, keepdims=True), axis=1) > rng.random((b - a, 1))).argmax(1)
            ids = np.char.add(f"s{seed}-", np.arange(a, b).astype(str))
            writer.write(i, make_predictions(logits, labels=labels, ids=ids, class_names=names))
        writer.finish()

    def segmentation(folder: Path, n: int, seed: int) -> None:
        names = ["background", "lesion"]
        ranges = shard_ranges(n, 16)
        writer = ShardWriter(folder, task="segmentation", class_names=names, n_shards=len(ranges))
        yy, xx = np.mgrid[0:64, 0:64]
        for i, (a, b) in enumerate(ranges):
            rng = np.random.default_rng([seed, i])
            m = b - a
            cy, cx, r = rng.uniform(16, 48, m), rng.uniform(16, 48, m), rng.uniform(4, 14, m)
            dist = np.hypot(yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]) - r[:, None, None]
            noisy = -dist / 2 + rng.normal(0, 1.5, dist.shape)
            logits = np.stack([np.zeros_like(noisy), noisy], axis=1).astype(np.float32)
            ids = np.char.add(f"s{seed}-", np.arange(a, b).astype(str))
            pred = make_predictions(
                logits, masks=(dist < 0).astype(np.int64), ids=ids, task="segmentation", class_names=names
            )
            writer.write(i, pred)
        writer.finish()

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        classification(work / "cal", 20_000, 0)
        classification(work / "test", 20_000, 1)
        segmentation(work / "seg_cal", 60, 2)
        segmentation(work / "seg_test", 60, 3)
        streamed = fit_streaming(SplitConformalClassifier("aps", alpha=0.1, seed=0), work / "cal")
        streamed_score = score_streaming(streamed, work / "test")
        memory = SplitConformalClassifier("aps", alpha=0.1, seed=0).fit(load_sharded(work / "cal"))
        memory_score = memory.score(load_sharded(work / "test"))
        seg_streamed = segmentation_metrics_streaming(work / "seg_test")
        seg_memory = evaluate_segmentation(load_sharded(work / "seg_test"), uncertainty="entropy")
        mask_streamed = fit_mask_streaming(ConformalMask(alpha=0.1), work / "seg_cal")
        mask_memory = ConformalMask(alpha=0.1).fit(load_sharded(work / "seg_cal"))
    same = np.array_equal(streamed.thresholds_, memory.thresholds_) and all(
        streamed_score[k] == memory_score[k] for k in ("coverage", "mean_set_size")
    )
    out["conformal_streamed_equals_in_memory"] = float(same)
    out["conformal_threshold"] = float(np.asarray(streamed.thresholds_).ravel()[0])
    out["conformal_coverage"] = float(streamed_score["coverage"])
    out["conformal_mean_size"] = float(streamed_score["mean_set_size"])
    out["segmentation_streamed_equals_in_memory"] = float(
        seg_streamed["dice_mean"] == seg_memory.dice_mean and seg_streamed["ece"] == seg_memory.ece
    )
    out["segmentation_dice_mean"] = float(seg_streamed["dice_mean"])
    out["segmentation_ece"] = float(seg_streamed["ece"])
    out["mask_streamed_equals_in_memory"] = float(np.array_equal(mask_streamed.lambda_, mask_memory.lambda_))
    out["mask_lambda"] = float(np.asarray(mask_streamed.lambda_).ravel()[0])
    return out
