import numpy as np
import pytest

from medsure.artifact import load_predictions, make_predictions, save_predictions
from medsure.errors import MedsureInputError


def _cls(n=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return make_predictions(
        rng.normal(size=(n, k)).astype(np.float32),
        labels=rng.integers(0, k, n),
        class_names=["a", "b", "c"][:k],
        meta={"sex": np.array(["f", "m"] * (n // 2))},
    )


def test_roundtrip_classification(tmp_path):
    pred = _cls()
    path = save_predictions(tmp_path / "p.npz", pred)
    back = load_predictions(path)
    np.testing.assert_array_equal(back.logits, pred.logits)
    np.testing.assert_array_equal(back.labels, pred.labels)
    assert list(back.class_names) == ["a", "b", "c"]
    assert list(back.meta["sex"]) == list(pred.meta["sex"])
    assert back.task == "classification"


def test_roundtrip_segmentation_with_samples(tmp_path):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 3, 2, 5, 5)).astype(np.float16)
    masks = rng.integers(0, 2, (3, 5, 5))
    pred = make_predictions(logits, masks=masks, sample_kind="mc_dropout")
    back = load_predictions(save_predictions(tmp_path / "s.npz", pred))
    assert back.task == "segmentation" and back.has_samples and back.logits.shape == logits.shape
    probs = back.probabilities()
    assert probs.shape == (3, 2, 5, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_user_written_minimal_file(tmp_path):
    np.savez(tmp_path / "u.npz", logits=np.zeros((3, 2), np.float32), labels=np.array([[0], [1], [1]]))
    pred = load_predictions(tmp_path / "u.npz")
    assert pred.labels.tolist() == [0, 1, 1] and pred.ids.tolist() == ["0", "1", "2"]


@pytest.mark.parametrize(
    "change, key",
    [
        ({"logits": np.array([[0.0, np.nan]], np.float32), "labels": np.array([0])}, "logits"),
        ({"logits": np.zeros((2, 2), np.float32), "labels": np.array([0, 2])}, "labels"),
        ({"logits": np.zeros((2, 2), np.float32), "labels": np.array([0, 1]), "ids": np.array(["x", "x"])}, "ids"),
        ({"logits": np.zeros((2, 2), np.float32), "class_names": np.array(["a", "b", "c"])}, "class_names"),
    ],
)
def test_bad_input_names_the_key(tmp_path, change, key):
    np.savez(tmp_path / "bad.npz", **change)
    with pytest.raises(MedsureInputError, match=f"'{key}'"):
        load_predictions(tmp_path / "bad.npz")


def test_corrupt_file_is_clear_error(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(MedsureInputError, match="damaged or truncated zip archive") as err:
        load_predictions(tmp_path / "c.npz")
    assert "pickl" not in str(err.value)


def _valid_npz_bytes(tmp_path) -> bytes:
    path = tmp_path / "ok.npz"
    np.savez(path, logits=np.arange(40, dtype=np.float32).reshape(20, 2), labels=np.arange(20) % 2)
    return path.read_bytes()


# Each message used to mislead: a text file was "pickled (object) data", a CRC error "cannot be read
# without unpickling", a folder "does not exist". Each now says what the file really is.
@pytest.mark.parametrize(
    "make,says",
    [
        (lambda p, ok: p.write_text("id,label\n1,0\n"), "not a zip archive"),
        (lambda p, ok: p.write_bytes(b""), "an empty file"),
        (lambda p, ok: p.write_bytes(ok[: len(ok) // 2]), "damaged or truncated"),
        (lambda p, ok: p.write_bytes(ok[:60] + bytes([ok[60] ^ 0xFF]) + ok[61:]), "damaged data (Bad CRC-32"),
        (lambda p, ok: p.mkdir(), "a folder"),
        (lambda p, ok: None, "does not exist"),
        (
            lambda p, ok: np.save(p.with_suffix(".npy"), np.zeros(3)) or p.with_suffix(".npy").rename(p),
            "a single .npy array",
        ),
    ],
)
def test_unreadable_files_say_what_they_are(tmp_path, make, says):
    path = tmp_path / "bad.npz"
    make(path, _valid_npz_bytes(tmp_path))
    with pytest.raises(MedsureInputError) as err:
        load_predictions(path)
    message = str(err.value)
    assert says in message
    assert "pickl" not in message
    assert message.startswith("prediction file") and "; expected " in message
    assert ("does not exist" in message) == (says == "does not exist")


def test_object_arrays_are_refused_by_name(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, logits=np.zeros((2, 2), np.float32), ids=np.array([{"a": 1}, 2], dtype=object))
    with pytest.raises(MedsureInputError, match="key 'ids': got an array of Python objects"):
        load_predictions(path)


def test_class_name_mismatch_prints_plain_strings():
    from medsure.artifact import check_compatible

    a = make_predictions(np.zeros((2, 2), np.float32), class_names=np.array(["benign", "malignant"]))
    b = make_predictions(np.zeros((2, 2), np.float32), class_names=np.array(["benign", "tumour"]))
    with pytest.raises(MedsureInputError) as err:
        check_compatible(a, b)
    message = str(err.value)
    assert "np.str_" not in message
    assert "got ['benign', 'tumour']; expected ['benign', 'malignant'] like cal" in message


def test_subset_and_inputs_not_modified():
    pred = _cls()
    before = pred.logits.copy()
    sub = pred.subset(np.array([0, 2]))
    assert sub.n_samples == 2 and sub.meta["sex"].tolist() == ["f", "f"]
    pred.probabilities()
    np.testing.assert_array_equal(pred.logits, before)


@pytest.mark.parametrize(
    "extra,key",
    [
        ({"format_version": np.array("v1")}, "format_version"),
        ({"format_version": np.array(1.5)}, "format_version"),
        ({"provenance": np.array("{not json")}, "provenance"),
        ({"provenance": np.array("[1, 2]")}, "provenance"),
        ({"task": np.array("detection")}, "key 'task': got 'detection'; expected 'classification' or 'segmentation'"),
        ({"logits": None, "ids": np.array(["a"])}, "keys: got only 'ids'; expected at least the key 'logits'"),
        ({"ids": np.array(["a", None, "c"], dtype=object)}, "ids"),
    ],
)
def test_malformed_metadata_names_the_key(tmp_path, extra, key):
    path = tmp_path / "bad.npz"
    arrays = {"logits": np.zeros((3, 2), np.float32), **extra}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(MedsureInputError, match=key):
        load_predictions(path)
