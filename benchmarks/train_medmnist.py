"""ResNet-18 (28) on PneumoniaMNIST and BreastMNIST, official train/val/test splits, CPU.

Reference: MedMNIST v2 (Yang et al., Scientific Data 2023), Table 3, ResNet-18 (28), mean of
at least three runs — PneumoniaMNIST ACC 0.854 / AUC 0.944, BreastMNIST ACC 0.863 / AUC 0.901.
The paper trains 100 epochs (Adam, lr 1e-3, batch 128); this script trains fewer epochs under a
wall-clock budget (the run stays resumable: pass --resume to continue it later).

    .venv/bin/python benchmarks/train_medmnist.py --datasets breastmnist pneumoniamnist --epochs 40 4 --seeds 3 1 --budget-min 15 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import update_block  # noqa: E402

PAPER = {"pneumoniamnist": (0.854, 0.944), "breastmnist": (0.863, 0.901)}


def _sd(values) -> str:
    """' ± sd' over seeds (sample sd, ddof=1); nothing for a single seed, where it is undefined."""
    import numpy as np

    return f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""


class Budget(Exception):
    pass


def main() -> int:
    import numpy as np
    import torch

    from medsure.data import load_dataset, official_splits
    from medsure.predict import predict
    from medsure.training import TrainConfig, load_run, train
    from medsure.training.metrics import accuracy, auc

    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    parser.add_argument(
        "--epochs",
        type=int,
        nargs="+",
        default=[30, 4],
        help="epochs per dataset, in --datasets order (cosine schedule length)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1],
        help="number of seeds per dataset, in --datasets order (the paper averages >= 3 runs)",
    )
    parser.add_argument("--budget-min", type=float, default=12.0, help="per dataset and seed")
    parser.add_argument("--work", default="/tmp/medmnist_runs")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    def per_dataset(values: list[int], what: str) -> dict[str, int]:
        if len(values) not in (1, len(args.datasets)):
            parser.error(f"--{what} takes one value or one per dataset")
        return dict(zip(args.datasets, values * len(args.datasets) if len(values) == 1 else values))

    epochs_by_name, seeds_by_name = per_dataset(args.epochs, "epochs"), per_dataset(args.seeds, "seeds")
    rows = []
    for name in args.datasets:
        splits = official_splits(load_dataset(name))
        runs = []
        for seed in range(seeds_by_name[name]):
            config = TrainConfig(
                model="resnet18",
                epochs=epochs_by_name[name],
                batch_size=128,
                lr=1e-3,
                patience=0,
                monitor="auc",
                seed=seed,
                num_threads=args.threads,
                dataset={"name": name, "official_splits": True},
            )
            deadline = time.monotonic() + 60 * args.budget_min

            def stop_on_budget(epoch: int, record: dict) -> None:
                if time.monotonic() > deadline:
                    raise Budget

            out = Path(args.work) / f"{name}-resnet18-seed{seed}"
            started = time.perf_counter()
            stopped = False
            try:
                train(config, splits, out, resume=args.resume, on_epoch_end=stop_on_budget)
            except Budget:
                stopped = True
            minutes = (time.perf_counter() - started) / 60
            run = load_run(out)
            test = predict(run, splits["test"], batch_size=256)
            acc, roc = accuracy(test.logits, test.labels), auc(test.logits, test.labels)
            best_epoch = max(run.history, key=lambda h: h["val_auc"])["epoch"]
            runs.append((len(run.history), best_epoch, stopped, minutes, acc, roc))
            print(
                f"{name} seed {seed}: {len(run.history)} epochs ({'budget' if stopped else 'done'}), best val "
                f"epoch {best_epoch}, test ACC {acc:.3f} AUC {roc:.3f} (paper {PAPER[name]}), "
                f"{minutes:.1f} min",
                flush=True,
            )
        rows.append((name, runs))
    lines = [
        "### ResNet-18 (28) on MedMNIST (benchmarks/train_medmnist.py)",
        "",
        f"Command: `.venv/bin/python benchmarks/train_medmnist.py --datasets {' '.join(args.datasets)} "
        f"--epochs {' '.join(map(str, args.epochs))} --seeds {' '.join(map(str, args.seeds))} "
        f"--budget-min {args.budget_min:g} --threads {args.threads}` — official splits, "
        "AdamW lr 1e-3 with cosine decay, batch 128, flips + shifts, bf16 autocast (default on "
        "this CPU), best epoch by val AUC, evaluated on the official test split; "
        f"torch {torch.__version__}, {args.threads} CPU thread(s) on a machine shared with other jobs. "
        "Paper: MedMNIST v2 Table 3, ResNet-18 (28), 100 epochs, mean of >= 3 runs.",
        "",
        "Seeds 0..n-1 (weights, shuffling, augmentation); ACC and AUC are mean ± sample sd over seeds, "
        "each seed's model evaluated at its best validation epoch.",
        "",
        "| dataset | seeds | epochs run | best epochs | stopped by budget | minutes / seed | test ACC | test AUC "
        "| paper ACC | paper AUC | gap ACC / AUC (points) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in rows:
        epochs, best, stopped, minutes, accs, aucs = zip(*runs)
        (pa, pr), acc, roc = PAPER[name], float(np.mean(accs)), float(np.mean(aucs))
        lines.append(
            f"| {name} | {len(runs)} | {'/'.join(map(str, epochs))} | {'/'.join(map(str, best))} "
            f"| {'yes' if any(stopped) else 'no'} | {np.mean(minutes):.1f} "
            f"| {acc:.3f}{_sd(accs)} | {roc:.3f}{_sd(aucs)} | {pa} | {pr} "
            f"| {100 * (acc - pa):+.1f} / {100 * (roc - pr):+.1f} |"
        )
    if not args.no_write:
        update_block("training:medmnist", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
