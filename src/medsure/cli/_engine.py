"""Ray as the engine of ``medsure predict --engine ray`` and ``medsure certify --engine ray``.

Predict: each Ray actor loads the run(s) once and predicts whole shards; the driver owns the shard
folder's manifest (:class:`medsure.shards.ShardWriter`) and records every shard a worker wrote
(:func:`medsure.shards.write_shard_file`). The images go to Ray's object store once and every
worker reads them from shared memory. MC dropout is seeded per case (``--seed`` and the case's
index in the split), so the folder does not depend on how many workers ran, which shard each one
took, or the shard size: it holds the numbers of the single file the local engine writes.

Certify: each actor holds the model (and denoiser) once and certifies ranges of images; every
range is written as a part file (``<out>.parts/part-00000.npz``, atomically) and the driver
merges the parts into the single-process ``cert.json``/``cert.npz`` (per-image seeds make the
certificates independent of the layout). A killed run resumes, skipping finished parts.

Ray is an optional extra (``pip install 'medsure[ray]'``); without it ``--engine ray`` fails in
one line saying so.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsure.errors import MedsureError
from medsure.validation import input_error

if TYPE_CHECKING:
    from medsure.certify import CertificationResults

INSTALL_HINT = "install it with: pip install 'medsure[ray]'"
#: Calls queued per actor (the next one starts without waiting for the driver).
IN_FLIGHT = 2
#: Seconds the last Ray run spent starting its actors (each loading the run), for benchmarks.
TIMINGS: dict[str, float] = {}


def require_ray() -> Any:
    """The ``ray`` module, or the one-line error that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise input_error(
            "--engine", "ray, but the ray package is not installed", "an installed ray", INSTALL_HINT
        ) from exc
    return ray


def _start_ray(ray: Any, args: argparse.Namespace) -> bool:
    """Connect to ``--address`` or start a local instance unless one is running; True when this
    call started it (the caller shuts it down)."""
    if ray.is_initialized():
        return False
    init: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
    if args.address is not None:
        init["address"] = args.address
    else:
        init["num_cpus"] = args.workers or os.cpu_count() or 1
    try:
        ray.init(**init, runtime_env={"env_vars": {"MEDSURE_NO_PROGRESS": "1"}})
    except ConnectionError as exc:  # --address auto without a running cluster
        raise input_error(
            "--address", args.address, "a running Ray cluster", f"start one with: ray start --head ({exc})"
        ) from exc
    return True


def _results_in_order(ray: Any, running: dict[Any, Any]) -> Iterator[tuple[Any, Any]]:
    """``(worker, result)`` of each finished task, in finishing order; a user mistake found in a
    worker is raised as the same one-line error."""
    while running:
        (done,), _ = ray.wait(list(running), num_returns=1)
        worker = running.pop(done)
        try:
            result = ray.get(done)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, MedsureError):
                raise type(cause)(str(cause)) from None
            raise
        yield worker, result


def check_engine_args(args: argparse.Namespace) -> None:
    """Bad engine options fail before anything is loaded or computed."""
    from medsure.validation import check_float, check_int

    if args.engine != "ray":
        for option, value in (("--address", args.address), ("--workers", args.workers)):
            if value is not None:
                raise input_error(option, value, f"{option} only with --engine ray")
        if args.gpus_per_worker:
            raise input_error("--gpus-per-worker", args.gpus_per_worker, "--gpus-per-worker only with --engine ray")
        return
    require_ray()
    if args.workers is not None:
        check_int("--workers", args.workers, low=1)
    check_float("--gpus-per-worker", args.gpus_per_worker, low=0.0)
    if args.address not in (None, "auto"):
        _check_reachable(args.address)


def _check_reachable(address: str) -> None:
    """HOST:PORT must accept a connection (Ray itself would retry for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise input_error("--address", address, "auto or HOST:PORT of a Ray head node (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise input_error(
            "--address",
            f"'{address}', which cannot be reached ({exc.strerror or exc})",
            "the HOST:PORT of a running Ray head node",
            "start one with: ray start --head",
            raw=True,
        ) from exc


class _Predictor:
    """A Ray actor: the run(s) loaded once, then one shard per call."""

    def __init__(self, run_dirs: list[str], options: dict[str, Any], threads: int) -> None:
        import torch

        # what predicting a shard imports (torch, MONAI, SciPy via medsure.predict) is imported here,
        # in start-up, not in the first shard
        import medsure.cli.predict
        import medsure.predict
        import medsure.shards  # noqa: F401
        from medsure.training import load_run

        torch.set_num_threads(max(1, threads))
        self.runs = [load_run(r) for r in run_dirs]
        self.args = argparse.Namespace(**options)
        self._warm_up()
        self.busy_s = 0.0  # seconds spent predicting and writing shards (the rest is the engine's)

    def _warm_up(self) -> None:
        """One forward pass of each model on a blank batch: the first call of a CPU/GPU kernel
        (oneDNN primitive creation, CUDA context and autotuning) belongs to start-up too."""
        import torch

        device = torch.device(self.args.device if self.args.device != "auto" else "cpu")
        for run in self.runs:
            spec = run.config["model"]
            size, channels = int(spec["image_size"]), int(spec["in_channels"])
            net = run.model.to(device).eval()
            with torch.no_grad():
                net(torch.zeros(min(self.args.batch_size, 64), channels, size, size, device=device))

    def ready(self) -> bool:
        return True

    def busy(self) -> float:
        return self.busy_s

    def predict(self, dataset: Any, index: int, start: int, stop: int, split: str, folder: str) -> Any:
        from medsure.cli.predict import shard_prediction
        from medsure.shards import write_shard_file

        started = time.perf_counter()
        pred = shard_prediction(self.args, self.runs, dataset, split, index, start, stop)
        entry = write_shard_file(folder, index, pred)
        self.busy_s += time.perf_counter() - started
        return entry


def ray_predict_shards(
    args: argparse.Namespace,
    pending: list[int],
    ranges: list[tuple[int, int]],
    dataset: Any,
    split: str,
    folder: os.PathLike | str,
) -> Iterator[Any]:
    """Predict the shards ``pending`` on Ray actors; yield each written shard's
    :class:`~medsure.shards.ShardEntry` as it finishes (in finishing order)."""
    ray = require_ray()
    started_here = _start_ray(ray, args)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, min(args.workers or cpus, len(pending) or 1))
        gpus = float(args.gpus_per_worker or 0.0)
        options = {**vars(args), "device": "cuda" if gpus > 0 else "cpu"}
        options.pop("func", None)
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(_Predictor)
        threads = max(1, cpus // workers) if args.address is None else 1
        run_dirs = [str(r) for r in args.run]
        started = time.perf_counter()
        actors = [actor.remote(run_dirs, options, threads) for _ in range(workers)]
        data = ray.put(dataset)
        ray.get([a.ready.remote() for a in actors])  # every actor has loaded the run
        TIMINGS["startup_s"] = time.perf_counter() - started
        folder = str(folder)
        queue = list(pending)
        running: dict[Any, Any] = {}

        def submit(worker: Any) -> None:
            index = queue.pop(0)
            start, stop = ranges[index]
            running[worker.predict.remote(data, index, start, stop, split, folder)] = worker

        # two shards queued per actor: an actor runs its calls one after the other, so it starts
        # the next shard as soon as it finishes one instead of waiting for the driver's round trip
        for _ in range(IN_FLIGHT):
            for worker in actors:
                if queue:
                    submit(worker)
        for worker, entry in _results_in_order(ray, running):
            if queue:
                submit(worker)
            yield entry
        TIMINGS["worker_busy_s"] = float(sum(ray.get([a.busy.remote() for a in actors])))
    finally:
        if started_here:
            ray.shutdown()


# ---- medsure certify --engine ray ---------------------------------------------------------------

PARTS_IDENTITY = "parts.json"


def parts_folder(out: os.PathLike | str) -> Path:
    """Where ``medsure certify --engine ray --out OUT`` keeps its per-range parts: ``OUT.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def part_name(index: int) -> str:
    return f"part-{index:05d}.npz"


class _Certifier:
    """A Ray actor: the run (and denoiser) loaded once, then one range of images per call."""

    def __init__(self, run_dir: str, denoiser_dir: str | None, sigma: float, device: str, threads: int) -> None:
        import torch

        from medsure.training import load_run

        torch.set_num_threads(max(1, threads))
        run = load_run(run_dir)
        self.device = torch.device(device)
        net = run.model.to(self.device).eval()
        self.model: Any = net
        if denoiser_dir is not None:
            from medsure.denoise import load_denoiser

            self.model = load_denoiser(denoiser_dir).to(self.device).smoothing_model(net, sigma)

    def ready(self) -> bool:
        return True

    def certify(self, data: Any, index: int, start: int, stop: int, settings: dict[str, Any], folder: str) -> str:
        from medsure.certify import evaluate_certification

        images, targets, ids, class_names, task = data
        results = evaluate_certification(
            self.model,
            images[start:stop],
            None if targets is None else targets[start:stop],
            task=task,
            class_names=class_names,
            ids=ids[start:stop],
            index_offset=start,  # image i's noise comes from (seed, i): the same as in one process
            n_boot=0,  # the intervals are computed once, over all images, by the driver
            n_overlays=0,
            device=self.device,
            **settings,
        )
        path = Path(folder) / part_name(index)
        write_certification_part(path, results)
        return str(path)


def write_certification_part(path: Path, results: Any) -> None:
    """One range's per-image certificates and metrics (no summary), written atomically."""
    import json

    import numpy as np

    from medsure.utils.io import atomic_write

    arrays: dict[str, Any] = {
        "ids": np.asarray(results.ids).astype(str),
        "certified": results.certified,
        "selected": results.selected,
        "counts": results.counts,
        "samples_used": results.samples_used,
        "seconds": np.asarray(results.seconds_per_image * len(results.ids)),
        "settings": np.asarray(json.dumps({"n0": results.n0, "n": results.n, "keys": list(results.per_label)})),
    }
    if results.task == "classification":
        arrays["radius"] = np.asarray(results.radius, dtype=np.float64)
        arrays["p_lower"] = np.asarray(results.p_lower, dtype=np.float64)
    for key, values in results.per_label.items():
        arrays[f"per_label:{key}"] = values
    for key, values in results.per_image_rates.items():
        arrays[f"rate:{key}"] = values
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


def _read_part(path: Path) -> dict[str, Any] | None:
    """A part's arrays, or None when it is missing or unreadable (it is certified again)."""
    import json
    import zipfile

    import numpy as np

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["settings"] = json.loads(str(arrays["settings"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return arrays


def merge_certification_parts(
    parts: list[dict[str, Any]],
    *,
    task: str,
    class_names: list[str],
    targets: Any,
    images: Any,
    sigma: float,
    alpha: float,
    tau: float,
    correction: str,
    sequential: bool,
    seed: int,
    selection: str = "split",
    sequential_settings: dict[str, Any] | None = None,
    n_boot: int = 1000,
    n_overlays: int = 4,
) -> CertificationResults:
    """The :class:`~medsure.certify.CertificationResults` of the whole set from its parts (in
    order): per-image arrays concatenated, summaries over all images computed as
    :func:`~medsure.certify.evaluate_certification` does (same bootstrap seed), so the merged
    ``cert.json``/``cert.npz`` equal the single-process ones (wall time aside)."""
    import numpy as np

    from medsure.certify.evaluate import CertificationResults, summarise_certification
    from medsure.certify.smoothing import segmentation_radius

    def cat(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts])

    first = parts[0]["settings"]
    n_images = int(sum(len(p["ids"]) for p in parts))
    results = CertificationResults(
        task=task,
        sigma=float(sigma),
        n0=int(first["n0"]),
        n=int(first["n"]),
        alpha=float(alpha),
        tau=float(tau) if task == "segmentation" else None,
        correction=correction if task == "segmentation" else None,
        sequential=bool(sequential),
        seed=int(seed),
        class_names=[str(c) for c in class_names],
        ids=cat("ids"),
        certified=cat("certified"),
        selected=cat("selected"),
        counts=cat("counts"),
        samples_used=cat("samples_used"),
        radius=segmentation_radius(sigma, tau) if task == "segmentation" else cat("radius"),
        p_lower=None if task == "segmentation" else cat("p_lower"),
        targets=None if targets is None else np.asarray(targets).astype(np.int64),
        seconds_per_image=float(sum(float(p["seconds"]) for p in parts)) / max(n_images, 1),
        overlay_images=np.asarray(images)[: max(0, n_overlays)].copy() if n_overlays else None,
        selection=selection,
        sequential_settings=sequential_settings,
    )
    rates = [k.split(":", 1)[1] for k in parts[0] if k.startswith("rate:")]
    results.per_image_rates = {key: cat(f"rate:{key}") for key in rates}
    if task == "segmentation" and results.targets is not None:
        results.per_label = {key: cat(f"per_label:{key}") for key in first["keys"]}
    return summarise_certification(results, n_boot=n_boot)


def ray_certify(
    args: argparse.Namespace,
    dataset: Any,
    count: int,
    task: str,
    settings: dict[str, Any],
    identity: dict[str, Any],
) -> CertificationResults:
    """Certify the first ``count`` images of ``dataset`` on Ray actors, range by range
    (``--shard-size`` images each), resumably; return the merged results.

    ``settings`` are :func:`~medsure.certify.evaluate_certification`'s smoothing keywords;
    ``identity`` what makes a parts folder this command's (another one is refused, not mixed).
    """
    import json

    from medsure.certify.evaluate import sequential_settings
    from medsure.shards import shard_ranges
    from medsure.utils.io import atomic_write
    from medsure.utils.progress import progress

    ray = require_ray()
    folder = parts_folder(args.out)
    check_parts_folder(args.out, identity)
    ranges = shard_ranges(count, args.shard_size)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / PARTS_IDENTITY, "w") as handle:
        json.dump(identity, handle, indent=1, sort_keys=True)
    all_ids = [str(i) for i in dataset.ids[:count]]
    parts: dict[int, dict[str, Any]] = {}
    for i, (start, stop) in enumerate(ranges):
        part = _read_part(folder / part_name(i))
        if part is not None and part["ids"].tolist() == all_ids[start:stop]:  # else certified again
            parts[i] = part
    pending = [i for i in range(len(ranges)) if i not in parts]
    skipped = len(ranges) - len(pending)
    if pending:
        started_here = _start_ray(ray, args)
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            workers = max(1, min(args.workers or cpus, len(pending)))
            gpus = float(args.gpus_per_worker or 0.0)
            threads = max(1, cpus // workers) if args.address is None else 1
            actor = ray.remote(num_cpus=1, num_gpus=gpus)(_Certifier)
            started = time.perf_counter()
            denoiser = None if args.denoiser is None else str(Path(args.denoiser).resolve())
            device = "cuda" if gpus > 0 else "cpu"
            run_dir = str(Path(args.run).resolve())
            actors = [actor.remote(run_dir, denoiser, args.sigma, device, threads) for _ in range(workers)]
            targets = None if dataset.targets is None else dataset.targets[:count]
            names = [str(c) for c in dataset.class_names]
            data = ray.put((dataset.images[:count], targets, all_ids, names, task))
            ray.get([a.ready.remote() for a in actors])
            TIMINGS["certify_startup_s"] = time.perf_counter() - started
            queue = list(pending)
            running: dict[Any, Any] = {}

            def submit(worker: Any) -> None:
                index = queue.pop(0)
                start, stop = ranges[index]
                running[worker.certify.remote(data, index, start, stop, settings, str(folder))] = (worker, index)

            for _ in range(IN_FLIGHT):
                for worker in actors:
                    if queue:
                        submit(worker)
            bar = progress(total=len(pending), desc="certify parts")
            for (worker, index), path in _results_in_order(ray, running):
                part = _read_part(Path(path))
                if part is None:
                    raise MedsureError(f"certification part {path} could not be read back after writing")
                parts[index] = part
                bar.update(1)
                if queue:
                    submit(worker)
            bar.close()
        finally:
            if started_here:
                ray.shutdown()
    results = merge_certification_parts(
        [parts[i] for i in range(len(ranges))],
        task=task,
        class_names=[str(c) for c in dataset.class_names],
        targets=None if dataset.targets is None else dataset.targets[:count],
        images=dataset.images[:count],
        sigma=settings["sigma"],
        alpha=settings["alpha"],
        tau=settings["tau"],
        correction=settings["correction"],
        sequential=settings["sequential"],
        seed=settings["seed"],
        selection=settings.get("selection", "split"),
        sequential_settings=sequential_settings(
            settings["sequential"],
            settings.get("looks"),
            settings.get("round_size", 10),
            settings.get("futility", 0.0),
            settings.get("tolerance", 0.0),
        ),
    )
    TIMINGS["certify_skipped"] = float(skipped)
    return results


def check_parts_folder(out: os.PathLike | str, identity: dict[str, Any]) -> None:
    """A parts folder left by another certification (another run, split, seed, settings or
    range size) is refused in one line, before anything is computed."""
    import json

    folder = parts_folder(out)
    if folder.exists() and not folder.is_dir():
        raise input_error("--out", f"'{out}', whose parts path '{folder}' is a file", "a free path", raw=True)
    marker = folder / PARTS_IDENTITY
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except (OSError, ValueError):
            found = None
        if found != json.loads(json.dumps(identity)):
            raise input_error(
                "--out",
                f"'{out}', whose parts folder '{folder}' holds another certification",
                "the same run, split, settings and --shard-size to resume",
                "remove the folder or choose another --out",
                raw=True,
            )
