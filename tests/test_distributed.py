"""Data-parallel training with torchrun (medsure.training.distributed), 2 processes on CPU (gloo)."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from medsure.cli import main
from medsure.training.distributed import SINGLE_PROCESS, DistContext, rank_batches

# One training step of a model without batch norm through medsure's own step (train_epoch) on
# the process's part (rank_batches) of one global batch of 8; process 0 saves the weights.
STEP = textwrap.dedent(
    """
    import sys
    import torch
    from torch import nn
    from medsure.training.distributed import context, rank_batches
    from medsure.training.loop import Compute, train_epoch

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(8, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 3, (8,), generator=g)
    ctx = context()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    batches = rank_batches([torch.arange(8)] if len(sys.argv) < 3 else [torch.arange(int(sys.argv[2]))], ctx)
    train_epoch(
        ctx.wrap(model), optimizer, nn.functional.cross_entropy, images, labels, batches,
        task="classification", compute=Compute(torch.device("cpu"), False, False), augment=None,
        augment_generator=torch.Generator(),
    )
    if ctx.is_main:
        torch.save(model.state_dict(), sys.argv[1])
    """
)


def _torchrun(nproc: int, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDSURE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_rank_batches_split_every_global_batch() -> None:
    batches = [torch.arange(0, 8), torch.arange(8, 13), torch.arange(13, 16)]
    assert rank_batches(batches, SINGLE_PROCESS) == batches
    parts = [rank_batches(batches, DistContext(rank=r, world_size=2)) for r in range(2)]
    # the last batch (3 cases) cannot give 2 cases to each process: dropped in both
    assert [len(p) for p in parts] == [2, 2]
    for b in range(2):
        joined = torch.cat([parts[0][b], parts[1][b]])
        assert torch.equal(joined, batches[b])  # contiguous parts, together the global batch
    assert [len(x) for x in (parts[0][1], parts[1][1])] == [3, 2]


def test_two_process_step_equals_one_process_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    script = tmp_path / "step.py"
    script.write_text(STEP)
    _torchrun(2, str(script), str(tmp_path / "ddp.pt"))
    for argv in ([str(tmp_path / "single.pt")], [str(tmp_path / "half.pt"), "4"]):  # one process, in this one
        monkeypatch.setattr(sys, "argv", [str(script), *argv])
        with torch.random.fork_rng():  # the script seeds torch's global generator
            runpy.run_path(str(script), run_name="__main__")
    ddp, single, half = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("ddp", "single", "half"))
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-5, atol=1e-6)
    # the check can fail: a step on half of the batch moves the weights elsewhere
    assert any(not torch.allclose(half[n], single[n], atol=1e-4) for n in single)


RESUME = textwrap.dedent(
    """
    import sys
    from medsure.training import TrainConfig, train
    from medsure.training.datasets import dataset_record, load_splits

    record = dataset_record("pneumoniamnist", root=None, image_size=None, options={}, split_seed=0, max_samples=64)
    config = TrainConfig(model="small_cnn", epochs=3, batch_size=16, num_threads=1, dataset=record, dropout=0.2)

    def stop(epoch, entry):
        if epoch == int(sys.argv[2]):
            raise SystemExit(0)  # killed after this epoch's checkpoint

    train(config, load_splits(record), sys.argv[1], on_epoch_end=stop)
    """
)

TRAIN = ["train", "--dataset", "pneumoniamnist", "--model", "small_cnn", "--epochs", "3", "--threads", "1",
         "--max-samples", "64", "--batch-size", "16", "--dropout", "0.2"]  # fmt: skip


@pytest.mark.slow
def test_torchrun_train_records_processes_and_resumes(tmp_path: Path) -> None:
    # uninterrupted: medsure train --nproc 2 (which starts torchrun)
    assert main([*TRAIN, "--nproc", "2", "--out", str(tmp_path / "whole")]) == 0
    record = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert record["environment"]["processes"] == 2
    history = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    # interrupted after epoch 1 in 2 processes, then resumed by the CLI in 2 processes
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    _torchrun(2, str(script), str(tmp_path / "cut"), "1")
    assert len(json.loads((tmp_path / "cut" / "history.json").read_text())) == 1
    assert main([*TRAIN, "--nproc", "2", "--resume", "--out", str(tmp_path / "cut")]) == 0
    resumed = json.loads((tmp_path / "cut" / "history.json").read_text())
    for a, b in zip(history, resumed, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
    whole = torch.load(tmp_path / "whole" / "best.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)
    state_a, state_b = whole.get("model", whole), cut.get("model", cut)
    for name in state_a:
        if torch.is_tensor(state_a[name]):
            torch.testing.assert_close(state_a[name], state_b[name], rtol=1e-5, atol=1e-6)


def test_train_bad_nproc(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([*TRAIN, "--nproc", "0", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--nproc: got 0; expected an integer >= 1" in err
    assert not (tmp_path / "r").exists()
