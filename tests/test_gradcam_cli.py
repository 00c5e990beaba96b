"""``medsure explain`` on a real trained run and the Grad-CAM report section."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medsure.cli import main

realpreds = pytest.importorskip("realpreds", reason="tests/realpreds.py (real trained runs) not available")


def test_explain_cli_writes_overlays(tmp_path):
    run = realpreds.trained_run("pneumoniamnist")
    test = realpreds.split_datasets("pneumoniamnist")["test"]
    ids = [str(i) for i in test.ids[:3]]
    out = tmp_path / "explain"
    assert main(["explain", "--run", str(run.run_dir), "--split", "test", "--ids", *ids,
                 "--out", str(out), "--classes", "0", "1"]) == 0
    record = json.loads((out / "explain.json").read_text())
    assert len(record["files"]) == 6
    with np.load(out / "cams.npz") as cams:
        assert cams["maps"].shape == (6, *test.image_size)
        assert np.all(cams["maps"] >= 0)
    assert main(["explain", "--run", str(run.run_dir), "--split", "test", "--ids", "no-such-id",
                 "--out", str(out)]) == 2


def test_explain_section_with_conformal_sets():
    from medsure.explain.report import build_sections

    run = realpreds.trained_run("pneumoniamnist")
    cal, test = realpreds.classification_predictions("pneumoniamnist")
    dataset = realpreds.split_datasets("pneumoniamnist")["test"]
    ids = [str(i) for i in test.ids[:4]]
    sets = [[0, 1], [1], [0], []]
    sections = build_sections(run.model, dataset, test, ids=ids, label_sets=sets)
    assert sections[0].body_html.count("<figure>") == 4
    default = build_sections(run.model, dataset, test, n=3)
    assert len(default[0].summary["ids"]) == 3


def test_explain_rebuilds_the_split_at_the_runs_image_size(tmp_path):
    # a run trained at 32 px on BUSI (embedded at 64 px): explain must see the 32 px images
    # predict sees, not the embedded default size
    run = tmp_path / "run32"
    assert main(["train", "--dataset", "busi", "--model", "small_cnn", "--image-size", "32", "--epochs", "1",
                 "--max-samples", "24", "--out", str(run)]) == 0
    from medsure.training import load_run
    from medsure.training.datasets import load_splits

    test = load_splits(load_run(run).config["train"]["dataset"])["test"]
    out = tmp_path / "explain"
    assert main(["explain", "--run", str(run), "--split", "test", "--ids", str(test.ids[0]),
                 "--out", str(out)]) == 0
    with np.load(out / "cams.npz") as cams:
        assert cams["maps"].shape[-2:] == (32, 32)
