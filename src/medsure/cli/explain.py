"""``medsure explain``: class-activation-map overlays for chosen cases of a trained run's split."""

from __future__ import annotations

import argparse
import functools
import io
import re
from pathlib import Path

import numpy as np

from medsure.utils.io import atomic_write, atomic_write_bytes, write_result_json
from medsure.validation import input_error

OUTPUT_FORMAT = """\
outputs in --out:
  <id>_<class>.png  one overlay per case and explained class
  cams.npz          the raw maps (numpy .npz, no pickled objects):
                      ids          (M,) str      case id of each map; cases in the order of --ids, the maps of
                                                 one case consecutive (one per explained class)
                      classes      (M,) int64    class index each map explains (into class_names)
                      maps         (M, H, W) float32  the CAM at the image's resolution, >= 0, not normalised
                      class_names  (K,) str      the model's classes
                      method       () str        gradcam or gradcam++
                    M = number of ids x classes per id (one per id without --classes)
  explain.json      medsure_version, run, split, method, ids and the PNG file names
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="Grad-CAM / Grad-CAM++ overlays for cases of a trained classifier",
        description="Rebuild the data split of a training run (from its config.json), compute class-activation "
        "maps for the given case ids and write one PNG overlay per case and class, plus cams.npz "
        "with the raw maps.",
        epilog=OUTPUT_FORMAT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="run folder written by medsure training (config.json, best.pt)")
    p.add_argument("--split", default="test", help="split holding the ids: train, val, cal or test (default test)")
    p.add_argument("--ids", nargs="+", required=True, help="case ids to explain")
    p.add_argument("--out", required=True, help="output folder (created)")
    # checked against medsure.explain.CAM_METHODS when the command runs (importing the registry
    # here would load torch for every medsure command)
    p.add_argument(
        "--method",
        default="gradcam",
        help="CAM method, a name of medsure.explain.CAM_METHODS: gradcam (default) or gradcam++",
    )
    p.add_argument(
        "--classes",
        nargs="+",
        default=None,
        help="class names or indices to explain for every case (default: the predicted class)",
    )
    p.add_argument("--report", default=None, help="also write an HTML report: a gallery of the overlays")
    p.set_defaults(func=run_explain)


def run_split(run, split: str):
    """The ``split`` dataset of a run, rebuilt from the dataset record in its config."""
    from medsure.training.datasets import load_splits

    record = (run.config.get("train") or {}).get("dataset") or {}
    if not record.get("name"):
        raise input_error(
            "--run",
            str(run.run_dir),
            "a run whose config.json records its dataset (train.dataset.name)",
            "without it the split cannot be rebuilt",
        )
    # the same road as `medsure predict --run`: recorded root, image size, options and split seed
    splits = load_splits(record)
    if split not in splits:
        raise input_error("--split", split, "one of the run's splits: " + ", ".join(sorted(splits)))
    return splits[split]


def _class_index(value: str, names: list[str]) -> int:
    if value in names:
        return names.index(value)
    if re.fullmatch(r"\d+", value) and int(value) < len(names):
        return int(value)
    raise input_error("--classes", value, f"a class name in {names} or an index < {len(names)}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def run_explain(args: argparse.Namespace) -> int:
    from medsure.cli._outputs import OutputPlan
    from medsure.explain import cam_method
    from medsure.explain.plots import overlay_cam
    from medsure.predict import predict_cams
    from medsure.training import load_run

    outputs = OutputPlan()
    out = outputs.folder("--out", args.out)
    report_path = outputs.file("--report", args.report)
    cam_method(args.method, what="--method")  # an unknown name fails before any loading
    run = load_run(args.run)
    if run.task != "classification":
        raise input_error("--run", str(args.run), "a classifier's run", f"it is a {run.task} model")
    dataset = run_split(run, args.split)
    names = [str(c) for c in dataset.class_names]
    targets = None
    if args.classes:
        chosen = [_class_index(c, names) for c in args.classes]
        targets = [chosen] * len(args.ids)
    cams = predict_cams(run, dataset, args.ids, targets=targets, method=args.method)

    files = [f"{_safe(str(i))}_{_safe(names[c])}.png" for i, c in zip(cams.ids, cams.classes, strict=True)]
    overlays = [overlay_cam(image, cam) for image, cam in zip(cams.images, cams.maps, strict=True)]
    for name, overlay in zip(files, overlays, strict=True):
        outputs.add(out / name, functools.partial(atomic_write_bytes, data=_png(overlay)))

    def write_npz(path: Path) -> None:
        with atomic_write(path, "wb") as handle:
            np.savez_compressed(handle, allow_pickle=False, **cams.to_npz_arrays())  # "no pickled objects"

    outputs.add(out / "cams.npz", write_npz)
    outputs.add(
        out / "explain.json",
        lambda path: write_result_json(
            path,
            {"run": str(args.run), "split": args.split, "method": cams.method, "files": files, "ids": list(args.ids)},
        ),
    )
    if report_path is not None:
        from medsure.explain.report import build_sections
        from medsure.report.html import Report

        report = Report(title="medsure explain")
        for section in build_sections(cams):
            report.add(section)
        outputs.add(report_path, report.write)
    outputs.write_all()
    print(f"wrote {len(files)} overlays and cams.npz to {out}" + (f" and {args.report}" if args.report else ""))
    return 0
