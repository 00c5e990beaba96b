"""Ray as the engine of ``medsure predict --engine ray``: shards predicted by actors, resumable.

Each Ray actor loads the run(s) once and predicts whole shards; the driver owns the shard
folder's manifest (:class:`medsure.shards.ShardWriter`) and records every shard a worker wrote
(:func:`medsure.shards.write_shard_file`). The images go to Ray's object store once and every
worker reads them from shared memory. A shard's MC-dropout seed comes from ``--seed`` and the
shard index (as with the local engine), so the folder does not depend on how many workers ran or
which shard each one took: it equals the one the local engine writes with the same shard size.

Ray is an optional extra (``pip install 'medsure[ray]'``); without it ``--engine ray`` fails in
one line saying so.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from medsure.errors import MedsureError
from medsure.validation import input_error

INSTALL_HINT = "install it with: pip install 'medsure[ray]'"
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

        from medsure.training import load_run

        torch.set_num_threads(max(1, threads))
        self.runs = [load_run(r) for r in run_dirs]
        self.args = argparse.Namespace(**options)

    def ready(self) -> bool:
        return True

    def predict(self, dataset: Any, index: int, start: int, stop: int, split: str, folder: str) -> Any:
        from medsure.cli.predict import shard_prediction
        from medsure.shards import write_shard_file

        pred = shard_prediction(self.args, self.runs, dataset, split, index, start, stop)
        return write_shard_file(folder, index, pred)


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
    started_here = not ray.is_initialized()
    if started_here:
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

        for worker in actors:
            if queue:
                submit(worker)
        while running:
            (done,), _ = ray.wait(list(running), num_returns=1)
            worker = running.pop(done)
            try:
                entry = ray.get(done)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, MedsureError):  # a user mistake found in a worker: the same one line
                    raise type(cause)(str(cause)) from None
                raise
            if queue:
                submit(worker)
            yield entry
    finally:
        if started_here:
            ray.shutdown()
