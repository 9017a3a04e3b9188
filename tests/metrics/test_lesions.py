"""Lesion-wise Dice by lesion size (liverseg_monai.metrics.lesions)."""

import math

import numpy as np
import pytest
import torch

from liverseg_monai.metrics.cascade import cascade_case_metrics
from liverseg_monai.metrics.lesions import lesion_dice, lesion_dice_by_size


def _two_lesions():
    ref = np.zeros((40, 40, 40), bool)
    ref[2:5, 2:5, 2:5] = True          # 27 voxels of 2 mm: 216 mm3, diameter 7.4 mm
    ref[20:32, 20:32, 20:32] = True    # 1728 voxels: diameter 29.8 mm
    return ref


def test_each_lesion_scored_on_its_own_and_binned_by_diameter():
    ref = _two_lesions()
    pred = ref.copy()
    pred[20:26] = False                # the large lesion half found
    pred[2:5, 2:5, 2:5] = False        # the small one missed
    pred[0:2, 36:39, 36:39] = True     # a false positive outside both lesions' margins
    scores = sorted(lesion_dice(pred, ref, (2.0, 2.0, 2.0)))
    assert [round(d, 1) for d, _ in scores] == [7.4, 29.8]
    assert scores[0][1] == 0.0 and scores[1][1] == pytest.approx(2 * 864 / (864 + 1728), abs=1e-6)
    m = lesion_dice_by_size(torch.as_tensor(pred)[None], ref, (2.0, 2.0, 2.0))
    assert m["tumor_lesion_dice_lt10mm"] == 0.0 and m["tumor_lesions_lt10mm"] == 1
    assert math.isnan(m["tumor_lesion_dice_10to20mm"]) and m["tumor_lesions_10to20mm"] == 0
    assert m["tumor_lesion_dice_ge20mm"] == pytest.approx(2 / 3, abs=1e-6) and m["tumor_lesions_ge20mm"] == 1


def test_neighbouring_lesion_is_not_a_false_positive_of_this_one():
    ref = np.zeros((30, 30, 30), bool)
    ref[5:10, 5:10, 5:10] = True
    ref[12:17, 5:10, 5:10] = True      # 2 voxels apart: inside each other's margin
    assert [s for _, s in lesion_dice(ref, ref, (1.0, 1.0, 1.0), margin_mm=10.0)] == [1.0, 1.0]
    grown = ref.copy()
    grown[10:12, 5:10, 5:10] = True    # the gap predicted as tumour: counts against both lesions
    assert all(s < 1.0 for _, s in lesion_dice(grown, ref, (1.0, 1.0, 1.0)))


def test_cascade_metrics_carry_the_size_bins_and_no_lesion_gives_nan():
    ref = np.zeros((40, 40, 40), np.uint8)
    ref[5:35, 5:35, 5:35] = 1
    ref[20:32, 20:32, 20:32] = 2
    m = cascade_case_metrics(ref, ref, (2.0, 2.0, 2.0), {1: "liver", 2: "tumor"})
    assert m["tumor_lesion_dice_ge20mm"] == 1.0 and math.isnan(m["tumor_lesion_dice_lt10mm"])
    assert "tumor_lesion_dice_ge20mm" not in cascade_case_metrics(ref, ref, (2.0, 2.0, 2.0), {1: "liver"})
    with pytest.raises(ValueError, match="differ in shape"):
        lesion_dice(ref[:10], ref, (1.0, 1.0, 1.0))
