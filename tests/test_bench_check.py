"""``python -m benchmarks.check``: the comparison rules on synthetic records (no benchmark is run)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from benchmarks import check

ENV = {
    "medsure_version": "0.1.0",
    "git_commit": "abc",
    "python": "3.11.7",
    "torch": "2.13.0+cpu",
    "numpy": "2.4.6",
    "monai": "1.6.1",
    "platform": "Linux-a",
    "cpu_model": "AMD EPYC",
    "cpu_count": 2,
    "cpu_bf16": True,
    "device": "cpu",
    "num_threads": 1,
    "autocast_bf16": True,
    "wall_time_s": 12.0,
}
TOL = {"aurc": 0.05, "speedup": 0.5}


def _status(rows: list[check.Row]) -> dict[str, str]:
    return {r.metric: r.status for r in rows}


def test_same_environment_demands_identical_numbers() -> None:
    rec = {"aurc": 0.2440, "speedup": 1.5}
    same = check.compare_metrics("b", rec, dict(rec), TOL, same_environment=True)
    assert _status(same) == {"aurc": check.OK, "speedup": check.OK}
    assert all(r.rule.startswith("exact") and r.diff == 0.0 for r in same)
    # a change far inside the tolerance is still a mismatch when the environment matches
    moved = check.compare_metrics("b", rec, {"aurc": 0.2440 + 1e-12, "speedup": 1.5}, TOL, same_environment=True)
    assert _status(moved) == {"aurc": check.MISMATCH, "speedup": check.OK}


def test_other_environment_compares_within_tolerance_and_says_so() -> None:
    rec = {"aurc": 0.244, "speedup": 1.5}
    rows = check.compare_metrics("b", rec, {"aurc": 0.261, "speedup": 2.1}, TOL, same_environment=False)
    assert _status(rows) == {"aurc": check.OK, "speedup": check.MISMATCH}  # 0.017 <= 0.05; 0.6 > 0.5
    assert all("environment differs" in r.rule for r in rows)
    assert rows[0].diff == pytest.approx(0.017)
    edge = check.compare_metrics("b", {"aurc": 0.25}, {"aurc": 0.30}, TOL, same_environment=False)
    assert edge[0].status == check.OK  # a difference at the tolerance counts as within


def test_unrepeatable_metric_uses_tolerance_even_in_the_same_environment() -> None:
    rows = check.compare_metrics(
        "b", {"speedup": 1.5}, {"speedup": 1.8}, TOL, same_environment=True, unrepeatable={"speedup"}
    )
    assert rows[0].status == check.OK and "timing" in rows[0].rule
    rows = check.compare_metrics(
        "b", {"speedup": 1.5}, {"speedup": 2.2}, TOL, same_environment=True, unrepeatable={"speedup"}
    )
    assert rows[0].status == check.MISMATCH


def test_missing_new_untolerated_and_nan_metrics() -> None:
    rows = check.compare_metrics(
        "b", {"aurc": 0.2, "gone": 1.0}, {"aurc": 0.2, "fresh": 3.0}, TOL, same_environment=True
    )
    by = {r.metric: r for r in rows}
    assert by["gone"].status == check.MISMATCH and by["gone"].now is None
    assert by["fresh"].status == check.MISMATCH and "not recorded" in by["fresh"].rule
    assert by["aurc"].status == check.OK
    untolerated = check.compare_metrics("b", {"x": 1.0}, {"x": 1.0}, TOL, same_environment=True)
    assert untolerated[0].status == check.MISMATCH and "QUICK_TOLERANCE" in untolerated[0].rule
    nan = check.compare_metrics("b", {"aurc": math.nan}, {"aurc": math.nan}, TOL, same_environment=True)
    assert nan[0].status == check.OK
    nan_vs_number = check.compare_metrics("b", {"aurc": math.nan}, {"aurc": 0.2}, TOL, same_environment=False)
    assert nan_vs_number[0].status == check.MISMATCH


def test_environment_matching_ignores_the_code_version_but_not_the_arithmetic() -> None:
    newer_code = ENV | {"git_commit": "def+dirty", "medsure_version": "0.2.0", "wall_time_s": 99.0, "platform": "x"}
    assert check.environment_differences(ENV, newer_code) == {}
    assert "identical" in check.describe_differences({})
    for key, value in (("cpu_model", "Intel Xeon"), ("autocast_bf16", False), ("num_threads", 2), ("torch", "2.14")):
        diffs = check.environment_differences(ENV, ENV | {key: value})
        assert diffs == {key: (ENV[key], value)}
        assert key in check.describe_differences(diffs) and "tolerances apply" in check.describe_differences(diffs)


def test_table_names_every_number_rule_and_result() -> None:
    rows = check.compare_metrics("failure_isic", {"aurc": 0.244}, {"aurc": 0.5}, TOL, same_environment=False)
    text = check.format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["benchmark", "metric", "recorded"]
    assert "failure_isic" in lines[2] and "0.244" in lines[2] and "0.5" in lines[2] and "MISMATCH" in lines[2]
    assert "±0.05 (environment differs)" in lines[2]


def test_record_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "rec.json"
    assert check.read_record(path) == {}  # no record yet
    records = {"b": {"recorded_at": "t", "environment": ENV, "metrics": {"aurc": 0.244}, "tolerance": TOL}}
    check.write_record(path, records)
    assert check.read_record(path) == records
    path.write_text("{not json")
    with pytest.raises(check.CheckInputError, match="not readable JSON"):
        check.read_record(path)
    path.write_text(json.dumps({"format": 99, "benchmarks": {}}))
    with pytest.raises(check.CheckInputError, match="format-1"):
        check.read_record(path)


def test_discover_finds_modules_that_define_quick(tmp_path: Path) -> None:
    (tmp_path / "has_quick.py").write_text("QUICK_TOLERANCE = {}\n\n\ndef quick():\n    return {}\n")
    (tmp_path / "no_quick.py").write_text("def main():\n    pass\n")
    (tmp_path / "_helper.py").write_text("def quick():\n    return {}\n")
    assert check.discover(tmp_path) == ["has_quick"]
    # every benchmark of the repository takes part, each with a tolerance table
    found = check.discover()
    assert {"conformal_speed", "failure_isic", "segmentation_shift", "segmentation_uncertainty"} <= set(found)
    assert {"train_medmnist", "train_speed"} <= set(found)
    for name in found:
        assert "QUICK_TOLERANCE" in (check.HERE / f"{name}.py").read_text()


def test_bad_input_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert check.main(["--only", "no_such_benchmark"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--only" in err[0] and "no_such_benchmark" in err[0] and "expected" in err[0]
    bad = tmp_path / "rec.json"
    bad.write_text("[]")
    assert check.main(["--recorded", str(bad), "--only", "train_speed"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
    assert check.main(["--timeout", "0"]) == 2
    assert "--timeout" in capsys.readouterr().err


def test_environment_line_names_what_changes_the_numbers() -> None:
    from benchmarks._env import environment_line, format_wall_time

    line = environment_line(ENV)
    for text in ("medsure 0.1.0", "`abc`", "torch 2.13.0+cpu", "numpy 2.4.6", "MONAI 1.6.1", "`AMD EPYC`"):
        assert text in line
    assert "native bf16: yes" in line and "1 torch thread(s)" in line and "bf16 autocast on" in line
    assert "wall time 12 s" in line
    assert "bf16 autocast off" in environment_line(ENV | {"autocast_bf16": False})
    assert "no git checkout" in environment_line(ENV | {"git_commit": None})
    assert [format_wall_time(x) for x in (None, 71.2, 738.0, 9000.0)] == ["not measured", "71 s", "12.3 min", "2.50 h"]


def test_quick_without_its_data_is_skipped_not_a_mismatch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import types

    from medsure.errors import DataUnavailableError

    # run_one: a quick() whose loader finds no data reports the reason instead of numbers
    fake = types.ModuleType("benchmarks.fake_absent")

    def absent() -> dict[str, float]:
        raise DataUnavailableError("jsrt data: no /nowhere/jsrt; expected /nowhere/jsrt/images")

    fake.quick = absent  # type: ignore[attr-defined]
    fake.QUICK_TOLERANCE = {"x": 0.1}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "benchmarks.fake_absent", fake)
    assert check.run_one("fake_absent") == {"skipped": "jsrt data: no /nowhere/jsrt; expected /nowhere/jsrt/images"}

    # the check: one SKIPPED row naming the reason, exit 0 when nothing else fails, record kept
    results: dict[str, dict[str, Any]] = {
        "absent": {"skipped": "jsrt data: no /nowhere/jsrt"},
        "present": {"metrics": {"aurc": 0.244}, "tolerance": TOL, "unrepeatable": [], "environment": ENV},
    }
    monkeypatch.setattr(check, "discover", lambda folder=check.HERE: sorted(results))
    monkeypatch.setattr(check, "run_in_subprocess", lambda name, timeout_s: results[name])
    record = tmp_path / "rec.json"
    kept = {"recorded_at": "t", "environment": ENV, "metrics": {"old": 1.0}, "tolerance": {"old": 0.1}}
    check.write_record(record, {"absent": kept, "present": kept | {"metrics": {"aurc": 0.244}}})
    assert check.main(["--recorded", str(record)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("absent"))
    assert "SKIPPED" in row and "data absent" in row and "/nowhere/jsrt" in row
    assert "1 of 1 numbers match; 0 mismatches; 1 benchmark skipped (data absent)" in out
    assert check.main(["--recorded", str(record), "--record"]) == 0
    assert check.read_record(record)["absent"] == kept  # a skipped benchmark keeps its old record
    # a mismatch elsewhere still fails the check; a skip does not hide it
    results["present"] = results["present"] | {"metrics": {"aurc": 0.5}}
    assert check.main(["--recorded", str(record)]) == 1
    assert "1 mismatch; 1 benchmark skipped" in capsys.readouterr().out


def test_every_benchmark_defines_quick_and_its_tolerances() -> None:
    found = set(check.discover())
    assert {"certification", "evidential_uml", "scale", "triage_speed"} <= found
    import ast

    for name in found:
        tree = ast.parse((check.HERE / f"{name}.py").read_text())
        names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if hasattr(t, "id")}
        assert "QUICK_TOLERANCE" in names, name


def test_segmentation_uncertainty_seed_spread_rows() -> None:
    """The study's spread rows: leave-one-out ensembles are the other members' stacked logits, and
    the table gives mean ± sd with per-seed values for singles, leave-one-out ensembles, MC dropout."""
    from benchmarks import segmentation_uncertainty as su

    from medsure.artifact import make_predictions

    assert su.methods(5, 3) == [
        *(f"single{m}" for m in range(5)),
        "ensemble",
        *(f"ensemble_lo{m}" for m in range(5)),
        *(f"mc_dropout{m}" for m in range(3)),
        *(f"tta{m}" for m in range(3)),
    ]
    assert "ensemble_lo0" not in su.methods(2, 1)  # a 1-member "ensemble" is not an ensemble
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3, 2, 5, 5)).astype(np.float32)  # 4 members, 3 images, 2 classes
    masks = rng.integers(0, 2, (3, 5, 5))
    full = make_predictions(logits, masks=masks, task="segmentation", class_names=["bg", "fg"], sample_kind="ensemble")
    loo = su.leave_one_out(full, 1)
    np.testing.assert_array_equal(loo.logits, logits[[0, 2, 3]])
    assert full.logits.shape[0] == 4  # the input is not modified
    np.testing.assert_allclose(loo.probabilities(), full.sample_probabilities()[[0, 2, 3]].mean(axis=0), rtol=1e-6)

    results = {f"ce/single{m}": {"dice_mean": d} for m, d in enumerate((0.90, 0.92, 0.94))}
    results |= {"ce/ensemble": {"dice_mean": 0.95}, "ce/mc_dropout0": {"dice_mean": 0.91}}
    results |= {f"ce/ensemble_lo{m}": {"dice_mean": 0.93 + 0.01 * m} for m in range(3)}
    lines = {line.split(" | ")[1]: line for line in su.table(results, 3, False).splitlines()[2:]}
    single = lines["single (mean ± sd of 3 seeds; per seed 0..2)"]
    assert "0.9200 ± 0.0200 (0.900 / 0.920 / 0.940)" in single
    assert (
        "0.9400 ± 0.0100 (0.930 / 0.940 / 0.950)"
        in lines["ensemble, leave-one-out 2 of 3 (mean ± sd of 3; shared members)"]
    )
    assert "| 0.9500 |" in lines["ensemble (all 3 members)"]
    assert "| 0.9100 |" in lines["mc_dropout (mean ± sd over members 0..0, one seed each)"]
