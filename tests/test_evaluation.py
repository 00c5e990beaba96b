import numpy as np
import pytest

from medsure.artifact import make_predictions
from medsure.evaluation import classification_summary, segmentation_summary


def test_classification_summary_hand_computed():
    # predictions: argmax = [0, 1, 1, 0]; labels [0, 1, 0, 0] -> 3/4 correct
    logits = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]], np.float32))
    s = classification_summary(make_predictions(logits, labels=[0, 1, 0, 0]))
    assert s["accuracy"] == pytest.approx(0.75)
    assert s["confusion_matrix"] == [[2, 1], [0, 1]]
    # positive (index 1) has the highest p1 (0.8) of all -> AUC 1
    assert s["auc"] == pytest.approx(1.0)


def test_auc_undefined_when_class_absent():
    logits = np.zeros((3, 3), np.float32)
    assert classification_summary(make_predictions(logits, labels=[0, 0, 1]))["auc"] is None


def test_segmentation_summary_hand_computed_and_empty_image_excluded():
    masks = np.zeros((2, 2, 2), int)
    masks[0, 0, 0] = 1
    pred = np.zeros_like(masks)
    pred[0, 0, :] = 1  # 1 overlap, sizes 2 and 1 -> 2/3
    logits = np.stack([np.zeros((2, 2, 2)), np.where(pred == 1, 5.0, -5.0)], axis=1).astype(np.float32)
    s = segmentation_summary(make_predictions(logits, masks=masks))
    assert s["mean_dice"] == pytest.approx(2 / 3)


def test_classification_summary_per_class_and_loss_match_sklearn():
    from sklearn.metrics import log_loss, precision_recall_fscore_support

    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(300, 4)) * 2).astype(np.float32)
    labels = rng.integers(0, 4, 300)
    pred = make_predictions(logits, labels=labels, class_names=["a", "b", "c", "d"])
    s = classification_summary(pred)
    probs = pred.probabilities().astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)  # float32 rounding: sklearn warns on sums != 1
    p, r, f, support = precision_recall_fscore_support(labels, probs.argmax(1), labels=np.arange(4), zero_division=0)
    for j, name in enumerate("abcd"):
        m = s["per_class"][name]
        assert (m["precision"], m["recall"], m["f1"], m["support"]) == pytest.approx((p[j], r[j], f[j], support[j]))
    assert s["macro_f1"] == pytest.approx(f.mean())
    assert s["log_loss"] == pytest.approx(log_loss(labels, probs, labels=np.arange(4)), rel=1e-7)
    assert s["log_loss_clip"] == 1e-15


def test_per_class_metrics_are_none_when_undefined():
    # predicted [0, 0, 2] vs labels [0, 1, 0]: class 1 never predicted (precision undefined), class 2
    # absent from the labels (recall undefined), class 0 precision 1/2 and recall 1/2
    logits = np.log(np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]], np.float32))
    s = classification_summary(make_predictions(logits, labels=[0, 1, 0], class_names=["0", "1", "2"]))
    assert s["per_class"]["1"]["precision"] is None and s["per_class"]["1"]["recall"] == 0.0
    assert s["per_class"]["2"]["recall"] is None and s["per_class"]["2"]["precision"] == 0.0
    assert s["per_class"]["1"]["f1"] is None and s["per_class"]["0"]["f1"] == pytest.approx(0.5)
