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
    assert (
        main(
            [
                "explain",
                "--run",
                str(run.run_dir),
                "--split",
                "test",
                "--ids",
                *ids,
                "--out",
                str(out),
                "--classes",
                "0",
                "1",
            ]
        )
        == 0
    )
    record = json.loads((out / "explain.json").read_text())
    assert len(record["files"]) == 6 and all((out / f).is_file() for f in record["files"])
    # the cams.npz format documented in `medsure explain --help` (read by other commands)
    with np.load(out / "cams.npz", allow_pickle=False) as cams:
        assert set(cams.files) == {"ids", "classes", "maps", "class_names", "method"}
        assert cams["maps"].shape == (6, *test.image_size) and cams["maps"].dtype == np.float32
        assert np.all(cams["maps"] >= 0)
        assert cams["ids"].tolist() == [i for i in ids for _ in range(2)]  # --ids order, a case's maps together
        assert cams["classes"].tolist() == [0, 1] * 3 and str(cams["method"]) == "gradcam"
        assert cams["class_names"].tolist() == [str(c) for c in test.class_names]
        # the maps are the library's Grad-CAM of the run's model on those images
        from medsure.predict import predict_cams

        again = predict_cams(run, test, ids, targets=[[0, 1]] * 3)
        np.testing.assert_array_equal(again.maps, cams["maps"])
    assert (
        main(["explain", "--run", str(run.run_dir), "--split", "test", "--ids", "no-such-id", "--out", str(out)]) == 2
    )
    # a bad --method or an --out that is a file fails before anything is computed or written
    assert (
        main(
            [
                "explain",
                "--run",
                str(run.run_dir),
                "--ids",
                ids[0],
                "--method",
                "scorecam",
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "m").exists()
    assert main(["explain", "--run", str(run.run_dir), "--ids", ids[0], "--out", str(out / "cams.npz")]) == 2


def test_explain_help_documents_the_cams_file(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    help_text = capsys.readouterr().out
    for key in ("cams.npz", "ids", "classes", "maps", "class_names", "method", "(M, H, W) float32"):
        assert key in help_text


def test_explain_section_with_conformal_sets():
    from medsure.explain import cases_to_explain
    from medsure.explain.report import build_sections
    from medsure.predict import predict_cams

    run = realpreds.trained_run("pneumoniamnist")
    _, test = realpreds.classification_predictions("pneumoniamnist")
    dataset = realpreds.split_datasets("pneumoniamnist")["test"]
    ids = [str(i) for i in test.ids[:4]]
    sets = [[0, 1], [1], [0], []]
    cams = predict_cams(run, dataset, ids, targets=sets)
    assert cams.ids.tolist() == [ids[0], ids[0], ids[1], ids[2]] and cams.classes.tolist() == [0, 1, 1, 0]
    sections = build_sections(cams, test)
    assert sections[0].body_html.count("<figure>") == 4
    default = build_sections(predict_cams(run, dataset, cases_to_explain(test, 3)), test)
    assert len(default[0].summary["ids"]) == 3


def test_explain_rebuilds_the_split_at_the_runs_image_size(tmp_path):
    # a run trained at 32 px on BUSI (embedded at 64 px): explain must see the 32 px images
    # predict sees, not the embedded default size
    run = tmp_path / "run32"
    assert (
        main(
            [
                "train",
                "--dataset",
                "busi",
                "--model",
                "small_cnn",
                "--image-size",
                "32",
                "--epochs",
                "1",
                "--max-samples",
                "24",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    from medsure.training import load_run
    from medsure.training.datasets import load_splits

    test = load_splits(load_run(run).config["train"]["dataset"])["test"]
    out = tmp_path / "explain"
    assert main(["explain", "--run", str(run), "--split", "test", "--ids", str(test.ids[0]), "--out", str(out)]) == 0
    with np.load(out / "cams.npz") as cams:
        assert cams["maps"].shape[-2:] == (32, 32)


def test_cases_to_explain_puts_confident_errors_first():
    from medsure.artifact import make_predictions
    from medsure.explain import cases_to_explain

    logits = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 5.0], [2.0, 0.0]], np.float32)
    pred = make_predictions(logits, labels=np.array([1, 1, 0, 0]), ids=np.array(["a", "b", "c", "d"]))
    # wrong: a (p=.95), c (p=.99) -> c, a; then correct by confidence: d (.88), b (.73)
    assert cases_to_explain(pred, 4) == ["c", "a", "d", "b"]
    assert cases_to_explain(pred, 1) == ["c"]
