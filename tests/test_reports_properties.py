"""Properties of the rendered reports (issue 14, item 4), checked on real predictions: the text
that interprets a fitted temperature matches its value, a calibrator that worsens the test ECE or
NLL is flagged, colour bars cover no panel, the conformal mask is a contour over a visible image,
and every figure carries an alt text. (The guarantee-next-to-the-realised-number and class-name
strata properties are checked on the CLI reports in test_own_data_e2e.py.)"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from matplotlib.collections import Collection
from matplotlib.image import AxesImage

from medsure.calibration.evaluate import evaluate_calibration
from medsure.calibration.report import build_sections as calibration_sections
from medsure.report.html import Report

from realpreds import classification_predictions, segmentation_predictions

pytestmark = pytest.mark.realdata


def _html(sections) -> str:
    report = Report(title="t")
    for section in sections:
        report.add(section)
    return report.render()


def _alts_ok(page: str) -> None:
    tags = re.findall(r"<img [^>]*>", page)
    assert tags
    for tag in tags:
        alt = re.search(r'alt="([^"]*)"', tag)
        assert alt and len(alt.group(1)) > 15, tag[:100]


@pytest.mark.parametrize("scale", [3.0, 0.3])
def test_temperature_text_matches_the_fitted_value(scale):
    cal, test = classification_predictions("busi")
    # sharpened logits make the model overconfident (fitted T > 1), flattened ones underconfident
    cal, test = replace(cal, logits=cal.logits * scale), replace(test, logits=test.logits * scale)
    result = evaluate_calibration(cal, test, method="temperature")
    t = result.parameters["temperature"]
    page = _html(calibration_sections(result))
    sentence = re.search(r"Fitted temperature T = ([0-9.]+) \((.*?)\)\.</p>", page)
    assert sentence and float(sentence.group(1)) == pytest.approx(t, abs=1e-3)
    if scale > 1:
        assert t > 1 and "T &gt; 1" in sentence.group(2) and "overconfident" in sentence.group(2)
    else:
        assert t < 1 and "T &lt; 1" in sentence.group(2) and "underconfident" in sentence.group(2)
    _alts_ok(page)


def test_a_calibrator_that_worsens_the_test_set_is_flagged():
    cal, test = classification_predictions("busi")
    rng = np.random.default_rng(0)
    # calibration labels shuffled: the fitted temperature flattens good test probabilities
    noisy = replace(cal, labels=rng.permutation(cal.labels))
    for fitted_on, must_flag in ((noisy, True), (cal, None)):
        result = evaluate_calibration(fitted_on, test, method="temperature")
        worse = [m for m in ("ece", "nll") if result.after[m] > result.before[m]]
        page = _html(calibration_sections(result))
        flagged = "WORSENED" in page
        assert flagged == bool(worse), (worse, flagged)  # the flag says exactly what the numbers say
        if must_flag:
            assert worse, "a temperature fitted on shuffled labels should make the test worse"
            for m in worse:
                assert f"{m.upper()} worse ({result.before[m]:.4f} &rarr; {result.after[m]:.4f})" in page


def _overlaps(a, b) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5


def _colour_bars_cover_nothing(fig) -> None:
    fig.canvas.draw()
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bars, "the figure has a colour bar"
    for bar in bars:
        box = bar.get_window_extent()
        for ax in fig.axes:
            if ax is not bar and ax.get_visible():
                assert not _overlaps(box, ax.get_window_extent()), f"colour bar covers panel {ax.get_title()!r}"


def test_colour_bars_do_not_cover_panels_and_conformal_masks_are_contours():
    import matplotlib.pyplot as plt

    from medsure.conformal import plots as conformal_plots
    from medsure.segmentation import plots
    from medsure.segmentation.conformal_mask import evaluate_conformal_mask
    from medsure.segmentation.evaluate import evaluate_segmentation
    from medsure.segmentation.report import build_sections

    cal, test = segmentation_predictions("kvasir")
    mask = evaluate_conformal_mask(cal, test, alpha=0.1)
    seg = evaluate_segmentation(test)
    ex = seg.examples
    fig = plots.overlay_figure(
        masks=ex.masks, predicted=ex.predicted, uncertainty=ex.uncertainty, conformal=mask.test_masks[ex.index],
        titles=[str(i) for i in ex.ids], n_classes=2, thumbnails=ex.thumbnails, alpha=0.1,
    )  # fmt: skip
    _colour_bars_cover_nothing(fig)
    conformal_column = fig.axes[4]  # row 0, column 4
    assert "conformal mask" in conformal_column.get_title()
    images = [a for a in conformal_column.get_children() if isinstance(a, AxesImage)]
    assert len(images) == 1, "only the image itself is drawn as pixels; the mask is an outline"
    lines = [c for c in conformal_column.get_children() if isinstance(c, Collection) and c.get_paths()]
    assert lines, "the conformal mask and the ground truth are drawn as contours"
    plt.close(fig)

    overlap = {"class_names": ["a", "b", "c"], "matrix": np.eye(3).tolist()}
    fig = conformal_plots.plot_class_overlap(overlap)
    _colour_bars_cover_nothing(fig)
    plt.close(fig)

    page = _html(
        build_sections(conformal=mask, test_thumbnails=test.thumbnails, test_ids=test.ids, test_truth=test.masks)
    )
    _alts_ok(page)
    assert "outlined in yellow" in page and "on average over calibration draws" in page
    assert f"{mask.fnr[0]:.4f}" in re.search(r"<p class='guarantee'>(.*?)</p>", page).group(1)


def test_class_coverage_range_is_drawn_when_the_mean_lies_outside_it():
    """A rare class covered in most splits and missed in a few has a mean below its 5% quantile;
    the figure must still draw (error bars around the mean would be negative there)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsure.conformal.plots import plot_class_coverage_stability

    levels = [0.05, 0.5, 0.95]
    skewed = {"mean": 0.8, "quantiles": [1.0, 1.0, 1.0]}  # mean < q05: 80% of splits at 1, 20% at 0
    regular = {"mean": 0.9, "quantiles": [0.85, 0.9, 0.95]}
    result = {
        "rows": [{"n_cal": 50, "per_class": [skewed, regular]}, {"n_cal": 100, "per_class": [regular, regular]}],
        "quantile_levels": levels,
        "class_names": ["rare", "common"],
        "class_counts": [5, 500],
        "alpha": 0.1,
        "method": "aps",
        "n_repeats": 20,
    }
    fig = plot_class_coverage_stability(result)
    ax = fig.axes[0]
    segments = [seg for coll in ax.collections for seg in getattr(coll, "get_segments", list)()]
    spans = sorted((float(s[0][1]), float(s[1][1])) for s in segments)
    assert (0.85, 0.95) in spans and (1.0, 1.0) in spans  # each class's own 5-95% range, as computed
    plt.close(fig)
