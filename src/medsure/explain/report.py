"""Report section with CAM overlays of chosen cases; it renders a :class:`CAMResults`, never computes.

The CAMs come from :func:`medsure.predict.predict_cams` (the cases, e.g., from
:func:`medsure.explain.results.cases_to_explain`).
"""

from __future__ import annotations

import html

from medsure.artifact import Predictions
from medsure.explain.plots import overlay_cam
from medsure.explain.results import CAMResults
from medsure.report.html import Section, image_to_data_uri, img_tag

__all__ = ["build_sections"]

_METHOD_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}


def _alt(method: str, case_id: str, class_name: str) -> str:
    return f"{method} heat map over image {case_id}: where the evidence for class {class_name} lies"


def build_sections(
    cams: CAMResults, pred: Predictions | None = None, *, order: int = 60, title: str | None = None
) -> list[Section]:
    """One gallery section: an overlay per map of ``cams``, captioned with the case id, the
    explained class and — when ``pred`` holds the case — its confidence and true label."""
    label = _METHOD_TITLES.get(cams.method, cams.method)
    names = list(cams.class_names)
    row_of = {str(i): k for k, i in enumerate(pred.ids)} if pred is not None else {}
    probs = pred.probabilities() if pred is not None else None
    labels = pred.labels if pred is not None else None
    figures = []
    for raw_id, cls, cam, image in zip(cams.ids, cams.classes, cams.maps, cams.images, strict=True):
        case_id = str(raw_id)
        info = ""
        k = row_of.get(case_id)
        if k is not None and probs is not None:
            info = f"p={probs[k].max():.2f}"
            if labels is not None:
                info += f", truth {html.escape(names[int(labels[k])])}"
        tag = img_tag(image_to_data_uri(overlay_cam(image, cam)), _alt(label, case_id, names[int(cls)]), width=128)
        figures.append(
            f"<figure>{tag}"
            f"<figcaption>{html.escape(case_id)}<br>CAM for {html.escape(names[int(cls)])}<br>{info}"
            "</figcaption></figure>"
        )
    body = (
        f"<p>{label} of the last convolutional stage: where the evidence for the named class lies. "
        "A map that ignores the lesion on a confident wrong case is a warning sign.</p>"
        "<div class='gallery'>" + "".join(figures) + "</div>"
    )
    ids = list(dict.fromkeys(str(i) for i in cams.ids))
    return [
        Section(
            title=title or f"{label} explanations",
            body_html=body,
            key="gradcam",
            order=order,
            summary={"ids": ids, "method": cams.method},
        )
    ]
