"""Calibration analysis: results computed once, minimum calibration size, temperature bound,
the held-out worsening check, the calibrator registry and the CLI's output plan."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsure.artifact import make_predictions, save_predictions, softmax
from medsure.calibration import CALIBRATORS, NLL_CLIP, TemperatureScaling, evaluate_calibration, make_calibrator
from medsure.cli import main
from medsure.errors import MedsureInputError


def _overconfident(n, k=3, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    y = (softmax(z / 2, axis=1).cumsum(1) > rng.random((n, 1))).argmax(1)
    return z.astype(np.float32), y


def _files(tmp_path, n_cal=200, n_test=200, seed=0):
    z, y = _overconfident(n_cal + n_test, seed=seed)
    cal = save_predictions(tmp_path / "cal.npz", make_predictions(z[:n_cal], labels=y[:n_cal]))
    test = save_predictions(tmp_path / "test.npz", make_predictions(z[n_cal:], labels=y[n_cal:]))
    return str(cal), str(test)


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_too_few_calibration_cases_is_an_error_not_a_silent_fit(method):
    z, y = _overconfident(300)
    test = make_predictions(z[100:], labels=y[100:])
    need = make_calibrator(method).min_cal_samples(3)
    with pytest.raises(MedsureInputError, match=f"at least {need}"):
        evaluate_calibration(make_predictions(z[: need - 1], labels=y[: need - 1]), test, method=method)
    assert evaluate_calibration(make_predictions(z[:need], labels=y[:need]), test, method=method).n_cal == need


def test_one_calibration_case_on_the_command_line_is_one_clear_error(tmp_path, capsys):
    cal, test = _files(tmp_path, n_cal=1)
    out = tmp_path / "r.json"
    assert main(["calibration", "--cal", cal, "--test", test, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "at least 10" in err and "Traceback" not in err
    assert not out.exists()


def test_temperature_at_its_search_bound_warns_in_json_and_console(tmp_path, capsys):
    # separable calibration data: the NLL keeps falling as T -> 0 (to 0 in float64), so the
    # optimum is beyond the lower bound and the fitted T (0.038 here) is arbitrary
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    z = np.where(y[:, None] == np.arange(2), 1.0, -1.0).astype(np.float32)
    cal = save_predictions(tmp_path / "cal.npz", make_predictions(z, labels=y))
    test = save_predictions(tmp_path / "test.npz", make_predictions(z, labels=y))
    ts = TemperatureScaling().fit(z, y)
    assert ts.at_bound_
    assert not TemperatureScaling().fit(*_overconfident(500)).at_bound_
    out = tmp_path / "r.json"
    assert main(["calibration", "--cal", str(cal), "--test", str(test), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["temperature_at_bound"] is True
    assert any("search bound" in w for w in record["warnings"])
    assert "search bound" in capsys.readouterr().err


def test_a_calibrator_that_worsens_held_out_calibration_is_flagged_with_numbers():
    # a well-calibrated model and histogram binning on few cases: bins of 0/1 frequencies put
    # probability 0 on true classes of held-out cases, so the held-out NLL rises
    rng = np.random.default_rng(2)
    z = rng.normal(size=(460, 3))
    y = (softmax(z, axis=1).cumsum(1) > rng.random((460, 1))).argmax(1)
    cal, test = make_predictions(z[:60], labels=y[:60]), make_predictions(z[60:], labels=y[60:])
    bad = evaluate_calibration(cal, test, method="histogram")
    held = bad.heldout
    assert bad.worsened_on_heldout and "nll" in held["worsened_metrics"]
    assert held["after"]["nll"] > held["before"]["nll"]
    assert held["n_fit"] + held["n_heldout"] == 60
    record = bad.to_dict()
    assert record["worsened_on_heldout"] is True and record["heldout_check"]["before"]["nll"] == held["before"]["nll"]
    assert any("held-out" in w for w in bad.warnings)
    # a calibrator that helps: temperature scaling of an overconfident model on plenty of cases
    zc, yc = _overconfident(3000, seed=3)
    good = evaluate_calibration(
        make_predictions(zc[:1500], labels=yc[:1500]), make_predictions(zc[1500:], labels=yc[1500:])
    )
    assert not good.worsened_on_heldout and good.heldout["after"]["nll"] < good.heldout["before"]["nll"]


def test_result_carries_reliability_bins_and_names_the_nll_clip():
    z, y = _overconfident(600)
    result = evaluate_calibration(
        make_predictions(z[:300], labels=y[:300]), make_predictions(z[300:], labels=y[300:]), n_bins=10
    )
    record = result.to_dict()
    for phase in ("before", "after"):
        bins = record["reliability"][phase]
        assert len(bins["edges"]) == 11 and sum(bins["count"]) == 300
    assert record["conventions"]["nll_clip"] == NLL_CLIP == 1e-15
    # the report renders those bins: the ECE recomputed from them equals the reported ECE
    b = result.reliability_after
    assert np.sum(b.count * b.gaps) / b.count.sum() == pytest.approx(result.after["ece"])


def test_calibration_report_to_a_bad_path_leaves_no_json(tmp_path, capsys):
    cal, test = _files(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = tmp_path / "r.json"
    assert (
        main(["calibration", "--cal", cal, "--test", test, "--out", str(out), "--report", str(blocker / "report.html")])
        == 2
    )
    assert not out.exists()
    assert (
        main(
            [
                "calibration",
                "--cal",
                cal,
                "--test",
                test,
                "--out",
                str(out),
                "--report",
                str(tmp_path / "rep" / "r.html"),
            ]
        )
        == 0
    )
    assert out.exists() and (tmp_path / "rep" / "r.html").exists()


def test_cli_methods_come_from_the_registry(capsys):
    with pytest.raises(SystemExit):
        main(["calibration", "--help"])
    text = capsys.readouterr().out
    for name in CALIBRATORS:
        assert name in text


def test_calibrator_parameters_are_validated_in_fit():
    z, y = _overconfident(100)
    for bad in (
        TemperatureScaling(bounds=(0.0, 10.0)),
        TemperatureScaling(bounds=(5.0, 1.0)),
        make_calibrator("vector", l2=-1.0),
        make_calibrator("histogram", n_bins=0),
    ):
        with pytest.raises(MedsureInputError, match="got"):
            bad.fit(z, y)
