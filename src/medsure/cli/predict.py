"""``medsure predict``: write a prediction artifact (.npz) from one or more trained runs."""

from __future__ import annotations

import argparse
from dataclasses import replace

from medsure.validation import input_error


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
    p.add_argument("--root", default=None, help="data folder for --dataset")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="option for --dataset")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--mc-samples", type=int, default=0, help="T Monte-Carlo dropout passes")
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: identity, the flips used in training, and ±10° rotations for segmentation",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medsure.artifact import save_predictions
    from medsure.cli._outputs import OutputPlan
    from medsure.predict import predict, predict_ensemble
    from medsure.training import load_run
    from medsure.training.datasets import dataset_record, load_splits, load_whole, parse_options
    from medsure.tta import views_for_training

    outputs = OutputPlan()
    out_path = outputs.file("--out", args.out)
    runs = [load_run(r) for r in args.run]
    first = runs[0]
    records = [r.config["train"].get("dataset", {}) for r in runs]
    if args.dataset is not None:
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
        dataset = load_splits(records[0])[split]
    if len(runs) > 1:
        if args.mc_samples or args.tta:
            raise input_error(
                "--mc-samples / --tta",
                "with several --run",
                "none of them for an ensemble (its members are the samples)",
                raw=True,
            )
        pred = predict_ensemble(runs, dataset, batch_size=args.batch_size, seed=args.seed, device=args.device)
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
            seed=args.seed,
            device=args.device,
        )
    pred = replace(pred, provenance={**pred.provenance, "split": split})
    outputs.add(out_path, lambda path: save_predictions(path, pred))
    outputs.write_all()
    print(
        f"wrote {args.out}: {pred.task}, logits {pred.logits.shape}"
        f"{', ' + pred.sample_kind if pred.sample_kind else ''}, split {split}"
    )
    return 0
