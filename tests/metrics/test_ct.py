import math

import numpy as np

from liverseg_monai.metrics.ct import case_metrics, summarise


def test_hand_computed_case():
    ref = np.zeros((10, 10, 10), int)
    ref[2:6, 2:6, 2:6] = 1  # 64 voxels
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 2:4] = 1  # 32 voxels, all inside
    m = case_metrics(pred, ref, (1.0, 1.0, 2.0), {1: "liver"})
    assert math.isclose(m["liver_dice"], 2 * 32 / (32 + 64), rel_tol=1e-6)
    assert math.isclose(m["liver_iou"], 32 / 64, rel_tol=1e-6)
    assert math.isclose(m["liver_precision"], 1.0) and math.isclose(m["liver_recall"], 0.5)
    assert math.isclose(m["liver_accuracy"], (1000 - 32) / 1000, rel_tol=1e-6)
    assert math.isclose(m["liver_volume_ml"], 32 * 2 / 1000) and math.isclose(m["liver_ref_volume_ml"], 64 * 2 / 1000)
    assert 0 < m["liver_hd95"] <= 4.0  # the missing half is 2 slices of 2 mm deep


def test_empty_cases():
    z = np.zeros((4, 4, 4), int)
    m = case_metrics(z, z, (1, 1, 1), {1: "tumor"})
    assert m["tumor_dice"] == 1.0 and math.isnan(m["tumor_hd95"])
    s = summarise([{"case": "a", **m}, {"case": "b", **m}])
    assert s["tumor_dice"]["mean"] == 1.0 and s["tumor_hd95"]["n"] == 0
