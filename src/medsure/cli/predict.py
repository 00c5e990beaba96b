"""``medsure predict``: write a prediction artifact (.npz) from one or more trained runs."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING

from medsure.validation import check_int, input_error

if TYPE_CHECKING:
    from medsure.artifact import Predictions


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict a split with trained run(s) and write a .npz artifact",
        description="Rebuild the run's dataset split (same name, options and split seed) and "
        "write logits, labels/masks, ids, thumbnails and metadata. Several --run "
        "give a deep ensemble (T axis).",
    )
    p.add_argument("--run", action="append", required=True, help="run folder (repeat for an ensemble)")
    p.add_argument(
        "--split",
        default=None,
        choices=("train", "val", "cal", "test", "all"),
        help="split of the run's dataset (default test; 'all' with --dataset)",
    )
    p.add_argument(
        "--dataset", default=None, help="predict another dataset (e.g. a shifted domain) instead of the run's"
    )
    p.add_argument(
        "--root",
        default=None,
        help="data folder for --dataset; without --dataset: where the run's own dataset lives now "
        "(e.g. the data moved), same name, options and split seed",
    )
    p.add_argument(
        "--images",
        default=None,
        metavar="DIR_OR_CSV",
        help="new, unlabelled images: a folder (searched recursively; ids are paths relative to it) or a "
        "CSV with a column image (paths relative to the CSV); read at the run's image size and channels. "
        "The prediction file has no labels/masks: analyses that need them say so",
    )
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="option for --dataset")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--mc-samples", type=int, default=0, help="T Monte-Carlo dropout passes")
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: identity, the flips used in training, and ±10° rotations for segmentation",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--shard-size",
        type=int,
        default=None,
        metavar="N",
        help="write a shard folder (--out names a folder): files of N cases each plus manifest.json; "
        "a killed run resumes, skipping finished shards (see docs/scale.md)",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="ray: predict shards on Ray actors (a local instance, or --address); writes a shard folder "
        "(--shard-size, default 1024); needs pip install 'medsure[ray]'",
    )
    p.add_argument("--address", default=None, help="Ray cluster: auto or HOST:PORT (default: start a local one)")
    p.add_argument("--workers", type=int, default=None, help="Ray actors, each holding the model once (default: CPUs)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per Ray actor (0: CPU)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medsure.artifact import save_predictions
    from medsure.cli._engine import check_engine_args
    from medsure.cli._outputs import OutputPlan
    from medsure.training import load_run
    from medsure.training.datasets import dataset_record, load_splits, load_whole, parse_options

    outputs = OutputPlan()
    check_engine_args(args)
    if args.engine == "ray" and args.shard_size is None:
        args.shard_size = 1024  # Ray writes shards
    if args.shard_size is not None:  # a shard folder (medsure.shards), written shard by shard
        check_int("--shard-size", args.shard_size, low=1)
    out_path = outputs.file("--out", args.out) if args.shard_size is None else outputs.folder("--out", args.out)
    runs = [load_run(r) for r in args.run]
    first = runs[0]
    records = [r.config["train"].get("dataset", {}) for r in runs]
    if args.images is not None:
        split = _check_images_args(args)
        _check_same_model(runs)
        from pathlib import Path

        from medsure.data.generic import read_unlabelled

        spec = first.config["model"]
        dataset = read_unlabelled(
            Path(args.images).expanduser().resolve(),
            class_names=first.class_names,
            task=first.task,
            channels=int(spec["in_channels"]),
            image_size=int(spec["image_size"]),
        )
    elif args.dataset is not None:
        split = args.split or "all"
        if split != "all":
            raise input_error("--split", split, "all with --dataset (it predicts the whole dataset)")
        record = dataset_record(
            args.dataset,
            root=args.root,
            image_size=int(first.config["model"]["image_size"]),
            options=parse_options(args.option),
            split_seed=0,
            max_samples=None,
        )
        dataset = load_whole(record)
    else:
        split = args.split or "test"
        if split == "all":
            raise input_error(
                "--split",
                "all",
                "train, val, cal or test without --dataset",
                "add --dataset NAME to predict a whole dataset",
            )
        keys = ("name", "options", "split_seed", "image_size", "max_samples")
        if any({k: r.get(k) for k in keys} != {k: records[0].get(k) for k in keys} for r in records):
            raise input_error(
                "--run",
                "runs trained on different datasets or splits",
                "one dataset and split for an ensemble",
                raw=True,
            )
        record = dict(records[0])
        if args.root is not None:  # the run's dataset, read from where it is now
            from medsure.training.datasets import resolved_root

            record["root"] = resolved_root(args.root)
        dataset = load_splits(record)[split]
    if first.task == "joint":  # a uml run: one joint file with both tasks (medsure.artifact.JointPredictions)
        if args.shard_size is not None:
            raise input_error("--shard-size", args.shard_size, "no --shard-size for a joint (uml) run", raw=True)
        return _predict_joint(args, runs, dataset, split, outputs, out_path)
    if len(runs) > 1 and (args.mc_samples or args.tta):
        raise input_error(
            "--mc-samples / --tta",
            "with several --run",
            "none of them for an ensemble (its members are the samples)",
            raw=True,
        )
    if args.shard_size is not None:
        return _predict_sharded(args, runs, dataset, split, out_path)
    pred = _predict_part(args, runs, dataset, args.seed)
    pred = replace(pred, provenance={**pred.provenance, "split": split})
    outputs.add(out_path, lambda path: save_predictions(path, pred))
    outputs.write_all()
    print(
        f"wrote {args.out}: {pred.task}, logits {pred.logits.shape}"
        f"{', ' + pred.sample_kind if pred.sample_kind else ''}, split {split}"
        + (", no labels (unlabelled images)" if pred.targets is None else "")
    )
    return 0


def _predict_part(args: argparse.Namespace, runs: list, dataset, seed: int, first_case: int = 0):
    """The prediction file of ``dataset`` (the whole split, or one shard of it starting at case
    ``first_case`` of the split: MC-dropout masks are seeded per case)."""
    from medsure.predict import predict, predict_ensemble
    from medsure.tta import views_for_training

    first = runs[0]
    if len(runs) > 1:
        pred = predict_ensemble(runs, dataset, batch_size=args.batch_size, seed=seed, device=args.device)
    else:
        tta: bool | tuple[str, ...] = False
        if args.tta:  # only views the model saw in training (see medsure.tta.views_for_training)
            trained = first.config.get("train", {})
            tta = views_for_training(
                first.task,
                hflip=bool(trained.get("augment", True) and trained.get("hflip")),
                vflip=bool(trained.get("augment", True) and trained.get("vflip")),
            )
        pred = predict(
            first,
            dataset,
            batch_size=args.batch_size,
            mc_samples=args.mc_samples,
            tta=tta,
            seed=seed,
            device=args.device,
            first_case=first_case,
        )
    return pred


def shard_prediction(
    args: argparse.Namespace, runs: list, dataset, split: str, index: int, start: int, stop: int
) -> Predictions:
    """Shard ``index`` (cases ``start:stop`` of ``dataset``), the same whichever engine or worker runs it:
    MC dropout is seeded per case from ``--seed`` and the case's index in the split, so the shards
    hold exactly the numbers of the single file, whatever the shard size or the worker."""
    import numpy as np

    pred = _predict_part(args, runs, dataset.subset(np.arange(start, stop)), args.seed, first_case=start)
    return replace(pred, provenance={**pred.provenance, "split": split, "shard": index})


def _predict_sharded(args: argparse.Namespace, runs: list, dataset, split: str, folder) -> int:
    """Write ``dataset``'s predictions as a shard folder, skipping shards already written.

    MC dropout is seeded per case (``--seed`` and the case's index), so a resumed run gives the
    same files as an uninterrupted one, and the shards the numbers of the single file.
    """
    from pathlib import Path

    from medsure.shards import ShardWriter, shard_ranges
    from medsure.utils.progress import progress

    ranges = shard_ranges(len(dataset), args.shard_size)
    identity = {
        "runs": [str(Path(r.run_dir).resolve()) for r in runs],
        "split": split,
        "dataset": args.dataset,
        "images": args.images,
        "n": len(dataset),
        "shard_size": args.shard_size,
        "mc_samples": args.mc_samples,
        "tta": bool(args.tta),
        "seed": args.seed,
    }
    if args.mc_samples:  # folders of the former per-shard MC seeds hold other samples: not resumed, not mixed
        identity["mc_seeds"] = "per case"
    writer = ShardWriter(
        folder,
        task=dataset.task,
        class_names=[str(c) for c in dataset.class_names],
        n_shards=len(ranges),
        provenance={"command": "medsure predict", "split": split},
        identity=identity,
    )
    pending = [i for i in range(len(ranges)) if not writer.is_done(i)]
    skipped = len(ranges) - len(pending)
    if args.engine == "ray" and pending:
        from medsure.cli._engine import ray_predict_shards

        for entry in progress(ray_predict_shards(args, pending, ranges, dataset, split, folder), total=len(pending)):
            writer.record(entry)
    else:
        for index in progress(pending, desc="shards"):
            start, stop = ranges[index]
            writer.write(index, shard_prediction(args, runs, dataset, split, index, start, stop))
    manifest = writer.finish()
    print(
        f"wrote {args.out}: {manifest.task}, {manifest.n_total} cases in {len(manifest.shards)} shard(s)"
        f" of up to {args.shard_size}, split {split}" + (f" ({skipped} already written, skipped)" if skipped else "")
    )
    return 0


def _predict_joint(args: argparse.Namespace, runs: list, dataset, split: str, outputs, out_path) -> int:
    """Write the joint prediction file of one joint (uml) run."""
    from medsure.artifact import JointPredictions, save_joint_predictions
    from medsure.predict import predict_joint

    if len(runs) > 1 or args.tta:
        raise input_error(
            "--run / --tta", "an ensemble or TTA of a joint run", "one joint run (--mc-samples works)", raw=True
        )
    if dataset.task == "classification" and dataset.targets is None:  # --images: no masks, no labels
        import numpy as np

        dataset = replace(dataset, task="segmentation", class_names=np.asarray(runs[0].config["seg_class_names"]))
    joint = predict_joint(
        runs[0], dataset, batch_size=args.batch_size, mc_samples=args.mc_samples, seed=args.seed, device=args.device
    )
    provenance = {**joint.classification.provenance, "split": split}
    joint = JointPredictions(
        replace(joint.classification, provenance=provenance), replace(joint.segmentation, provenance=provenance)
    )
    outputs.add(out_path, lambda path: save_joint_predictions(path, joint))
    outputs.write_all()
    cls, seg = joint.split()
    print(f"wrote {args.out}: joint, class alpha {cls.logits.shape}, pixel alpha {seg.logits.shape}, split {split}")
    return 0


def _check_images_args(args: argparse.Namespace) -> str:
    """--images predicts new files: the options that pick a dataset or a split do not apply."""
    for option, value in (("--dataset", args.dataset), ("--root", args.root), ("--option", args.option)):
        if value:
            raise input_error(
                option,
                value if isinstance(value, str) else " ".join(value),
                f"no {option} with --images",
                "--images reads the files it is given",
            )
    if args.split not in (None, "all"):
        raise input_error("--split", args.split, "no --split with --images (every image is predicted)")
    return "unlabelled"


def _check_same_model(runs: list) -> None:
    """Ensemble members must agree on what the images are read as."""
    keys = ("task", "class_names")
    first = runs[0]
    for run in runs[1:]:
        same = all(run.config.get(k) == first.config.get(k) for k in keys) and all(
            run.config["model"].get(k) == first.config["model"].get(k) for k in ("in_channels", "image_size")
        )
        if not same:
            raise input_error(
                "--run",
                f"{run.run_dir} and {first.run_dir}, trained for different tasks, classes, channels or sizes",
                "one task, class list, channel count and image size for an ensemble",
                raw=True,
            )
