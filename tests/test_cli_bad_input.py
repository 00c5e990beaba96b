"""Bad input at the front door: every command fails the same clean way and leaves nothing behind.

For each command × bad input: exit code 2, exactly one line on stderr in the house format
(``medsure <cmd>: error: <what>: got <given>; expected <expected>...``), no traceback, and no file
left behind (nothing new appears under the test's folder). A valid run of every command is tested
too, so each failure below is caused by its bad input and not by a broken base command line.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from medsure.cli import main

N_CLS, K_CLS = 40, 3
N_SEG, K_SEG, SIDE = 12, 2, 8


# ---- valid inputs, written with plain numpy as a user would ----------------------------------


def _cls_arrays(seed: int, n: int = N_CLS, k: int = K_CLS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    logits[np.arange(n), labels] += 2.0  # a model better than chance
    return {
        "logits": logits,
        "labels": labels,
        "ids": np.array([f"{seed}-{i}" for i in range(n)]),
        "class_names": np.array(["benign", "malignant", "normal", "other"][:k]),
    }


def _seg_arrays(seed: int, n: int = N_SEG) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, SIDE, SIDE), np.int64)
    for i in range(n):  # a square of random size per image
        r = rng.integers(1, SIDE // 2)
        masks[i, SIDE // 2 - r : SIDE // 2 + r, SIDE // 2 - r : SIDE // 2 + r] = 1
    logits = rng.normal(scale=0.5, size=(n, K_SEG, SIDE, SIDE)).astype(np.float32)
    logits[:, 1] += np.where(masks == 1, 2.0, -2.0)
    return {
        "logits": logits,
        "masks": masks,
        "ids": np.array([f"s{seed}-{i}" for i in range(n)]),
        "class_names": np.array(["background", "lesion"]),
    }


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("valid")
    paths = {}
    for name, arrays in (
        ("cls_cal", _cls_arrays(1)),
        ("cls_test", _cls_arrays(2)),
        ("seg_cal", _seg_arrays(3)),
        ("seg_test", _seg_arrays(4)),
    ):
        paths[name] = folder / f"{name}.npz"
        np.savez(paths[name], **arrays)
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A tiny real run (1 epoch on 24 embedded BUSI images at 16 px) and one id of its test split."""
    run = tmp_path_factory.mktemp("run") / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "busi",
                "--model",
                "small_cnn",
                "--image-size",
                "16",
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
    return {"run": run, "id": str(test.ids[0])}


# ---- the commands, as slots filled with valid values by default -----------------------------


@dataclass
class Ctx:
    """What a case builds its command line from: the valid inputs and a private folder."""

    valid: dict[str, Path]
    tmp: Path
    trained: dict[str, object] | None = None
    slots: dict[str, str | None] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)  # the slots a case broke

    def bad_file(self, kind: str, like: Path | None = None) -> str:
        """A broken input file of the given kind (names end in .npz as a user's would)."""
        path = self.tmp / "inputs" / f"{kind}.npz"
        path.parent.mkdir(exist_ok=True)
        good = (like or self.valid["cls_cal"]).read_bytes()
        if kind == "missing":
            pass
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "text":
            path.write_text("id,label\n1,0\n2,1\n")
        elif kind == "truncated":
            path.write_bytes(good[: len(good) // 2])
        elif kind == "crc":  # one flipped byte inside the first member's data
            path.write_bytes(good[:80] + bytes([good[80] ^ 0xFF]) + good[81:])
        elif kind == "folder":
            path.mkdir()
        else:
            raise AssertionError(kind)
        return str(path)

    def artifact(self, name: str, arrays: dict[str, np.ndarray]) -> str:
        path = self.tmp / "inputs" / f"{name}.npz"
        path.parent.mkdir(exist_ok=True)
        np.savez(path, **arrays)
        return str(path)


def _out(ctx: Ctx, name: str) -> str:
    return str(ctx.tmp / "outputs" / name)


# per command: (default slots, argv built from slots). None slots are left out.
COMMANDS: dict[str, tuple[Callable[[Ctx], dict[str, str | None]], list[tuple[str, str]]]] = {
    "conformal": (
        lambda c: {
            "cal": str(c.valid["cls_cal"]),
            "test": str(c.valid["cls_test"]),
            "method": "lac",
            "alpha": "0.1",
            "out": _out(c, "result.json"),
            "sets": None,
        },
        [
            ("--cal", "cal"),
            ("--test", "test"),
            ("--method", "method"),
            ("--alpha", "alpha"),
            ("--out", "out"),
            ("--sets", "sets"),
        ],
    ),
    "calibration": (
        lambda c: {
            "cal": str(c.valid["cls_cal"]),
            "test": str(c.valid["cls_test"]),
            "out": _out(c, "result.json"),
            "report": None,
        },
        [("--cal", "cal"), ("--test", "test"), ("--out", "out"), ("--report", "report")],
    ),
    "failure": (
        lambda c: {
            "cal": str(c.valid["cls_cal"]),
            "test": str(c.valid["cls_test"]),
            "bootstrap": "10",
            "out": _out(c, "result.json"),
            "report": None,
            "target_risk": None,
        },
        [
            ("--cal", "cal"),
            ("--test", "test"),
            ("--bootstrap", "bootstrap"),
            ("--out", "out"),
            ("--report", "report"),
            ("--target-risk", "target_risk"),
        ],
    ),
    "segment-eval": (
        lambda c: {
            "pred": str(c.valid["seg_test"]),
            "out": _out(c, "result.json"),
            "shift": None,
            "bins": "10",
            "report": None,
        },
        [("--pred", "pred"), ("--out", "out"), ("--shift", "shift"), ("--bins", "bins"), ("--report", "report")],
    ),
    "conformal-mask": (
        lambda c: {
            "cal": str(c.valid["seg_cal"]),
            "test": str(c.valid["seg_test"]),
            "alpha": "0.2",
            "out": _out(c, "result.json"),
            "report": None,
        },
        [("--cal", "cal"), ("--test", "test"), ("--alpha", "alpha"), ("--out", "out"), ("--report", "report")],
    ),
    "predict": (
        lambda c: {
            "run": str(c.trained["run"]),
            "out": _out(c, "pred.npz"),
            "mc_samples": None,
            "batch_size": None,
            "split": None,
        },
        [
            ("--run", "run"),
            ("--out", "out"),
            ("--mc-samples", "mc_samples"),
            ("--batch-size", "batch_size"),
            ("--split", "split"),
        ],
    ),
    "explain": (
        lambda c: {
            "run": str(c.trained["run"]),
            "ids": str(c.trained["id"]),
            "out": _out(c, "explain"),
            "split": None,
            "classes": None,
        },
        [("--run", "run"), ("--ids", "ids"), ("--out", "out"), ("--split", "split"), ("--classes", "classes")],
    ),
    "demo": (lambda c: {"out": _out(c, "demo"), "alpha": None}, [("--out", "out"), ("--alpha", "alpha")]),
    "datasets": (lambda c: {"download": None}, [("--download", "download")]),
}
NEEDS_RUN = {"predict", "explain"}
NOT_RUN_VALID = {"demo": "trains two models for minutes; tests/test_demo.py runs it"}


def _argv(cmd: str, ctx: Ctx) -> list[str]:
    argv = [cmd]
    for option, slot in COMMANDS[cmd][1]:
        if ctx.slots.get(slot) is not None:
            argv += [option, ctx.slots[slot]]
    return argv


# ---- the cases: (command, name, how to break the valid command line) -------------------------


def _set(**values: Callable[[Ctx], str] | str) -> Callable[[Ctx], None]:
    def apply(ctx: Ctx) -> None:
        for slot, value in values.items():
            ctx.slots[slot] = value(ctx) if callable(value) else value
            ctx.changed.append(slot)

    return apply


def _cls_with(**change) -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        arrays = {**_cls_arrays(7), **change}
        return ctx.artifact("changed", {k: v for k, v in arrays.items() if v is not None})

    return make


def _seg_with(**change) -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        arrays = {**_seg_arrays(8), **change}
        return ctx.artifact("changed", {k: v for k, v in arrays.items() if v is not None})

    return make


def _nan_logits(make_arrays, seed):
    logits = make_arrays(seed)["logits"].copy()
    logits.flat[3] = np.nan
    return logits


def _output_parent_is_file(name: str) -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        blocker = ctx.tmp / "outputs" / "blocker"
        blocker.parent.mkdir(exist_ok=True)
        blocker.write_text("a file, not a folder\n")
        return str(blocker / name)

    return make


def _existing_folder(ctx: Ctx) -> str:
    folder = ctx.tmp / "outputs" / "a_folder"
    folder.mkdir(parents=True)
    return str(folder)


def _existing_file(ctx: Ctx) -> str:
    path = ctx.tmp / "outputs" / "a_file"
    path.parent.mkdir(exist_ok=True)
    path.write_text("a file, not a folder\n")
    return str(path)


FILE_KINDS = ("missing", "empty", "text", "truncated", "crc", "folder")
CASES: list[tuple[str, str, Callable[[Ctx], None]]] = []

# broken input files, in every artifact slot of every command
for _cmd, _slot, _like in (
    ("conformal", "cal", "cls_cal"),
    ("conformal", "test", "cls_test"),
    ("calibration", "cal", "cls_cal"),
    ("calibration", "test", "cls_test"),
    ("failure", "cal", "cls_cal"),
    ("failure", "test", "cls_test"),
    ("segment-eval", "pred", "seg_test"),
    ("segment-eval", "shift", "seg_cal"),
    ("conformal-mask", "cal", "seg_cal"),
    ("conformal-mask", "test", "seg_test"),
):
    CASES += [
        (
            _cmd,
            f"{_slot}-{_kind}",
            _set(**{_slot: (lambda k, like: lambda c: c.bad_file(k, c.valid[like]))(_kind, _like)}),
        )
        for _kind in FILE_KINDS
    ]

# bad content in classification artifacts
for _cmd in ("conformal", "calibration", "failure"):
    CASES += [
        (_cmd, "cal-nan-logits", _set(cal=_cls_with(logits=_nan_logits(_cls_arrays, 7)))),
        (_cmd, "test-nan-logits", _set(test=_cls_with(logits=_nan_logits(_cls_arrays, 7)))),
        (_cmd, "cal-labels-out-of-range", _set(cal=_cls_with(labels=np.full(N_CLS, K_CLS)))),
        (_cmd, "cal-negative-labels", _set(cal=_cls_with(labels=-np.ones(N_CLS, np.int64)))),
        (_cmd, "test-class-count-mismatch", _set(test=lambda c: c.artifact("k4", _cls_arrays(9, k=4)))),
        (
            _cmd,
            "test-class-names-differ",
            _set(test=_cls_with(class_names=np.array(["benign", "malignant", "tumour"]))),
        ),
        (_cmd, "cal-empty-artifact", _set(cal=lambda c: c.artifact("n0", _cls_arrays(9, n=0)))),
        (_cmd, "test-empty-artifact", _set(test=lambda c: c.artifact("n0", _cls_arrays(9, n=0)))),
        (_cmd, "cal-is-segmentation", _set(cal=lambda c: str(c.valid["seg_cal"]))),
        (_cmd, "out-is-folder", _set(out=_existing_folder)),
        (_cmd, "out-parent-is-file", _set(out=_output_parent_is_file("result.json"))),
    ]
CASES += [
    # an unlabelled --cal: conformal and calibration need its labels; failure runs and reports the learned
    # combination as undefined with its reason (a decision of that command, tested in tests/test_failure*.py)
    ("conformal", "cal-unlabelled", _set(cal=_cls_with(labels=None))),
    ("calibration", "cal-unlabelled", _set(cal=_cls_with(labels=None))),
    ("calibration", "test-unlabelled", _set(test=_cls_with(labels=None))),
    ("failure", "test-unlabelled", _set(test=_cls_with(labels=None))),
    ("conformal", "sets-is-folder", _set(sets=_existing_folder)),
    ("conformal", "sets-same-path-as-out", _set(sets=lambda c: c.slots["out"])),
    ("conformal", "sets-parent-is-file", _set(sets=_output_parent_is_file("sets.npz"))),
    ("calibration", "report-is-folder", _set(report=_existing_folder)),
    ("calibration", "report-parent-is-file", _set(report=_output_parent_is_file("report.html"))),
    ("failure", "report-is-folder", _set(report=_existing_folder)),
    ("failure", "report-parent-is-file", _set(report=_output_parent_is_file("report.html"))),
    ("conformal", "alpha-zero", _set(alpha="0")),
    ("conformal", "alpha-above-one", _set(alpha="1.5")),
    ("conformal", "alpha-nan", _set(alpha="nan")),
    ("conformal", "alpha-below-1-over-n-plus-1", _set(alpha="0.01")),  # 40 calibration samples
    ("failure", "negative-bootstrap", _set(bootstrap="-1")),
    ("failure", "target-risk-above-one", _set(target_risk="1.5")),
]

# bad content in segmentation artifacts
for _cmd, _slot in (("segment-eval", "pred"), ("conformal-mask", "cal"), ("conformal-mask", "test")):
    CASES += [
        (_cmd, f"{_slot}-nan-logits", _set(**{_slot: _seg_with(logits=_nan_logits(_seg_arrays, 8))})),
        (_cmd, f"{_slot}-masks-out-of-range", _set(**{_slot: _seg_with(masks=np.full((N_SEG, SIDE, SIDE), 2))})),
        (_cmd, f"{_slot}-is-classification", _set(**{_slot: lambda c: str(c.valid["cls_cal"])})),
        (_cmd, f"{_slot}-unlabelled", _set(**{_slot: _seg_with(masks=None)})),
        (
            _cmd,
            f"{_slot}-empty-artifact",
            _set(
                **{
                    _slot: lambda c: c.artifact(
                        "n0",
                        {k: v[:0] for k, v in _seg_arrays(8).items() if k != "class_names"}
                        | {"class_names": _seg_arrays(8)["class_names"]},
                    )
                }
            ),
        ),
    ]
for _cmd in ("segment-eval", "conformal-mask"):
    CASES += [
        (_cmd, "out-is-folder", _set(out=_existing_folder)),
        (_cmd, "out-parent-is-file", _set(out=_output_parent_is_file("result.json"))),
        (_cmd, "report-is-folder", _set(report=_existing_folder)),
        (_cmd, "report-parent-is-file", _set(report=_output_parent_is_file("report.html"))),
        (_cmd, "report-same-path-as-out", _set(report=lambda c: c.slots["out"])),
    ]
CASES += [
    ("segment-eval", "bins-zero", _set(bins="0")),
    (
        "segment-eval",
        "shift-class-count-mismatch",
        _set(
            shift=_seg_with(logits=np.zeros((N_SEG, 3, SIDE, SIDE), np.float32), class_names=np.array(["a", "b", "c"]))
        ),
    ),
    ("conformal-mask", "alpha-zero", _set(alpha="0")),
    ("conformal-mask", "alpha-one", _set(alpha="1")),
    ("conformal-mask", "alpha-nan", _set(alpha="nan")),
    ("conformal-mask", "alpha-too-small-for-n", _set(alpha="0.01")),  # 12 calibration images
    (
        "conformal-mask",
        "test-class-count-mismatch",
        _set(
            test=_seg_with(logits=np.zeros((N_SEG, 3, SIDE, SIDE), np.float32), class_names=np.array(["a", "b", "c"]))
        ),
    ),
]


# trained-run commands
def _run_copy(change: Callable[[Path], None]) -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        run = ctx.tmp / "inputs" / "run"
        shutil.copytree(ctx.trained["run"], run)
        change(run)
        return str(run)

    return make


def _empty_folder(ctx: Ctx) -> str:
    folder = ctx.tmp / "inputs" / "empty_run"
    folder.mkdir(parents=True)
    return str(folder)


for _cmd in ("predict", "explain"):
    CASES += [
        (_cmd, "run-missing", _set(run=lambda c: str(c.tmp / "inputs" / "no_such_run"))),
        (_cmd, "run-is-file", _set(run=_existing_file)),
        (_cmd, "run-empty-folder", _set(run=_empty_folder)),
        (_cmd, "run-config-not-json", _set(run=_run_copy(lambda r: (r / "config.json").write_text("not json")))),
        (_cmd, "run-weights-missing", _set(run=_run_copy(lambda r: (r / "best.pt").unlink()))),
        (_cmd, "run-weights-corrupt", _set(run=_run_copy(lambda r: (r / "best.pt").write_bytes(b"PK\x03\x04")))),
        (_cmd, "out-parent-is-file", _set(out=_output_parent_is_file("out"))),
    ]
CASES += [
    ("predict", "out-is-folder", _set(out=_existing_folder)),
    ("predict", "negative-mc-samples", _set(mc_samples="-1")),
    ("predict", "batch-size-zero", _set(batch_size="0")),
    ("explain", "out-is-file", _set(out=_existing_file)),
    ("explain", "unknown-id", _set(ids="no-such-id")),
    ("explain", "unknown-split", _set(split="nosplit")),
    ("explain", "class-index-out-of-range", _set(classes="99")),
    # the demo checks its options before minutes of training
    ("demo", "alpha-zero", _set(alpha="0")),
    ("demo", "alpha-above-one", _set(alpha="1.5")),
    ("demo", "out-is-file", _set(out=_existing_file)),
    ("demo", "out-parent-is-file", _set(out=_output_parent_is_file("demo"))),
    ("datasets", "download-unknown-flag", _set(download="nosuchmnist")),
    # argparse's own refusals speak with the same voice, on one line
    ("conformal", "alpha-not-a-number", _set(alpha="abc")),
    ("conformal", "method-unknown", _set(method="bogus")),
    ("conformal-mask", "cal-not-given", _set(cal=None)),
    ("predict", "mc-samples-not-an-integer", _set(mc_samples="1.5")),
]


def _params():
    for cmd, name, apply in CASES:
        yield pytest.param(cmd, name, apply, id=f"{cmd}:{name}")


def _names_what_was_wrong(cmd: str, ctx: Ctx, line: str) -> bool:
    """The message names the option that was broken, its value, or the file it points to."""
    options = {slot: option for option, slot in COMMANDS[cmd][1]}
    for slot in ctx.changed:
        option, value = options[slot], ctx.slots.get(slot)
        words = [option, option.lstrip("-")] + ([value, Path(value).name] if value else [])
        if any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", line) for w in words):
            return True
    return False


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _context(cmd: str, valid: dict[str, Path], tmp_path: Path, request: pytest.FixtureRequest) -> Ctx:
    ctx = Ctx(valid=valid, tmp=tmp_path, trained=request.getfixturevalue("trained") if cmd in NEEDS_RUN else None)
    ctx.slots = COMMANDS[cmd][0](ctx)
    return ctx


@pytest.mark.parametrize("cmd,name,apply", list(_params()))
def test_bad_input_fails_cleanly(cmd, name, apply, valid, tmp_path, request, capsys):
    ctx = _context(cmd, valid, tmp_path, request)
    apply(ctx)
    argv = _argv(cmd, ctx)
    before = _files_under(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refusing a value
        code = exc.code
    except Exception as exc:  # a traceback is the failure this test exists to catch
        pytest.fail(f"medsure {cmd} ({name}) raised {type(exc).__name__}: {exc}")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, f"exit code {code}; stderr: {err!r}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    assert lines[0].startswith(f"medsure {cmd}: error: "), lines[0]
    assert "; expected " in lines[0] and ": got " in lines[0], f"not in the house format: {lines[0]}"
    assert _names_what_was_wrong(cmd, ctx, lines[0]), f"the message names none of {ctx.changed}: {lines[0]}"
    left = _files_under(tmp_path) - before
    assert not left, f"files left behind: {sorted(map(str, left))}"
    for option, slot in COMMANDS[cmd][1]:  # every output path absent (or, for a folder given, still empty)
        if option in ("--out", "--sets", "--report") and ctx.slots.get(slot):
            out = Path(ctx.slots[slot])
            assert not out.exists() or (out.is_dir() and not any(out.iterdir())) or out in before, out


# the optional outputs a valid run also writes (so the cases on them break only the path)
EXTRA_OUTPUTS = {
    "conformal": {"sets": "sets.npz"},
    "calibration": {"report": "report.html"},
    "failure": {"report": "report.html"},
    "segment-eval": {"report": "report.html"},
    "conformal-mask": {"report": "report.html"},
}


@pytest.mark.parametrize("cmd", sorted(set(COMMANDS) - set(NOT_RUN_VALID)))
def test_valid_command_line_succeeds(cmd, valid, tmp_path, request, capsys):
    """The base command line of every case works, so each case above fails for its bad input."""
    ctx = _context(cmd, valid, tmp_path, request)
    for slot, name in EXTRA_OUTPUTS.get(cmd, {}).items():
        ctx.slots[slot] = _out(ctx, name)
    assert main(_argv(cmd, ctx)) == 0, capsys.readouterr().err
    for slot in ("out", *EXTRA_OUTPUTS.get(cmd, {})):
        if slot in ctx.slots:
            assert Path(ctx.slots[slot]).exists(), slot


def test_out_under_missing_parent_folder_is_created(valid, tmp_path):
    """The documented decision: a missing parent folder of --out is created."""
    out = tmp_path / "new" / "deeper" / "result.json"
    assert (
        main(["calibration", "--cal", str(valid["cls_cal"]), "--test", str(valid["cls_test"]), "--out", str(out)]) == 0
    )
    assert out.is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
