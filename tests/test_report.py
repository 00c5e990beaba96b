import re

import numpy as np

from medsure.artifact import make_predictions
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
    report.add(segmentation_section(seg, images=rng.random((3, 8, 8)), history=history))
    report.add(classification_section(cls, history=history))
    path = tmp_path / "r.html"
    report.write(path)
    text = path.read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", text)
    assert titles == ["Classification performance", "Segmentation performance", "Late"]
    # every image is inlined: no external src references
    srcs = re.findall(r'src="([^"]+)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "1.0000" in text  # perfect Dice of the synthetic segmenter appears in its table
