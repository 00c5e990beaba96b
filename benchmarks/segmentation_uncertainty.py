"""Segmentation uncertainty study (Mehrtash et al. 2020, IEEE TMI, on the data here).

Losses: cross-entropy, soft Dice, CE + Dice. Uncertainty: single model, deep ensemble of M
members, MC dropout (T passes of one member), TTA (the flips used in training and ±10° rotations of
one member, inverted before averaging). Data: JSRT (4 labels) and Kvasir-SEG with CVC-ClinicDB as a real shift, all at
64 px with medsure's small MONAI U-Net. Every member is trained with dropout p=0.1 so a member
also serves MC dropout; "single" is each member evaluated alone with dropout off (mean ± sd over
the M members). Training-seed spread (issue 16): MC dropout and TTA are run on each of the first
``--spread-members`` members (default 3; mean ± sd over those seeds), and besides the M-member
ensemble every leave-one-out (M-1)-member ensemble is scored (taken from the ensemble's stacked
member logits, no extra prediction; they share members, so their sd understates the spread of
independent ensembles).

Phases (each resumable; trained runs and predictions are cached under --work):
    python benchmarks/segmentation_uncertainty.py train   --dataset jsrt
    python benchmarks/segmentation_uncertainty.py predict --dataset jsrt
    python benchmarks/segmentation_uncertainty.py metrics --dataset jsrt
    python benchmarks/segmentation_uncertainty.py report
``all`` runs the four in order for the datasets given. ``report`` rewrites
benchmarks/segmentation_uncertainty.md from the metric files found, and
benchmarks/segmentation_uncertainty.json (every metric, per member seed, with the environment).
Each phase adds its wall time to ``settings.json``; the report's environment line gives their sum.
``quick()`` is the small subset that ``python -m benchmarks.check`` reruns.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from _env import describe_environment, environment_line  # noqa: E402

from medsure.artifact import Predictions, load_predictions, save_predictions  # noqa: E402
from medsure.segmentation.evaluate import evaluate_segmentation, image_scores  # noqa: E402
from medsure.segmentation.metrics import DicePredictor, dice_per_label, image_dice  # noqa: E402
from medsure.segmentation.shift import shift_auroc  # noqa: E402
from medsure.segmentation.uncertainty import image_uncertainty, uncertainty_maps  # noqa: E402
from medsure.tta import views_for_training  # noqa: E402
from medsure.utils.io import atomic_write_text, write_json, write_result_json  # noqa: E402

LOSSES = ("ce", "dice", "ce_dice")
DATASETS: dict[str, dict[str, Any]] = {
    "jsrt": {"load": {"image_size": 64}, "train": {"hflip": False, "vflip": False}, "shift": None},
    "kvasir": {"load": {"image_size": 64}, "train": {"hflip": True, "vflip": True}, "shift": "cvc"},
}
SPLIT_SEED = 0
MD_PATH = REPO / "benchmarks" / "segmentation_uncertainty.md"
JSON_PATH = REPO / "benchmarks" / "segmentation_uncertainty.json"


def data_root() -> Path:
    return Path(os.environ.get("MEDSURE_DATA_ROOT", REPO.parent / "shared" / "data"))


def load_splits(name: str):
    from medsure.data import load_dataset
    from medsure.training.splits import standard_splits

    ds = load_dataset(name, root=data_root(), **DATASETS[name]["load"])
    return standard_splits(ds, seed=SPLIT_SEED)


def run_dir(work: Path, name: str, loss: str, member: int) -> Path:
    return work / "runs" / f"{name}-{loss}-m{member}"


def phase_train(args, name: str) -> None:
    from medsure.training import TrainConfig, train

    splits = load_splits(name)
    train_ds = splits["train"]
    if args.train_limit and len(train_ds) > args.train_limit:
        # a seeded subset keeps CPU time bounded; recorded in settings.json
        keep = np.sort(np.random.default_rng(SPLIT_SEED).choice(len(train_ds), args.train_limit, replace=False))
        train_ds = train_ds.subset(keep)
    for loss in args.losses:
        for member in range(args.members):
            out = run_dir(args.work, name, loss, member)
            if (out / "best.pt").is_file() and (out / "done").is_file():
                continue
            config = TrainConfig(
                model="unet",
                epochs=args.epochs,
                batch_size=16,
                lr=3e-3,
                dropout=0.1,
                width=args.width,
                loss=loss,
                monitor="dice",
                patience=args.patience,
                seed=member,
                device="cpu",
                **DATASETS[name]["train"],
                dataset={"name": name, "options": DATASETS[name]["load"], "split_seed": SPLIT_SEED},
            )
            start = time.time()
            train(config, {"train": train_ds, "val": splits["val"]}, out, resume=(out / "checkpoint.pt").is_file())
            (out / "done").write_text(f"{time.time() - start:.1f}\n")
            print(f"[train] {name} {loss} member {member}: {time.time() - start:.0f} s", flush=True)


def _pred_path(work: Path, name: str, loss: str, method: str, split: str) -> Path:
    return work / "preds" / f"{name}-{loss}-{method}-{split}.npz"


def _spread_members(args) -> int:
    """How many members get their own MC-dropout and TTA predictions (the seeds of those rows)."""
    return max(1, min(args.spread_members, args.members))


def methods(members: int, spread: int) -> list[str]:
    """Every scored method key, in table order: singles, the M-member ensemble, its leave-one-out
    (M-1)-member ensembles (when M >= 3), then MC dropout and TTA per spread member."""
    out = [f"single{m}" for m in range(members)] + ["ensemble"]
    if members >= 3:
        out += [f"ensemble_lo{m}" for m in range(members)]
    return out + [f"mc_dropout{m}" for m in range(spread)] + [f"tta{m}" for m in range(spread)]


def leave_one_out(ensemble: Predictions, member: int) -> Predictions:
    """The ensemble without ``member``: exactly what ``predict_ensemble`` gives for the other members
    (it stacks the members' logits on the leading axis)."""
    from dataclasses import replace

    return replace(ensemble, logits=np.delete(ensemble.logits, member, axis=0))


def phase_predict(args, name: str) -> None:
    from medsure.data import load_dataset
    from medsure.predict import predict, predict_ensemble
    from medsure.training import load_run

    splits = load_splits(name)
    targets = {"cal": splits["cal"], "test": splits["test"]}
    shift_name = DATASETS[name]["shift"]
    if shift_name:
        targets["shift"] = load_dataset(shift_name, root=data_root(), **DATASETS[name]["load"])
    spread = _spread_members(args)
    # only views the members saw in training (JSRT is trained without flips: lateralised anatomy)
    views = views_for_training("segmentation", **DATASETS[name]["train"])
    for loss in args.losses:
        models = [load_run(run_dir(args.work, name, loss, m)) for m in range(args.members)]  # runs: model + record
        for split, ds in targets.items():
            # method -> (function, positional args, keyword args); run only when its file is missing
            jobs: dict[str, tuple] = {f"single{m}": (predict, (models[m], ds), {}) for m in range(args.members)}
            jobs["ensemble"] = (predict_ensemble, (models, ds), {})
            for m in range(spread):  # one MC-dropout / TTA model per training seed: their spread
                jobs[f"mc_dropout{m}"] = (predict, (models[m], ds), {"mc_samples": args.mc_samples})
                jobs[f"tta{m}"] = (predict, (models[m], ds), {"tta": views})
            for method, (fn, fn_args, kwargs) in jobs.items():
                path = _pred_path(args.work, name, loss, method, split)
                if not path.is_file():
                    save_predictions(path, fn(*fn_args, seed=0, **kwargs))
        print(f"[predict] {name} {loss} done", flush=True)


def _metrics(cal: Predictions, test: Predictions, shift: Predictions | None) -> dict:
    m = evaluate_segmentation(test, shift=shift, uncertainty="entropy", reduce="foreground_mean").to_dict()
    keep = {
        k: m[k]
        for k in (
            "dice_mean",
            "dice",
            "hd95",
            "ece",
            "ece_equal_mass",
            "mce",
            "ece_boundary",
            "segment_ece",
            "ueo",
            "dice_pred_corr",
            "dice_pred_pearson",
        )
    }
    # Dice predictor fitted on cal, scored on test (the deployable version)
    if cal.masks is None or test.masks is None:
        raise ValueError("the study's cal and test predictions must carry their masks")
    k = test.n_classes
    cal_maps = uncertainty_maps(cal)
    cal_u = image_uncertainty(cal_maps["entropy"], cal_maps["predicted"], reduce="foreground_mean")
    cal_d = image_dice(dice_per_label(cal_maps["predicted"], cal.masks, k))
    test_u = image_scores(test)
    test_maps = uncertainty_maps(test)
    test_d = image_dice(dice_per_label(test_maps["predicted"], test.masks, k))
    keep["dice_pred_mae"] = DicePredictor().fit(cal_u, cal_d).score(test_u, test_d)["mae"]
    if shift is not None:
        keep["shift_auroc"] = m["shift_auroc"]
        if test.has_samples:
            mi_in = image_uncertainty(test_maps["mutual_information"], test_maps["predicted"], reduce="foreground_mean")
            sm = uncertainty_maps(shift)
            mi_out = image_uncertainty(sm["mutual_information"], sm["predicted"], reduce="foreground_mean")
            keep["shift_auroc_mi"] = shift_auroc(mi_in, mi_out)
        if shift.masks is not None:
            shifted = evaluate_segmentation(shift, uncertainty="entropy").to_dict()
            keep["shift_dice"] = shifted["dice_mean"]
            keep["shift_ece"] = shifted["ece"]
            keep["shift_ece_boundary"] = shifted["ece_boundary"]
    return keep


def phase_metrics(args, name: str) -> None:
    has_shift = DATASETS[name]["shift"] is not None
    out_path = args.work / f"metrics-{name}.json"
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for loss in args.losses:
        for method in methods(args.members, _spread_members(args)):
            key = f"{loss}/{method}"
            if key in results:
                continue
            splits = ("cal", "test", "shift") if has_shift else ("cal", "test")
            if method.startswith("ensemble_lo"):
                member = int(method.removeprefix("ensemble_lo"))
                full = [load_predictions(_pred_path(args.work, name, loss, "ensemble", s)) for s in splits]
                loaded = [leave_one_out(p, member) for p in full]
            else:
                loaded = [load_predictions(_pred_path(args.work, name, loss, method, s)) for s in splits]
            results[key] = _metrics(loaded[0], loaded[1], loaded[2] if has_shift else None)
            write_json(out_path, results)
        print(f"[metrics] {name} {loss} done", flush=True)


# ---- markdown -----------------------------------------------------------------------------

COLUMNS = [
    ("dice_mean", "Dice"),
    ("ece", "ECE"),
    ("ece_equal_mass", "ECE (equal mass)"),
    ("ece_boundary", "boundary ECE"),
    ("segment_ece", "segment ECE"),
    ("ueo", "UEO"),
    ("dice_pred_corr", "ρ(u, Dice)"),
    ("dice_pred_mae", "Dice-pred MAE"),
]
SHIFT_COLUMNS = [
    ("shift_auroc", "shift AUROC (H)"),
    ("shift_auroc_mi", "shift AUROC (MI)"),
    ("shift_dice", "CVC Dice"),
    ("shift_ece", "CVC ECE"),
]


def _cell(values: list[float | None]) -> str:
    vals = np.array([np.nan if v is None else v for v in values], dtype=float)
    if np.all(np.isnan(vals)):
        return "–"
    if vals.size == 1:
        return f"{vals[0]:.4f}"
    # per-seed values beside the mean: a reader sees whether one member drives the spread
    return f"{np.nanmean(vals):.4f} ± {np.nanstd(vals, ddof=1):.4f} ({' / '.join(f'{v:.3f}' for v in vals)})"


def _group(results: dict, loss: str, prefix: str) -> list[dict]:
    """The results ``{loss}/{prefix}0``, ``{prefix}1``, ... in member order."""
    found: list[dict] = []
    while f"{loss}/{prefix}{len(found)}" in results:
        found.append(results[f"{loss}/{prefix}{len(found)}"])
    return found


def table(results: dict, members: int, shift: bool) -> str:
    cols = COLUMNS + (SHIFT_COLUMNS if shift else [])
    lines = ["| loss | method | " + " | ".join(c[1] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for loss in LOSSES:
        rows = []
        singles = _group(results, loss, "single")
        if singles:
            rows.append((f"single (mean ± sd of {len(singles)} seeds; per seed 0..{len(singles) - 1})", singles))
        if f"{loss}/ensemble" in results:
            rows.append((f"ensemble (all {len(singles)} members)", [results[f"{loss}/ensemble"]]))
        loo = _group(results, loss, "ensemble_lo")
        if loo:
            rows.append(
                (f"ensemble, leave-one-out {len(loo) - 1} of {len(loo)} (mean ± sd of {len(loo)}; shared members)", loo)
            )
        for prefix in ("mc_dropout", "tta"):
            group = _group(results, loss, prefix)
            if group:
                rows.append((f"{prefix} (mean ± sd over members 0..{len(group) - 1}, one seed each)", group))
            elif f"{loss}/{prefix}" in results:  # metric files of the earlier layout: member 0 only
                rows.append((f"{prefix} (member 0 only)", [results[f"{loss}/{prefix}"]]))
        for label, group in rows:
            lines.append(
                f"| {loss} | {label} | " + " | ".join(_cell([g.get(c[0]) for g in group]) for c in cols) + " |"
            )
    return "\n".join(lines)


def phase_report(args) -> None:
    blocks, metrics = [], {}
    for name in DATASETS:
        path = args.work / f"metrics-{name}.json"
        if path.is_file():
            results = json.loads(path.read_text())
            metrics[name] = results
            blocks.append(f"### {name}\n\n" + table(results, args.members, DATASETS[name]["shift"] is not None))
    settings = json.loads((args.work / "settings.json").read_text()) if (args.work / "settings.json").is_file() else {}
    wall = settings.get("wall_s", {})
    threads = {v.get("torch_threads") for v in settings.values() if isinstance(v, dict) and "torch_threads" in v}
    env = describe_environment(
        "cpu",
        num_threads=threads.pop() if len(threads) == 1 else args.threads,
        wall_time_s=sum(wall.values()) if wall else None,
    )
    write_result_json(JSON_PATH, {"settings": settings, "environment": env, "metrics": metrics})
    commands = "\n".join(v["command"] for v in settings.values() if isinstance(v, dict) and "command" in v)
    text = MD_TEMPLATE.format(
        environment=environment_line(env)
        + " (wall time: the sum of every phase's wall time recorded in `settings.json` under `wall_s`)",
        tables="\n\n".join(blocks) or "(no results yet)",
        commands=commands,
        settings=json.dumps(settings, indent=1),
        findings=FINDINGS_PLACEHOLDER,
    )
    if MD_PATH.is_file():
        old = MD_PATH.read_text()
        if "<!-- FINDINGS -->" in old:  # keep hand-written conclusions
            text = text.replace(FINDINGS_PLACEHOLDER, old.split("<!-- FINDINGS -->")[1].split("<!-- /FINDINGS -->")[0])
    atomic_write_text(MD_PATH, text)
    print(f"[report] wrote {MD_PATH}")


# ---- python -m benchmarks.check ----------------------------------------------------------------

QUICK_TOLERANCE = {  # absolute, when the environment differs (bf16 vs fp32 training moves a 2-epoch U-Net)
    "single_dice": 0.05,
    "single_ece": 0.02,
    "ensemble_dice": 0.05,
    "ensemble_ece": 0.02,
}


def quick() -> dict[str, float]:
    """JSRT, soft Dice loss (the study's worst-calibrated loss; segmentation_shift's quick() covers
    CE + Dice), a 2-member ensemble of 2-epoch U-Nets (seeds 0 and 1, 1 thread): test Dice and pixel
    ECE of member 0 alone and of the ensemble."""
    from medsure.predict import predict, predict_ensemble
    from medsure.training import TrainConfig, train

    splits = load_splits("jsrt")
    members = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (0, 1):
            config = TrainConfig(
                model="unet",
                epochs=2,
                batch_size=16,
                lr=3e-3,
                dropout=0.1,
                loss="dice",
                monitor="dice",
                patience=0,
                seed=seed,
                device="cpu",
                num_threads=1,
                **DATASETS["jsrt"]["train"],
                dataset={"name": "jsrt", "options": DATASETS["jsrt"]["load"], "split_seed": SPLIT_SEED},
            )
            members.append(train(config, {"train": splits["train"], "val": splits["val"]}, Path(tmp) / str(seed)).run)
    single = evaluate_segmentation(predict(members[0], splits["test"], seed=0), uncertainty="entropy").to_dict()
    ensemble = evaluate_segmentation(predict_ensemble(members, splits["test"], seed=0), uncertainty="entropy").to_dict()
    return {
        "single_dice": float(single["dice_mean"]),
        "single_ece": float(single["ece"]),
        "ensemble_dice": float(ensemble["dice_mean"]),
        "ensemble_ece": float(ensemble["ece"]),
    }


FINDINGS_PLACEHOLDER = "\n(conclusions are written after the tables are in)\n"

MD_TEMPLATE = """# Segmentation uncertainty study (Mehrtash et al. 2020 on the data here)

Generated by `benchmarks/segmentation_uncertainty.py` (tables) — conclusions below are written by
hand from these tables.

## Setup

{environment}

Exact commands (from the repository root), one per dataset:

```
{commands}
```

Settings recorded by the script (`settings.json` under `--work`):

```
{settings}
```

- Model: medsure `unet` (MONAI U-Net, base width `--width`), 64 × 64 px, dropout p = 0.1 in every member,
  AdamW lr 3e-3, batch 16, early stopping on validation Dice; CPU (2 shared cores).
- Splits: `medsure.training.splits.standard_splits(seed=0)` (train 50 % / val 15 % / cal 17.5 % /
  test 17.5 %; JSRT n = 247, Kvasir-SEG n = 998); CVC-ClinicDB (n = 609) is the shifted domain,
  predicted by the Kvasir models.
- Methods: *single* = each ensemble member alone, dropout off (mean ± sd over members, i.e. over
  training seeds 0..M-1); *ensemble* = softmax average of the M members; *ensemble, leave-one-out* =
  each (M-1)-member ensemble without one member (mean ± sd over the M of them; they share members,
  so their sd understates the spread of independent ensembles); *mc_dropout* = one member, T passes
  with dropout on, run for each of the first `--spread-members` members (mean ± sd over those
  training seeds); *tta* = the same members on identity, the flips used in training (Kvasir: h and
  v; JSRT: none, its anatomy is lateralised), ±10° rotations, each mapped back before averaging.
  Per-seed values follow each mean ± sd in brackets.
- Metrics on the test split: mean Dice over foreground labels; top-label pixel ECE over equal-width / equal-mass
  bins (15); boundary ECE = ECE inside the band of ±2 px around GT and predicted contours; segment
  ECE = binned gap between a predicted structure's mean confidence and its Dice; UEO = best Dice
  between {{entropy > t}} and the error map (Jungo & Reyes 2019); ρ(u, Dice) = Spearman correlation
  of image-level uncertainty (mean predictive entropy over predicted foreground) with per-image
  Dice (negative = useful); Dice-pred MAE = linear Dice-from-uncertainty predictor fitted on cal,
  scored on test; shift AUROC = image-level entropy (H) or mutual information (MI) separating
  Kvasir test images from CVC-ClinicDB images.

## Results

{tables}

## Findings
<!-- FINDINGS -->{findings}<!-- /FINDINGS -->
"""


def _as_all_command(argv: list[str], phase: str) -> str:
    """The command line with its phase replaced by ``all``: the phases split one run (each resumes
    from the cache), so that is the command that reproduces the numbers."""
    words = list(argv[1:])
    words[words.index(phase)] = "all"
    return " ".join(["python", argv[0], *words])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["train", "predict", "metrics", "report", "all"])
    parser.add_argument("--dataset", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--members", type=int, default=5, help="ensemble size M (default 5)")
    parser.add_argument("--epochs", type=int, default=30, help="maximum epochs per member")
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--width", type=int, default=None, help="U-Net base width (None: model default 16)")
    parser.add_argument("--mc-samples", type=int, default=10)
    parser.add_argument(
        "--spread-members",
        type=int,
        default=3,
        help="MC dropout and TTA on each of the first this many members (their seed spread; default 3)",
    )
    parser.add_argument(
        "--train-limit", type=int, default=0, help="train on a seeded subset of at most this many images (0: all)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "seg-uncertainty-study")
    args = parser.parse_args(argv)
    import torch

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MEDSURE_NO_PROGRESS", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    settings_path = args.work / "settings.json"
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    if args.phase in ("train", "all"):
        settings.update(
            {
                name: {
                    "members": args.members,
                    "epochs": args.epochs,
                    "width": args.width,
                    "patience": args.patience,
                    "mc_samples": args.mc_samples,
                    "spread_members": _spread_members(args),
                    "split_seed": SPLIT_SEED,
                    "train_limit": args.train_limit,
                    "member_seeds": list(range(args.members)),
                    "torch_threads": args.threads,
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "command": _as_all_command(sys.argv, args.phase),
                }
                for name in args.dataset
            }
        )
        write_json(settings_path, settings)
    for name in args.dataset:
        if args.phase in ("train", "all"):
            phase_train(args, name)
        if args.phase in ("predict", "all"):
            phase_predict(args, name)
        if args.phase in ("metrics", "all"):
            phase_metrics(args, name)
    if args.phase != "report":  # phase wall times add up to the study's wall time (environment line)
        settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
        wall = settings.setdefault("wall_s", {})
        key = f"{args.phase}:{'+'.join(args.dataset)}"
        wall[key] = round(wall.get(key, 0.0) + time.perf_counter() - started, 1)
        write_json(settings_path, settings)
    if args.phase in ("report", "all"):
        phase_report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
