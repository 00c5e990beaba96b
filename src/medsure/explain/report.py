"""Report section with Grad-CAM overlays for chosen cases (default: the most confident errors)."""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
from torch import nn

from medsure.artifact import Predictions
from medsure.data.base import ImageDataset
from medsure.errors import MedsureInputError
from medsure.explain.gradcam import GradCAM
from medsure.explain.overlay import overlay_cam
from medsure.report.html import Section, image_to_data_uri, img_tag

__all__ = ["build_sections", "explain_cases"]


def _model_input(images: np.ndarray):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1)))
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def explain_cases(model: nn.Module, dataset: ImageDataset, ids: Sequence[str], *,
                  targets: Sequence[Sequence[int]] | None = None, target_layer: nn.Module | None = None,
                  method: str = "gradcam") -> list[tuple[str, np.ndarray, list[int], np.ndarray]]:
    """Grad-CAM for the cases ``ids`` of ``dataset``.

    ``targets``: label lists per case (e.g. conformal sets); default the predicted class.
    Returns ``(id, image, labels, maps (len(labels), H, W))`` per case.
    """
    index_of = {str(i): k for k, i in enumerate(dataset.ids)}
    missing = [i for i in ids if str(i) not in index_of]
    if missing:
        raise MedsureInputError(f"ids not in the dataset: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    rows = np.array([index_of[str(i)] for i in ids], dtype=np.int64)
    images = dataset.images[rows]
    x = _model_input(images)
    if target_layer is None:
        try:
            from medsure.models import gradcam_target_layer

            target_layer = gradcam_target_layer(model)
        except MedsureInputError:
            target_layer = None  # GradCAM falls back to the last Conv2d
    with GradCAM(model, target_layer, method=method) as cam:
        if targets is None:
            import torch

            with torch.no_grad():
                predicted = model(x).argmax(1).tolist()
            targets = [[int(c)] for c in predicted]
        maps = cam(x, [list(t) for t in targets])
    return [(str(ids[j]), images[j], list(targets[j]), maps[j]) for j in range(len(ids))]


def build_sections(model: nn.Module, dataset: ImageDataset, pred: Predictions, *, ids: Sequence[str] | None = None,
                   n: int = 6, label_sets: Sequence[Sequence[int]] | None = None,
                   target_layer: nn.Module | None = None, order: int = 60,
                   title: str = "Grad-CAM explanations") -> list[Section]:
    """Grad-CAM overlays for ``ids`` (default: the ``n`` most confident wrong predictions in
    ``pred``, then the most confident correct ones to fill up), for every label in
    ``label_sets`` when given (e.g. a conformal set per case), else the predicted class."""
    probs = pred.probabilities()
    if ids is None:
        conf = probs.max(1)
        wrong = probs.argmax(1) != pred.labels if pred.labels is not None else np.zeros(len(conf), bool)
        order_idx = np.r_[np.flatnonzero(wrong)[np.argsort(-conf[wrong])],
                          np.flatnonzero(~wrong)[np.argsort(-conf[~wrong])]]
        ids = [str(pred.ids[i]) for i in order_idx[:n]]
    cases = explain_cases(model, dataset, ids, targets=label_sets, target_layer=target_layer)
    names = [str(c) for c in dataset.class_names]
    pred_row = {str(i): k for k, i in enumerate(pred.ids)}
    figures = []
    for case_id, image, labels, maps in cases:
        k = pred_row.get(case_id)
        info = ""
        if k is not None:
            info = f"p={probs[k].max():.2f}"
            if pred.labels is not None:
                info += f", truth {html.escape(names[int(pred.labels[k])])}"
        for label, cam in zip(labels, maps):
            figures.append(f"<figure>{img_tag(image_to_data_uri(overlay_cam(image, cam)), case_id, width=128)}"
                           f"<figcaption>{html.escape(case_id)}<br>CAM for {html.escape(names[label])}<br>{info}"
                           "</figcaption></figure>")
    body = ("<p>Grad-CAM of the last convolutional stage: where the evidence for the named class lies. "
            "A map that ignores the lesion on a confident wrong case is a warning sign.</p>"
            "<div class='gallery'>" + "".join(figures) + "</div>")
    return [Section(title=title, body_html=body, key="gradcam", order=order, summary={"ids": list(ids)})]
