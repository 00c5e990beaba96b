"""The worklist folder: what ``medsure triage`` writes and ``medsure serve`` / ``medsure audit`` read.

Layout
------
``worklist.json``
    format, versions, task, class names, the reviewer's choices, the policy and prediction file
    (path and SHA-256), summary, guarantee statement and one record per case, sorted by priority:
    id, row (in the prediction file), priority, decision, reasons, predicted, prediction_set,
    probabilities (in class-name order, 6 decimals), confidence, scores, label (when the file has
    labels), thumbnail and overlays (files under images/). Written last: a folder without it is not
    a worklist.
``worklist.csv``
    one row per case, sorted by priority: id, priority, decision, reasons, predicted, set,
    set_size, confidence, label (when known).
``summary.json``
    the triage summary and guarantee (a results JSON stamped with the medsure version).
``images/``
    ``<row>.png`` thumbnails and ``<row>_<kind>[_<k>].png`` overlays, named by row number (never by
    the case id, so an id cannot name a path).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsure.utils.io import atomic_write_bytes, atomic_write_text, to_jsonable, with_version
from medsure.validation import input_error

if TYPE_CHECKING:
    from medsure.artifact import Predictions
    from medsure.handoff.triage import TriageResults

WORKLIST_FORMAT = 1
UNSURE = "unsure"
SEGMENTATION_CHOICES = ("accept", "reject")
CSV_COLUMNS = (
    "id",
    "priority",
    "decision",
    "reasons",
    "predicted",
    "prediction_set",
    "set_size",
    "confidence",
    "label",
)

__all__ = [
    "WORKLIST_FORMAT",
    "UNSURE",
    "Worklist",
    "choices_for",
    "load_worklist",
    "worklist_writers",
    "render_map",
    "png_bytes",
]


def choices_for(task: str, class_names: list[str]) -> list[str]:
    """What a reviewer may decide: the class names (or accept/reject a mask) and "unsure"."""
    base = list(class_names) if task == "classification" else list(SEGMENTATION_CHOICES)
    return [*base, UNSURE]


# ---- images (presentation: pixels only) -----------------------------------------------------------


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of a uint8 image (H, W) or (H, W, 3|4)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def _base_rgb(thumbnail: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The case image as float RGB in [0, 1] at ``shape`` (grey when there is no thumbnail)."""
    from PIL import Image

    if thumbnail is None:
        return np.full((*shape, 3), 0.5)
    img = thumbnail if thumbnail.ndim == 3 else np.repeat(thumbnail[..., None], 3, axis=2)
    img = img[..., :3]
    if img.shape[:2] != shape:
        img = np.asarray(Image.fromarray(img).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))
    return img.astype(np.float64) / 255.0


_LABEL_COLOURS = (
    np.array(
        [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
        dtype=np.float64,
    )
    / 255.0
)


def render_map(thumbnail: np.ndarray | None, values: np.ndarray, kind: str, *, size: int | None = None) -> np.ndarray:
    """An overlay image, uint8 (H, W, 3): a map blended over the case image.

    Parameters
    ----------
    thumbnail : uint8 (h, w[, C]) case image, or None
    values : the map — float (H, W) heat map (``kind="heat"``, scaled to its own range), int (H, W)
        label map (``kind="labels"``, 0 = background left clear) or bool (H, W) mask (``kind="mask"``)
    size : output side in pixels (default: the map's shape)
    """
    import matplotlib

    values = np.asarray(values)
    shape = values.shape if size is None else (size, size)
    if values.shape != shape:
        from PIL import Image

        resample = Image.Resampling.BILINEAR if kind == "heat" else Image.Resampling.NEAREST
        src = values.astype(np.float32) if kind == "heat" else values.astype(np.uint8)
        values = np.asarray(Image.fromarray(src).resize((shape[1], shape[0]), resample))
    base = _base_rgb(thumbnail, (int(shape[0]), int(shape[1])))
    if kind == "heat":
        v = values.astype(np.float64)
        span = float(v.max() - v.min())
        v = (v - v.min()) / span if span > 0 else np.zeros_like(v)
        colour = matplotlib.colormaps["inferno"](v)[..., :3]
        out = 0.45 * base + 0.55 * colour
    elif kind == "labels":
        labels = values.astype(np.int64) % len(_LABEL_COLOURS)
        colour = _LABEL_COLOURS[labels]
        fg = (values > 0)[..., None]
        out = np.where(fg, 0.5 * base + 0.5 * colour, base)
    elif kind == "mask":
        fg = values.astype(bool)[..., None]
        out = np.where(fg, 0.45 * base + 0.55 * np.array([0.0, 0.8, 1.0]), base)
    else:
        raise input_error("overlay kind", kind, "'heat', 'labels' or 'mask'")
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _thumbnail_image(thumbnail: np.ndarray) -> np.ndarray:
    return thumbnail if thumbnail.ndim == 2 or thumbnail.shape[2] in (3, 4) else thumbnail[..., 0]


# ---- writing ----------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def worklist_writers(
    folder: Path,
    results: TriageResults,
    *,
    pred: Predictions,
    policy_record: dict[str, Any],
    policy_source: dict[str, Any],
    pred_source: dict[str, Any],
    cams: dict[tuple[str, int], np.ndarray] | None = None,
    images: bool = True,
    image_size: int | None = None,
    neighbours: dict[str, Any] | None = None,
) -> list[tuple[Path, Callable[[Path], object]]]:
    """The ``(path, writer)`` pairs of a worklist folder, for :class:`medsure.cli._outputs.OutputPlan`.

    ``neighbours`` (optional): ``{"ids": (M,) calibration ids, "labels": (M,) class names,
    "indices": (N, k), "distances": (N, k), "thumbnails": (M, h, w[, C]) or None}`` — each case's
    nearest calibration cases. ``worklist.json`` comes last, so a folder that has it is complete.
    """
    order = results.order()
    names = results.class_names
    n = results.n_cases
    has_thumbs = images and pred.thumbnails is not None
    rows: list[dict[str, Any]] = []
    overlay_jobs: list[tuple[str, Callable[[], np.ndarray]]] = []
    reason_lists = _row_lists(results.reasons, results.reason_codes)
    # Python lists once (not numpy scalars per case): building 100,000 records stays well under a second
    priority = results.priority.tolist()
    auto = results.auto.tolist()
    ids = [str(v) for v in results.ids.tolist()]
    conf = None if results.confidence is None else np.round(results.confidence.astype(np.float64), 6).tolist()
    # six decimals are all a reader needs, and they keep worklist.json small and quick to write
    probs = None if results.probabilities is None else np.round(results.probabilities.astype(np.float64), 6).tolist()
    predicted = None if results.predicted is None else results.predicted.tolist()
    set_lists = None if results.sets is None else _row_lists(results.sets, names)
    keys = list(results.scores)
    columns = [np.round(results.scores[k].astype(np.float64), 6).tolist() for k in keys]
    score_dicts = [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)] if keys else None
    labels = None if results.labels is None else results.labels.tolist()
    thumbs = pred.thumbnails if has_thumbs else None
    neighbour_lists = _neighbour_records(neighbours, overlay_jobs if images else None)
    for i in order.tolist():
        record: dict[str, Any] = {
            "id": ids[i],
            "row": i,
            "priority": priority[i],
            "decision": "auto" if auto[i] else "review",
            "reasons": reason_lists[i],
        }
        if results.task == "classification":
            record["predicted"] = None if predicted is None else names[predicted[i]]
            record["prediction_set"] = [] if set_lists is None else set_lists[i]
            record["probabilities"] = [] if probs is None else probs[i]  # in class_names order
        record["confidence"] = None if conf is None else conf[i]
        record["scores"] = {} if score_dicts is None else score_dicts[i]
        if labels is not None:
            record["label"] = names[labels[i]]
        thumb_file = None
        if thumbs is not None:
            thumb_file = f"images/{i}.png"
            overlay_jobs.append((thumb_file, _thumb_job(thumbs[i])))
        record["thumbnail"] = thumb_file
        record["overlays"] = _overlay_jobs(results, pred, i, cams, overlay_jobs, image_size) if images else []
        if neighbour_lists is not None:
            record["neighbours"] = neighbour_lists[i]
        rows.append(record)

    def write_images(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for name, job in overlay_jobs:
            atomic_write_bytes(path.parent / name, png_bytes(job()))

    def write_csv(path: Path) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow(
                [
                    r["id"],
                    r["priority"],
                    r["decision"],
                    ";".join(r["reasons"]),
                    r.get("predicted") or "",
                    ";".join(r.get("prediction_set", [])),
                    len(r.get("prediction_set", [])) if results.task == "classification" else "",
                    _fmt(r["confidence"]),
                    r.get("label", ""),
                ]
            )
        atomic_write_text(path, buffer.getvalue())

    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    header = with_version(
        {
            "format": "medsure-worklist",
            "format_version": WORKLIST_FORMAT,
            "created": created,
            "task": results.task,
            "class_names": list(names),
            "choices": choices_for(results.task, list(names)),
            "policy": {**policy_source, "record": policy_record},
            "predictions": pred_source,
            "summary": results.summary,
            "guarantee": results.guarantee,
            "reason_text": results.reason_text,
            "n_cases": n,
        }
    )

    def write_json(path: Path) -> None:
        # the case records are plain Python already: only the header needs to_jsonable
        document = {**to_jsonable(header), "cases": rows}
        atomic_write_text(path, json.dumps(document, allow_nan=False, separators=(",", ":")) + "\n")

    def write_summary(path: Path) -> None:
        atomic_write_text(
            path, json.dumps(to_jsonable(with_version(results.to_dict())), indent=2, allow_nan=False) + "\n"
        )

    writers: list[tuple[Path, Callable[[Path], object]]] = []
    if overlay_jobs:
        writers.append((folder / "images", write_images))
    writers += [
        (folder / "worklist.csv", write_csv),
        (folder / "summary.json", write_summary),
        (folder / "worklist.json", write_json),
    ]
    return writers


def _neighbour_records(
    neighbours: dict[str, Any] | None, jobs: list[tuple[str, Callable[[], np.ndarray]]] | None
) -> list[list[dict[str, Any]]] | None:
    """Per case, its nearest calibration cases as records; queues the thumbnails they show."""
    if neighbours is None:
        return None
    ids = [str(v) for v in neighbours["ids"]]
    labels = [str(v) for v in neighbours["labels"]]
    thumbs = neighbours.get("thumbnails")
    used = np.unique(neighbours["indices"]).tolist()
    files: dict[int, str | None] = dict.fromkeys(used)
    if thumbs is not None and jobs is not None:
        for j in used:
            files[j] = f"images/cal_{j}.png"
            jobs.append((f"images/cal_{j}.png", _thumb_job(thumbs[j])))
    return [
        [
            {"id": ids[j], "label": labels[j], "distance": round(d, 6), "thumbnail": files[j]}
            for j, d in zip(row, dist, strict=True)
        ]
        for row, dist in zip(neighbours["indices"].tolist(), neighbours["distances"].tolist(), strict=True)
    ]


def _row_lists(matrix: np.ndarray, names: list[str]) -> list[list[str]]:
    """For a boolean matrix (N, M): the names of the True columns of every row, as N lists.

    Rows repeat (few distinct sets or reason combinations), so each distinct row is turned into a
    list once and shared.
    """
    if matrix.shape[0] == 0:
        return []
    if matrix.shape[1] == 0:
        return [[] for _ in range(matrix.shape[0])]
    if matrix.shape[1] <= 62:  # pack each row into one integer: a 1-D unique is many times faster
        codes = np.asarray(matrix, dtype=np.int64) @ (np.int64(1) << np.arange(matrix.shape[1], dtype=np.int64))
        packed, inverse = np.unique(codes, return_inverse=True)
        unique = ((packed[:, None] >> np.arange(matrix.shape[1], dtype=np.int64)) & 1).astype(bool)
    else:
        unique, inverse = np.unique(matrix, axis=0, return_inverse=True)
    table = [[names[j] for j in np.flatnonzero(row).tolist()] for row in unique]
    return [table[v] for v in inverse.ravel().tolist()]


def _thumb_job(thumbnail: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: _thumbnail_image(thumbnail)


def _overlay_jobs(
    results: TriageResults,
    pred: Predictions,
    i: int,
    cams: dict[tuple[str, int], np.ndarray] | None,
    jobs: list[tuple[str, Callable[[], np.ndarray]]],
    image_size: int | None,
) -> list[dict[str, str]]:
    thumb = None if pred.thumbnails is None else pred.thumbnails[i]
    overlays: list[dict[str, str]] = []

    def add(kind: str, title: str, values: np.ndarray, style: str, suffix: str) -> None:
        name = f"images/{i}_{suffix}.png"
        jobs.append((name, lambda: render_map(thumb, values, style, size=image_size)))
        overlays.append({"kind": kind, "title": title, "file": name})

    if results.task == "classification" and cams is not None and results.sets is not None:
        for k in np.flatnonzero(results.sets[i]).tolist():
            cam = cams.get((str(results.ids[i]), int(k)))
            if cam is not None:
                add("gradcam", f"Grad-CAM: {results.class_names[k]}", cam, "heat", f"gradcam_{k}")
    if results.task == "segmentation" and results.maps:
        add("mask", "predicted mask", results.maps["predicted"][i], "labels", "mask")
        add("uncertainty", "pixel uncertainty (entropy)", results.maps["uncertainty"][i], "heat", "uncertainty")
        if "conformal_mask" in results.maps:
            cm = results.maps["conformal_mask"][i]
            add("conformal_mask", "conformal mask (all labels)", cm.any(axis=0), "mask", "conformal")
    return overlays


# ---- reading ----------------------------------------------------------------------------------------


@dataclass
class Worklist:
    """A worklist folder read back: its document and a case lookup."""

    folder: Path
    document: dict[str, Any]

    @property
    def cases(self) -> list[dict[str, Any]]:
        return list(self.document["cases"])

    @property
    def choices(self) -> list[str]:
        return list(self.document["choices"])

    @property
    def task(self) -> str:
        return str(self.document["task"])

    def case_index(self) -> dict[str, int]:
        return {str(c["id"]): j for j, c in enumerate(self.document["cases"])}


def load_worklist(folder: str | os.PathLike, option: str = "--worklist") -> Worklist:
    """Read a worklist folder written by ``medsure triage``; refuse anything else in one line."""
    path = Path(folder)
    expected = "a worklist folder written by `medsure triage` (with worklist.json)"
    if not path.is_dir():
        what = "which does not exist" if not path.exists() else "a file"
        raise input_error(option, f"'{path}', {what}", expected, raw=True)
    doc_path = path / "worklist.json"
    if not doc_path.is_file():
        raise input_error(option, f"'{path}', a folder without worklist.json", expected, raw=True)
    try:
        document = json.loads(doc_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise input_error(
            option, f"'{path}' whose worklist.json is not valid JSON ({exc})", expected, raw=True
        ) from None
    if not isinstance(document, dict) or document.get("format") != "medsure-worklist":
        raise input_error(option, f"'{path}' whose worklist.json is not a medsure worklist", expected, raw=True)
    if int(document.get("format_version", 0)) > WORKLIST_FORMAT:
        raise input_error(
            option,
            f"worklist format {document.get('format_version')}",
            f"format {WORKLIST_FORMAT} or older",
            "upgrade medsure",
            raw=True,
        )
    for key in ("task", "class_names", "choices", "cases"):
        if key not in document:
            raise input_error(option, f"'{path}' whose worklist.json lacks '{key}'", expected, raw=True)
    return Worklist(folder=path, document=document)
