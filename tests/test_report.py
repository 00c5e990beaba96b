import re

import numpy as np

from medsure.artifact import make_predictions
from medsure.evaluation import classification_summary
from medsure.report import Report, Section
from medsure.report.core import classification_section, segmentation_section


def test_report_orders_sections_and_is_self_contained(tmp_path):
    rng = np.random.default_rng(0)
    cls = make_predictions(rng.normal(size=(20, 3)).astype(np.float32), labels=rng.integers(0, 3, 20))
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_accuracy": 0.5 + 0.1 * e} for e in range(1, 4)]
    masks = np.zeros((3, 8, 8), int)
    masks[:, 2:5, 2:5] = 1
    seg_logits = np.stack([np.zeros((3, 8, 8)), (masks * 4.0 - 2.0)], axis=1).astype(np.float32)
    seg = make_predictions(seg_logits, masks=masks)
    report = Report("t")
    report.add(Section("Late", "<p>late</p>", order=500))
    from medsure.evaluation import segmentation_summary

    report.add(
        segmentation_section(
            segmentation_summary(seg), seg, image_dice=np.ones(3), images=rng.random((3, 8, 8)), history=history
        )
    )
    report.add(classification_section(classification_summary(cls), cls, history=history))
    path = tmp_path / "r.html"
    report.write(path)
    text = path.read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", text)
    assert titles == ["Classification performance", "Segmentation performance", "Late"]
    # every image is inlined: no external src references
    srcs = re.findall(r'src="([^"]+)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "1.0000" in text  # perfect Dice of the synthetic segmenter appears in its table


def test_dollar_signs_in_names_and_hostile_keys_render(tmp_path):
    # '$' starts matplotlib math text; a key with quotes must not break out of id="..."
    logits = np.log(np.array([[0.7, 0.3], [0.2, 0.8]], np.float32))
    pred = make_predictions(logits, labels=[0, 1], class_names=["a$\\frac$", "b$x^$"])
    section = classification_section(classification_summary(pred), pred)
    assert "data:image/png;base64" in section.body_html
    hostile = Section("t", "<p>x</p>", key='k" onmouseover="alert(1)')
    assert '"' not in hostile.anchor() and " " not in hostile.anchor()


def test_atomic_text_is_utf8_with_normal_permissions(tmp_path):
    import os

    from medsure.utils.io import atomic_write_text

    path = tmp_path / "r.html"
    atomic_write_text(path, "α ≥ 0.9")
    assert path.read_bytes() == "α ≥ 0.9".encode()
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_classification_section_renders_the_summary_it_is_given():
    # the section renders; it does not compute: a summary with marker values shows those values
    pred = make_predictions(np.log(np.array([[0.7, 0.3], [0.2, 0.8]], np.float32)), labels=[0, 1])
    summary = classification_summary(pred)
    summary["accuracy"] = 0.123456
    summary["per_class"][summary["class_names"][0]]["f1"] = 0.654321
    body = classification_section(summary, pred).body_html
    assert "0.1235" in body and "0.6543" in body
    assert "precision" in body and "recall" in body and "loss" in body
