"""``medsure explain``: Grad-CAM overlays for chosen cases of a trained run's split."""
from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import numpy as np

from medsure.errors import MedsureInputError
from medsure.utils.io import atomic_write, atomic_write_bytes, write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain", help="Grad-CAM / Grad-CAM++ overlays for cases of a trained classifier",
        description="Rebuild the data split of a training run (from its config.json), run Grad-CAM on the "
                    "given case ids and write one PNG overlay per case and class, plus cams.npz with the raw maps.")
    p.add_argument("--run", required=True, help="run folder written by medsure training (config.json, best.pt)")
    p.add_argument("--split", default="test", help="split holding the ids: train, val, cal or test (default test)")
    p.add_argument("--ids", nargs="+", required=True, help="case ids to explain")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default="gradcam", choices=("gradcam", "gradcam++"))
    p.add_argument("--classes", nargs="+", default=None,
                   help="class names or indices to explain for every case (default: the predicted class)")
    p.set_defaults(func=run_explain)


def run_split(run, split: str):
    """The ``split`` dataset of a run, rebuilt from the dataset record in its config."""
    from medsure.training.datasets import load_splits

    record = (run.config.get("train") or {}).get("dataset") or {}
    if not record.get("name"):
        raise MedsureInputError(
            f"run '{run.run_dir}' does not record its dataset (config.json train.dataset.name); "
            "cannot rebuild the split")
    # the same road as `medsure predict --run`: recorded root, image size, options and split seed
    splits = load_splits(record)
    if split not in splits:
        raise MedsureInputError(f"--split {split!r}: the run's splits are {sorted(splits)}")
    return splits[split]


def _class_index(value: str, names: list[str]) -> int:
    if value in names:
        return names.index(value)
    if re.fullmatch(r"\d+", value) and int(value) < len(names):
        return int(value)
    raise MedsureInputError(f"--classes {value!r}: expected a class name in {names} or an index < {len(names)}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def run_explain(args: argparse.Namespace) -> int:
    from PIL import Image

    from medsure.explain.overlay import overlay_cam
    from medsure.explain.report import explain_cases
    from medsure.training import load_run

    run = load_run(args.run)
    if run.task != "classification":
        raise MedsureInputError(f"run '{args.run}' is a {run.task} model; explain needs a classifier")
    dataset = run_split(run, args.split)
    names = [str(c) for c in dataset.class_names]
    targets = None
    if args.classes:
        chosen = [_class_index(c, names) for c in args.classes]
        targets = [chosen] * len(args.ids)
    cases = explain_cases(run.model, dataset, args.ids, targets=targets, method=args.method)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for case_id, image, labels, maps in cases:
        for label, cam in zip(labels, maps):
            buffer = io.BytesIO()
            Image.fromarray(overlay_cam(image, cam)).save(buffer, format="PNG")
            path = out / f"{_safe(case_id)}_{_safe(names[label])}.png"
            atomic_write_bytes(path, buffer.getvalue())
            written.append(path.name)
            rows.append((case_id, label, cam))
    with atomic_write(out / "cams.npz", "wb") as handle:
        np.savez_compressed(handle, ids=np.array([r[0] for r in rows]), classes=np.array([r[1] for r in rows]),
                            maps=np.stack([r[2] for r in rows]).astype(np.float32),
                            class_names=np.array(names))
    write_json(out / "explain.json", {"run": str(args.run), "split": args.split, "method": args.method,
                                      "files": written, "ids": list(args.ids)})
    print(f"wrote {len(written)} overlays to {out}")
    return 0
