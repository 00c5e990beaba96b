"""medsure.validation (the one error voice), cli._outputs (outputs checked first, written last) and
utils.io.atomic_write's error naming."""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from medsure.cli._outputs import OutputPlan, check_output_file, check_output_folder
from medsure.errors import DataUnavailableError, MedsureError, MedsureInputError
from medsure.utils.io import atomic_write, write_json
from medsure.validation import (
    Boolean,
    Callable,
    Interval,
    NoneOk,
    Options,
    check_alpha,
    check_array,
    check_choice,
    check_finite,
    check_float,
    check_int,
    check_labels,
    check_probabilities,
    describe,
    input_error,
    min_calibration_size,
    n_excluded,
    validate_params,
)

# ---- the message format --------------------------------------------------------------------


def test_input_error_format():
    exc = input_error("--alpha", 1.5, "a number in (0, 1)", "use 0.1 for 90% coverage.")
    assert isinstance(exc, MedsureInputError) and isinstance(exc, ValueError)
    assert str(exc) == "--alpha: got 1.5; expected a number in (0, 1). Use 0.1 for 90% coverage"
    assert str(input_error("x", "already described", "y", raw=True)) == "x: got already described; expected y"
    assert str(input_error("x", "text", "y")) == "x: got 'text'; expected y"


def test_input_error_kind():
    exc = input_error("MedMNIST file", "no file", "a file", raw=True, kind=DataUnavailableError)
    assert isinstance(exc, DataUnavailableError) and isinstance(exc, FileNotFoundError)
    assert isinstance(exc, MedsureError)
    assert str(exc) == "MedMNIST file: got no file; expected a file"


@pytest.mark.parametrize(
    "value,text",
    [
        (np.str_("benign"), "'benign'"),
        (np.float32(0.5), "0.5"),
        (np.int64(3), "3"),
        ([np.str_("a"), np.str_("b")], "['a', 'b']"),
        (("a",), "('a',)"),
        (np.zeros((2, 3), np.float32), "an array of shape (2, 3) (float32)"),
        (list(range(20)), "list of 20 ([0, 1, 2, 3, ...])"),
        (None, "None"),
    ],
)
def test_describe_renders_plain_values(value, text):
    assert describe(value) == text
    assert "np." not in describe(value)


def test_describe_cuts_long_strings():
    path = "/data/" + "a" * 150 + "/cal.npz"
    assert describe(path) == repr(path)  # a whole path stays readable
    text = describe("x" * 500)
    assert len(text) == 200 and text.endswith("...")


# ---- scalar checks ---------------------------------------------------------------------------


def test_check_choice():
    assert check_choice("--method", "lac", ("lac", "aps")) == "lac"
    with pytest.raises(MedsureInputError, match=r"^--method: got 'x'; expected one of 'lac', 'aps'$"):
        check_choice("--method", "x", ("lac", "aps"))


def test_check_int():
    assert check_int("n", np.int64(3), low=1) == 3 and type(check_int("n", np.int64(3))) is int
    for bad in (True, 2.0, "3", 0, 11):
        with pytest.raises(MedsureInputError, match=r"^n: got .*; expected an integer in \[1, 10\]$"):
            check_int("n", bad, low=1, high=10)


@pytest.mark.parametrize(
    "closed,low_ok,high_ok",
    [("both", True, True), ("left", True, False), ("right", False, True), ("neither", False, False)],
)
def test_check_float_interval_ends(closed, low_ok, high_ok):
    for value, ok in ((0.0, low_ok), (1.0, high_ok), (0.5, True), (-0.1, False), (1.1, False)):
        if ok:
            assert check_float("x", value, low=0.0, high=1.0, closed=closed) == value
        else:
            with pytest.raises(MedsureInputError):
                check_float("x", value, low=0.0, high=1.0, closed=closed)


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "0.5", None])
def test_check_float_refuses_non_finite_and_non_numbers(bad):
    with pytest.raises(MedsureInputError, match="expected a finite number"):
        check_float("x", bad)


def test_check_alpha_needs_enough_calibration_samples():
    assert check_alpha(0.1, 9) == 0.1  # 1/(9+1) = 0.1: the smallest n that works
    with pytest.raises(MedsureInputError) as err:
        check_alpha(0.1, 8)
    message = str(err.value)
    assert message.startswith("alpha: got 0.1; expected alpha >= 1/(n+1) = 0.1111 with n = 8")
    assert "at least 9 calibration samples" in message
    for bad in (0.0, 1.0, -0.2, math.nan):
        with pytest.raises(MedsureInputError, match=r"^--alpha: got .*; expected a finite number in \(0.0, 1.0\)"):
            check_alpha(bad, what="--alpha")


def test_check_alpha_names_the_calibration_data_and_extra_advice():
    with pytest.raises(MedsureInputError) as err:
        check_alpha(0.01, 40, what="--alpha", where="--cal 'cal.npz'", hint="an explicit fallback")
    assert str(err.value) == (
        "--alpha: got 0.01; expected alpha >= 1/(n+1) = 0.02439 with n = 40 calibration samples in --cal 'cal.npz'. "
        "Use at least 99 calibration samples in --cal 'cal.npz' or a larger --alpha, or an explicit fallback"
    )


def test_min_calibration_size_is_exact_where_1_over_alpha_rounds_up():
    # 1 / (1/49) is 49.000000000000007 in floating point: ceil(1/alpha) - 1 would say 49, but
    # n = 48 already has floor((n + 1) alpha) = 1 excluded score, and check_alpha accepts it
    alpha = 1 / 49
    assert math.ceil(1 / alpha) - 1 == 49
    assert min_calibration_size(alpha) == 48 and n_excluded(48, alpha) == 1
    assert check_alpha(alpha, 48) == alpha
    with pytest.raises(MedsureInputError, match="Use at least 48 calibration samples"):
        check_alpha(alpha, 47)
    for a in (0.1, 0.05, 0.3, 0.2, 0.01):  # the smallest n: one below fails, it passes
        n = min_calibration_size(a)
        assert n_excluded(n, a) >= 1 and n_excluded(n - 1, a) == 0


# ---- array checks ----------------------------------------------------------------------------


def test_check_array():
    x = np.zeros((4, 3), np.float32)
    assert check_array("logits", x, ndim=2, dtype_kind="f", min_len=4) is x  # never copied
    with pytest.raises(MedsureInputError, match=r"^logits: got shape \(4, 3\); expected 1 axes or 3 axes$"):
        check_array("logits", x, ndim=(1, 3))
    with pytest.raises(MedsureInputError, match="got dtype float32; expected integer values"):
        check_array("labels", x, dtype_kind="i")
    with pytest.raises(MedsureInputError, match="got 4 samples; expected at least 5"):
        check_array("cal", x, min_len=5)


def test_check_finite_names_count_and_first_position():
    x = np.zeros((3, 2))
    x[1, 1] = np.nan
    x[2, 0] = np.inf
    with pytest.raises(MedsureInputError, match=r"got 2 NaN or infinite value\(s\), first at index \(1, 1\)"):
        check_finite("logits", x)
    assert check_finite("ids", np.array(["a"])).shape == (1,)  # non-float arrays pass


def test_check_probabilities():
    p = np.array([[0.2, 0.8], [0.5, 0.5]])
    assert check_probabilities("probs", p) is not None
    with pytest.raises(MedsureInputError, match="Pass probabilities"):
        check_probabilities("probs", np.array([[2.0, -1.0]]))
    with pytest.raises(MedsureInputError, match="rows that sum to 1"):
        check_probabilities("probs", np.array([[0.2, 0.2]]))


def test_check_labels():
    assert check_labels("labels", np.array([0, 2, 1]), 3, length=3).tolist() == [0, 2, 1]
    with pytest.raises(MedsureInputError, match=r"got labels in \[0, 3\]; expected labels in \[0, 3\)"):
        check_labels("labels", np.array([0, 3]), 3)
    with pytest.raises(MedsureInputError, match=r"got 2 labels; expected 3 \(one per sample\)"):
        check_labels("labels", np.array([0, 1]), 3, length=3)
    with pytest.raises(MedsureInputError, match="integer"):
        check_labels("labels", np.array([0.0, 1.0]), 3)


# ---- declared parameter constraints ----------------------------------------------------------


class _Estimator:
    _parameter_constraints: ClassVar[dict] = {
        "alpha": [Interval(float, 0, 1, closed="neither")],
        "n_bins": [Interval(int, 1, None)],
        "k_reg": [Interval(int, 0, None, closed="neither"), NoneOk],
        "method": [Options(("lac", "aps"))],
        "randomized": [Boolean()],
        "score": [Callable(), NoneOk],
    }

    def __init__(self, alpha=0.1, n_bins=15, k_reg=None, method="lac", randomized=True, score=None):
        self.alpha, self.n_bins, self.k_reg = alpha, n_bins, k_reg
        self.method, self.randomized, self.score = method, randomized, score


def test_validate_params_accepts_valid_values():
    validate_params(_Estimator())
    validate_params(
        _Estimator(alpha=np.float32(0.2), n_bins=np.int64(3), k_reg=1, randomized=np.bool_(False), score=len)
    )


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"alpha": 1.0}, r"^_Estimator\(alpha=\.\.\.\): got 1\.0; expected a finite number in \(0, 1\)$"),
        ({"n_bins": 0}, r"^_Estimator\(n_bins=\.\.\.\): got 0; expected an integer >= 1$"),
        ({"n_bins": 2.5}, r"expected an integer >= 1$"),
        # an open integer interval is shifted to the closed one: (0, inf) -> >= 1; every accepted form is named
        ({"k_reg": 0}, r"^_Estimator\(k_reg=\.\.\.\): got 0; expected an integer >= 1 or None$"),
        ({"method": "raps"}, r"got 'raps'; expected one of 'lac', 'aps'$"),
        ({"randomized": 1}, r"got 1; expected True or False$"),
        ({"score": "msr"}, r"got 'msr'; expected a callable or None$"),
    ],
)
def test_validate_params_names_estimator_parameter_and_accepted_forms(change, expected):
    with pytest.raises(MedsureInputError, match=expected):
        validate_params(_Estimator(**change))


def test_integer_interval_with_fractional_bounds_keeps_the_integers_inside():
    # (0.5, 4.5) holds the integers 1..4 whichever ends are closed (an open end used to become low + 1 = 1.5)
    for closed in ("both", "left", "right", "neither"):
        interval = Interval(int, 0.5, 4.5, closed=closed)
        accepted = []
        for value in range(-1, 7):
            try:
                interval.check("x", value)
                accepted.append(value)
            except MedsureInputError:
                pass
        assert accepted == [1, 2, 3, 4], closed
    assert Interval(int, 0, 5, closed="neither").check("x", 1) == 1
    with pytest.raises(MedsureInputError, match=r"^x: got 5; expected an integer in \[1, 4\]$"):
        Interval(int, 0, 5, closed="neither").check("x", 5)


def test_validate_params_with_explicit_constraints():
    est = _Estimator(alpha=5)
    validate_params(est, {"alpha": [Interval(float, 0, 10)]})
    with pytest.raises(MedsureInputError, match="alpha"):
        validate_params(est)


# ---- outputs: checked first, written last -------------------------------------------------------


def test_output_file_checks(tmp_path):
    assert check_output_file("--out", tmp_path / "new" / "deeper" / "r.json") == tmp_path / "new" / "deeper" / "r.json"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(MedsureInputError, match=r"^--out: got '.*', an existing folder; expected a file path"):
        check_output_file("--out", tmp_path)
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(MedsureInputError, match=r"^--report: got '.*r\.html', whose parent '.*blocker' is a file"):
        check_output_file("--report", tmp_path / "blocker" / "sub" / "r.html")


def test_output_folder_checks(tmp_path):
    assert check_output_folder("--out", tmp_path) == tmp_path
    assert check_output_folder("--out", tmp_path / "new") == tmp_path / "new"
    (tmp_path / "f").write_text("x")
    with pytest.raises(MedsureInputError, match=r"^--out: got '.*f', an existing file; expected a folder"):
        check_output_folder("--out", tmp_path / "f")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into read-only folders")
def test_output_in_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(MedsureInputError, match="read-only folder"):
            check_output_file("--out", locked / "r.json")
    finally:
        locked.chmod(0o700)


def test_plan_refuses_one_path_for_two_options(tmp_path):
    plan = OutputPlan()
    plan.file("--out", tmp_path / "r.json")
    with pytest.raises(MedsureInputError, match=r"^--sets: got '.*r\.json', the path already given to --out"):
        plan.file("--sets", tmp_path / "r.json")
    assert plan.file("--report", None) is None and plan.folder("--out-dir", None) is None


def test_plan_writes_in_order_only_at_the_end(tmp_path):
    plan = OutputPlan()
    first, second = plan.file("--out", tmp_path / "a" / "1.json"), plan.file("--sets", tmp_path / "2.json")
    order = []
    plan.add(first, lambda p: (order.append(p.name), write_json(p, {"x": 1})))
    plan.add(None, lambda p: order.append("never"))
    plan.add(second, lambda p: (order.append(p.name), write_json(p, {"y": 2})))
    assert not first.parent.exists() and not second.exists()
    plan.write_all()
    assert order == ["1.json", "2.json"] and first.is_file() and second.is_file()


def test_plan_failure_removes_what_it_created_and_keeps_what_existed(tmp_path):
    existing = tmp_path / "old.json"
    existing.write_text("{}")
    plan = OutputPlan()
    new_file = plan.file("--out", tmp_path / "made" / "r.json")
    plan.add(new_file, lambda p: write_json(p, {"x": 1}))
    plan.add(plan.file("--keep", existing), lambda p: write_json(p, {"x": 2}))

    def broken(path: Path) -> None:
        path.mkdir()
        (path / "partial.png").write_bytes(b"half")
        raise RuntimeError("disk full")

    plan.add(plan.folder("--out-dir", tmp_path / "figures"), broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plan.write_all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]  # the made/ folder and figures/ are gone
    assert existing.read_text() != ""


# ---- atomic writes name the user's path -----------------------------------------------------------


def test_atomic_write_to_a_folder_names_it(tmp_path):
    expected = rf"^output file: got '{tmp_path}', an existing folder; expected a file path"
    with pytest.raises(MedsureInputError, match=expected):
        write_json(tmp_path, {})
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_atomic_write_under_a_file_names_the_users_path(tmp_path):
    (tmp_path / "blocker").write_text("x")
    target = tmp_path / "blocker" / "r.json"
    with pytest.raises(OSError) as err:
        write_json(target, {})
    assert err.value.filename == str(target)
    assert ".tmp" not in str(err.value)


def test_atomic_write_creates_the_parent_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a" / "b" / "r.txt"
    with atomic_write(target, "w") as handle:
        handle.write("done")
    assert target.read_text() == "done"

    def write_half(path: Path) -> None:
        with atomic_write(path, "w") as handle:
            handle.write("half")
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        write_half(target)
    assert target.read_text() == "done" and [p.name for p in target.parent.iterdir()] == ["r.txt"]


def test_cli_prints_os_errors_in_the_house_format():
    from medsure.cli import _os_error_message

    exc = OSError(errno.EACCES, "Permission denied", "/tmp/.r.json.x1.tmp", None, "/data/r.json")
    assert _os_error_message(exc) == (
        "file '/data/r.json': got the system error 'Permission denied'; "
        "expected a readable input or a writable output path"
    )


@pytest.mark.parametrize(
    "message,expected",
    [
        (
            "argument --alpha: invalid float value: 'abc'",
            "--alpha: got 'abc'; expected a number. Run 'medsure x --help' for the options",
        ),
        (
            "argument --method: invalid choice: 'x' (choose from 'lac', 'aps')",
            "--method: got 'x'; expected one of 'lac', 'aps'. Run 'medsure x --help' for the options",
        ),
        (
            "the following arguments are required: --cal, --out",
            "--cal, --out: got nothing; expected a value for each (they are required). Run 'medsure x --help' for the "
            "options",
        ),
        (
            "argument --cal: expected one argument",
            "--cal: got no value; expected one value. Run 'medsure x --help' for the options",
        ),
        (
            "something argparse may say one day",
            "something argparse may say one day. Run 'medsure x --help' for the options",
        ),
    ],
)
def test_argparse_refusals_in_the_house_format(message, expected):
    from medsure.cli import argparse_message

    assert argparse_message(message, "medsure x") == expected
