"""CLI contract of ``medsure segment-eval`` and ``medsure conformal-mask`` on synthetic artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsure.artifact import make_predictions, save_predictions
from medsure.cli import main


def _artifact(n=24, k=2, size=16, seed=0, noise=1.0, samples=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), np.int64)
    for j in range(1, k):  # fixture construction: a disc per label at a random place
        cy, cx = rng.integers(4, size - 4, (2, n))
        disc = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2 <= 9
        masks[disc] = j
    onehot = np.eye(k)[masks].transpose(0, 3, 1, 2) * 3.0
    shape = (samples, *onehot.shape) if samples else onehot.shape
    logits = (onehot + rng.normal(scale=noise * 1.5, size=shape)).astype(np.float32)
    return make_predictions(
        logits,
        masks=masks,
        class_names=["background"] + [f"s{j}" for j in range(1, k)],
        sample_kind="mc_dropout" if samples else None,
    )


def test_segment_eval_writes_contract_keys(tmp_path, capsys):
    pred = save_predictions(tmp_path / "p.npz", _artifact(k=3, samples=3))
    shift = save_predictions(tmp_path / "s.npz", _artifact(k=3, seed=1, noise=2.0, samples=3))
    out = tmp_path / "r.json"
    assert main(["segment-eval", "--pred", str(pred), "--shift", str(shift), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("dice", "hd95", "ece", "ece_boundary", "segment_ece", "ueo", "dice_pred_corr", "shift_auroc"):
        assert key in result, key
    assert set(result["dice"]) == {"s1", "s2"} and set(result["hd95"]) == {"s1", "s2"}
    assert 0 <= result["ece"] <= 1 and 0 <= result["ece_boundary"] <= 1 and 0 <= result["ueo"] <= 1
    # noisier logits on the shifted file give higher entropy: detectable shift
    assert result["shift_auroc"] > 0.8
    assert 0 < result["boundary_pixel_fraction"] < 1
    assert "segment-eval" in capsys.readouterr().out


def test_segment_eval_without_shift_has_no_shift_auroc(tmp_path):
    pred = save_predictions(tmp_path / "p.npz", _artifact())
    out = tmp_path / "r.json"
    assert main(["segment-eval", "--pred", str(pred), "--out", str(out)]) == 0
    assert "shift_auroc" not in json.loads(out.read_text())


def test_conformal_mask_cli_binary(tmp_path):
    cal = save_predictions(tmp_path / "c.npz", _artifact(n=60, seed=2))
    test = save_predictions(tmp_path / "t.npz", _artifact(n=40, seed=3))
    out = tmp_path / "r.json"
    assert main(["conformal-mask", "--cal", str(cal), "--test", str(test), "--alpha", "0.1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_cal"] == 60 and 0 <= result["lambda"] <= 1 and 0 <= result["fnr"] <= 1


def test_conformal_mask_cli_multilabel_reports_per_label(tmp_path):
    cal = save_predictions(tmp_path / "c.npz", _artifact(n=30, k=3, seed=4))
    test = save_predictions(tmp_path / "t.npz", _artifact(n=20, k=3, seed=5))
    out = tmp_path / "r.json"
    assert main(["conformal-mask", "--cal", str(cal), "--test", str(test), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["lambda"]) == {"s1", "s2"} and set(result["fnr"]) == {"s1", "s2"}


def _write_raw(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("mask_shape", "masks"),
        ("label_range", "masks"),
        ("nan", "NaN"),
        ("classification", "segmentation"),
        ("no_masks", "masks"),
    ],
)
def test_bad_input_gives_one_clear_error(tmp_path, capsys, case, message):
    logits = np.zeros((3, 2, 4, 4), np.float32)
    masks = np.zeros((3, 4, 4), np.int64)
    arrays = {"logits": logits, "masks": masks}
    if case == "mask_shape":
        arrays["masks"] = np.zeros((3, 5, 4), np.int64)
    elif case == "label_range":
        arrays["masks"] = np.full((3, 4, 4), 2)
    elif case == "nan":
        arrays["logits"] = np.full_like(logits, np.nan)
    elif case == "classification":
        arrays = {"logits": np.zeros((3, 2), np.float32), "labels": np.array([0, 1, 0])}
    elif case == "no_masks":
        arrays = {"logits": logits}
    path = _write_raw(tmp_path / "bad.npz", **arrays)
    good = str(save_predictions(tmp_path / "good.npz", _artifact(n=12)))
    assert main(["segment-eval", "--pred", path, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert main(["conformal-mask", "--cal", good, "--test", path, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "r.json").exists()


def test_conformal_mask_rejects_bad_alpha(tmp_path, capsys):
    cal = str(save_predictions(tmp_path / "c.npz", _artifact(n=12)))
    assert (
        main(["conformal-mask", "--cal", cal, "--test", cal, "--alpha", "1.5", "--out", str(tmp_path / "r.json")]) == 2
    )
    assert "alpha" in capsys.readouterr().err


def test_report_sections_render(tmp_path):
    from medsure.report.html import Report
    from medsure.segmentation.report import build_sections

    cal = _artifact(n=30, k=3, seed=6, samples=2)
    test = _artifact(n=12, k=3, seed=7, samples=2)
    thumbs = (np.random.default_rng(0).uniform(size=(12, 8, 8)) * 255).astype(np.uint8)
    from dataclasses import replace

    test = replace(test, thumbnails=thumbs)
    shift = _artifact(n=10, k=3, seed=8, noise=2.0, samples=2)
    from medsure.segmentation.conformal_mask import evaluate_conformal_mask
    from medsure.segmentation.evaluate import evaluate_segmentation

    sections = build_sections(
        evaluate_segmentation(test, cal=cal, shift=shift), evaluate_conformal_mask(cal, test, alpha=0.1)
    )
    assert [s.key for s in sections] == ["seg-summary", "seg-overlays", "seg-calibration", "seg-conformal"]
    assert all("data:image/png;base64," in s.body_html for s in sections[1:])
    assert "shift AUROC" in sections[0].body_html
    report = Report(sections=sections)
    report.write(tmp_path / "r.html")
    assert (tmp_path / "r.html").stat().st_size > 10_000


def test_shift_file_of_another_kind_is_refused(tmp_path, capsys):
    # an MC-dropout mean is smoother than a single pass: comparing them would fake a shift
    pred = save_predictions(tmp_path / "p.npz", _artifact(samples=4))
    shift = save_predictions(tmp_path / "s.npz", _artifact(seed=1))
    assert main(["segment-eval", "--pred", str(pred), "--shift", str(shift), "--out", str(tmp_path / "r.json")]) == 2
    assert "same method" in capsys.readouterr().err


def test_conformal_mask_exclude_counts_only_images_showing_the_label(tmp_path, capsys):
    cal = _artifact(n=12)
    masks = cal.masks.copy()
    masks[4:] = 0  # only 4 of 12 calibration images contain the structure
    from dataclasses import replace

    cal = save_predictions(tmp_path / "c.npz", replace(cal, masks=masks))
    test = save_predictions(tmp_path / "t.npz", _artifact(seed=2))
    args = [
        "conformal-mask",
        "--cal",
        str(cal),
        "--test",
        str(test),
        "--alpha",
        "0.1",
        "--out",
        str(tmp_path / "m.json"),
    ]
    assert main(args + ["--empty-gt", "exclude"]) == 2
    assert "got 4 calibration images showing it" in capsys.readouterr().err
    assert main(args) == 0  # counting empty images as FNR 0, all 12 are usable


def test_crc_threshold_at_alpha_one_over_n_plus_one_is_not_the_whole_image():
    from medsure.segmentation.conformal_mask import crc_threshold

    rng = np.random.default_rng(4)
    probs = rng.random((48, 8, 8))
    gt = probs > 0.5
    # alpha = 1/(n+1): the target risk is exactly 0, so lambda is the lowest probability on a GT pixel
    assert crc_threshold(probs, gt, 1 / 49) == pytest.approx(probs[gt].min())


# ---- issue 10: every reduction, outputs checked first, reports that only render --------------------


def test_segment_eval_reports_the_shift_auroc_of_every_reduction(tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    from medsure.segmentation.evaluate import image_scores
    from medsure.segmentation.uncertainty import REDUCTIONS

    test, shift = _artifact(k=3, samples=3), _artifact(k=3, seed=1, noise=2.0, samples=3)
    pred_path = save_predictions(tmp_path / "p.npz", test)
    shift_path = save_predictions(tmp_path / "s.npz", shift)
    out = tmp_path / "r.json"
    assert (
        main(
            ["segment-eval", "--pred", str(pred_path), "--shift", str(shift_path), "--reduce", "max", "--out", str(out)]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert list(result["shift_auroc_by_reduction"]) == list(REDUCTIONS)
    for reduce, auc in result["shift_auroc_by_reduction"].items():  # each against scikit-learn
        a, b = image_scores(test, reduce=reduce), image_scores(shift, reduce=reduce)
        assert auc == pytest.approx(roc_auc_score(np.r_[np.zeros(a.size), np.ones(b.size)], np.r_[a, b]))
    assert result["shift_auroc"] == result["shift_auroc_by_reduction"]["max"] and result["image_reduce"] == "max"
    assert set(result["dice_spearman_by_reduction"]) == set(REDUCTIONS)
    console = capsys.readouterr().out
    assert all(f"  {r} " in console for r in REDUCTIONS) and "(used)" in console


def test_segment_eval_checks_the_report_path_before_computing(tmp_path, capsys):
    pred = save_predictions(tmp_path / "p.npz", _artifact())
    out = tmp_path / "r.json"
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert main(["segment-eval", "--pred", str(pred), "--out", str(out), "--report", str(folder)]) == 2
    assert "--report" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written


def test_segment_eval_and_conformal_mask_write_html_reports(tmp_path):
    cal = save_predictions(tmp_path / "c.npz", _artifact(n=30, k=3, seed=6, samples=2))
    test = save_predictions(tmp_path / "t.npz", _artifact(n=12, k=3, seed=7, samples=2))
    shift = save_predictions(tmp_path / "s.npz", _artifact(n=10, k=3, seed=8, noise=2.0, samples=2))
    html_path = tmp_path / "out" / "seg.html"  # a missing parent folder is created
    assert (
        main(
            [
                "segment-eval",
                "--pred",
                str(test),
                "--cal",
                str(cal),
                "--shift",
                str(shift),
                "--out",
                str(tmp_path / "r.json"),
                "--report",
                str(html_path),
            ]
        )
        == 0
    )
    text = html_path.read_text()
    assert "top_percent" in text and "Dice predictor fitted on 30 cal images" in text
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["dice_predictor"]["n_fit"] > 0 and result["cal_file"] == str(cal)
    assert (
        main(
            [
                "conformal-mask",
                "--cal",
                str(cal),
                "--test",
                str(test),
                "--out",
                str(tmp_path / "m.json"),
                "--report",
                str(tmp_path / "m.html"),
            ]
        )
        == 0
    )
    assert "conformal masks" in (tmp_path / "m.html").read_text()


def test_report_renders_results_without_computing(monkeypatch):
    # every analysis is computed before build_sections; the report must not call any of it again
    import medsure.segmentation.conformal_mask as cm_module
    import medsure.segmentation.evaluate as ev_module
    import medsure.segmentation.metrics as metrics_module
    from medsure.segmentation.report import build_sections

    cal, test = _artifact(n=30, k=3, seed=6, samples=2), _artifact(n=12, k=3, seed=7, samples=2)
    seg = ev_module.evaluate_segmentation(test, cal=cal, shift=_artifact(n=10, k=3, seed=8, noise=2.0, samples=2))
    conformal = cm_module.evaluate_conformal_mask(cal, test, alpha=0.1)

    def forbidden(*args, **kwargs):
        raise AssertionError("the report computed something")

    for module, name in (
        (metrics_module.DicePredictor, "fit"),
        (cm_module.ConformalMask, "fit"),
        (ev_module, "evaluate_segmentation"),
        (cm_module, "evaluate_conformal_mask"),
        (cm_module, "fnr_curve"),
        (ev_module, "uncertainty_maps"),
    ):
        monkeypatch.setattr(module, name, forbidden)
    sections = build_sections(seg, conformal, order=5)
    assert [s.key for s in sections] == ["seg-summary", "seg-overlays", "seg-calibration", "seg-conformal"]
    assert sections[0].summary["shift_auroc_by_reduction"] == seg.shift_auroc_by_reduction
    assert [s.key for s in build_sections(None, conformal)] == ["seg-conformal"]


def test_report_modules_import_no_analysis_code():
    # report/core.py sits above the analyses: importing it must not pull in evaluation or the
    # segmentation metrics (the old loop report -> evaluation -> segmentation -> report)
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import medsure

    code = (
        "import sys, medsure.report.core; "
        "bad = [m for m in ('medsure.evaluation', 'medsure.segmentation') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # segmentation/report.py and plots.py import no analysis module at run time (types only)
    root = Path(medsure.__file__).parent / "segmentation"
    for name in ("report.py", "plots.py"):
        tree = ast.parse((root / name).read_text())
        runtime = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("medsure.segmentation.")
            and node.module != "medsure.segmentation.plots"
        ]
        guarded = [
            node
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)
        ]
        assert all(node in guarded for node in runtime), (name, [ast.unparse(n) for n in runtime])


def test_conformal_mask_results_match_the_estimator():
    from medsure.segmentation.conformal_mask import ConformalMask, evaluate_conformal_mask

    cal, test = _artifact(n=40, k=3, seed=11), _artifact(n=20, k=3, seed=12)
    result = evaluate_conformal_mask(cal, test, alpha=0.2)
    mask = ConformalMask(alpha=0.2).fit(cal)
    np.testing.assert_array_equal(result.lambda_, mask.lambda_)
    np.testing.assert_allclose(result.fnr, mask.fnr(test).mean(axis=0))
    np.testing.assert_allclose(result.fnr_above_alpha, (mask.fnr(test) > 0.2).mean(axis=0))
    np.testing.assert_array_equal(result.test_masks, mask.predict(test))
    d = result.to_dict()
    assert set(d["lambda"]) == {"s1", "s2"} and d["n_test"] == 20


def test_segment_eval_errors_name_the_option_and_its_file(tmp_path, capsys):
    """An unlabelled --cal and a --shift of another model are refused naming the option and the file."""
    pred = save_predictions(tmp_path / "p.npz", _artifact())
    unlabelled = _artifact(seed=1)
    cal = save_predictions(tmp_path / "c.npz", make_predictions(unlabelled.logits, class_names=unlabelled.class_names))
    shift = save_predictions(tmp_path / "s.npz", _artifact(k=3, seed=2))
    out = str(tmp_path / "r.json")
    assert main(["segment-eval", "--pred", str(pred), "--cal", str(cal), "--out", out]) == 2
    assert f"--cal '{cal}': got an artifact without 'masks'" in capsys.readouterr().err
    assert main(["segment-eval", "--pred", str(pred), "--shift", str(shift), "--out", out]) == 2
    assert f"--shift '{shift}' classes: got K=3; expected K=2 like --pred '{pred}'" in capsys.readouterr().err
