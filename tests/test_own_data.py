"""Bringing your own data: the generic loaders (folder, segfolder, jointfolder, manifest), groups,
typed --option values, resolved roots and every bad input of issue 14 (one line, exit 2, nothing
written). Folders are built in each test from real images of ../shared/data under other names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsure.cli import main
from medsure.data import load_dataset
from medsure.data.generic import as_value_map, combine_groups
from medsure.errors import MedsureInputError
from medsure.training.datasets import dataset_record, parse_options
from medsure.training.splits import standard_splits

from conftest import shared_path

pytestmark = pytest.mark.realdata


def _busi_files(n_per_class: int, classes=("benign", "malignant")) -> list[Path]:
    root = shared_path("busi")
    shared_path("busi_masks")
    return [p for c in classes for p in sorted((root / c).glob("*.png"))[:n_per_class]]


def _mask_of(image: Path) -> Path:
    return image.parents[2] / "busi_masks" / image.parent.name / f"{image.stem}_mask.png"


def make_segfolder(tmp: Path, n_per_class: int = 6, *, gif: bool = True, per_patient: int = 3) -> Path:
    """User-shaped segmentation folder: scans/ and labels/ with other names, GIF masks and a
    group CSV (``per_patient`` consecutive images share a patient)."""
    root = tmp / "my study"
    (root / "scans").mkdir(parents=True)
    (root / "labels").mkdir()
    rows = ["image,group"]
    for i, f in enumerate(_busi_files(n_per_class)):
        name = f"case{i:03d}_scan"
        shutil.copy(f, root / "scans" / f"{name}.png")
        mask = Image.open(_mask_of(f))
        mask.save(root / "labels" / (f"{name}_seg.gif" if gif else f"{name}_seg.png"))
        rows.append(f"{name}.png,patient{i // per_patient}")
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
    return root


SEG_OPTIONS = {"images": "scans", "masks": "labels", "mask_suffix": "_seg", "groups": "groups.csv"}


# ------------------------------------------------------------------------------ segfolder
def test_segfolder_reads_gif_masks_paired_by_suffix_and_keeps_patients_together(tmp_path):
    root = make_segfolder(tmp_path, 12)
    ds = load_dataset("segfolder", root=root, image_size=32, class_names="background,lesion", **SEG_OPTIONS)
    assert ds.task == "segmentation" and ds.class_names.tolist() == ["background", "lesion"]
    assert ds.targets.shape == (24, 32, 32) and set(np.unique(ds.targets)) == {0, 1}
    # the GIF mask is read with its values: the same map as the original PNG, resized nearest
    original = np.asarray(Image.open(_mask_of(_busi_files(12)[5])).resize((32, 32), Image.Resampling.NEAREST))
    assert np.array_equal(ds.targets[5], (original > 127).astype(np.int64))
    assert ds.provenance["masks"] == {"value_map": {"0": 0, "255": 1}}
    # groups from the CSV: 8 patients of 3 images, no patient in two splits, and the record says so
    assert len(np.unique(ds.meta["dup_group"])) == 8
    splits = standard_splits(ds, seed=3)
    owner: dict[str, str] = {}
    for name, part in splits.items():
        for group in part.meta["group"]:
            assert owner.setdefault(str(group), name) == name, f"{group} in {owner[str(group)]} and {name}"
    record = splits["train"].provenance["groups_across_splits"]
    assert record == {"group_key": "dup_group", "group_disjoint": True, "n_groups": 8, "shared_groups": 0}


def test_segfolder_16bit_png_image_and_mask_with_value_map(tmp_path):
    root = tmp_path / "ct"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(1000, 4000, size=(16, 16)).astype(np.uint16)
        image[0, 0], image[0, 1] = 1000, 4000  # known window
        Image.fromarray(image).save(root / "images" / f"s{i}.png")
        mask = np.zeros((16, 16), np.uint16)
        mask[4:8, 4:8] = 1000
        mask[10:, 10:] = 2000
        Image.fromarray(mask).save(root / "masks" / f"s{i}.png")
    assert Image.open(root / "masks" / "s0.png").mode.startswith("I")
    ds = load_dataset(
        "segfolder",
        root=root,
        image_size=16,
        value_map='{"0": 0, "1000": 1, "2000": 2}',
        class_names='["background", "liver", "tumour"]',
    )
    assert ds.images.shape == (3, 16, 16, 1)
    # 16-bit intensities are windowed to the image's own range, not clipped at 255
    assert ds.images[0, 0, 0, 0] == 0 and ds.images[0, 0, 1, 0] == 255 and 0 < np.median(ds.images) < 255
    assert ds.targets[0, 5, 5] == 1 and ds.targets[0, 12, 12] == 2 and ds.targets[0, 0, 0] == 0


def test_segfolder_class_names_from_json_beside_the_data(tmp_path):
    root = make_segfolder(tmp_path, 3, gif=False)
    (root / "classes.json").write_text(json.dumps({"class_names": ["background", "lesion"], "threshold": 127}))
    ds = load_dataset("segfolder", root=root, image_size=32, images="scans", masks="labels", mask_suffix="_seg")
    assert ds.class_names.tolist() == ["background", "lesion"]
    assert ds.provenance["masks"] == {"threshold": 127}


def test_segfolder_pairs_by_patterns(tmp_path):
    root = make_segfolder(tmp_path, 3, gif=False)
    for mask in (root / "labels").iterdir():  # case001_scan_seg.png -> manual_001.png
        mask.rename(mask.with_name(f"manual_{mask.name[4:7]}.png"))
    ds = load_dataset(
        "segfolder", root=root, image_size=32, images="scans", masks="labels",
        image_pattern=r"case(\d+)", mask_pattern=r"manual_(\d+)",
    )  # fmt: skip
    assert len(ds) == 6 and ds.ids[1] == "case001_scan.png"


def test_jsrt_value_map_from_the_command_line_is_an_option_not_a_traceback():
    shared_path("jsrt")
    # the exact spelling: JSON keys arrive as strings
    options = parse_options(['value_map={"0":1,"150":0,"200":0,"250":0}', "class_names=lungs or heart,background"])
    ds = load_dataset("jsrt", root=shared_path("jsrt").parent, image_size=32, **options)
    reference = load_dataset("jsrt", root=shared_path("jsrt").parent, image_size=32)
    assert np.array_equal(ds.targets, (reference.targets == 0).astype(np.int64))
    assert as_value_map("0:1, 255:0") == {0: 1, 255: 0} == as_value_map({"0": "1", "255": 0})


def test_parse_options_types_and_refusals():
    assert parse_options(["threshold=127", "dedup=true", "class_names=a,b"]) == {
        "threshold": 127,
        "dedup": True,
        "class_names": "a,b",
    }
    with pytest.raises(MedsureInputError, match="--option: got 'a'; expected each KEY once"):
        parse_options(["a=1", "a=2"])
    with pytest.raises(MedsureInputError, match="value_map"):
        as_value_map({"zero": 1})


# ------------------------------------------------------------------------------ folder, jointfolder
def test_folder_refuses_a_segmentation_layout_naming_what_it_found(tmp_path):
    root = make_segfolder(tmp_path, 2)
    (root / "masks").mkdir()
    with pytest.raises(MedsureInputError, match=r"sub-folders .*masks/.*segmentation layout.*--dataset segfolder"):
        load_dataset("folder", root=root)
    with pytest.raises(MedsureInputError, match=r"option task: got 'segmentation'.*--dataset segfolder"):
        load_dataset("folder", root=root, task="segmentation")
    kvasir = shared_path("polyp", "kvasir_seg")
    with pytest.raises(MedsureInputError, match=r"images/, masks/"):
        load_dataset("folder", root=kvasir)


def test_folder_refuses_mask_files_among_class_images(tmp_path):
    root = tmp_path / "busi_like"
    for f in _busi_files(2, ("benign",)):
        (root / "benign").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / "benign" / f.name)
        shutil.copy(_mask_of(f), root / "benign" / _mask_of(f).name)
    with pytest.raises(MedsureInputError, match=r"mask file\(s\) among its images.*jointfolder"):
        load_dataset("folder", root=root)


def test_jointfolder_gives_masks_and_class_labels_of_the_same_images(tmp_path):
    root = tmp_path / "joint"
    files = _busi_files(3)
    for f in files:
        for sub, src, name in (("images", f, f.name), ("masks", _mask_of(f), _mask_of(f).name)):
            (root / sub / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / sub / f.parent.name / name)
    ds = load_dataset("jointfolder", root=root, image_size=32, mask_suffix="_mask", dedup=True)
    assert ds.task == "segmentation" and ds.meta["label"].tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.provenance["image_class_names"] == ["benign", "malignant"]
    assert ds.targets.shape == (6, 32, 32) and ds.targets.max() == 1
    assert "dup_group" in ds.meta and ds.provenance["groups"]["near_duplicates"]["max_distance"] == 6
    cls = load_dataset("jointfolder", root=root, image_size=32, mask_suffix="_mask", task="classification")
    assert cls.task == "classification" and cls.targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert cls.ids.tolist() == ds.ids.tolist()


# ------------------------------------------------------------------------------ manifest
def make_manifest(tmp: Path, n_per_class: int = 8, *, split: bool = True) -> Path:
    """Classification CSV: image paths in sub-folders, class names as labels, patient groups."""
    root = tmp / "hospital"
    (root / "img" / "a").mkdir(parents=True)
    rows = ["image,label,group" + (",split" if split else "")]
    files = _busi_files(n_per_class, ("benign", "malignant", "normal"))
    for i, f in enumerate(files):
        rel = f"img/a/p{i:03d}.png"
        shutil.copy(f, root / rel)
        group = f"pt{i // 2}"
        # the last 6 patients are the user's own test set; the rest is left to medsure
        part = ("test" if i >= len(files) - 12 else "") if split else None
        rows.append(f"{rel},{f.parent.name},{group}" + (f",{part}" if split else ""))
    (root / "cases.csv").write_text("\n".join(rows) + "\n")
    return root / "cases.csv"


def test_manifest_keeps_the_users_splits_and_groups(tmp_path):
    csv = make_manifest(tmp_path, 12)
    ds = load_dataset("manifest", root=csv, image_size=32)
    assert ds.task == "classification" and ds.class_names.tolist() == ["benign", "malignant", "normal"]
    splits = standard_splits(ds, seed=0)
    assert len(splits["test"]) == 12 and set(splits["test"].meta["manifest_split"]) == {"test"}
    groups = {k: set(v.meta["group"].tolist()) for k, v in splits.items()}
    for a in groups:
        for b in groups:
            assert a == b or not (groups[a] & groups[b]), f"{a} and {b} share a patient"
    assert sum(len(v) for v in splits.values()) == len(ds)
    assert splits["cal"].provenance["groups_across_splits"]["group_disjoint"] is True


def test_manifest_rows_without_split_follow_their_group(tmp_path):
    csv = make_manifest(tmp_path, 4)
    lines = csv.read_text().splitlines()
    # patient pt11 (rows 22, 23): one row in test, its twin left empty -> both test
    assert lines[-1].endswith(",test") and lines[-2].endswith(",test")
    lines[-2] = lines[-2][: -len("test")]
    csv.write_text("\n".join(lines) + "\n")
    ds = load_dataset("manifest", root=csv, image_size=32)
    assert ds.meta["manifest_split"][-2] == "test"


def test_relative_root_is_stored_resolved(tmp_path, monkeypatch):
    csv = make_manifest(tmp_path, 2)
    monkeypatch.chdir(csv.parent)
    record = dataset_record("manifest", root="cases.csv", image_size=32, options={}, split_seed=0, max_samples=None)
    assert record["root"] == str(csv.resolve())


def test_combine_groups_joins_patients_and_near_duplicates():
    patients = np.array(["a", "a", "b", "c", "d"])
    near = np.array([0, 1, 1, 2, 3])  # image 1 and 2 are near-duplicates across patients a and b
    assert combine_groups(patients, near).tolist() == [0, 0, 0, 1, 2]


# ------------------------------------------------------------------------------ bad input, CLI
def _train(args: list[str], out: Path) -> list[str]:
    return ["train", *args, "--epochs", "1", "--image-size", "32", "--threads", "1", "--out", str(out)]


def _one_line_exit_2(capsys, argv, out: Path, *patterns: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for pattern in patterns:
        assert pattern in err, f"{pattern!r} not in {err!r}"
    assert not out.exists(), "nothing may be written"
    return err


def test_bad_inputs_are_one_line_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    seg = make_segfolder(tmp_path / "s", 6, gif=False)
    seg_opts = ["--dataset", "segfolder", "--root", str(seg), "--option", "images=scans", "--option", "masks=labels"]
    # images without masks: counted and the first ten named
    for mask in sorted((seg / "labels").iterdir())[:11]:
        mask.unlink()
    err = _one_line_exit_2(
        capsys, _train([*seg_opts, "--option", "mask_suffix=_seg"], out), out, "no mask for 11 of 12 images"
    )
    assert "case009_scan.png" in err and "case010_scan.png" not in err  # ten named, not more
    # a mask of another size than its image
    seg = make_segfolder(tmp_path / "t", 2, gif=False)
    bad = sorted((seg / "labels").iterdir())[0]
    Image.open(bad).resize((100, 80)).save(bad)
    _one_line_exit_2(
        capsys,
        _train(["--dataset", "segfolder", "--root", str(seg), "--option", "images=scans", "--option",
                "masks=labels", "--option", "mask_suffix=_seg"], out),
        out, f"mask file {bad}: got size 100x80", "case000_scan.png (256x256",
    )  # fmt: skip
    # a class folder without images
    cls = tmp_path / "cls"
    for name in ("benign", "malignant"):
        (cls / name).mkdir(parents=True)
    for f in _busi_files(3, ("benign",)):
        shutil.copy(f, cls / "benign" / f.name)
    _one_line_exit_2(capsys, _train(["--dataset", "folder", "--root", str(cls)], out), out,
                     f"class folder {cls / 'malignant'}: got no images")  # fmt: skip
    # an unreadable image, named
    shutil.copy(_busi_files(1, ("benign",))[0], cls / "malignant" / "x.png")
    (cls / "malignant" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _one_line_exit_2(capsys, _train(["--dataset", "folder", "--root", str(cls)], out), out,
                     f"image file {cls / 'malignant' / 'broken.png'}: got an unreadable image")  # fmt: skip


def test_bad_manifests_are_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    csv = make_manifest(tmp_path, 4)
    text = csv.read_text()
    # missing columns
    csv.write_text(text.replace("image,label,group,split", "file,label,group,split", 1))
    _one_line_exit_2(capsys, _train(["--dataset", "manifest", "--root", str(csv)], out), out,
                     "columns ['file', 'group', 'label', 'split']", "a column image")  # fmt: skip
    # unknown split names
    csv.write_text(text.replace(",test\n", ",testing\n"))
    _one_line_exit_2(capsys, _train(["--dataset", "manifest", "--root", str(csv)], out), out,
                     "column 'split': got values ['testing']")  # fmt: skip
    # a patient in two of the user's splits
    lines = text.splitlines()
    lines[-1] = lines[-1].replace(",test", ",cal")
    csv.write_text("\n".join(lines) + "\n")
    _one_line_exit_2(capsys, _train(["--dataset", "manifest", "--root", str(csv)], out), out,
                     "group(s) spread over two splits")  # fmt: skip
    # groups that leave a split empty: two patients cannot fill four splits
    rows = [r.split(",") for r in text.splitlines()[1:]]
    csv.write_text("image,label,group\n" + "".join(f"{r[0]},{r[1]},pt{i % 2}\n" for i, r in enumerate(rows)))
    _one_line_exit_2(capsys, _train(["--dataset", "manifest", "--root", str(csv)], out), out,
                     "groups: got 2 groups", "came out empty")  # fmt: skip


def test_dedup_keeps_near_duplicates_of_any_folder_in_one_split(tmp_path):
    root = tmp_path / "cls"
    files = _busi_files(10, ("benign", "malignant"))
    for f in files:
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / f.parent.name / f.name)
    # a re-saved, slightly brighter copy of one image under another name
    copy = np.asarray(Image.open(files[0]).convert("L")).astype(np.int16) + 3
    Image.fromarray(np.clip(copy, 0, 255).astype(np.uint8)).save(root / "benign" / "zz_copy.png")
    ds = load_dataset("folder", root=root, image_size=32, dedup=True)
    index = {str(i): k for k, i in enumerate(ds.ids)}
    a, b = index[f"benign/{files[0].name}"], index["benign/zz_copy.png"]
    assert ds.meta["dup_group"][a] == ds.meta["dup_group"][b]
    for seed in range(5):
        owner = {
            name for name, part in standard_splits(ds, seed=seed).items() if {a, b} & set(map(index.get, part.ids))
        }
        assert len(owner) == 1, f"seed {seed}: the copies landed in {owner}"


@pytest.mark.parametrize(
    "command,slot,expected",
    [
        ("conformal", "--test", "coverage and validity need test labels"),
        ("conformal", "--cal", "labelled calibration predictions"),
        ("conformal-study", "--test", "measures coverage on test labels"),
        ("calibration", "--test", "need test labels"),
        ("calibration", "--cal", "The calibrator is fitted on calibration labels"),
        ("failure", "--test", "needs test labels"),
    ],
)
def test_every_analysis_says_in_one_line_what_needs_labels(tmp_path, capsys, command, slot, expected):
    from dataclasses import replace

    from medsure.artifact import save_predictions

    from realpreds import classification_predictions

    cal, test = classification_predictions("busi")
    files = {"--cal": tmp_path / "cal.npz", "--test": tmp_path / "test.npz"}
    save_predictions(files["--cal"], cal if slot != "--cal" else replace(cal, labels=None))
    save_predictions(files["--test"], test if slot != "--test" else replace(test, labels=None))
    out = tmp_path / "out"
    argv = [command, "--cal", str(files["--cal"]), "--test", str(files["--test"])]
    argv += {
        "conformal": ["--method", "aps", "--out", str(out / "r.json")],
        "conformal-study": ["--out-dir", str(out)],
    }.get(command, ["--out", str(out / "r.json")])
    code = main(argv)
    captured = capsys.readouterr()
    said = (captured.out if code == 0 else captured.err).strip()
    assert len(said.splitlines()) == 1 and expected in said, said
    assert code == (0 if (command, slot) == ("conformal", "--test") else 2)
    assert out.exists() == (code == 0)
