"""Failure analysis: results computed once, clear errors, the output plan, the combined CSF's
reason and fixed weights, the Grad-CAM CSF from the command line, the CSF registry, and the
fd-shifts-compatible metric variants checked against independent implementations of its formulas."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from medsure.artifact import make_predictions, save_predictions, softmax
from medsure.cli import main
from medsure.errors import MedsureInputError
from medsure.failure import (
    CSF_SPECS,
    CombinedCSF,
    aurc,
    aurc_interpolated,
    compute_csfs,
    evaluate_failure,
    excess_aurc_interpolated,
    fpr_at_95_tpr,
    fpr_at_95_tpr_fdshifts,
)
from medsure.failure.csf import LOGIT_CSFS
from medsure.failure.metrics import variant_metrics


def _data(n, k=3, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    y = (softmax(z / 2, axis=1).cumsum(1) > rng.random((n, 1))).argmax(1)
    return z.astype(np.float32), y


def _files(tmp_path, n_cal=200, n_test=200, seed=0, cal_labels=True):
    z, y = _data(n_cal + n_test, seed=seed)
    ids = [f"c{i}" for i in range(n_cal)] + [f"t{i}" for i in range(n_test)]
    cal = save_predictions(
        tmp_path / "cal.npz", make_predictions(z[:n_cal], labels=y[:n_cal] if cal_labels else None, ids=ids[:n_cal])
    )
    test = save_predictions(tmp_path / "test.npz", make_predictions(z[n_cal:], labels=y[n_cal:], ids=ids[n_cal:]))
    return str(cal), str(test)


# ---- fd-shifts formulas, implemented independently (loops over sorted cases) --------------------


def _fdshifts_rc_points(confids, residuals):
    """RC points as fd-shifts' selective_risk_stats builds them: start at coverage 1, drop the
    least confident case one at a time, add a point whenever the confidence changes, then a
    final point at coverage 0 with the last risk."""
    idx = np.argsort(confids, kind="stable")
    conf, res = confids[idx], residuals[idx].astype(float)
    n = len(res)
    err, cov = res.sum(), n
    covs, risks = [1.0], [err / n]
    for i in range(n - 1):
        cov -= 1
        err -= res[i]
        if conf[i] != conf[i + 1]:
            covs.append(cov / n)
            risks.append(err / cov)
    covs.append(0.0)
    risks.append(risks[-1])
    return np.array(covs), np.array(risks)


def _fdshifts_aurc(confids, residuals):
    covs, risks = _fdshifts_rc_points(confids, residuals)
    # trapezoid over descending coverage (fd-shifts: -trapz(risks, coverages)), unscaled
    return float(sum((covs[i] - covs[i + 1]) * (risks[i] + risks[i + 1]) / 2 for i in range(len(covs) - 1)))


def _fdshifts_eaurc(confids, residuals):
    err = residuals.mean()
    return _fdshifts_aurc(confids, residuals) - (err + (1 - err) * np.log(1 - err + np.finfo(float).eps))


def _fdshifts_fpr95(confids, residuals):
    fpr, tpr, _ = roc_curve(1 - residuals, confids)
    return float(np.min(fpr[tpr >= 0.9495]))


@pytest.mark.parametrize("ties", [False, True])
def test_interpolated_aurc_and_eaurc_match_fdshifts_formulas(ties):
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(5, 300))
        conf = rng.normal(size=n)
        if ties:
            conf = np.round(conf, 1)
        errors = (rng.random(n) < 1 / (1 + np.exp(2 * conf))).astype(int)
        if errors.sum() in (0, n):
            errors[0] = 1 - errors[0]
        assert aurc_interpolated(conf, errors) == pytest.approx(_fdshifts_aurc(conf, errors), abs=1e-12)
        assert excess_aurc_interpolated(conf, errors) == pytest.approx(_fdshifts_eaurc(conf, errors), abs=1e-12)
        assert fpr_at_95_tpr_fdshifts(conf, errors) == pytest.approx(_fdshifts_fpr95(conf, errors), abs=1e-12)


def test_discrete_and_interpolated_aurc_differ_and_are_both_reported():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    errors = np.array([0, 1, 0, 1])
    # discrete: mean of E_k / k = (0 + 1/2 + 1/3 + 2/4) / 4
    assert aurc(conf, errors) == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)
    # trapezoid over (0, 0) (.25, 0) (.5, .5) (.75, 1/3) (1, .5)
    expected = 0.25 * (0 + 0) / 2 + 0.25 * (0 + 0.5) / 2 + 0.25 * (0.5 + 1 / 3) / 2 + 0.25 * (1 / 3 + 0.5) / 2
    assert aurc_interpolated(conf, errors) == pytest.approx(expected)
    assert aurc(conf, errors) != pytest.approx(aurc_interpolated(conf, errors))


def test_variant_bootstrap_intervals_equal_explicit_resampling():
    from medsure.failure.metrics import bootstrap_counts

    rng = np.random.default_rng(6)
    conf = np.round(rng.normal(size=80), 1)
    errors = (rng.random(80) < 0.3).astype(int)
    counts = bootstrap_counts(80, 40, seed=1)
    from medsure.failure.metrics import _weighted_interpolated

    vec = _weighted_interpolated(conf.astype(float), errors.astype(float), counts)
    for b in range(40):
        idx = np.repeat(np.arange(80), counts[b])
        assert vec["aurc_interpolated"][b] == pytest.approx(aurc_interpolated(conf[idx], errors[idx]), abs=1e-12)
        if 0 < errors[idx].sum() < len(idx):
            assert vec["eaurc_interpolated"][b] == pytest.approx(
                excess_aurc_interpolated(conf[idx], errors[idx]), abs=1e-12
            )
    out = variant_metrics(conf, errors, counts=counts)
    lo, hi = out["aurc_interpolated"]["ci"]
    assert lo <= hi and out["aurc_interpolated"]["variant"] == "fd-shifts-trapezoid"


def test_fpr95_convention_no_interpolation_hand_computed():
    # 20 correct at confidences 1..20, 2 errors at 0.5 and 15.5: accepting >= 95 % of correct
    # (19 of 20) needs threshold 2, which accepts the error at 15.5 -> FPR 1/2
    conf = np.r_[np.arange(1, 21), 0.5, 15.5].astype(float)
    errors = np.r_[np.zeros(20), 1, 1].astype(int)
    assert fpr_at_95_tpr(conf, errors) == pytest.approx(0.5)
    assert fpr_at_95_tpr_fdshifts(conf, errors) == pytest.approx(0.5)


# ---- evaluate_failure results and the CLI ---------------------------------------------------------


def test_every_metric_names_its_variant_in_the_json(tmp_path):
    cal, test = _files(tmp_path)
    out = tmp_path / "f.json"
    assert main(["failure", "--cal", cal, "--test", test, "--bootstrap", "50", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    for metrics in record["csfs"].values():
        for key in (
            "aurc",
            "aurc_interpolated",
            "eaurc",
            "eaurc_interpolated",
            "augrc",
            "fpr95",
            "fpr95_fdshifts",
            "auroc_f",
            "aupr_error",
        ):
            assert metrics[key]["variant"] == record["variants"][key]
        assert metrics["aurc_interpolated"]["ci"] is not None
    assert record["variants"]["aurc"] == "discrete"


@pytest.mark.parametrize("empty", ["cal", "test"])
def test_an_empty_prediction_file_is_one_clear_error(tmp_path, capsys, empty):
    cal, test = _files(tmp_path)
    empty_path = save_predictions(
        tmp_path / "empty.npz", make_predictions(np.zeros((0, 3), np.float32), labels=np.zeros(0, int))
    )
    args = {"cal": cal, "test": test, empty: str(empty_path)}
    out = tmp_path / "f.json"
    assert main(["failure", "--cal", args["cal"], "--test", args["test"], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "0 cases" in err and "Traceback" not in err
    assert not out.exists()


def test_failure_report_to_a_bad_path_leaves_no_json(tmp_path):
    cal, test = _files(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = tmp_path / "f.json"
    assert (
        main(
            [
                "failure",
                "--cal",
                cal,
                "--test",
                test,
                "--bootstrap",
                "20",
                "--out",
                str(out),
                "--report",
                str(blocker / "r.html"),
            ]
        )
        == 2
    )
    assert not out.exists()


@pytest.mark.parametrize("case", ["one_cal_case", "no_cal_labels"])
def test_undefined_combined_csf_says_why_in_json_and_console(tmp_path, capsys, case):
    if case == "one_cal_case":
        cal, test = _files(tmp_path, n_cal=1)
    else:
        cal, test = _files(tmp_path, cal_labels=False)
    out = tmp_path / "f.json"
    assert main(["failure", "--cal", cal, "--test", test, "--bootstrap", "20", "--out", str(out)]) == 0
    combined = json.loads(out.read_text())["combined"]
    assert combined["status"] == "undefined" and len(combined["reason"]) > 20
    printed = capsys.readouterr().out
    assert "combined" in printed and combined["reason"] in printed


def test_fixed_combination_weights_over_standardised_csfs(tmp_path):
    z, y = _data(400, seed=7)
    cal, test = make_predictions(z[:200], labels=y[:200]), make_predictions(z[200:], labels=y[200:])
    weights = {"msr": 1.0, "energy": 0.5}
    result = evaluate_failure(cal, test, n_boot=0, combine_weights=weights)
    assert result.combined["mode"] == "fixed" and result.combined["names"] == ["msr", "energy"]
    cal_csfs, test_csfs = compute_csfs(cal), compute_csfs(test)
    expected = sum(w * (test_csfs[k] - cal_csfs[k].mean()) / cal_csfs[k].std() for k, w in weights.items())
    np.testing.assert_allclose(result.test_confidences["combined"], expected, rtol=1e-10)
    # a single CSF with weight 1 ranks exactly as that CSF: the same AURC
    single = evaluate_failure(cal, test, n_boot=0, combine_weights={"msr": 1.0})
    assert single.csfs["combined"]["aurc"]["value"] == pytest.approx(single.csfs["msr"]["aurc"]["value"])
    # fixed weights need no calibration labels
    unlabelled = make_predictions(z[:200])
    assert evaluate_failure(unlabelled, test, n_boot=0, combine_weights=weights).combined["status"] == "fitted"
    with pytest.raises(MedsureInputError, match="nope"):
        evaluate_failure(cal, test, n_boot=0, combine_weights={"nope": 1.0})
    with pytest.raises(MedsureInputError, match="not all zero"):
        CombinedCSF(weights={"msr": 0.0}).fit({"msr": np.arange(5.0)})


def test_combine_weights_on_the_command_line(tmp_path, capsys):
    cal, test = _files(tmp_path)
    out = tmp_path / "f.json"
    assert (
        main(
            [
                "failure",
                "--cal",
                cal,
                "--test",
                test,
                "--bootstrap",
                "0",
                "--combine-weights",
                "msr=1,energy=0.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    combined = json.loads(out.read_text())["combined"]
    assert combined["mode"] == "fixed" and combined["weights"] == [1.0, 0.5]
    for bad in ("msr", "msr=x", "msr=1,msr=2", "nope=1"):
        assert main(["failure", "--cal", cal, "--test", test, "--combine-weights", bad, "--out", str(out)]) == 2
        assert "--combine-weights" in capsys.readouterr().err or bad == "nope=1"


def _cams_file(path, ids, classes, maps, class_names):
    np.savez_compressed(
        path,
        ids=np.array(ids),
        classes=np.array(classes),
        maps=maps.astype(np.float32),
        class_names=np.array(class_names),
    )
    return str(path)


def test_cam_concentration_from_explain_output(tmp_path, capsys):
    cal, test = _files(tmp_path, n_cal=60, n_test=40)
    from medsure.artifact import load_predictions

    pred = load_predictions(test)
    predicted = pred.probabilities().argmax(1)
    rng = np.random.default_rng(3)
    maps = rng.random((40, 6, 6))
    names = [str(c) for c in pred.class_names]
    # rows in another order plus a map of a non-predicted class for the first case: the predicted
    # class's map is the one used
    order = rng.permutation(40)
    ids = [str(pred.ids[i]) for i in order] + [str(pred.ids[0])]
    classes = [int(predicted[i]) for i in order] + [int((predicted[0] + 1) % 3)]
    all_maps = np.concatenate([maps[order], np.zeros((1, 6, 6))])
    cams = _cams_file(tmp_path / "cams.npz", ids, classes, all_maps, names)
    out = tmp_path / "f.json"
    assert main(["failure", "--cal", cal, "--test", test, "--cam", cams, "--bootstrap", "0", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert "cam_concentration" in record["csfs"]
    from medsure.failure.csf import cam_concentration

    expected = compute_csfs(pred, cams=maps)["cam_concentration"]
    np.testing.assert_allclose(expected, cam_concentration(maps))
    errors = pred.probabilities().argmax(1) != pred.labels
    assert record["csfs"]["cam_concentration"]["aurc"]["value"] == pytest.approx(aurc(expected, errors))
    # ids that do not match the test file: one clear error
    wrong = _cams_file(tmp_path / "wrong.npz", [f"x{i}" for i in range(40)], list(predicted), maps, names)
    assert main(["failure", "--cal", cal, "--test", test, "--cam", wrong, "--out", str(out)]) == 2
    assert "--cam" in capsys.readouterr().err
    missing_one = _cams_file(tmp_path / "m.npz", [str(i) for i in pred.ids[1:]], list(predicted[1:]), maps[1:], names)
    assert main(["failure", "--cal", cal, "--test", test, "--cam", missing_one, "--out", str(out)]) == 2
    assert "predicted-class map" in capsys.readouterr().err


def test_probability_only_is_declared_exactly_for_shift_invariant_csfs():
    # a CSF that depends on the logits only through the softmax is unchanged by adding a
    # per-case constant to all logits; the declaration must say so, and only then
    rng = np.random.default_rng(4)
    z = rng.normal(size=(50, 4)) * 2
    shifted = z + rng.normal(size=(50, 1)) * 5
    for name, spec in LOGIT_CSFS.items():
        invariant = np.allclose(spec.fn(z), spec.fn(shifted), atol=1e-9)
        assert spec.probability_only == invariant, name
    assert all(spec.name for spec in CSF_SPECS.values())


def test_review_and_curves_are_part_of_the_result():
    z, y = _data(600, seed=9)
    cal, test = make_predictions(z[:300], labels=y[:300]), make_predictions(z[300:], labels=y[300:])
    result = evaluate_failure(cal, test, n_boot=20, target_risk=0.3)
    assert result.review["csf"] == "msr" and 0 <= result.review["review_share"] <= 1
    assert set(result.curves) >= {"msr", "energy", "oracle"}
    assert result.curves["msr"].coverage[-1] == 1.0
    probs = test.probabilities()
    wrong_conf = sorted(probs.max(1)[probs.argmax(1) != y[300:]], reverse=True)[:8]
    np.testing.assert_allclose([c["probability"] for c in result.worst_cases], wrong_conf, rtol=1e-6)
