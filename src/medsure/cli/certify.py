"""``medsure certify`` (randomized-smoothing certificates of a trained run) and
``medsure train-denoiser`` (the diffusion denoiser of denoised smoothing)."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from medsure.validation import check_float, check_int, input_error

_SEG_ONLY = "a segmentation run (it is a per-pixel option)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "certify",
        help="certify a run's predictions against L2 perturbations (randomized smoothing)",
        description="Randomized smoothing of a trained run on a split of its dataset: Cohen et al. (2019) "
        "CERTIFY for classifiers, SegCertify (Fischer et al. 2021) for segmenters, optionally behind a diffusion "
        "denoiser (--denoiser, Carlini et al. 2023). Writes certified Dice/accuracy, abstain rate and radius.",
    )
    p.add_argument("--run", required=True, help="run folder of medsure train")
    p.add_argument("--split", default="test", choices=("train", "val", "cal", "test"))
    p.add_argument("--denoiser", default=None, help="run folder of medsure train-denoiser (denoised smoothing)")
    p.add_argument("--sigma", type=float, default=0.25, help="noise std in [0, 1] image units (default 0.25)")
    p.add_argument(
        "--n0", type=int, default=None, help="selection passes (default 10 segmentation, 100 classification)"
    )
    p.add_argument(
        "--n", type=int, default=None, help="estimation passes (default 100 segmentation, 1000 classification)"
    )
    p.add_argument("--alpha", type=float, default=0.001, help="error probability of the certificates (default 0.001)")
    p.add_argument("--tau", type=float, default=None, help="segmentation: certify a pixel when p > tau (default 0.75)")
    p.add_argument(
        "--correction", default=None, choices=("holm", "bonferroni", "bh"), help="segmentation: across pixels (holm)"
    )
    p.add_argument("--sequential", action="store_true", help="segmentation: look at the counts, stop an image early")
    p.add_argument(
        "--round-size", type=int, default=None, help="--sequential: a look every N passes (default: --looks late)"
    )
    p.add_argument(
        "--looks",
        nargs="+",
        default=None,
        metavar="N",
        help="--sequential: estimation-pass counts at which to look, increasing and ending at --n, or 'late' "
        "(default: 4 looks from the first count at which a pixel can be certified)",
    )
    p.add_argument(
        "--futility",
        type=float,
        default=None,
        help="--sequential: stop waiting for pixels that cannot plausibly be certified by --n, at this budget "
        "(default 0.01; 0 off)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="--sequential: stop once the open pixels' expected further certifications are at most this share of "
        "each class's certified pixels (default 0.04, about a 0.005 certified-Dice cost on JSRT; 0: decide every "
        "pixel)",
    )
    p.add_argument(
        "--selection",
        default=None,
        choices=("split", "union"),
        help="segmentation: 'split' (n0 passes select the class, SegCertify; default) or 'union' (every pass "
        "counts, union bound over classes)",
    )
    p.add_argument("--limit", type=int, default=None, help="certify only the first N images of the split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="noisy copies per forward pass")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", required=True, help="output JSON (cert.json)")
    p.add_argument("--masks", default=None, help="segmentation: also write certified maps and counts (.npz)")
    p.add_argument("--report", default=None, help="also write an HTML report")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="ray: certify ranges of images on Ray actors (a local instance, or --address), each holding the "
        "model once; resumable (parts in OUT.parts); needs pip install 'medsure[ray]'",
    )
    p.add_argument("--address", default=None, help="Ray cluster: auto or HOST:PORT (default: start a local one)")
    p.add_argument("--workers", type=int, default=None, help="Ray actors, each holding the model once (default: CPUs)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per Ray actor (0: CPU)")
    p.add_argument(
        "--shard-size", type=int, default=None, metavar="N", help="--engine ray: images per part (default 8)"
    )
    p.set_defaults(func=run_certify)

    q = subparsers.add_parser(
        "train-denoiser",
        help="train a diffusion denoiser (DDPM) on a dataset's train split, for --denoiser",
        description="Train MONAI's DiffusionModelUNet as a DDPM noise predictor on the standard train split; "
        "seeded and resumable. Timesteps concentrate on those the sigma grid needs.",
    )
    q.add_argument("--dataset", required=True, help="dataset name, e.g. jsrt")
    q.add_argument("--root", default=None, help="data folder")
    q.add_argument("--option", action="append", metavar="KEY=VALUE", help="dataset option (repeatable)")
    q.add_argument("--image-size", type=int, default=None, help="resize images to SxS (as the model to certify)")
    q.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/cal/test split")
    q.add_argument("--max-samples", type=int, default=None, help="keep only N samples per split (quick trials)")
    q.add_argument("--epochs", type=int, default=20)
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--lr", type=float, default=2e-4)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--sigmas", type=float, nargs="+", default=[0.12, 0.25, 0.5], help="sigma grid to focus on")
    q.add_argument(
        "--channels", type=int, nargs="+", default=[32, 64, 64], help="U-Net channels per level (default 32 64 64)"
    )
    q.add_argument("--hflip", action="store_true", help="augment with left-right flips")
    q.add_argument("--threads", type=int, default=None, help="CPU threads")
    q.add_argument("--out", required=True, help="run folder to create")
    q.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    q.set_defaults(func=run_train_denoiser)


def _check_settings(args: argparse.Namespace, task: str) -> None:
    check_float("--sigma", args.sigma, low=0.0, closed="neither", hint="a standard deviation in [0, 1] image units")
    for name in ("n0", "n"):
        value = getattr(args, name)
        if value is not None:
            check_int(f"--{name}", value, low=1)
    check_float("--alpha", args.alpha, low=0.0, high=1.0, closed="neither")
    if args.tau is not None:
        check_float("--tau", args.tau, low=0.5, high=1.0, closed="neither", hint="a pixel is certified when p > tau")
    check_int("--batch-size", args.batch_size, low=1)
    if args.round_size is not None:
        check_int("--round-size", args.round_size, low=1)
    _check_sequential(args)
    if args.limit is not None:
        check_int("--limit", args.limit, low=1)
    if task == "classification":
        for option, given in (
            ("--tau", args.tau is not None),
            ("--correction", args.correction is not None),
            ("--sequential", args.sequential),
            ("--masks", args.masks is not None),
            ("--selection", args.selection is not None),
        ):
            if given:
                raise input_error(option, "with a classification run", _SEG_ONLY, raw=True)


def _check_sequential(args: argparse.Namespace) -> None:
    """--looks/--futility/--tolerance: values, and only with --sequential; fills in their defaults."""
    given = [f"--{name}" for name in ("looks", "futility", "tolerance") if getattr(args, name) is not None]
    if given and not args.sequential:
        raise input_error(given[0], "without --sequential", "--sequential (a sequential option)", raw=True)
    if args.looks is not None:
        if args.round_size is not None:
            raise input_error("--looks", "with --round-size", "one of them (both set the look schedule)", raw=True)
        if args.looks == ["late"]:
            args.looks = "late"
        else:
            try:
                looks = [int(v) for v in args.looks]
            except ValueError:
                raise input_error(
                    "--looks", " ".join(args.looks), "increasing integers ending at --n, or 'late'", raw=True
                ) from None
            n = 100 if args.n is None else args.n
            if any(b <= a for a, b in itertools.pairwise(looks)) or looks[0] < 1 or looks[-1] != n:
                raise input_error(
                    "--looks", " ".join(args.looks), f"increasing pass counts >= 1 ending at --n ({n})", raw=True
                )
            args.looks = looks
    if args.futility is not None and args.futility != 0:
        check_float("--futility", args.futility, low=0.0, high=1.0, closed="neither", hint="e.g. 0.01, or 0 (off)")
    if args.tolerance is not None:
        check_float("--tolerance", args.tolerance, low=0.0, high=1.0, hint="e.g. 0.04, or 0 (decide every pixel)")
    if args.sequential:
        args.looks = args.looks or ("rounds" if args.round_size is not None else "late")
        args.futility = 0.01 if args.futility is None else args.futility
        args.tolerance = 0.04 if args.tolerance is None else args.tolerance


def run_certify(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from medsure.cli._outputs import OutputPlan
    from medsure.training.run import read_record

    # settings and outputs are checked before any model or data is loaded
    record = read_record(Path(args.run))
    task = str(record["task"])
    _check_settings(args, task)
    _check_engine(args)
    plan = OutputPlan()
    out_path = plan.file("--out", args.out)
    masks_path = plan.file("--masks", args.masks)
    report_path = plan.file("--report", args.report)
    denoiser = None
    if args.denoiser is not None:
        from medsure.denoise import load_denoiser

        denoiser = load_denoiser(args.denoiser)
        spec = record["model"]
        denoiser.check_fits(int(spec["in_channels"]), int(spec["image_size"]), what="--denoiser")

    from medsure.certify import evaluate_certification
    from medsure.training import load_run
    from medsure.training.datasets import load_splits
    from medsure.training.environment import resolve_device
    from medsure.utils.io import atomic_write, write_result_json

    run = load_run(args.run)
    dataset = load_splits(run.config["train"].get("dataset", {}))[args.split]
    run.check_fits(dataset)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    device = resolve_device(args.device)
    net = run.model.to(device).eval()
    if denoiser is not None:
        denoiser = denoiser.to(device)
        model = denoiser.smoothing_model(net, args.sigma)
    else:
        model = net
    settings: dict[str, Any] = {
        "sigma": args.sigma,
        "n0": args.n0,
        "n": args.n,
        "alpha": args.alpha,
        "tau": 0.75 if args.tau is None else args.tau,
        "correction": args.correction or "holm",
        "sequential": args.sequential,
        "selection": args.selection or "split",
        **({"looks": args.looks, "futility": args.futility, "tolerance": args.tolerance} if args.sequential else {}),
        "round_size": 10 if args.round_size is None else args.round_size,
        "seed": args.seed,
        "batch_size": args.batch_size,
    }
    if args.engine == "ray":  # ranges of images on Ray actors, merged into the same results
        from medsure.cli._engine import check_parts_folder, ray_certify

        identity = _parts_identity(args, count, settings)
        check_parts_folder(args.out, identity)
        results = ray_certify(args, dataset, count, task, settings, identity)
    else:
        results = evaluate_certification(
            model,
            dataset.images[:count],
            None if dataset.targets is None else dataset.targets[:count],
            task=task,
            class_names=[str(c) for c in dataset.class_names],
            ids=[str(i) for i in dataset.ids[:count]],
            device=device,
            **settings,
        )
    results.extra.update(
        {
            "run": str(args.run),
            "split": args.split,
            "denoiser": None if args.denoiser is None else str(args.denoiser),
            "device": ("cuda" if args.gpus_per_worker else "cpu") if args.engine == "ray" else str(device),
        }
    )
    summary = results.to_dict()
    plan.add(out_path, lambda path: write_result_json(path, summary))
    if masks_path is not None:
        arrays = results.arrays()

        def write_npz(path: Path) -> None:
            with atomic_write(path, "wb") as handle:
                np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

        plan.add(masks_path, write_npz)
    if report_path is not None:
        from medsure.certify.report import build_sections
        from medsure.report.html import Report

        report = Report(title="medsure certify")
        for section in build_sections([results]):
            report.add(section)
        plan.add(report_path, report.write)
    plan.write_all()
    if args.engine == "ray":  # the outputs hold everything the parts did
        import shutil

        from medsure.cli._engine import parts_folder

        shutil.rmtree(parts_folder(args.out), ignore_errors=True)
    headline = summary.get("certified_dice") if task == "segmentation" else summary["certified_accuracy"]["at_radius_0"]
    print(
        f"wrote {args.out}: {task}, {count} images, sigma {args.sigma:g}, "
        f"{'certified Dice' if task == 'segmentation' else 'certified accuracy'} "
        f"{json.dumps((headline or {}).get('mean'))}, abstain rate {summary['abstain_rate']['mean']:.3f}"
    )
    return 0


def _check_engine(args: argparse.Namespace) -> None:
    """--engine ray and its options, checked before anything is loaded (one line, exit 2)."""
    from medsure.cli._engine import check_engine_args

    check_engine_args(args)
    if args.engine != "ray":
        if args.shard_size is not None:
            raise input_error("--shard-size", args.shard_size, "--shard-size only with --engine ray")
        return
    args.shard_size = 8 if args.shard_size is None else args.shard_size
    check_int("--shard-size", args.shard_size, low=1)


def _parts_identity(args: argparse.Namespace, count: int, settings: dict) -> dict:
    """What a parts folder must match to be resumed by this command."""
    from pathlib import Path

    return {
        "command": "medsure certify",
        "run": str(Path(args.run).resolve()),
        "split": args.split,
        "denoiser": None if args.denoiser is None else str(Path(args.denoiser).resolve()),
        "images": count,
        "shard_size": args.shard_size,
        **settings,
    }


def run_train_denoiser(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medsure.cli._outputs import check_output_folder

    check_int("--epochs", args.epochs, low=1)
    check_int("--batch-size", args.batch_size, low=1)
    check_float("--lr", args.lr, low=0.0, closed="neither")
    for s in args.sigmas:
        check_float("--sigmas", s, low=0.0, closed="neither")
    for c in args.channels:
        check_int("--channels", c, low=4)
    if args.image_size is not None:
        check_int("--image-size", args.image_size, low=8)
    if args.threads is not None:
        check_int("--threads", args.threads, low=1)
    out = check_output_folder("--out", args.out)
    if (out / "config.json").exists() and not args.resume:
        raise input_error("--out", f"'{out}', an existing run", "a new folder", "add --resume to continue it", raw=True)

    from medsure.denoise import DenoiserConfig, train_denoiser
    from medsure.training.datasets import dataset_record, load_splits, parse_options
    from medsure.training.environment import torch_threads

    record = dataset_record(
        args.dataset,
        root=args.root,
        image_size=args.image_size,
        options=parse_options(args.option),
        split_seed=args.split_seed,
        max_samples=args.max_samples,
    )
    train_ds = load_splits(record)["train"]
    config = DenoiserConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        sigmas=tuple(args.sigmas),
        channels=tuple(args.channels),
        hflip=args.hflip,
        dataset=record,
    )
    with torch_threads(args.threads):
        train_denoiser(config, train_ds, Path(args.out), resume=args.resume)
    print(f"trained denoiser on {args.dataset} ({len(train_ds)} images) -> {args.out}")
    return 0
