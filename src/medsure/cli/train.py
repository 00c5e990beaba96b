"""``medsure train``: train a model on a named dataset into a run folder."""

from __future__ import annotations

import argparse

from medsure.validation import check_float, input_error


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a classifier or U-Net on a named dataset (resumable)",
        description="Train on the dataset's standard train split, early-stop on val; cal and "
        "test stay untouched for `medsure predict`.",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset name, e.g. pneumoniamnist, kvasir; your own data: folder (ROOT/<class>/<image>), "
        "segfolder (ROOT/images + ROOT/masks), jointfolder (ROOT/images/<class> + ROOT/masks/<class>), "
        "manifest (--root FILE.csv with columns image,label,mask,group,split); see `medsure datasets`",
    )
    p.add_argument(
        "--root",
        default=None,
        help="data folder, or the CSV for --dataset manifest (stored as an absolute path; default: embedded "
        "copy or $MEDSURE_DATA_ROOT or ../shared/data)",
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="dataset option (repeatable), e.g. task=segmentation, mask_suffix=_mask, threshold=127, "
        'value_map=\'{"0":0,"255":1}\' or value_map=0:0,255:1, class_names=background,vessel, '
        "groups=groups.csv, group_pattern='^(P\\d+)_', dedup=true",
    )
    p.add_argument(
        "--model",
        default=None,
        help="resnet18, resnet50, small_cnn or unet (default: resnet18 for classification, unet for segmentation); "
        "uml (joint classification + segmentation with uncertainty-informed mutual learning, on a joint dataset: "
        "ph2_joint, busi_joint, isic2017_joint, jointfolder) or its ablations uml_no_navigator, uml_no_instructor, "
        "uml_separate",
    )
    p.add_argument(
        "--loss",
        default="auto",
        help="ce (classification); ce, dice or ce_dice (segmentation); evidential, evidential_mse, evidential_log "
        "or evidential_digamma (= evidential) for any model: Dirichlet outputs, prediction files with alpha "
        "(joint models: always evidential)",
    )
    p.add_argument(
        "--evidence",
        default="softplus",
        choices=("softplus", "relu", "exp"),
        help="evidential losses and uml: the evidence function of the outputs",
    )
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience (0: off)")
    p.add_argument("--image-size", type=int, default=None, help="resize images to SxS")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/cal/test split")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout (> 0 enables MC dropout)")
    p.add_argument("--vflip", action="store_true", help="also augment with up-down flips")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument(
        "--noise-sigma",
        type=float,
        nargs="+",
        default=[0.0],
        metavar="S",
        help="Gaussian-noise augmentation: add N(0, S^2) noise (S in [0, 1] image units) to training images, "
        "e.g. 0.25 to train for `medsure certify --sigma 0.25`; several values: one drawn per image (default 0: off)",
    )
    p.add_argument(
        "--balanced",
        action="store_true",
        help="classification: weight the cross-entropy by inverse class frequency (rare classes count)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="MedMNIST: load a local file whose MD5 differs from the official one (recorded as unverified)",
    )
    p.add_argument(
        "--max-samples", type=int, default=None, help="keep only the first N samples of each split (quick trials)"
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: torch's choice; 1 helps on a busy shared machine)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="strict determinism (for GPUs): torch.use_deterministic_algorithms(True) raises on an "
        "operation without a deterministic kernel, cudnn.deterministic is set and "
        "CUBLAS_WORKSPACE_CONFIG=:4096:8 on CUDA; recorded in config.json. On CPU a seed already "
        "gives identical weights for the same thread count and CPU kind",
    )
    p.add_argument(
        "--out", required=True, help="run folder to create (config.json, checkpoint.pt, best.pt, history.json)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="data-parallel processes on this machine (starts torchrun; gloo on CPU, NCCL on GPU); "
        "several machines: torchrun --nnodes ... -m medsure train (see docs/scale.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medsure.cli._outputs import OutputPlan
    from medsure.models import CLASSIFIERS, JOINT_MODELS
    from medsure.training import TrainConfig, train
    from medsure.training.datasets import dataset_record, load_splits, parse_options

    # the run folder is written epoch by epoch (that is what makes a run resumable), so it is
    # only checked here; train() refuses a folder that already holds a run unless --resume
    OutputPlan().folder("--out", args.out)
    if args.nproc is not None:  # this command again in --nproc processes (medsure.training.distributed)
        import os
        import sys

        from medsure.training.distributed import launch
        from medsure.validation import check_int

        check_int("--nproc", args.nproc, low=1)
        if args.nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return launch(args.nproc, _without_nproc(list(getattr(args, "argv", sys.argv[1:]))))
    if args.max_samples is not None and args.max_samples < 2:
        raise input_error("--max-samples", args.max_samples, "at least 2")
    for sigma in args.noise_sigma:  # before any data is read
        check_float("--noise-sigma", sigma, low=0.0, hint="0 turns noise augmentation off")
    options = parse_options(args.option)
    if args.no_verify:
        options["verify"] = False
    record = dataset_record(
        args.dataset,
        root=args.root,
        image_size=args.image_size,
        options=options,
        split_seed=args.split_seed,
        max_samples=args.max_samples,
    )
    splits = load_splits(record)
    task = splits["train"].task
    model = args.model or ("unet" if task == "segmentation" else "resnet18")
    if model in JOINT_MODELS:  # masks and image labels: the joint format (medsure.data.joint)
        from medsure.data.joint import joint_labels

        joint_labels(splits["train"], f"--dataset {args.dataset} for --model {model}")
    elif (task == "segmentation" and model != "unet") or (task == "classification" and model not in CLASSIFIERS):
        raise input_error(
            "--model", model, f"a {task} model: " + ("unet" if task == "segmentation" else ", ".join(CLASSIFIERS))
        )
    config = TrainConfig(
        model=model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        loss=args.loss,
        patience=args.patience,
        seed=args.seed,
        dropout=args.dropout,
        vflip=args.vflip,
        augment=not args.no_augment,
        noise_sigma=args.noise_sigma[0] if len(args.noise_sigma) == 1 else list(args.noise_sigma),
        device=args.device,
        num_threads=args.threads,
        dataset=record,
        class_weights="balanced" if args.balanced else None,
        deterministic=args.deterministic,
        evidence=args.evidence,
    )
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    say = print if _rank() == 0 else _quiet  # under torchrun only process 0 prints
    say(f"training {model} on {args.dataset} ({sizes}) -> {args.out}")
    grouping = splits["train"].provenance.get("groups_across_splits") or {}
    if grouping.get("group_disjoint"):
        say(f"splits are group-disjoint: {grouping['n_groups']} groups, none in two splits (recorded in config.json)")
    result = train(config, splits, args.out, resume=args.resume)
    last = result.history[-1]
    say(
        f"done: {len(result.history)} epochs, best val {last['monitor']} "
        f"{result.best_metric:.4f} at epoch {result.best_epoch}"
        f"{' (stopped early)' if result.stopped_early else ''}; weights in {args.out}/best.pt"
    )
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the launched processes are the N)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _quiet(*args: object, **kwargs: object) -> None:
    """print() of the processes other than 0 under torchrun."""
