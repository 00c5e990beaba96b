"""ResNet-18 (28) on PneumoniaMNIST and BreastMNIST, official train/val/test splits, CPU.

Reference: MedMNIST v2 (Yang et al., Scientific Data 2023), Table 3, ResNet-18 (28), mean of
at least three runs — PneumoniaMNIST ACC 0.854 / AUC 0.944, BreastMNIST ACC 0.863 / AUC 0.901.
The paper trains 100 epochs (Adam, lr 1e-3, batch 128); this script trains fewer epochs under a
wall-clock budget (the run stays resumable: pass --resume to continue it later).

    .venv/bin/python benchmarks/train_medmnist.py --epochs 30 4 --budget-min 12 --work /tmp/medmnist_runs
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import update_block  # noqa: E402

PAPER = {"pneumoniamnist": (0.854, 0.944), "breastmnist": (0.863, 0.901)}


class Budget(Exception):
    pass


def main() -> int:
    import torch

    from medsure.data import load_dataset, official_splits
    from medsure.predict import predict
    from medsure.training import TrainConfig, load_run, train
    from medsure.training.metrics import accuracy, auc

    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    parser.add_argument("--epochs", type=int, nargs="+", default=[30, 4],
                        help="epochs per dataset, in --datasets order (cosine schedule length)")
    parser.add_argument("--budget-min", type=float, default=12.0, help="per dataset")
    parser.add_argument("--work", default="/tmp/medmnist_runs")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    rows = []
    if len(args.epochs) not in (1, len(args.datasets)):
        parser.error("--epochs takes one value or one per dataset")
    epochs_by_name = dict(zip(args.datasets, args.epochs * len(args.datasets)
                              if len(args.epochs) == 1 else args.epochs))
    for name in args.datasets:
        splits = official_splits(load_dataset(name))
        config = TrainConfig(model="resnet18", epochs=epochs_by_name[name], batch_size=128, lr=1e-3,
                             patience=0, monitor="auc", seed=0, num_threads=args.threads,
                             dataset={"name": name, "official_splits": True})
        deadline = time.monotonic() + 60 * args.budget_min

        def stop_on_budget(epoch: int, record: dict) -> None:
            if time.monotonic() > deadline:
                raise Budget

        out = Path(args.work) / f"{name}-resnet18"
        started = time.perf_counter()
        stopped = False
        try:
            train(config, splits, out, resume=args.resume, on_epoch_end=stop_on_budget)
        except Budget:
            stopped = True
        minutes = (time.perf_counter() - started) / 60
        run = load_run(out)
        test = predict(run.model, splits["test"], batch_size=256)
        acc, roc = accuracy(test.logits, test.labels), auc(test.logits, test.labels)
        epochs_done = len(run.history)
        best_epoch = max(run.history, key=lambda h: h["val_auc"])["epoch"]
        ref_acc, ref_auc = PAPER[name]
        rows.append((name, epochs_done, best_epoch, stopped, minutes, acc, roc, ref_acc, ref_auc))
        print(f"{name}: {epochs_done} epochs ({'budget' if stopped else 'done'}), best val epoch "
              f"{best_epoch}, test ACC {acc:.3f} AUC {roc:.3f} (paper {ref_acc} / {ref_auc}), "
              f"{minutes:.1f} min", flush=True)
    lines = [
        "### ResNet-18 (28) on MedMNIST (benchmarks/train_medmnist.py)",
        "",
        f"Command: `.venv/bin/python benchmarks/train_medmnist.py --datasets {' '.join(args.datasets)} "
        f"--epochs {' '.join(map(str, args.epochs))} "
        f"--budget-min {args.budget_min:g} --threads {args.threads}` — official splits, "
        "AdamW lr 1e-3 with cosine decay, batch 128, flips + shifts, bf16 autocast (default on "
        "this CPU), best epoch by val AUC, evaluated on the official test split; "
        f"torch {torch.__version__}, {args.threads} CPU thread(s) on a machine shared with other jobs. "
        "Paper: MedMNIST v2 Table 3, ResNet-18 (28), 100 epochs, mean of >= 3 runs.",
        "",
        "| dataset | epochs run | best epoch | stopped by budget | minutes | test ACC | test AUC "
        "| paper ACC | paper AUC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {e} | {b} | {'yes' if s else 'no'} | {m:.1f} | {a:.3f} | {r:.3f} | {pa} | {pr} |"
              for n, e, b, s, m, a, r, pa, pr in rows]
    if not args.no_write:
        update_block("training:medmnist", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
