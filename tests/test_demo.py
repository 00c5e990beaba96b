"""`medsure demo --quick` end to end on the embedded data: every analysis runs on the prediction
files the demo wrote, and the report holds one section per analysis."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import medsure
from medsure.artifact import load_predictions
from medsure.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out), "--seed", "3"]) == 0
    return out


def test_demo_writes_results_for_every_analysis(demo_dir):
    results = json.loads((demo_dir / "results.json").read_text())
    for key in (
        "classification",
        "segmentation",
        "conformal",
        "calibration",
        "failure",
        "explain",
        "segmentation_uncertainty",
        "timings_s",
    ):
        assert key in results, key
    cls = results["classification"]
    assert 0.0 <= cls["accuracy"] <= 1.0
    assert np.sum(cls["confusion_matrix"]) == cls["n"]
    aps = results["conformal"]["conformal"]["marginal"]
    assert aps["coverage_band"][0] < aps["coverage_band"][1] and isinstance(aps["valid"], bool)
    assert results["timings_s"]["total_s"] >= results["timings_s"]["train_classifier_s"]
    assert results["medsure_version"] == medsure.__version__  # one version everywhere (issue 17)


def test_demo_prediction_files_are_the_analysed_artifacts(demo_dir):
    results = json.loads((demo_dir / "results.json").read_text())
    test = load_predictions(demo_dir / "predictions" / "busi_test.npz")
    assert test.n_samples == results["classification"]["n"]
    assert list(test.class_names) == results["classification"]["class_names"]
    assert test.provenance["medsure_version"] == results["medsure_version"]
    mc = load_predictions(demo_dir / "predictions" / "busi_test_mc.npz")
    assert mc.has_samples and mc.logits.shape[0] > 1 and list(mc.ids) == list(test.ids)
    seg = load_predictions(demo_dir / "predictions" / "msd_lung_test.npz")
    assert seg.task == "segmentation" and seg.masks.shape[0] == results["segmentation"]["n"]
    # the cal and test files of each task never share an image
    for name in ("busi", "msd_lung"):
        cal = load_predictions(demo_dir / "predictions" / f"{name}_cal.npz")
        other = load_predictions(demo_dir / "predictions" / f"{name}_test.npz")
        assert not set(cal.ids) & set(other.ids)


def test_demo_report_is_self_contained_with_all_sections(demo_dir):
    page = (demo_dir / "report.html").read_text()
    for anchor in ("classification", "segmentation", "conformal", "gradcam", "seg-summary", "seg-overlays", "timings"):
        assert f'id="{anchor}"' in page, anchor
    assert "Grad-CAM for every label" in page
    # pictures are embedded, nothing is fetched
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 8
    assert not re.search(r'src="(https?:|/)', page)


def test_demo_runs_rebuild_the_demo_splits_and_lung_patients_stay_apart(demo_dir):
    # `medsure predict --run demo_output/runs/...` must see the very cal/test images the demo scored
    from medsure.training import load_run
    from medsure.training.datasets import load_splits

    for run_name, prefix in (("busi_small_cnn", "busi"), ("msd_lung_unet", "msd_lung")):
        splits = load_splits(load_run(demo_dir / "runs" / run_name).config["train"]["dataset"])
        for split in ("cal", "test"):
            saved = load_predictions(demo_dir / "predictions" / f"{prefix}_{split}.npz")
            assert list(map(str, saved.ids)) == list(map(str, splits[split].ids)), (run_name, split)
        if prefix == "msd_lung":  # patient-disjoint source files: fitted on one, scored on the other
            fitted = {str(v) for k in ("train", "val") for v in splits[k].meta["source_split"]}
            scored = {str(v) for k in ("cal", "test") for v in splits[k].meta["source_split"]}
            assert fitted == {"val"} and scored == {"test"}
