"""Where a run computes: device, bf16 and memory-format defaults, threads, determinism, RNG isolation.

Each setting is chosen here once and applied for the duration of a run only: the caller's global
torch state (RNG, thread count, deterministic flags) is the same after :func:`train` as before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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
