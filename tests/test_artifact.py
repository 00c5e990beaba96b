import numpy as np
import pytest

from medsure.artifact import load_predictions, make_predictions, save_predictions
from medsure.errors import MedsureInputError


def _cls(n=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return make_predictions(rng.normal(size=(n, k)).astype(np.float32), labels=rng.integers(0, k, n),
                            class_names=["a", "b", "c"][:k], meta={"sex": np.array(["f", "m"] * (n // 2))})


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
        (dict(logits=np.array([[0.0, np.nan]], np.float32), labels=np.array([0])), "logits"),
        (dict(logits=np.zeros((2, 2), np.float32), labels=np.array([0, 2])), "labels"),
        (dict(logits=np.zeros((2, 2), np.float32), labels=np.array([0, 1]), ids=np.array(["x", "x"])), "ids"),
        (dict(logits=np.zeros((2, 2), np.float32), class_names=np.array(["a", "b", "c"])), "class_names"),
    ],
)
def test_bad_input_names_the_key(tmp_path, change, key):
    np.savez(tmp_path / "bad.npz", **change)
    with pytest.raises(MedsureInputError, match=f"'{key}'"):
        load_predictions(tmp_path / "bad.npz")


def test_corrupt_file_is_clear_error(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(MedsureInputError, match="not a readable .npz"):
        load_predictions(tmp_path / "c.npz")


def test_subset_and_inputs_not_modified():
    pred = _cls()
    before = pred.logits.copy()
    sub = pred.subset(np.array([0, 2]))
    assert sub.n_samples == 2 and sub.meta["sex"].tolist() == ["f", "f"]
    pred.probabilities()
    np.testing.assert_array_equal(pred.logits, before)


@pytest.mark.parametrize("extra,key", [
    ({"format_version": np.array("v1")}, "format_version"),
    ({"format_version": np.array(1.5)}, "format_version"),
    ({"provenance": np.array("{not json")}, "provenance"),
    ({"provenance": np.array("[1, 2]")}, "provenance"),
    ({"ids": np.array(["a", None, "c"], dtype=object)}, "ids"),
])
def test_malformed_metadata_names_the_key(tmp_path, extra, key):
    path = tmp_path / "bad.npz"
    arrays = {"logits": np.zeros((3, 2), np.float32), **extra}
    np.savez(path, **arrays)
    with pytest.raises(MedsureInputError, match=key):
        load_predictions(path)
