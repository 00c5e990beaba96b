"""``medsure calibration`` and ``medsure failure`` command lines, and their report sections."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsure.artifact import make_predictions, save_predictions, softmax
from medsure.cli import main


def _artifacts(tmp_path, n=400, k=3, t=None, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 3
    y = (softmax(z / 2, axis=1).cumsum(1) > rng.random((n, 1))).argmax(1)
    thumbs = rng.integers(0, 255, size=(n, 8, 8), dtype=np.uint8)
    paths = {}
    for name, sl in (("cal", slice(0, n // 2)), ("test", slice(n // 2, n))):
        ids = [f"{name}{i}" for i in range(n // 2)]
        pred = make_predictions(z[sl], labels=y[sl], ids=ids, thumbnails=thumbs[sl])
        paths[name] = save_predictions(tmp_path / f"{name}.npz", pred)
        if t:
            samples = z[sl][None] + 0.5 * rng.normal(size=(t, n // 2, k))
            paths[name + "_mc"] = save_predictions(
                tmp_path / f"{name}_mc.npz", make_predictions(samples, labels=y[sl], ids=ids, sample_kind="mc_dropout")
            )
    return paths


@pytest.mark.parametrize("method", ["temperature", "vector", "isotonic", "histogram"])
def test_calibration_cli_contract(tmp_path, method, capsys):
    p = _artifacts(tmp_path)
    out = tmp_path / "r.json"
    assert (
        main(["calibration", "--cal", str(p["cal"]), "--test", str(p["test"]), "--method", method, "--out", str(out)])
        == 0
    )
    result = json.loads(out.read_text())
    for phase in ("before", "after"):
        for key in ("ece", "mce", "ace", "classwise_ece", "brier", "nll"):
            assert isinstance(result[phase][key], float)
    assert ("temperature" in result) == (method == "temperature")
    if method == "temperature":
        assert result["temperature"] == pytest.approx(2.0, rel=0.25)  # data generated with T = 2
    assert "ECE" in capsys.readouterr().out


def test_calibration_cli_errors(tmp_path, capsys):
    p = _artifacts(tmp_path)
    assert (
        main(
            [
                "calibration",
                "--cal",
                str(tmp_path / "missing.npz"),
                "--test",
                str(p["test"]),
                "--out",
                str(tmp_path / "r.json"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    unlabelled = save_predictions(tmp_path / "u.npz", make_predictions(np.zeros((3, 3), np.float32)))
    assert (
        main(["calibration", "--cal", str(p["cal"]), "--test", str(unlabelled), "--out", str(tmp_path / "r.json")]) == 2
    )
    with pytest.raises(SystemExit):
        main(
            [
                "calibration",
                "--cal",
                str(p["cal"]),
                "--test",
                str(p["test"]),
                "--method",
                "platt",
                "--out",
                str(tmp_path / "r.json"),
            ]
        )


def test_failure_cli_contract_with_samples_and_review(tmp_path, capsys):
    p = _artifacts(tmp_path, t=5)
    out = tmp_path / "f.json"
    report = tmp_path / "f.html"
    assert (
        main(
            [
                "failure",
                "--cal",
                str(p["cal"]),
                "--test",
                str(p["test"]),
                "--samples",
                str(p["test_mc"]),
                "--cal-samples",
                str(p["cal_mc"]),
                "--bootstrap",
                "200",
                "--target-risk",
                "0.3",
                "--out",
                str(out),
                "--report",
                str(report),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert 0 < result["error_rate"] < 1
    assert {"msr", "doctor", "energy", "mc_dropout_mutual_information", "combined"} <= set(result["csfs"])
    for metrics in result["csfs"].values():
        for key in ("aurc", "eaurc", "augrc", "auroc_f", "fpr95"):
            lo, hi = metrics[key]["ci"]
            assert lo <= metrics[key]["value"] <= hi or key in ("eaurc", "fpr95")
    assert 0 <= result["review"]["review_share"] <= 1
    html = report.read_text()
    assert "Most confident wrong" in html and "data:image/png" in html
    assert "AURC" in capsys.readouterr().out


def test_calibration_and_failure_sections(tmp_path):
    from medsure.artifact import load_predictions
    from medsure.calibration.evaluate import evaluate_calibration
    from medsure.calibration.report import build_sections as cal_sections
    from medsure.failure.evaluate import evaluate_failure
    from medsure.failure.report import build_sections as failure_sections

    p = _artifacts(tmp_path)
    cal, test = load_predictions(p["cal"]), load_predictions(p["test"])
    sections = cal_sections(evaluate_calibration(cal, test))
    assert len(sections) == 1 and "reliability" in sections[0].body_html
    shifted = make_predictions(test.logits * 0.3, labels=test.labels, ids=test.ids)
    result = evaluate_failure(cal, test, n_boot=50, target_risk=0.1)
    shift_result = evaluate_failure(cal, shifted, n_boot=50, target_risk=0.1)
    sections = failure_sections(result, test=test, shift_result=shift_result, shift=shifted)
    assert [s.key for s in sections] == ["failure", "failure-shift"]
    assert "Caution" in sections[1].body_html
    assert len(sections[0].summary["worst_ids"]) == 8


def test_failure_section_explains_an_uncertifiable_review_threshold(tmp_path):
    from medsure.artifact import load_predictions
    from medsure.failure.evaluate import evaluate_failure
    from medsure.failure.report import build_sections as failure_sections

    p = _artifacts(tmp_path)
    cal, test = load_predictions(p["cal"]), load_predictions(p["test"])
    reachable = failure_sections(evaluate_failure(cal, test, n_boot=20, target_risk=0.99))[0]
    assert "No threshold could be certified" not in reachable.body_html
    assert reachable.summary["review"]["review_share"] < 1.0
    # a target below what any accepted subset can certify: everything goes to review, and the page says why
    impossible = failure_sections(evaluate_failure(cal, test, n_boot=20, target_risk=1e-4))[0]
    assert impossible.summary["review"]["review_share"] == 1.0
    assert "No threshold could be certified" in impossible.body_html
