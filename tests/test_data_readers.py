"""Generic readers on tiny files written by the tests: folder-per-class, CSV, image/mask pairs,
HDF5, NIfTI, DICOM; broken files give errors naming the file; hashes and resizing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medsure.data import (
    average_hash,
    difference_hash,
    duplicate_groups,
    hamming_matrix,
    map_mask_values,
    read_csv_labelled,
    read_dicom,
    read_folder_per_class,
    read_hdf5_patches,
    read_image,
    read_image_mask_pairs,
    read_nifti,
    resize_images,
    resize_masks,
)
from medsure.errors import DataUnavailableError, MedsureInputError


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_per_class_with_spaces_and_parentheses(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("benign", 3), ("malignant", 2)):
        for i in range(n):
            save_png(tmp_path / cls / f"{cls} ({i + 1}).png", rng.integers(0, 256, (12, 10), dtype=np.uint8))
    save_png(tmp_path / "benign" / "benign (1)_mask.png", np.zeros((12, 10), np.uint8))
    ds = read_folder_per_class(tmp_path, image_size=8, exclude=lambda n: "_mask" in n)
    assert ds.class_names.tolist() == ["benign", "malignant"]
    assert ds.targets.tolist() == [0, 0, 0, 1, 1]
    assert ds.images.shape == (5, 8, 8, 1) and ds.ids[0] == "benign/benign (1).png"
    save_png(tmp_path / "malignant" / "odd.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(MedsureInputError, match="different sizes"):
        read_folder_per_class(tmp_path)


def test_read_image_is_exact_without_resize(tmp_path):
    array = np.arange(30, dtype=np.uint8).reshape(5, 6)
    save_png(tmp_path / "a.png", array)
    assert np.array_equal(read_image(tmp_path / "a.png")[..., 0], array)
    rgb = read_image(tmp_path / "a.png", mode="RGB")
    assert rgb.shape == (5, 6, 3) and np.array_equal(rgb[..., 1], array)


def test_truncated_and_non_image_files_name_the_file(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(MedsureInputError, match=r"cut\.jpg.*truncated"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(MedsureInputError, match=r"text\.png"):
        read_image(tmp_path / "text.png")
    with pytest.raises(DataUnavailableError, match=r"absent\.png"):
        read_image(tmp_path / "absent.png")


def test_csv_labelled(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("x1", "x2", "x3"):
        Image.fromarray(np.full((6, 6, 3), 9, np.uint8)).save(tmp_path / "img" / f"{name}.jpg")
    (tmp_path / "labels.csv").write_text("image_id,melanoma,sex\nx1,0.0,female\nx2,1.0,male\nx3,0.0,unknown\n")
    ds = read_csv_labelled(
        tmp_path / "labels.csv",
        tmp_path / "img",
        id_column="image_id",
        label_column="melanoma",
        class_names=["no", "yes"],
        meta_columns=["sex"],
    )
    assert ds.targets.tolist() == [0, 1, 0] and ds.meta["sex"].tolist() == ["female", "male", "unknown"]
    assert ds.images.shape == (3, 6, 6, 3)
    (tmp_path / "bad.csv").write_text("image_id,melanoma\nx1,0.5\n")
    with pytest.raises(MedsureInputError, match="melanoma"):
        read_csv_labelled(
            tmp_path / "bad.csv",
            tmp_path / "img",
            id_column="image_id",
            label_column="melanoma",
            class_names=["no", "yes"],
        )
    with pytest.raises(MedsureInputError, match="column: got 'label'; expected one of 'image_id'"):
        read_csv_labelled(
            tmp_path / "labels.csv",
            tmp_path / "img",
            id_column="image_id",
            label_column="label",
            class_names=["no", "yes"],
        )


def test_image_mask_pairs_value_map_and_unknown_value(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[:4, :4], mask[:4, 4:], mask[4:, :4] = 150, 200, 250
    save_png(tmp_path / "images" / "a.png", np.full((8, 8), 7, np.uint8))
    save_png(tmp_path / "masks" / "a.png", mask)
    value_map = {0: 0, 150: 1, 200: 2, 250: 3}
    ds = read_image_mask_pairs(tmp_path / "images", tmp_path / "masks", class_names=list("bRLH"), value_map=value_map)
    assert ds.targets[0, 0, 0] == 1 and ds.targets[0, 0, 7] == 2 and ds.targets[0, 7, 0] == 3
    assert ds.targets[0, 7, 7] == 0
    half = read_image_mask_pairs(
        tmp_path / "images", tmp_path / "masks", class_names=list("bRLH"), value_map=value_map, image_size=4
    )
    assert set(np.unique(half.targets)) == {0, 1, 2, 3}, "nearest resize keeps label values"
    mask[0, 0] = 99
    save_png(tmp_path / "masks" / "a.png", mask)
    with pytest.raises(MedsureInputError, match=r"a\.png.*\[99\]"):
        read_image_mask_pairs(tmp_path / "images", tmp_path / "masks", class_names=list("bRLH"), value_map=value_map)


def test_image_mask_pairs_threshold_and_missing_mask(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 250
    mask[0, 0] = 100  # JPEG ringing below the threshold
    save_png(tmp_path / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
    save_png(tmp_path / "masks" / "a.png", mask)
    ds = read_image_mask_pairs(
        tmp_path / "images", tmp_path / "masks", class_names=["bg", "polyp"], threshold=127, mode="RGB"
    )
    assert ds.targets.sum() == 16 and ds.images.shape == (1, 8, 8, 3)
    save_png(tmp_path / "images" / "b.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataUnavailableError, match=r"b\.png"):
        read_image_mask_pairs(tmp_path / "images", tmp_path / "masks", class_names=["bg", "polyp"], threshold=127)
    with pytest.raises(MedsureInputError, match="exactly one"):
        read_image_mask_pairs(tmp_path / "images", tmp_path / "masks", class_names=["bg", "polyp"])


def test_map_mask_values_hand_case():
    raw = np.array([[0, 150], [250, 200]], np.uint8)
    assert map_mask_values(raw, {0: 0, 150: 1, 200: 2, 250: 3}).tolist() == [[0, 1], [3, 2]]


def test_hdf5_patches(tmp_path):
    import h5py

    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as h:
        h["images"] = np.random.default_rng(0).random((3, 1, 5, 5), dtype=np.float32)
        h["labels"] = np.ones((3, 1, 5, 5), dtype=np.float64)
    images, labels = read_hdf5_patches(path)
    assert images.shape == (3, 5, 5, 1) and labels.shape == (3, 5, 5) and labels.dtype == np.int64
    with h5py.File(path, "a") as h:
        h["half"] = np.full((3, 5, 5), 0.5)
    with pytest.raises(MedsureInputError, match="non-integer"):
        read_hdf5_patches(path, label_key="half")
    with pytest.raises(MedsureInputError, match="'masks'"):
        read_hdf5_patches(path, label_key="masks")
    (tmp_path / "bad.h5").write_bytes(b"garbage")
    with pytest.raises(MedsureInputError, match=r"bad\.h5"):
        read_hdf5_patches(tmp_path / "bad.h5")


def test_nifti_round_trip(tmp_path):
    import nibabel as nib

    volume = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "v.nii.gz")
    data, got_affine = read_nifti(tmp_path / "v.nii.gz")
    assert np.array_equal(data, volume) and np.array_equal(got_affine, affine)
    (tmp_path / "bad.nii.gz").write_bytes(b"xx")
    with pytest.raises(MedsureInputError, match=r"bad\.nii\.gz"):
        read_nifti(tmp_path / "bad.nii.gz")


def test_dicom_round_trip_with_rescale(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientSex = "CT", "F"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    array, header = read_dicom(tmp_path / "x.dcm")
    assert np.array_equal(array, pixels * 2.0 - 1024) and header["Modality"] == "CT"
    (tmp_path / "bad.dcm").write_bytes(b"not dicom")
    with pytest.raises(MedsureInputError, match=r"bad\.dcm"):
        read_dicom(tmp_path / "bad.dcm")


def test_hashes_and_groups_hand_case():
    ramp = np.tile(np.arange(9, dtype=np.uint8) * 20, (8, 1))  # brightness rises left to right
    images = np.stack([ramp, ramp[:, ::-1], ramp])
    dh = difference_hash(images)
    assert dh[0].all() and not dh[1].any() and np.array_equal(dh[0], dh[2])
    assert hamming_matrix(dh).tolist() == [[0, 64, 0], [64, 0, 64], [0, 64, 0]]
    assert average_hash(images).shape == (3, 64)
    hashes = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
    assert duplicate_groups(hashes, 1).tolist() == [0, 0, 0, 1], "chains link transitively"
    assert duplicate_groups(hashes, 0).tolist() == [0, 1, 2, 3]


def test_resize_helpers():
    images = np.full((2, 8, 8, 1), 200, np.uint8)
    out = resize_images(images, 4)
    assert out.shape == (2, 4, 4, 1) and out.dtype == np.uint8 and (out == 200).all()
    masks = np.zeros((1, 4, 4), np.int64)
    masks[0, :2, :2] = 3
    big = resize_masks(masks, 8)
    assert big[0, :4, :4].tolist() == [[3] * 4] * 4 and big[0, 4:, 4:].sum() == 0


def test_group_label_conflict_hand_case():
    from medsure.data import group_label_conflict

    groups = np.array([0, 0, 1, 1, 2])
    labels = np.array([1, 1, 0, 2, 0])
    assert group_label_conflict(groups, labels).tolist() == [False, False, True, True, False]


def test_generic_folder_loader(tmp_path):
    from medsure.data import load_dataset

    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for cls in ("a", "b"):
        save_png(tmp_path / cls / "1.png", image)  # the same picture filed under both classes
        save_png(tmp_path / cls / "2.png", 255 - image if cls == "a" else image[::-1])
    ds = load_dataset("folder", root=tmp_path, image_size=8, dedup=True)
    assert ds.images.shape == (4, 8, 8, 3)
    assert ds.meta["dup_group"][0] == ds.meta["dup_group"][2] and ds.meta["label_conflict"][0]
    with pytest.raises(MedsureInputError, match="root="):
        load_dataset("folder")


# it used to read "CSV file not found" / "image file not found" for a folder that exists
@pytest.mark.parametrize(
    "make,read,error,says",
    [
        (
            "dir",
            lambda p: read_csv_labelled(p, p.parent, id_column="id", label_column="y", class_names=["a"]),
            MedsureInputError,
            r"^CSV file: got .*thing, a folder; expected an existing file$",
        ),
        ("dir", read_image, MedsureInputError, r"^image file: got .*thing, a folder; expected an existing file$"),
        ("file", read_folder_per_class, MedsureInputError, r"thing, a file; expected an existing folder$"),
        (None, read_image, DataUnavailableError, r"thing, which does not exist; expected an existing file$"),
    ],
)
def test_a_path_of_the_wrong_kind_is_not_called_missing(tmp_path, make, read, error, says):
    path = tmp_path / "thing"
    if make == "dir":
        path.mkdir()
    elif make == "file":
        path.write_text("x")
    with pytest.raises(error, match=says) as err:
        read(path)
    assert ("does not exist" in str(err.value)) == (make is None)
