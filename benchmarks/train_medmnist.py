"""ResNet-18 (28) on PneumoniaMNIST and BreastMNIST, official train/val/test splits, CPU.

Reference: MedMNIST v2 (Yang et al., Scientific Data 2023), Table 3, ResNet-18 (28), mean of
at least three runs — PneumoniaMNIST ACC 0.854 / AUC 0.944, BreastMNIST ACC 0.863 / AUC 0.901.
The paper trains 100 epochs (Adam, lr 1e-3, batch 128); this script trains fewer epochs under a
wall-clock budget (the run stays resumable: pass --resume to continue it later).

    .venv/bin/python benchmarks/train_medmnist.py --datasets breastmnist pneumoniamnist --epochs 40 4 --seeds 3 3 --budget-min 15 --threads 1

Each seed's run folder under ``--work`` keeps its test numbers (``bench.json``), so a killed
invocation rerun with the same arguments skips the seeds already done and resumes the one it was
training. Writes the ``training:medmnist`` block of benchmarks/results.md and
benchmarks/train_medmnist.json (per-seed values and the environment).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import describe_environment, environment_line
from train_speed import update_block

JSON_PATH = Path(__file__).resolve().parent / "train_medmnist.json"

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
    from medsure.utils.io import write_result_json

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
    autocast_used: set[bool] = set()
    for name in args.datasets:
        splits = official_splits(load_dataset(name))
        runs = []
        for seed in range(seeds_by_name[name]):
            out = Path(args.work) / f"{name}-resnet18-seed{seed}"
            done = out / "bench.json"
            if done.is_file() and not args.resume:  # this seed's numbers from an earlier invocation
                runs.append(tuple(json.loads(done.read_text())["row"]))
                autocast_used.add(bool(load_run(out).config["environment"]["bf16"]))
                print(f"{name} seed {seed}: reused {done}", flush=True)
                continue
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

            earlier_min = json.loads(done.read_text())["row"][3] if done.is_file() else 0.0
            started = time.perf_counter()
            stopped = False
            try:  # a killed invocation left a checkpoint: continue it (same weights as uninterrupted)
                train(config, splits, out, resume=(out / "checkpoint.pt").is_file(), on_epoch_end=stop_on_budget)
            except Budget:
                stopped = True
            minutes = earlier_min + (time.perf_counter() - started) / 60
            run = load_run(out)
            autocast_used.add(bool(run.config["environment"]["bf16"]))
            test = predict(run, splits["test"], batch_size=256)
            acc, roc = float(accuracy(test.logits, test.labels)), float(auc(test.logits, test.labels))
            best_epoch = max(run.history, key=lambda h: h["val_auc"])["epoch"]
            row = (len(run.history), best_epoch, stopped, minutes, acc, roc)
            done.write_text(json.dumps({"row": row}))
            runs.append(row)
            print(
                f"{name} seed {seed}: {len(run.history)} epochs ({'budget' if stopped else 'done'}), best val "
                f"epoch {best_epoch}, test ACC {acc:.3f} AUC {roc:.3f} (paper {PAPER[name]}), "
                f"{minutes:.1f} min",
                flush=True,
            )
        rows.append((name, runs))
    env = describe_environment(
        "cpu",
        autocast=autocast_used.pop() if len(autocast_used) == 1 else None,
        num_threads=args.threads,
        # every seed's training time, also of seeds reused from an earlier invocation
        wall_time_s=60 * sum(r[3] for _, runs in rows for r in runs),
    )
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
        "each seed's model evaluated at its best validation epoch; per-seed values in seed order. Wall time: "
        "the sum of the seeds' training times (minutes / seed is their mean).",
        "",
        environment_line(env),
        "",
        "| dataset | seeds | epochs run | best epochs | stopped by budget | minutes / seed | test ACC | test AUC "
        "| ACC per seed | AUC per seed | paper ACC | paper AUC | gap ACC / AUC (points) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in rows:
        epochs, best, stopped, minutes, accs, aucs = zip(*runs)
        (pa, pr), acc, roc = PAPER[name], float(np.mean(accs)), float(np.mean(aucs))
        lines.append(
            f"| {name} | {len(runs)} | {'/'.join(map(str, epochs))} | {'/'.join(map(str, best))} "
            f"| {'yes' if any(stopped) else 'no'} | {np.mean(minutes):.1f} "
            f"| {acc:.3f}{_sd(accs)} | {roc:.3f}{_sd(aucs)} "
            f"| {' / '.join(f'{a:.3f}' for a in accs)} | {' / '.join(f'{r:.3f}' for r in aucs)} | {pa} | {pr} "
            f"| {100 * (acc - pa):+.1f} / {100 * (roc - pr):+.1f} |"
        )
    if not args.no_write:
        update_block("training:medmnist", "\n".join(lines))
        record = {
            "command": lines[2].split("`")[1],
            "environment": env,
            "datasets": {
                name: {
                    "paper": {"acc": PAPER[name][0], "auc": PAPER[name][1]},
                    "per_seed": [
                        dict(zip(("epochs_run", "best_epoch", "stopped_by_budget", "minutes", "acc", "auc"), r))
                        for r in runs
                    ],
                }
                for name, runs in rows
            },
        }
        write_result_json(JSON_PATH, record)
    return 0


# ---- python -m benchmarks.check ----------------------------------------------------------------

QUICK_TOLERANCE = {  # absolute, when the environment differs: a 1-epoch model moves with bf16 vs fp32
    "breastmnist_1epoch_test_acc": 0.08,
    "breastmnist_1epoch_test_auc": 0.08,
}


def quick() -> dict[str, float]:
    """ResNet-18 (28) on BreastMNIST, 1 epoch of this script's recipe (seed 0, 1 thread): test ACC and AUC."""
    import tempfile

    from medsure.data import load_dataset, official_splits
    from medsure.predict import predict
    from medsure.training import TrainConfig, train
    from medsure.training.metrics import accuracy, auc

    splits = official_splits(load_dataset("breastmnist"))
    config = TrainConfig(
        model="resnet18",
        epochs=1,
        batch_size=128,
        lr=1e-3,
        patience=0,
        monitor="auc",
        seed=0,
        num_threads=1,
        dataset={"name": "breastmnist", "official_splits": True},
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = train(config, splits, Path(tmp) / "run").run
    test = predict(run, splits["test"], batch_size=256)
    return {
        "breastmnist_1epoch_test_acc": float(accuracy(test.logits, test.labels)),
        "breastmnist_1epoch_test_auc": float(auc(test.logits, test.labels)),
    }


if __name__ == "__main__":
    sys.exit(main())
