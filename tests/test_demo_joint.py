"""The demo's joint view (issue 12): a small UML on the embedded BUSI images with masks, rendered
with real numbers, with no ../shared/data."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from medsure.artifact import load_joint_predictions
from medsure.demo import DemoSettings, _joint_sections


@pytest.mark.slow  # trains a small UML
def test_joint_view_renders_real_numbers_without_shared_data(tmp_path, monkeypatch):
    # the embedded images and masks: no data root is needed (the old 'Skipped' branch is gone)
    monkeypatch.setenv("MEDSURE_DATA_ROOT", str(tmp_path / "nothing"))
    settings = DemoSettings(seed=0, quick=True)
    (section,) = _joint_sections(SimpleNamespace(out_dir=tmp_path), settings)
    summary = section.summary
    assert section.key == "joint" and "skipped" not in summary
    test = load_joint_predictions(tmp_path / "predictions" / "busi_joint_test.npz")
    cls, seg = test.split()
    # the numbers in the section are those of the saved joint file
    assert summary["n_test"] == cls.n_samples > 0
    alpha = np.exp(cls.mean_logits().astype(np.float64))
    accuracy = float((alpha.argmax(1) == cls.labels).mean())
    assert summary["accuracy"] == pytest.approx(accuracy)
    assert summary["mean_class_u"] == pytest.approx(float((alpha.shape[1] / alpha.sum(1)).mean()), rel=1e-6)
    assert 0.0 < summary["mean_class_u"] <= 1.0 and 1.0 <= summary["mean_set_size"] <= len(cls.class_names)
    assert 0.0 <= summary["coverage"] <= 1.0 and seg.masks is not None
    # the joint view: one embedded figure, and the table shows the accuracy
    assert len(re.findall(r"<img ", section.body_html)) == 1
    assert f"{summary['accuracy']:.3f}"[:4] in section.body_html
