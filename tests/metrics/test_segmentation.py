import csv
import json

import numpy as np
import pytest
import torch
from monai.metrics import MeanIoU

from liverseg_monai.metrics.segmentation import (
    ConfusionMatrixMetric,
    confusion_matrix,
    dice_from_confusion,
    iou_from_confusion,
    mean_iou,
    segmentation_summary,
    write_segmentation_report,
)


def test_confusion_and_scores_by_hand():
    ref = np.array([[0, 0, 1, 1], [2, 2, 2, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 1]])
    cm = confusion_matrix(pred, ref, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 3, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    iou = iou_from_confusion(cm)
    np.testing.assert_allclose(iou[:3], [1 / 3, 3 / 4, 2 / 3])
    assert np.isnan(iou[3])  # absent from both: left out of the mean
    np.testing.assert_allclose(dice_from_confusion(cm)[:3], [2 / 4, 6 / 7, 4 / 5])
    assert mean_iou(cm) == pytest.approx((1 / 3 + 3 / 4 + 2 / 3) / 3)


def test_ignore_index_and_bad_prediction():
    ref = np.array([0, 255, 1])
    assert confusion_matrix(np.array([0, 1, 1]), ref, 2, ignore_index=255).sum() == 2
    with pytest.raises(ValueError, match="predicted class"):
        confusion_matrix(np.array([0, 5, 1]), np.array([0, 1, 1]), 2)


def test_per_class_iou_agrees_with_monai_on_one_image():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 3, (1, 1, 16, 16))
    pred = np.where(rng.random((1, 1, 16, 16)) < 0.7, ref, rng.integers(0, 3, (1, 1, 16, 16)))
    onehot = lambda a: torch.nn.functional.one_hot(torch.as_tensor(a[:, 0]), 3).permute(0, 3, 1, 2).float()  # noqa: E731
    monai_iou = MeanIoU(include_background=True, reduction="none")(onehot(pred), onehot(ref))[0].numpy()
    np.testing.assert_allclose(iou_from_confusion(confusion_matrix(pred, ref, 3)), monai_iou, rtol=1e-6)


def test_cumulative_metric_is_dataset_level():
    metric = ConfusionMatrixMetric(3)
    a_ref, a_pred = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    b_ref = torch.tensor([[[[1, 1], [2, 2]]]]).float()
    b_pred = torch.tensor([[[[1, 2], [2, 2]]]]).float()
    metric(y_pred=[a_pred[0], b_pred[0]], y=[a_ref[0], b_ref[0]])
    cm = metric.confusion()
    assert cm.tolist() == [[16, 0, 0], [0, 1, 1], [0, 0, 2]]
    assert metric.per_case().shape == (2, 3, 3)
    assert metric.aggregate().item() == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    # one-hot predictions give the same matrix
    onehot = ConfusionMatrixMetric(3, reduction="confusion")
    onehot(y_pred=torch.nn.functional.one_hot(b_pred[:, 0].long(), 3).permute(0, 3, 1, 2), y=b_ref)
    assert onehot.aggregate().tolist() == [[0, 0, 0], [0, 1, 1], [0, 0, 2]]
    metric.reset()
    assert metric.confusion().sum() == 0


def test_summary_and_report_files(tmp_path):
    per_case = np.array([[[5, 1], [0, 2]], [[3, 0], [1, 0]]])
    summary = write_segmentation_report(tmp_path, per_case, ["glass", "tissue"], ["a", "b"])
    assert summary["n_cases"] == 2
    assert summary["confusion_matrix"] == [[8, 1], [1, 2]]
    assert summary["per_class"]["tissue"]["iou"] == pytest.approx(0.5)
    assert summary["per_class"]["glass"]["dice"] == pytest.approx(16 / 18, abs=1e-6)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    rows = list(csv.DictReader((tmp_path / "per_case.csv").open()))
    assert [r["case"] for r in rows] == ["a", "b"]
    assert rows[1]["iou_tissue"] == "0.0" and float(rows[0]["iou_tissue"]) == pytest.approx(2 / 3, abs=1e-5)
    cm_rows = list(csv.reader((tmp_path / "confusion_matrix.csv").open()))
    assert cm_rows[0] == ["reference\\predicted", "glass", "tissue"] and cm_rows[2] == ["tissue", "1", "2"]
    with pytest.raises(ValueError, match="class names"):
        segmentation_summary(np.zeros((3, 3)), ["a", "b"])
