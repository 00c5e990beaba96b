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
