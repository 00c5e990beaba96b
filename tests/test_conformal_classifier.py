"""SplitConformalClassifier behaviour, errors, group/class conditioning, CLI contract and report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsure.artifact import make_predictions, save_predictions
from medsure.cli import main
from medsure.conformal import SplitConformalClassifier, set_metrics
from medsure.conformal.analysis import hardest_cases, overlap_study
from medsure.conformal.classifier import to_probabilities
from medsure.errors import MedsureInputError


def synthetic(n=1200, k=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, k)) * 2).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1).clip(0, k - 1)
    groups = rng.choice(["F", "M"], size=n)
    return logits, labels, groups


@pytest.fixture
def files(tmp_path):
    logits, labels, groups = synthetic()
    thumbs = np.random.default_rng(1).integers(0, 255, size=(1200, 12, 12), dtype=np.uint8)
    cal = make_predictions(logits[:600], labels=labels[:600], meta={"sex": groups[:600]}, thumbnails=thumbs[:600])
    test = make_predictions(
        logits[600:],
        labels=labels[600:],
        meta={"sex": groups[600:]},
        thumbnails=thumbs[600:],
        ids=[f"t{i}" for i in range(600)],
    )
    save_predictions(tmp_path / "cal.npz", cal)
    save_predictions(tmp_path / "test.npz", test)
    return tmp_path, cal, test


def test_constructor_only_stores_and_fit_learns():
    clf = SplitConformalClassifier("raps", 0.1, seed=3)
    assert not any(name.endswith("_") for name in vars(clf))
    logits, labels, _ = synthetic()
    clf.fit(logits[:600], labels[:600])
    assert clf.n_tune_ == 180 and clf.n_cal_ == 420
    assert set(clf.params_) == {"k_reg", "lam"}
    sets = clf.predict(logits[600:])
    np.testing.assert_array_equal(sets, clf.predict(logits[600:]))  # repeatable


def test_inputs_not_modified_and_logits_equal_probs_input():
    logits, labels, _ = synthetic()
    before = logits.copy()
    a = SplitConformalClassifier("aps", 0.1).fit(logits[:600], labels[:600]).predict(logits[600:])
    np.testing.assert_array_equal(logits, before)
    probs = to_probabilities(logits)
    b = SplitConformalClassifier("aps", 0.1, input="probs").fit(probs[:600], labels[:600]).predict(probs[600:])
    np.testing.assert_array_equal(a, b)


def test_mc_samples_are_averaged_as_probabilities():
    logits, _labels, _ = synthetic()
    stacked = np.stack([logits, logits + 0.5 * np.random.default_rng(2).normal(size=logits.shape)])
    probs = to_probabilities(stacked.astype(np.float32))
    soft = np.exp(stacked) / np.exp(stacked).sum(axis=2, keepdims=True)
    np.testing.assert_allclose(probs, soft.mean(axis=0), atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    logits, labels, _ = synthetic()
    bad = logits.copy()
    bad[3, 1] = np.nan
    with pytest.raises(MedsureInputError, match="NaN or infinite"):
        SplitConformalClassifier().fit(bad, labels)
    with pytest.raises(MedsureInputError, match="do not sum to 1"):
        SplitConformalClassifier(input="probs").fit(np.full((20, 4), 0.3), np.zeros(20, int))
    with pytest.raises(MedsureInputError, match=r"labels in \[0, 4\)"):
        SplitConformalClassifier().fit(logits, np.full(labels.size, 4))
    with pytest.raises(MedsureInputError, match=r"SplitConformalClassifier\(alpha=...\): got 1.2; expected"):
        SplitConformalClassifier(alpha=1.2).fit(logits, labels)
    with pytest.raises(MedsureInputError, match=r"n = 50 calibration samples .*Use at least 99 calibration samples"):
        SplitConformalClassifier(alpha=0.01).fit(logits[:50], labels[:50])
    clf = SplitConformalClassifier().fit(logits, labels)
    with pytest.raises(MedsureInputError, match="test: got K=3 classes; expected K=4 like cal"):
        clf.predict(logits[:, :3])
    with pytest.raises(MedsureInputError, match="before predict"):
        SplitConformalClassifier().predict(logits)


def test_small_class_is_named_or_uses_reported_fallback():
    logits, labels, _ = synthetic()
    labels = labels.copy()
    labels[labels == 3] = 0
    labels[:5] = 3  # class 3 has 5 calibration samples, alpha=0.1 needs 9
    with pytest.raises(MedsureInputError, match=r"n = 5 calibration samples in class 'class_3'.*class 'class_3' has 5"):
        SplitConformalClassifier("lac", 0.1, conditional="class").fit(logits, labels)
    for fallback in ("marginal", "include"):
        clf = SplitConformalClassifier("lac", 0.1, conditional="class", fallback=fallback)
        clf.fit(logits, labels)
        assert clf.fallbacks_ == [{"stratum": "class_3", "count": 5, "needed": 9, "fallback": fallback}]
        sets = clf.predict(logits)
        if fallback == "include":
            assert sets[:, 3].all()
        result = clf.score_sets(sets, labels)
        assert result["fallbacks"] and result["per_stratum"][3]["fallback"] == fallback


def test_group_conditional_thresholds_per_group():
    logits, labels, groups = synthetic()
    # make group M much harder: noisier logits
    noisy = logits.copy()
    noisy[groups == "M"] = np.random.default_rng(4).normal(size=((groups == "M").sum(), 4)) * 2
    clf = SplitConformalClassifier("aps", 0.1, conditional="group").fit(noisy[:600], labels[:600], groups=groups[:600])
    assert clf.strata_ == ["F", "M"]
    f_thr, m_thr = clf.thresholds_
    assert m_thr > f_thr
    sets = clf.predict(noisy[600:], groups=groups[600:])
    result = clf.score_sets(sets, labels[600:], groups=groups[600:])
    assert [r["stratum"] for r in result["per_stratum"]] == ["F", "M"]
    with pytest.raises(MedsureInputError, match=r"test groups: got \['X'\]; expected groups with calibration samples"):
        clf.predict(noisy[:3], groups=np.array(["F", "X", "M"]))
    # groups from Predictions.meta
    pred = make_predictions(noisy[:600], labels=labels[:600], meta={"sex": groups[:600]})
    clf2 = SplitConformalClassifier("aps", 0.1, conditional="group", group_key="sex").fit(pred)
    np.testing.assert_array_equal(clf2.thresholds_, clf.thresholds_)


def test_metrics_by_hand():
    sets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=bool)
    labels = np.array([0, 2, 1, 1])
    m = set_metrics(sets, labels, alpha=0.5)
    assert m["coverage"] == 0.5 and m["mean_set_size"] == 1.5 and m["median_set_size"] == 1.5
    assert m["size_histogram"] == [1, 1, 1, 1]
    assert m["empty_rate"] == 0.25 and m["singleton_rate"] == 0.25
    assert m["per_class_coverage"] == [1.0, 0.5, 0.0]
    assert m["coverage_gap"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert [r["coverage"] for r in m["size_stratified_coverage"]] == [0.0, 1.0, 0.0, 1.0]
    overlap = np.asarray(overlap_study(sets, labels, ["a", "b", "c"])["matrix"])
    np.testing.assert_allclose(overlap, [[1, 0, 0], [0.5, 0.5, 0.5], [1, 1, 0]])
    hard = hardest_cases(sets, np.full((4, 3), 1 / 3), labels, ["a", "b", "c", "d"], n=2)
    assert [c["id"] for c in hard["cases"]] == ["d", "b"]


def test_validity_flags_a_shifted_test_set():
    logits, labels, _ = synthetic(n=3000)
    clf = SplitConformalClassifier("lac", 0.1).fit(logits[:1500], labels[:1500])
    shifted = np.random.default_rng(9).permutation(logits[1500:], axis=1)  # labels now unrelated
    result = clf.score_sets(clf.predict(shifted), labels[1500:])
    assert result["band_status"] == "below" and result["valid"] is False
    ok = clf.score_sets(clf.predict(logits[1500:]), labels[1500:])
    assert ok["valid"] is True


# ---- CLI ----------------------------------------------------------------------------------


def test_cli_contract(files):
    tmp, _cal, test = files
    out, sets_path = tmp / "result.json", tmp / "sets.npz"
    rc = main(
        [
            "conformal",
            "--cal",
            str(tmp / "cal.npz"),
            "--test",
            str(tmp / "test.npz"),
            "--method",
            "aps",
            "--alpha",
            "0.1",
            "--class-conditional",
            "--no-randomized",
            "--seed",
            "3",
            "--out",
            str(out),
            "--sets",
            str(sets_path),
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    for key in (
        "method",
        "alpha",
        "class_conditional",
        "n_cal",
        "n_test",
        "coverage",
        "mean_set_size",
        "per_class_coverage",
        "empty_rate",
        "coverage_band",
        "valid",
    ):
        assert key in result
    assert result["class_conditional"] is True and result["n_cal"] == 600 and result["n_test"] == 600
    assert len(result["per_class_coverage"]) == 4 and result["randomized"] is False
    sets = np.load(sets_path)["sets"]
    assert sets.dtype == bool and sets.shape == (600, 4)
    assert result["coverage"] == pytest.approx(sets[np.arange(600), test.labels].mean())
    assert result["empty_rate"] == 0.0  # deterministic APS never returns an empty set


@pytest.mark.parametrize(
    "case,message",
    [
        ("nan", "NaN or infinite"),
        ("labels", "K=4 classes"),
        ("k", "expected K=3 like cal"),
        ("alpha", "--alpha: got 1.0; expected a finite number in (0.0, 1.0)"),
        ("few", "--alpha: got 0.001; expected alpha >= 1/(n+1) = 0.001664 with n = 600 calibration samples in --cal"),
        ("probs", "do not sum to 1"),
        ("k_reg", "--k-reg: got 2; expected no --k-reg with --method lac. --k-reg applies only with --method raps"),
        ("fallback", "--fallback: got 'marginal'; expected no --fallback for a marginal run"),
        ("weight", "--weight applies only with --method saps"),
        ("delta", "--delta: got 1.5"),
    ],
)
def test_cli_bad_inputs_exit_nonzero_with_one_message(files, capsys, case, message):
    tmp, _cal, _test = files
    logits, labels, _ = synthetic()
    cal_path, extra = tmp / "cal.npz", []
    alpha = "0.1"
    bad = tmp / "bad.npz"
    if case == "nan":
        arr = logits[:600].copy()
        arr[0, 0] = np.inf
        np.savez(bad, logits=arr, labels=labels[:600])
        cal_path = bad
    elif case == "labels":
        np.savez(bad, logits=logits[:600], labels=np.full(600, 7))
        cal_path = bad
    elif case == "k":
        save_predictions(bad, make_predictions(logits[:600, :3], labels=labels[:600] % 3))
        cal_path = bad
    elif case == "alpha":
        alpha = "1.0"
    elif case == "few":
        alpha = "0.001"
    elif case == "k_reg":
        extra = ["--k-reg", "2"]
    elif case == "fallback":
        extra = ["--fallback", "marginal"]
    elif case == "weight":
        extra = ["--weight", "0.3"]
    elif case == "delta":
        extra = ["--delta", "1.5"]
    elif case == "probs":
        extra = ["--input", "probs"]
        p = to_probabilities(logits[:600]) * 0.9  # in [0, 1] but rows sum to 0.9
        np.savez(bad, logits=p, labels=labels[:600])
        cal_path = bad
    rc = main(
        [
            "conformal",
            "--cal",
            str(cal_path),
            "--test",
            str(tmp / "test.npz"),
            "--method",
            "lac",
            "--alpha",
            alpha,
            "--out",
            str(tmp / "r.json"),
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0]
    assert not (tmp / "r.json").exists()


def test_cli_study_and_report_sections(files):
    tmp, cal, test = files
    rc = main(
        [
            "conformal-study",
            "--cal",
            str(tmp / "cal.npz"),
            "--test",
            str(tmp / "test.npz"),
            "--repeats",
            "5",
            "--out-dir",
            str(tmp / "study"),
            "--report",
            str(tmp / "r.html"),
        ]
    )
    assert rc == 0
    for name in ("calibration_size", "confidence_sweep", "method_comparison", "class_overlap", "hardest_cases"):
        assert json.loads((tmp / "study" / f"{name}.json").read_text())
        assert (tmp / "study" / f"{name}.png").stat().st_size > 1000
    assert (tmp / "study" / "class_coverage_stability.png").stat().st_size > 1000
    html = (tmp / "r.html").read_text()
    assert "Conformal prediction sets" in html and "data:image/png;base64" in html
    assert "Per-class coverage stability" in html
    from medsure.conformal.analysis import evaluate_conformal_study
    from medsure.conformal.report import build_sections

    study = evaluate_conformal_study(cal, test, alpha=0.1, seed=0, n_repeats=5)
    sections = build_sections(study, order=7)
    assert sections[0].key == "conformal" and len(sections) == 6
    assert [s.order for s in sections] == list(range(7, 13))
    assert sections[0].summary["marginal"]["valid"] in (True, False)
    # every section carries its analysis' JSON result (what results.json of the demo holds)
    assert all(s.summary for s in sections)
    json.dumps([s.summary for s in sections])


def _dirichlet_data(rng, n, k, conc=0.5):
    probs = rng.dirichlet(np.full(k, conc), size=n)
    labels = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1).clip(0, k - 1)
    return probs, labels


def test_u_for_a_deterministic_score_is_an_error():
    rng = np.random.default_rng(31)
    p, y = _dirichlet_data(rng, 200, 4)
    with pytest.raises(MedsureInputError, match="deterministic"):
        SplitConformalClassifier("aps", 0.1, input="probs", randomized=False).fit(p, y, u=rng.random(200))
    clf = SplitConformalClassifier("aps", 0.1, input="probs", randomized=False).fit(p, y)
    with pytest.raises(MedsureInputError, match="deterministic"):
        clf.predict(p, u=rng.random(200))


def test_raps_keeps_a_given_parameter_and_tunes_only_the_other():
    rng = np.random.default_rng(32)
    p, y = _dirichlet_data(rng, 400, 6)
    assert SplitConformalClassifier("raps", 0.1, input="probs", params={"lam": 0.5}).fit(p, y).params_["lam"] == 0.5
    assert SplitConformalClassifier("raps", 0.1, input="probs", params={"k_reg": 0}).fit(p, y).params_["k_reg"] == 0


def test_raps_calibrates_on_a_small_set_whose_tuning_part_is_tiny():
    # 20 points: the 30 % tuning part (6) is too small for the corrected quantile at alpha 0.1,
    # but the remaining 14 suffice for the guarantee
    rng = np.random.default_rng(33)
    p, y = _dirichlet_data(rng, 20, 4)
    clf = SplitConformalClassifier("raps", 0.1, input="probs").fit(p, y)
    assert clf.n_tune_ == 6 and clf.n_cal_ == 14


def test_saturated_lac_scores_are_not_treated_as_tie_free():
    # float softmax saturates at p = 1.0: many calibration scores tie at 0, LAC over-covers, and
    # that must not be flagged as a broken pipeline
    rng = np.random.default_rng(34)
    logits = rng.normal(size=(1000, 3)).astype(np.float32)
    easy = rng.random(1000) < 0.96
    labels = rng.integers(0, 3, 1000)
    logits[easy, labels[easy]] += 40.0
    cal, test = make_predictions(logits[:500], labels=labels[:500]), make_predictions(logits[500:], labels=labels[500:])
    clf = SplitConformalClassifier("lac", 0.1).fit(cal)
    assert not clf.exact_
    result = clf.score_sets(clf.predict(test), test.labels)
    assert result["valid"] and result["band_status"] in ("inside", "above")


def test_class_conditional_flag_controls_false_alarms_across_many_strata():
    # K = 20 strata each tested at delta/20: correct runs are rarely flagged
    rng = np.random.default_rng(35)
    flagged = 0
    for _ in range(40):
        p, y = _dirichlet_data(rng, 4000, 20, conc=0.3)
        clf = SplitConformalClassifier("lac", 0.1, input="probs", conditional="class").fit(p[:2000], y[:2000])
        flagged += not clf.score_sets(clf.predict(p[2000:]), y[2000:])["valid"]
    assert flagged <= 3  # about delta * 40 = 0.4 expected; 13 % of runs were flagged before Bonferroni


# ---- registry, declared constraints, output plan, blocks ---------------------------------------


def test_a_new_score_is_one_function_and_one_registry_entry(monkeypatch, files):
    from medsure.conformal import scores as S
    from medsure.validation import Interval

    def shifted_aps(sorted_probs, u, params):  # APS plus a constant: the same sets as APS
        return S.aps_score(sorted_probs, u, params) + params["shift"]

    spec = S.ScoreSpec(
        "aps_shift",
        "probabilities",
        True,
        True,
        (S.ScoreParam("shift", Interval(float, 0.0, None), 0.0, "constant added"),),
        "APS + shift",
        "ranked",
        shifted_aps,
    )
    monkeypatch.setitem(S.SCORES, "aps_shift", spec)
    logits, labels, _ = synthetic()
    ours = SplitConformalClassifier("aps_shift", 0.1, params={"shift": 0.25}).fit(logits[:600], labels[:600])
    aps = SplitConformalClassifier("aps", 0.1).fit(logits[:600], labels[:600])
    np.testing.assert_allclose(ours.thresholds_, aps.thresholds_ + 0.25)
    assert ours.randomized_ and ours.params_ == {"shift": 0.25}
    assert (ours.predict(logits[600:]) != aps.predict(logits[600:])).mean() < 0.01  # same up to rounding
    # the CLI offers the method and its option, and refuses the option for other scores
    tmp, _, _ = files
    args = ["conformal", "--cal", str(tmp / "cal.npz"), "--test", str(tmp / "test.npz"), "--out", str(tmp / "s.json")]
    assert main([*args, "--method", "aps_shift", "--shift", "0.1"]) == 0
    assert json.loads((tmp / "s.json").read_text())["params"] == {"shift": 0.1}
    assert main([*args, "--method", "aps", "--shift", "0.1"]) == 2


def test_declared_parameter_constraints_are_checked_at_fit():
    logits, labels, _ = synthetic()
    cases = [
        ({"method": "nope"}, r"SplitConformalClassifier\(method=...\): got 'nope'; expected one of lac, aps"),
        ({"conditional": "row"}, r"SplitConformalClassifier\(conditional=...\)"),
        ({"randomized": "yes"}, r"SplitConformalClassifier\(randomized=...\)"),
        ({"tune_fraction": 1.0}, r"SplitConformalClassifier\(tune_fraction=...\)"),
        ({"seed": -1}, r"SplitConformalClassifier\(seed=...\)"),
        ({"method": "raps", "params": {"lam": -0.1}}, r"raps lam: got -0.1"),
        ({"method": "lac", "params": {"weight": 0.2}}, r"lac score parameters: got \['weight'\]"),
    ]
    for kwargs, message in cases:
        clf = SplitConformalClassifier(**kwargs)  # the constructor only stores
        with pytest.raises(MedsureInputError, match=message):
            clf.fit(logits, labels)


def test_probability_checks_name_the_problem():
    probs = to_probabilities(synthetic()[0])
    labels = np.zeros(len(probs), dtype=int)
    for value, message in (
        (np.nan, "1 NaN or infinite probabilities"),
        (-np.inf, "1 NaN or infinite"),
        (-0.2, r"got values in \[-0.2, .*\]; expected probabilities in \[0, 1\]"),
        (0.9, "do not sum to 1"),
    ):
        bad = probs.copy()
        bad[7, 1] = value
        with pytest.raises(MedsureInputError, match=message):
            SplitConformalClassifier(input="probs").fit(bad, labels)


@pytest.mark.parametrize("method", ["lac", "aps", "raps", "topk", "saps"])
def test_large_inputs_checked_and_scored_in_blocks_give_the_same_result(monkeypatch, method):
    from medsure.conformal import classifier as C

    rng = np.random.default_rng(9)
    probs = rng.dirichlet(np.full(5, 0.5), size=3000)
    labels = (rng.random(3000)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1).clip(0, 4)
    groups = rng.choice(["a", "b"], 3000)
    results = []
    for block_bytes in (C._CACHE_BLOCK_BYTES, 4096):  # the default: one piece; 4096: ~100 rows a block
        monkeypatch.setattr(C, "_CACHE_BLOCK_BYTES", block_bytes)
        for conditional in ("marginal", "class", "group"):
            clf = SplitConformalClassifier(method, 0.1, input="probs", conditional=conditional, seed=1)
            clf.fit(probs[:1500], labels[:1500], groups=groups[:1500])
            results.append((clf.thresholds_, clf.cal_scores_, clf.predict(probs[1500:], groups=groups[1500:])))
    for whole, blocked in zip(results[:3], results[3:], strict=True):
        for a, b in zip(whole, blocked, strict=True):
            np.testing.assert_array_equal(a, b)
    # a bad value in a late block is reported for the whole input
    bad = probs.copy()
    bad[2900, 0] = bad[10, 0] = np.nan
    with pytest.raises(MedsureInputError, match="2 NaN or infinite"):
        SplitConformalClassifier(method, 0.1, input="probs").fit(probs[:1500], labels[:1500]).predict(bad)


def test_output_paths_are_checked_before_anything_is_written(files, capsys):
    tmp, _, _ = files
    (tmp / "a_folder").mkdir()
    rc = main(
        [
            "conformal",
            "--cal",
            str(tmp / "cal.npz"),
            "--test",
            str(tmp / "test.npz"),
            "--method",
            "lac",
            "--out",
            str(tmp / "r.json"),
            "--sets",
            str(tmp / "a_folder"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--sets" in err[0]
    assert not (tmp / "r.json").exists()
    rc = main(
        [
            "conformal-study",
            "--cal",
            str(tmp / "cal.npz"),
            "--test",
            str(tmp / "test.npz"),
            "--repeats",
            "2",
            "--out-dir",
            str(tmp / "study"),
            "--report",
            str(tmp / "a_folder"),
        ]
    )
    assert rc == 2 and "--report" in capsys.readouterr().err
    assert not (tmp / "study").exists()


def test_evaluate_conformal_without_test_labels_reports_sizes_only(files):
    from medsure.conformal import evaluate_conformal

    _, cal, test = files
    unlabelled = make_predictions(test.logits, ids=test.ids)
    run = evaluate_conformal(cal, unlabelled, method="aps", alpha=0.1)
    labelled = evaluate_conformal(cal, test, method="aps", alpha=0.1)
    np.testing.assert_array_equal(run.sets, labelled.sets)
    assert run.result["coverage"] is None and run.result["valid"] is None
    assert run.result["mean_set_size"] == pytest.approx(labelled.result["mean_set_size"])
    assert labelled.result["coverage"] == pytest.approx(labelled.sets[np.arange(600), test.labels].mean())
