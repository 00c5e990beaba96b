"""Where a run computes: device, bf16 and memory-format defaults, threads, determinism, RNG isolation.

Each setting is chosen here once and applied for the duration of a run only: the caller's global
torch state (RNG, thread count, deterministic flags) is the same after :func:`train` as before.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsure.validation import check_choice, check_int, input_error

# cuBLAS needs a fixed workspace for deterministic matrix products (CUDA >= 10.2; see the
# "Reproducibility" page of the PyTorch docs)
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; ``"cuda"`` without a GPU is an error."""
    check_choice("device", device, ("auto", "cpu", "cuda"))
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise input_error("device", device, "a device torch can see", "torch sees no CUDA device; use 'cpu'")
    return torch.device(device)


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX); Linux only."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_bf16(device: torch.device) -> bool:
    """bf16 autocast by default on CUDA with bf16 support and on CPUs with native bf16.

    Measured with benchmarks/train_speed.py on the project's CPU (AMD EPYC with AVX512-BF16):
    training throughput x1.3-1.8 (small CNN), x1.5 (U-Net), x1.9-2.1 (ResNets). CPUs without
    native bf16 emulate it slowly, so they stay in float32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def default_channels_last(device: torch.device) -> bool:
    """channels_last by default only on CUDA: on the project's CPU it sped up the small CNN but
    slowed ResNet-18 training (benchmarks/train_speed.py), so CPU runs keep NCHW."""
    return device.type == "cuda"


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (None: unchanged); restored after."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(check_int("num_threads", n, low=1, hint="or None for torch's setting"))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def deterministic_mode(device: torch.device, *, strict: bool = False) -> Iterator[None]:
    """Deterministic kernels inside the block; the caller's global settings are restored after.

    Parameters
    ----------
    device : the run's device; on CUDA ``CUBLAS_WORKSPACE_CONFIG`` is set (if unset) before any
        cuBLAS call, as deterministic cuBLAS requires
    strict : False asks for deterministic kernels where torch has them and *warns* on an
        operation without one (the default of every run); True *raises* there and also sets
        ``cudnn.deterministic`` (``TrainConfig.deterministic``, ``medsure train --deterministic``)
    """
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    previous_cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=not strict)
    torch.backends.cudnn.benchmark = False  # benchmark mode may pick another kernel each run
    if strict:
        torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous_cudnn


@contextlib.contextmanager
def isolated_run(device: torch.device, *, num_threads: int | None, strict_determinism: bool) -> Iterator[None]:
    """Everything a run changes globally, undone after: a forked torch RNG (CPU and the run's
    GPU), deterministic kernels and the thread count."""
    devices = [torch.cuda.current_device()] if device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=devices),
        deterministic_mode(device, strict=strict_determinism),
        torch_threads(num_threads),
    ):
        yield


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(start: Path) -> str | None:
    """The commit of the git checkout holding ``start`` (``+dirty`` when files differ), or None
    when there is no checkout or no git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=start,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def describe_environment(
    device: str | torch.device = "cpu",
    *,
    autocast: bool | None = None,
    num_threads: int | None = None,
    wall_time_s: float | None = None,
) -> dict[str, Any]:
    """What changes a benchmark's numbers, to be written beside them.

    Parameters
    ----------
    device : the device the numbers were computed on
    autocast : whether bf16 autocast was on (None: the run's default for ``device``,
        :func:`default_bf16`)
    num_threads : torch intra-op threads used (None: torch's current setting)
    wall_time_s : the benchmark's wall time, when known

    Returns
    -------
    dict with ``medsure_version``, ``git_commit`` (None outside a checkout; ``+dirty`` when
    tracked files differ from it), ``python``, ``torch``, ``numpy``, ``monai``, ``platform``,
    ``cpu_model``, ``cpu_count``, ``cpu_bf16`` (native bf16 instructions, which decide the
    training arithmetic by default), ``device`` (with the GPU name on CUDA), ``num_threads``,
    ``autocast_bf16``, ``wall_time_s``.
    """
    from medsure import __version__

    dev = torch.device(device)
    try:
        import monai

        monai_version: str | None = monai.__version__
    except ImportError:
        monai_version = None
    return {
        "medsure_version": __version__,
        "git_commit": _git_commit(Path(__file__).resolve().parent),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "monai": monai_version,
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_has_bf16(),
        "device": (f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else dev.type),
        "num_threads": num_threads if num_threads is not None else torch.get_num_threads(),
        "autocast_bf16": default_bf16(dev) if autocast is None else bool(autocast),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 3),
    }
