"""``medsure triage``: decide auto / review for unlabelled cases with a saved policy; write a worklist."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from medsure.cli._outputs import OutputPlan
from medsure.validation import input_error


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "triage",
        help="triage new cases with a saved policy: auto-accept or review, with reasons and a worklist",
        description="Apply a policy (medsure policy fit) to a prediction file (labels optional). Writes "
        "worklist.csv and worklist.json sorted by priority, summary.json (review rate and the guarantee "
        "for the auto-accepted cases, with its assumptions) and images/ (thumbnails from the prediction "
        "file, Grad-CAM per set member with --cam, masks and uncertainty for segmentation).",
    )
    p.add_argument("--policy", required=True, help="policy.json written by `medsure policy fit`")
    p.add_argument("--pred", required=True, help="prediction file of the new cases (.npz)")
    p.add_argument("--out", required=True, help="worklist folder to create (new or empty)")
    p.add_argument(
        "--cam",
        default=None,
        help="cams.npz from `medsure explain --classes ...` for these cases: a Grad-CAM overlay per set member",
    )
    p.add_argument(
        "--neighbours",
        default=None,
        metavar="CAL.npz",
        help="the policy's calibration file (checked by its SHA-256): show each case's nearest calibration "
        "cases (by predicted probabilities) with their true labels",
    )
    p.add_argument("--n-neighbours", type=int, default=3, help="calibration neighbours per case (default 3)")
    p.add_argument("--no-images", action="store_true", help="write no thumbnails or overlays")
    p.add_argument("--image-size", type=int, default=256, help="side of the overlay images in pixels (256)")
    p.set_defaults(func=run_triage)


def load_cam_table(path: str, class_names: list[str]) -> dict[tuple[str, int], np.ndarray]:
    """``(case id, class index) -> map`` from a ``medsure explain`` cams.npz (keys ids, classes, maps)."""
    if not Path(path).is_file():
        raise input_error("--cam", path, "an existing cams.npz written by `medsure explain`")
    try:
        with np.load(path, allow_pickle=False) as data:
            ids, classes, maps = (np.asarray(data[k]) for k in ("ids", "classes", "maps"))
            names = [str(c) for c in data["class_names"]] if "class_names" in data.files else None
    except KeyError as exc:
        raise input_error(
            "--cam", path, "a cams.npz with keys ids, classes, maps (from `medsure explain`)", f"missing {exc}"
        ) from None
    except (OSError, ValueError) as exc:
        raise input_error("--cam", path, "a readable .npz written by `medsure explain`", str(exc)) from None
    if maps.ndim != 3 or ids.shape[0] != maps.shape[0] or classes.shape[0] != maps.shape[0]:
        raise input_error(
            "--cam",
            f"ids {ids.shape}, classes {classes.shape}, maps {maps.shape}",
            "one id and one class per map (M, H, W)",
            raw=True,
        )
    if names is not None and names != class_names:
        raise input_error("--cam class_names", names, f"the policy's class names {class_names}")
    return {(str(i), int(c)): m for i, c, m in zip(ids, classes, maps, strict=True)}


def _neighbours(path: str, k: int, policy, pred) -> dict:
    """Nearest calibration cases of every case of ``pred`` (classification, labelled calibration file)."""
    from medsure.artifact import load_predictions
    from medsure.handoff.policy import file_sha256
    from medsure.handoff.triage import nearest_neighbours

    if not 1 <= k <= 20:
        raise input_error("--n-neighbours", k, "an integer in [1, 20]")
    if pred.task != "classification":
        raise input_error("--neighbours", path, "calibration neighbours only for classification predictions")
    if not Path(path).is_file():
        raise input_error("--neighbours", path, "the policy's calibration prediction file")
    if policy.cal_sha256_ is not None and file_sha256(path) != policy.cal_sha256_:
        raise input_error(
            "--neighbours",
            f"'{path}', whose SHA-256 differs from the policy's calibration file",
            "the calibration file the policy was fitted on",
            raw=True,
        )
    cal = load_predictions(path)
    policy.check_compatible(cal, what="--neighbours")
    if cal.labels is None:
        raise input_error("--neighbours", path, "a labelled calibration file")
    indices, distances = nearest_neighbours(pred.probabilities(), cal.probabilities(), k)
    names = [str(c) for c in cal.class_names]
    return {
        "ids": cal.ids,
        "labels": [names[int(y)] for y in cal.labels],
        "indices": indices,
        "distances": distances,
        "thumbnails": cal.thumbnails,
    }


def run_triage(args: argparse.Namespace) -> int:
    from medsure.artifact import load_predictions
    from medsure.handoff.policy import file_sha256, load_policy
    from medsure.handoff.triage import triage
    from medsure.review.worklist import worklist_writers

    plan = OutputPlan()
    out = plan.folder("--out", args.out)
    if out.is_dir() and any(out.iterdir()):
        raise input_error(
            "--out", f"'{out}', a folder that is not empty", "a new or empty folder for the worklist", raw=True
        )
    if not 16 <= args.image_size <= 1024:
        raise input_error("--image-size", args.image_size, "an integer in [16, 1024]")
    policy = load_policy(args.policy)
    pred = load_predictions(args.pred)
    policy.check_compatible(pred)
    cams = load_cam_table(args.cam, policy.class_names_) if args.cam else None
    if cams is not None and pred.task != "classification":
        raise input_error("--cam", args.cam, "Grad-CAM maps only for classification predictions")
    neighbours = None
    if args.neighbours is not None:
        neighbours = _neighbours(args.neighbours, args.n_neighbours, policy, pred)
    results = triage(policy, pred)
    policy_sha = file_sha256(args.policy)
    pred_sha = file_sha256(args.pred)
    worklist_id = hashlib.sha256(f"{policy_sha}:{pred_sha}".encode()).hexdigest()
    writers = worklist_writers(
        out,
        results,
        pred=pred,
        policy_record=policy.to_dict(),
        policy_source={"path": str(args.policy), "sha256": policy_sha, "worklist_id": worklist_id},
        pred_source={"path": str(args.pred), "sha256": pred_sha},
        cams=cams,
        images=not args.no_images,
        image_size=args.image_size,
        neighbours=neighbours,
    )
    for path, writer in writers:
        plan.add(path, writer)
    plan.write_all()
    s = results.summary
    print(
        f"wrote {out}: {s['n_cases']} cases, {s['n_review']} to review (rate {s['review_rate']:.3f}), "
        f"{s['n_auto']} auto-accepted"
    )
    for statement in results.guarantee["statements"]:
        print("  " + statement)
    return 0
