"""Training of the diffusion denoiser: seeded, resumable, progress-barred.

A run folder holds ``config.json`` (what it was trained on, ``kind: "denoiser"``),
``checkpoint.pt`` (weights, optimiser and random state after the last finished epoch; written
atomically, read with ``weights_only=True``) and ``denoiser.pt`` (the weights). ``--resume``
continues from ``checkpoint.pt`` with the same random streams, so an interrupted run ends with
the weights an uninterrupted one would have.

Timesteps: a share ``focus`` of each batch's steps is drawn near the t* of the sigma grid
(:func:`~medsure.denoise.diffusion.sigma_to_timestep`, +-``focus_width`` steps), the rest uniformly
over the schedule; one-shot denoising only ever asks the network about those steps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medsure.data.base import ImageDataset
from medsure.denoise.diffusion import DiffusionDenoiser, build_unet, linear_alpha_bar, sigma_to_timestep
from medsure.training.checkpoint import load_checkpoint, save_checkpoint
from medsure.utils.io import atomic_write_text, with_version
from medsure.utils.progress import progress
from medsure.validation import check_float, check_int, input_error

__all__ = ["DenoiserConfig", "train_denoiser", "load_denoiser", "focused_timesteps"]

DENOISER_KIND = "denoiser"


@dataclass
class DenoiserConfig:
    """Settings of a denoiser run (saved whole in ``config.json``)."""

    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-4
    seed: int = 0
    sigmas: Sequence[float] = (0.12, 0.25, 0.5)
    focus: float = 0.8
    focus_width: int = 20
    num_train_timesteps: int = 1000
    channels: Sequence[int] = (32, 64, 64)
    hflip: bool = False
    dataset: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        check_int("epochs", self.epochs, low=1)
        check_int("batch_size", self.batch_size, low=1)
        check_float("lr", self.lr, low=0.0, closed="neither")
        check_float("focus", self.focus, low=0.0, high=1.0)
        check_int("focus_width", self.focus_width, low=0)
        for s in self.sigmas:
            check_float("sigmas", s, low=0.0, closed="neither")


def focused_timesteps(
    size: int, centres: Sequence[float], *, focus: float, width: int, num_steps: int, generator: torch.Generator
) -> torch.Tensor:
    """Training steps (size,) int64: a share ``focus`` within ``width`` of the ``centres``, the rest uniform."""
    uniform = torch.randint(0, num_steps, (size,), generator=generator)
    if not centres or focus <= 0:
        return uniform
    pick = torch.randint(0, len(centres), (size,), generator=generator)
    centre = torch.tensor([float(c) for c in centres], dtype=torch.float64)[pick]
    jitter = torch.randint(-width, width + 1, (size,), generator=generator).double()
    near = (centre + jitter).round().clamp(0, num_steps - 1).long()
    use_near = torch.rand(size, generator=generator) < focus
    return torch.where(use_near, near, uniform)


def _record(config: DenoiserConfig, ds: ImageDataset) -> dict[str, Any]:
    return with_version(
        {
            "kind": DENOISER_KIND,
            "torch_version": torch.__version__,
            "in_channels": int(ds.in_channels),
            "image_size": int(ds.image_size[0]),
            "train": {**asdict(config), "sigmas": list(config.sigmas), "channels": list(config.channels)},
            "data_provenance": ds.provenance,
        }
    )


def train_denoiser(
    config: DenoiserConfig, train_ds: ImageDataset, out_dir: str | Path, *, resume: bool = False
) -> Path:
    """Train a DDPM noise predictor on ``train_ds`` images; returns the run folder.

    Parameters
    ----------
    config : settings (seed, epochs, sigma grid to focus on, ...)
    train_ds : square images (N, H, W, C), uint8 or float in [0, 1]
    out_dir : run folder (created; an existing finished or different run is refused unless resuming)
    resume : continue from ``checkpoint.pt``
    """
    config.check()
    out = Path(out_dir)
    h, w = train_ds.image_size
    if h != w:
        raise input_error("dataset image size", f"{h}x{w}", "square images (pass --image-size)", raw=True)
    record = _record(config, train_ds)
    config_path = out / "config.json"
    if config_path.exists() and not resume:
        raise input_error("--out", f"'{out}', an existing run", "a new folder", "add --resume to continue it", raw=True)
    if resume and config_path.exists():
        old = json.loads(config_path.read_text(encoding="utf-8"))
        # epochs may grow on resume (train longer); every other setting must match
        same = {k: v for k, v in old.get("train", {}).items() if k != "epochs"} == {
            k: v for k, v in record["train"].items() if k != "epochs"
        }
        if not same or old.get("image_size") != record["image_size"]:
            raise input_error("--resume", f"run '{out}' with other settings", "the same settings as the run", raw=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path, json.dumps(record, indent=2) + "\n")

    gen = torch.Generator().manual_seed(int(config.seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.seed))
        unet = build_unet(train_ds.in_channels, tuple(config.channels))
    optimiser = torch.optim.AdamW(unet.parameters(), lr=config.lr)
    alpha_bar = linear_alpha_bar(config.num_train_timesteps).float()
    centres = [sigma_to_timestep(s, alpha_bar.double()) for s in config.sigmas]
    start_epoch = 0
    history: list[dict[str, Any]] = []
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        unet.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start_epoch = int(state["epoch"])
        history = list(state.get("history", []))
    images = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(train_ds.images), -1, 1)))
    x_all = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    n = x_all.shape[0]
    steps = math.ceil(n / config.batch_size)
    bar = progress(total=(config.epochs - start_epoch) * steps, desc="train denoiser")
    unet.train()
    for epoch in range(start_epoch, config.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(steps):
            idx = order[s * config.batch_size : (s + 1) * config.batch_size]
            x0 = 2.0 * x_all[idx] - 1.0
            if config.hflip:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            t = focused_timesteps(
                len(idx),
                centres,
                focus=config.focus,
                width=config.focus_width,
                num_steps=config.num_train_timesteps,
                generator=gen,
            )
            noise = torch.randn(x0.shape, generator=gen)
            ab = alpha_bar[t].view(-1, 1, 1, 1)
            x_t = ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise
            loss = F.mse_loss(unet(x_t, t.float()), noise)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
            bar.update(1)
        history.append({"epoch": epoch + 1, "loss": total / n})
        bar.set_postfix(loss=f"{total / n:.4f}")
        save_checkpoint(
            checkpoint,
            {
                "format": 1,
                "epoch": epoch + 1,
                "model": unet.state_dict(),
                "optimizer": optimiser.state_dict(),
                "generator": gen.get_state(),
                "history": history,
            },
        )
    bar.close()
    save_checkpoint(out / "denoiser.pt", {"format": 1, "epoch": config.epochs, "model": unet.state_dict()})
    atomic_write_text(out / "history.json", json.dumps(history, indent=2) + "\n")
    return out


def load_denoiser(run_dir: str | Path) -> DiffusionDenoiser:
    """The denoiser of a run folder written by :func:`train_denoiser`, in eval mode on CPU."""
    run = Path(run_dir)
    config_path = run / "config.json"
    if not config_path.is_file():
        raise input_error(
            "--denoiser", f"'{run}'", "a run folder of medsure train-denoiser (with config.json)", raw=True
        )
    try:
        record = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise input_error(f"--denoiser '{run}': config.json", str(exc), "valid JSON", raw=True) from exc
    if record.get("kind") != DENOISER_KIND:
        raise input_error(
            "--denoiser",
            f"'{run}', a run of kind {record.get('kind', 'model')!r}",
            "a denoiser run (medsure train-denoiser)",
            raw=True,
        )
    train = record["train"]
    unet = build_unet(int(record["in_channels"]), tuple(train["channels"]))
    weights = run / "denoiser.pt"
    state = load_checkpoint(weights if weights.is_file() else run / "checkpoint.pt")
    try:
        unet.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise input_error(
            f"weights in '{run}'", f"{type(exc).__name__}", "weights that fit config.json", raw=True
        ) from exc
    denoiser = DiffusionDenoiser(
        unet,
        in_channels=int(record["in_channels"]),
        image_size=int(record["image_size"]),
        num_train_timesteps=int(train["num_train_timesteps"]),
    )
    return denoiser.eval()
