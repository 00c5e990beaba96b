"""Data-parallel training over several processes (``torchrun``), for :func:`medsure.training.train`.

``torchrun --nproc-per-node N -m medsure train ...`` (or ``medsure train --nproc N``, which
starts torchrun) runs the same command in N processes. :func:`context` reads torchrun's
environment and joins the process group (gloo on CPU, NCCL on CUDA); the trainer then

- wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel` for the training steps
  (gradients are averaged over the processes after every backward pass);
- draws every epoch's shuffled order from the same seeded generator in every process (the
  run's shuffle stream, checkpointed, so ``--resume`` continues it: per-epoch seeds, as a
  ``DistributedSampler`` with ``set_epoch``) and gives process ``r`` the ``r``-th contiguous
  part of each global batch (:func:`rank_batches`). With equal parts and a mean loss, one step
  of N processes on ``b / N`` cases each is one step of a single process on the ``b`` cases
  (without batch norm, whose statistics stay per process);
- writes files only in process 0 (``config.json``, checkpoints, ``history.json``) and waits at
  the end of every epoch, so a run killed at any point resumes like a single-process one;
- records ``"processes": N`` in the run record's environment.

Without torchrun's environment (``WORLD_SIZE`` unset or 1) nothing changes: :func:`context`
returns a single-process context whose hooks are no-ops.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from medsure.validation import check_int, input_error

__all__ = ["SINGLE_PROCESS", "DistContext", "context", "launch", "rank_batches"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes (1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes files and prints."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The device of this process: its own GPU (``LOCAL_RANK``) when training on CUDA."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` for the training steps: DistributedDataParallel when distributed (it shares
        the parameters with ``model``, which stays the one to save and validate)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sync_buffers(self, model: nn.Module) -> None:
        """Copy process 0's buffers (batch-norm running statistics, updated by each process on
        its own part of the batches) to every process, so all validate, stop early and save the
        same model."""
        if self.enabled:
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def mean(self, total: float, count: int) -> float:
        """``sum(total) / sum(count)`` over the processes (e.g. the epoch's training loss)."""
        if not self.enabled:
            return total / max(count, 1)
        values = torch.tensor([float(total), float(count)], dtype=torch.float64)
        torch.distributed.all_reduce(values)
        return float(values[0]) / max(float(values[1]), 1.0)


#: The context of a plain single-process run.
SINGLE_PROCESS = DistContext()


def context(device: torch.device | None = None) -> DistContext:
    """The context of this process, joining the process group when torchrun started it.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (set by torchrun); the backend is NCCL when
    ``device`` is CUDA, else gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dist = torch.distributed
    if not dist.is_initialized():
        cuda = device is not None and device.type == "cuda"
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        # a process that exits with its group alive can abort in gloo's threads ("terminate called
        # without an active exception"): every process leaves the group before the interpreter exits
        atexit.register(_leave_process_group)
    if rank != 0:
        os.environ["MEDSURE_NO_PROGRESS"] = "1"  # one progress bar, process 0's
    return DistContext(rank=rank, world_size=world, local_rank=local)


def _leave_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def rank_batches(batches: Iterable[torch.Tensor], ctx: DistContext) -> list[torch.Tensor]:
    """This process's part of every global batch: the ``rank``-th of ``world_size`` contiguous,
    near-equal parts. A batch whose parts would hold fewer than 2 cases is dropped in every
    process (batch norm cannot train on one case, and all processes must take the same steps)."""
    batches = list(batches)
    if not ctx.enabled:
        return batches
    out = []
    for batch in batches:
        if len(batch) < 2 * ctx.world_size:
            continue
        out.append(torch.tensor_split(batch, ctx.world_size)[ctx.rank])
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``medsure <argv>`` in ``nproc`` processes with torchrun on this machine; returns its
    exit code (``medsure train --nproc N``)."""
    check_int("--nproc", nproc, low=1)
    if shutil.which("torchrun") is None and not _has_torch_run():
        raise input_error("--nproc", nproc, "torch's torchrun launcher", "install torch with its distributed package")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={int(nproc)}",
        "-m",
        "medsure",
        *argv,
    ]
    return subprocess.call(command)


def _has_torch_run() -> bool:
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError:
        return False
    return True
