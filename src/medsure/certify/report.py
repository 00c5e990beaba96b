"""Report sections of certified robustness (outer layer: renders results, computes nothing).

The numbers and arrays come from :func:`medsure.certify.evaluate_certification`
(:class:`~medsure.certify.CertificationResults`), computed by the CLI or the demo and handed here.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medsure.report.html import Section, figure_to_data_uri, html_table, img_tag

if TYPE_CHECKING:  # results types only: this module imports no analysis code
    from medsure.certify.evaluate import CertificationResults


def build_sections(
    results: Sequence[CertificationResults], *, names: Sequence[str] | None = None, order: int = 80
) -> list[Section]:
    """Certification sections: a summary table, overlays of the first run, and a curve.

    Parameters
    ----------
    results : one or more runs of the same model family (e.g. several sigmas, with and without a
        denoiser); segmentation and classification are not mixed
    names : a caption per run (default ``sigma=...``)
    order : sort key of the first section
    """
    from medsure.certify import plots

    results = list(results)
    if not results:
        return []
    names = (
        list(names) if names is not None else [f"sigma={r.sigma:g}" + (" seq" if r.sequential else "") for r in results]
    )
    first = results[0]
    seg = first.task == "segmentation"
    rows = [_summary_row(name, r) for name, r in zip(names, results, strict=True)]
    intro = (
        "<p>Randomized smoothing certifies that a prediction stays the same for every perturbation of L2 norm up to "
        "the radius (image in [0, 1] units), with probability 1 - alpha over the noise. "
        + (
            "SegCertify (Fischer et al. 2021): a pixel is certified when its class wins more than tau of the noisy "
            "passes, tested per pixel with the correction across the image; the other pixels abstain. Certified Dice "
            "counts abstained pixels as wrong.</p>"
            if seg
            else "Cohen et al. (2019) CERTIFY: the Clopper–Pearson lower bound pA of the top class gives the radius "
            "sigma Phi^-1(pA); images with pA <= 1/2 abstain.</p>"
        )
    )
    headline = "certified_dice" if seg else "certified_accuracy"
    summary = {
        "sigma": first.sigma,
        "n": first.n,
        "alpha": first.alpha,
        headline: _mean(first.summary.get(headline)),
        "abstain_rate": _mean(first.summary.get("abstain_rate")),
    }
    sections = [
        Section("Certified robustness", intro + html_table(rows), key="certify-summary", order=order, summary=summary)
    ]
    if seg and first.overlay_images is not None and len(first.overlay_images):
        m = len(first.overlay_images)
        fig = plots.overlay_figure(
            first.overlay_images,
            None if first.targets is None else first.targets[:m],
            first.certified[:m],
            n_classes=len(first.class_names),
            titles=[str(i) for i in first.ids[:m]],
        )
        body = f"<p>{html.escape(names[0])}; magenta pixels abstain.</p>" + img_tag(figure_to_data_uri(fig), "overlays")
        sections.append(Section("Certified segmentations", body, key="certify-overlays", order=order + 1))
    if seg and len({r.sigma for r in results}) > 1:
        series: dict[str, list[Any]] = {}
        groups: dict[str, list[CertificationResults]] = {}
        for name, r in zip(names, results, strict=True):
            groups.setdefault(name.split(" sigma=")[0] if " sigma=" in name else "model", []).append(r)
        sigmas = sorted({r.sigma for r in results})
        for group, members in groups.items():
            by_sigma = {r.sigma: r for r in members}
            series[f"{group}: certified Dice"] = [
                _mean(by_sigma[s].summary.get("certified_dice")) if s in by_sigma else None for s in sigmas
            ]
            series[f"{group}: plain under noise"] = [
                _mean(by_sigma[s].summary.get("plain_noisy_dice")) if s in by_sigma else None for s in sigmas
            ]
        fig = plots.dice_vs_sigma_figure(sigmas, series, "mean Dice")
        sections.append(
            Section(
                "Certified Dice vs sigma",
                img_tag(figure_to_data_uri(fig), "dice vs sigma"),
                key="certify-sigma",
                order=order + 2,
            )
        )
    if not seg:
        curves = {
            name: (r.radius_grid, r.certified_accuracy)
            for name, r in zip(names, results, strict=True)
            if r.radius_grid is not None and r.certified_accuracy is not None
        }
        if curves:
            fig = plots.accuracy_radius_figure(curves)
            sections.append(
                Section(
                    "Certified accuracy vs radius",
                    img_tag(figure_to_data_uri(fig), "accuracy vs radius"),
                    key="certify-radius",
                    order=order + 2,
                )
            )
    return sections


def _mean(entry: Any) -> float | None:
    return None if not entry else entry.get("mean")


def _fmt(entry: Any) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    ci = entry.get("ci")
    return f"{entry['mean']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _summary_row(name: str, r: CertificationResults) -> dict[str, Any]:
    used = np.asarray(r.samples_used, dtype=float)
    row: dict[str, Any] = {"run": name, "sigma": f"{r.sigma:g}", "n0 / n": f"{r.n0} / {r.n}", "alpha": f"{r.alpha:g}"}
    if r.task == "segmentation":
        row["tau / radius"] = f"{r.tau:g} / {float(r.radius):.3f}"
        row["correction"] = str(r.correction) + (" (sequential)" if r.sequential else "")
        row["certified Dice [95% CI]"] = _fmt(r.summary.get("certified_dice"))
        row["Dice on certified pixels"] = _fmt(r.summary.get("non_abstained_dice"))
        row["plain Dice (clean)"] = _fmt(r.summary.get("plain_dice"))
        row["plain Dice under noise"] = _fmt(r.summary.get("plain_noisy_dice"))
    else:
        row["certified accuracy"] = _fmt(r.summary.get("certified_accuracy"))
        row["plain accuracy (clean)"] = _fmt(r.summary.get("plain_accuracy"))
        row["plain accuracy under noise"] = _fmt(r.summary.get("plain_noisy_accuracy"))
    row["abstain rate"] = _fmt(r.summary.get("abstain_rate"))
    row["mean samples / image"] = f"{used.mean():.1f}" if used.size else "n/a"
    row["s / image"] = f"{r.seconds_per_image:.2f}"
    return row
