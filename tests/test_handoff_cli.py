"""`medsure policy fit`, `medsure triage`, `medsure review export`, `medsure audit` and `medsure serve`
start-up: outputs, and every bad input as one line with exit code 2 and nothing written."""

from __future__ import annotations

import csv
import json
import sqlite3
import sys

import numpy as np
import pytest

from medsure.artifact import load_predictions, make_predictions, save_predictions
from medsure.cli import main

realpreds = pytest.importorskip("realpreds", reason="tests/realpreds.py (real prediction artifacts) not available")


def _pred(path, *, n=120, k=3, seed=0, names=None, labels=True, thumbs=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)).astype(np.float32)
    logits[np.arange(n), y] += rng.uniform(0, 5, n).astype(np.float32)
    pred = make_predictions(
        logits,
        labels=y if labels else None,
        ids=[f"case-{seed}-{i}" for i in range(n)],
        class_names=names or [f"c{j}" for j in range(k)],
        thumbnails=rng.integers(0, 255, (n, 16, 16), dtype=np.uint8) if thumbs else None,
    )
    save_predictions(path, pred)
    return path


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def fitted(tmp_path):
    cal = _pred(tmp_path / "cal.npz", seed=0)
    new = _pred(tmp_path / "new.npz", seed=1, labels=False)
    policy = tmp_path / "policy.json"
    assert main(["policy", "fit", "--cal", str(cal), "--risk", "0.2", "--delta", "0.1", "--out", str(policy)]) == 0
    return tmp_path, cal, new, policy


def test_policy_fit_triage_writes_sorted_worklist(fitted, capsys):
    tmp, _cal, new, policy = fitted
    out = tmp / "wl"
    assert main(["triage", "--policy", str(policy), "--pred", str(new), "--out", str(out)]) == 0
    assert "auto-accepted" in capsys.readouterr().out
    doc = json.loads((out / "worklist.json").read_text())
    priorities = [c["priority"] for c in doc["cases"]]
    assert priorities == sorted(priorities) == list(range(1, 121))
    decisions = [c["decision"] for c in doc["cases"]]
    assert decisions == sorted(decisions, key=lambda d: d != "review")  # review cases first
    with open(out / "worklist.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [c["id"] for c in doc["cases"]]
    assert all(r["reasons"] == "" for r in rows if r["decision"] == "auto")
    assert all(r["reasons"] for r in rows if r["decision"] == "review")
    # thumbnails come from the prediction file
    assert all((out / c["thumbnail"]).is_file() for c in doc["cases"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 120 and "exchangeable" in " ".join(summary["guarantee"]["assumptions"])
    assert doc["policy"]["sha256"] and doc["predictions"]["sha256"]


def test_triage_with_gradcam_per_set_member(fitted):
    tmp, _cal, new, policy = fitted
    pred = load_predictions(new)
    ids = np.repeat(pred.ids, 3)
    classes = np.tile(np.arange(3), pred.n_samples)
    maps = np.random.default_rng(0).random((ids.size, 16, 16)).astype(np.float32)
    cams = tmp / "cams.npz"
    np.savez(cams, ids=ids, classes=classes, maps=maps, class_names=pred.class_names)
    out = tmp / "wl"
    args = ["triage", "--policy", str(policy), "--pred", str(new), "--out", str(out), "--cam", str(cams)]
    assert main([*args, "--image-size", "32"]) == 0
    doc = json.loads((out / "worklist.json").read_text())
    for case in doc["cases"]:
        titles = [o["title"] for o in case["overlays"] if o["kind"] == "gradcam"]
        assert titles == [f"Grad-CAM: {c}" for c in case["prediction_set"]]
        assert all((out / o["file"]).is_file() for o in case["overlays"])


def test_audit_and_export_end_to_end_on_real_predictions(tmp_path, capsys):
    """Real PneumoniaMNIST: fit, triage the test split, let the 'experts' give the true label of every
    case (a decisions CSV), audit: the risk of the auto-accepted cases is measured on all of them and the
    verdict is not 'violated'. Decisions stored in the database and exported give the same audit."""
    from medsure.review.db import ReviewDB

    cal, test = realpreds.classification_predictions("pneumoniamnist")
    save_predictions(tmp_path / "cal.npz", cal)
    save_predictions(tmp_path / "test.npz", test)
    policy, wl = tmp_path / "policy.json", tmp_path / "wl"
    assert main(["policy", "fit", "--cal", str(tmp_path / "cal.npz"), "--risk", "0.1", "--out", str(policy)]) == 0
    args = ["triage", "--policy", str(policy), "--pred", str(tmp_path / "test.npz"), "--out", str(wl)]
    assert main([*args, "--no-images"]) == 0
    doc = json.loads((wl / "worklist.json").read_text())
    names = list(test.class_names)
    truth = {str(i): names[int(y)] for i, y in zip(test.ids, test.labels, strict=True)}
    decisions = tmp_path / "truth.csv"
    decisions.write_text("case_id,label\n" + "".join(f"{i},{y}\n" for i, y in truth.items()))
    out = tmp_path / "audit.json"
    report = tmp_path / "audit.html"
    args = ["audit", "--policy", str(policy), "--worklist", str(wl), "--out", str(out), "--report", str(report)]
    assert main([*args, "--decisions", str(decisions)]) == 0
    result = json.loads(out.read_text())
    auto = np.array([c["decision"] == "auto" for c in doc["cases"]])
    wrong = np.array([c["predicted"] != c["label"] for c in doc["cases"]])
    assert result["risk"]["n_auto_labelled"] == auto.sum() > 0
    assert result["risk"]["n_errors"] == wrong[auto].sum()
    assert result["risk"]["verdict"] != "violated"
    assert "Audit of the hand-off guarantee" in report.read_text()
    # a few decisions through the database (a later one replaces an earlier one), exported or read directly
    db = ReviewDB(tmp_path / "review.sqlite", worklist_id=doc["policy"]["worklist_id"])
    first = [c["id"] for c in doc["cases"][:15]]
    for case_id in first:
        db.add_decision(case_id, "unsure", "dr a")
        db.add_decision(case_id, truth[case_id], "dr b")
    export = tmp_path / "decisions.csv"
    assert main(["review", "export", "--db", str(tmp_path / "review.sqlite"), "--out", str(export)]) == 0
    assert main([*args, "--decisions", str(export)]) == 0
    from_csv = json.loads(out.read_text())
    assert from_csv["n_labelled"] == 15 and from_csv["n_unsure"] == 0
    assert main([*args, "--decisions", str(tmp_path / "review.sqlite")]) == 0
    assert json.loads(out.read_text())["risk"] == from_csv["risk"]


# ---- bad input: one line, exit 2, nothing written --------------------------------------------------


def test_policy_from_another_class_list(fitted, capsys):
    tmp, _cal, _new, policy = fitted
    other = _pred(tmp / "other.npz", seed=2, names=["x", "y", "z"])
    out = tmp / "wl"
    assert main(["triage", "--policy", str(policy), "--pred", str(other), "--out", str(out)]) == 2
    _one_line_error(capsys, "class_names", "like the policy")
    assert not out.exists()


def test_prediction_file_with_another_k(fitted, capsys):
    tmp, _cal, _new, policy = fitted
    other = _pred(tmp / "other.npz", seed=2, k=4)
    out = tmp / "wl"
    assert main(["triage", "--policy", str(policy), "--pred", str(other), "--out", str(out)]) == 2
    _one_line_error(capsys, "K=4", "K=3")
    assert not out.exists()


def test_policy_from_a_newer_medsure(fitted, capsys):
    tmp, _cal, new, policy = fitted
    record = json.loads(policy.read_text())
    record["medsure_version"] = "42.0"
    newer = tmp / "newer.json"
    newer.write_text(json.dumps(record))
    out = tmp / "wl"
    assert main(["triage", "--policy", str(newer), "--pred", str(new), "--out", str(out)]) == 2
    _one_line_error(capsys, "--policy", "medsure 42.0")
    assert not out.exists()


def test_policy_file_that_is_not_json(fitted, capsys):
    tmp, _cal, new, _policy = fitted
    bad = tmp / "bad.json"
    bad.write_text("{not json")
    assert main(["triage", "--policy", str(bad), "--pred", str(new), "--out", str(tmp / "wl")]) == 2
    _one_line_error(capsys, "--policy", "not valid JSON")


def test_triage_into_a_non_empty_folder(fitted, capsys):
    tmp, _cal, new, policy = fitted
    (tmp / "busy").mkdir()
    (tmp / "busy" / "x.txt").write_text("keep me")
    assert main(["triage", "--policy", str(policy), "--pred", str(new), "--out", str(tmp / "busy")]) == 2
    _one_line_error(capsys, "--out", "not empty")
    assert sorted(p.name for p in (tmp / "busy").iterdir()) == ["x.txt"]


def test_policy_fit_bad_alpha_and_unlabelled_cal(fitted, capsys):
    tmp, _cal, new, _policy = fitted
    out = tmp / "p2.json"
    assert main(["policy", "fit", "--cal", str(new), "--out", str(out)]) == 2
    _one_line_error(capsys, "labelled calibration data")
    assert main(["policy", "fit", "--cal", str(tmp / "cal.npz"), "--alpha", "1.5", "--out", str(out)]) == 2
    _one_line_error(capsys, "alpha", "1.5")
    assert not out.exists()


def test_a_worklist_folder_that_is_not_one(fitted, capsys):
    tmp, _cal, _new, policy = fitted
    (tmp / "empty").mkdir()
    decisions = tmp / "d.csv"
    decisions.write_text("case_id,label\n")
    out = tmp / "audit.json"
    for folder in (tmp / "empty", tmp / "missing", policy):
        args = ["audit", "--policy", str(policy), "--worklist", str(folder), "--decisions", str(decisions)]
        assert main([*args, "--out", str(out)]) == 2
        _one_line_error(capsys, "--worklist", "worklist folder written by `medsure triage`")
    assert main(["serve", "--worklist", str(tmp / "empty")]) == 2
    _one_line_error(capsys, "--worklist")
    assert not out.exists()


@pytest.mark.timeout(60)
def test_serve_refuses_a_corrupt_database(fitted, capsys):
    tmp, _cal, new, policy = fitted
    wl = tmp / "wl"
    assert main(["triage", "--policy", str(policy), "--pred", str(new), "--out", str(wl), "--no-images"]) == 0
    corrupt = tmp / "review.sqlite"
    corrupt.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    before = corrupt.read_bytes()
    assert main(["serve", "--worklist", str(wl), "--db", str(corrupt)]) == 2
    _one_line_error(capsys, "--db", "SQLite")
    assert corrupt.read_bytes() == before
    text = tmp / "notes.sqlite"
    text.write_text("not a database")
    assert main(["serve", "--worklist", str(wl), "--db", str(text)]) == 2
    _one_line_error(capsys, "--db", "not an SQLite database")
    assert main(["review", "export", "--db", str(corrupt), "--out", str(tmp / "d.csv")]) == 2
    _one_line_error(capsys, "--db")
    assert not (tmp / "d.csv").exists()


def test_serve_refuses_a_short_token(fitted, capsys, monkeypatch):
    tmp, _cal, new, policy = fitted
    wl = tmp / "wl"
    assert main(["triage", "--policy", str(policy), "--pred", str(new), "--out", str(wl), "--no-images"]) == 0
    monkeypatch.setenv("MEDSURE_REVIEW_TOKEN", "short")
    assert main(["serve", "--worklist", str(wl)]) == 2
    _one_line_error(capsys, "MEDSURE_REVIEW_TOKEN", "at least 16 characters")
    assert not (wl / "review.sqlite").exists()


def test_audit_refuses_decisions_about_other_cases_and_another_policy(fitted, capsys):
    tmp, cal, new, policy = fitted
    wl = tmp / "wl"
    assert main(["triage", "--policy", str(policy), "--pred", str(new), "--out", str(wl), "--no-images"]) == 0
    decisions = tmp / "d.csv"
    decisions.write_text("case_id,label\nnobody,c0\n")
    out = tmp / "audit.json"
    base = ["audit", "--worklist", str(wl), "--decisions", str(decisions), "--out", str(out)]
    assert main([*base, "--policy", str(policy)]) == 2
    _one_line_error(capsys, "--decisions", "not in the worklist")
    other = tmp / "other.json"
    assert main(["policy", "fit", "--cal", str(cal), "--alpha", "0.2", "--out", str(other)]) == 0
    capsys.readouterr()
    record = json.loads(other.read_text())
    record["created"] = "2000-01-01T00:00:00+00:00"
    other.write_text(json.dumps(record))
    assert main([*base, "--policy", str(other)]) == 2
    _one_line_error(capsys, "--policy", "triaged with")
    assert not out.exists()


def test_database_history_cannot_be_rewritten(tmp_path):
    from medsure.review.db import ReviewDB

    db = ReviewDB(tmp_path / "r.sqlite")
    db.add_decision("a", "c0", "ann")
    db.add_decision("a", "c1", "bob", "second look")
    con = sqlite3.connect(tmp_path / "r.sqlite")
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("UPDATE decisions SET label = 'c2'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("DELETE FROM decisions")
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()
    history = db.history("a")
    assert [h["label"] for h in history] == ["c0", "c1"]
    assert history[1]["supersedes"] == history[0]["id"]


def test_triage_shows_nearest_calibration_cases(fitted, capsys):
    tmp, cal, new, policy = fitted
    out = tmp / "wl"
    args = ["triage", "--policy", str(policy), "--pred", str(new), "--out", str(out), "--image-size", "16"]
    assert main([*args, "--neighbours", str(cal), "--n-neighbours", "2"]) == 0
    doc = json.loads((out / "worklist.json").read_text())
    cal_pred = load_predictions(cal)
    truth = {str(i): f"c{int(y)}" for i, y in zip(cal_pred.ids, cal_pred.labels, strict=True)}
    for case in doc["cases"]:
        assert len(case["neighbours"]) == 2
        assert case["neighbours"][0]["distance"] <= case["neighbours"][1]["distance"]
        for nb in case["neighbours"]:
            assert nb["label"] == truth[nb["id"]]
            assert (out / nb["thumbnail"]).is_file()
    # another calibration file than the policy's: refused, nothing written
    other = _pred(tmp / "other.npz", seed=7)
    capsys.readouterr()
    again = ["triage", "--policy", str(policy), "--pred", str(new), "--out", str(tmp / "wl2")]
    assert main([*again, "--neighbours", str(other)]) == 2
    _one_line_error(capsys, "--neighbours", "SHA-256")
    assert not (tmp / "wl2").exists()


def test_serve_without_the_review_extra_says_how_to_install(fitted, capsys, monkeypatch):
    tmp, _cal, _new, _policy = fitted
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ImportError
    assert main(["serve", "--worklist", str(tmp)]) == 2
    _one_line_error(capsys, "fastapi", "pip install 'medsure[review]'")


def test_class_conditional_policy_with_a_rare_class_needs_a_fallback(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(100, dtype=np.int64), np.ones(100, dtype=np.int64), np.full(4, 2)]  # class c2: 4 cases
    logits = rng.normal(0, 1, (y.size, 3)).astype(np.float32)
    logits[np.arange(y.size), y] += 3
    save_predictions(tmp_path / "cal.npz", make_predictions(logits, labels=y, class_names=["c0", "c1", "c2"]))
    out = tmp_path / "policy.json"
    args = ["policy", "fit", "--cal", str(tmp_path / "cal.npz"), "--conditional", "class", "--out", str(out)]
    assert main(args) == 2
    _one_line_error(capsys, "class 'c2'", "fallback")
    assert not out.exists()
    assert main([*args, "--fallback", "include"]) == 0
    record = json.loads(out.read_text())
    assert record["conformal"]["thresholds"][2] is None  # always included
    assert record["conformal"]["fallbacks"][0]["stratum"] == "c2"
