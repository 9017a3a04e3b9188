import numpy as np
import pytest

from liverseg_monai.metrics.instance import (
    InstanceAP,
    average_precision,
    instance_ious,
    instance_stats,
    match_instances,
    scores_from_map,
    summarize,
    touching_ids,
)


def test_ious_hand_computed():
    ref = np.zeros((4, 6), int)
    ref[:, :2] = 1  # 8 px
    ref[:, 4:] = 2  # 8 px
    pred = np.zeros((4, 6), int)
    pred[:, :3] = 5  # 12 px, 8 shared with ref 1
    iou, pids, rids = instance_ious(pred, ref)
    assert list(pids) == [5] and list(rids) == [1, 2]
    np.testing.assert_allclose(iou, [[8 / 12, 0.0]])


def test_greedy_matching_by_score():
    iou = np.array([[0.6, 0.0], [0.7, 0.0]])
    # the higher-scoring prediction takes the reference; the other becomes a false positive
    assert list(match_instances(iou, [0.2, 0.9], 0.5)) == [-1, 0]
    assert list(match_instances(iou, [0.9, 0.2], 0.5)) == [0, -1]
    assert list(match_instances(iou, [0.9, 0.2], 0.65)) == [-1, 0]


def test_average_precision_hand_computed():
    # 3 references; ranked predictions TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3
    # interpolated: 1 for recall <= 1/3 (34 of the 101 points), 2/3 up to 2/3 (33 points), 0 beyond
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 3)
    assert ap == pytest.approx((34 * 1 + 33 * 2 / 3) / 101)
    assert average_precision(np.array([0.5]), np.array([True]), 1) == pytest.approx(1.0)
    assert average_precision(np.array([]), np.array([], bool), 2) == 0.0
    assert np.isnan(average_precision(np.array([0.5]), np.array([False]), 0))


def test_summary_counts_f1_jaccard():
    ref = np.zeros((10, 10), int)
    ref[0:4, 0:4] = 1
    ref[6:10, 6:10] = 2
    pred = np.zeros((10, 10), int)
    pred[0:4, 0:4] = 1  # exact
    pred[0:3, 7:10] = 2  # false positive
    s = summarize([instance_stats(pred, ref, {1: 0.9, 2: 0.8})])
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 1)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.5) and s["F1"] == pytest.approx(0.5)
    assert s["jaccard"] == pytest.approx(16 / (16 + 16 + 9))
    assert s["AP50"] == pytest.approx(51 / 101)  # precision 1 up to recall 0.5 (51 points), then nothing
    assert s["mask_AP"] == pytest.approx(51 / 101)  # exact match holds at every IoU threshold


def test_touching_subset_and_ignore_rule():
    ref = np.zeros((10, 20), int)
    ref[2:6, 2:6] = 1
    ref[2:6, 6:10] = 2  # touches 1
    ref[2:6, 14:18] = 3  # isolated
    assert list(touching_ids(ref)) == [1, 2]
    pred = np.zeros_like(ref)
    pred[2:6, 1:11] = 1  # merges the clump: IoU 0.4 with each, matches neither
    pred[2:6, 14:18] = 2  # the isolated droplet: ignored in the clump subset
    s = summarize([instance_stats(pred, ref, None, subset=touching_ids(ref))])
    assert s["n_reference"] == 2 and (s["tp"], s["fp"], s["fn"]) == (0, 1, 2)
    full = summarize([instance_stats(pred, ref)])
    assert (full["tp"], full["fp"], full["fn"]) == (1, 1, 2)


def test_scores_from_map_and_ignite_metric():
    ids = np.zeros((6, 6))
    ids[:3, :3] = 1
    ids[3:, 3:] = 2
    score = np.where(ids == 1, 0.9, np.where(ids == 2, 0.6, 0.0))
    assert scores_from_map(ids, score) == {1: pytest.approx(0.9), 2: pytest.approx(0.6)}
    metric = InstanceAP("F1")
    metric.reset()
    metric.update(([np.stack([ids, score])], [ids[None]]))
    assert metric.compute() == pytest.approx(1.0)


def test_saver_writes_the_steatosis_area_error(tmp_path):
    import csv
    import json

    import torch
    from monai.data import MetaTensor

    from liverseg_monai.metrics.instance import InstanceMetricsSaver, steatosis_area_pct

    ref = np.zeros((1, 20, 20))
    ref[0, 2:6, 2:6] = 1  # 16 px
    ref[0, 10:14, 10:14] = 2  # 16 px: 8 % of 400
    pred = np.zeros((2, 20, 20))
    pred[0, 2:6, 2:6] = 1  # finds one droplet: 4 %
    pred[1] = pred[0] * 0.9
    base = np.zeros((1, 20, 20))
    base[0, 2:12, 2:12] = 1  # 100 px: 25 %
    image = MetaTensor(torch.zeros(3, 20, 20), meta={"filename_or_obj": "/x/tile_7.png"})
    assert steatosis_area_pct(ref[0]) == pytest.approx(8.0)

    class State:
        output = [{"image": image, "label": ref, "pred": pred, "baseline": base}]

    class Engine:
        state = State()

    saver = InstanceMetricsSaver(tmp_path)
    saver.reset()
    saver.measure(Engine())
    saver.write()
    row = next(csv.DictReader(open(tmp_path / "per_case.csv")))
    assert row["case"] == "tile_7" and float(row["ref_area_pct"]) == pytest.approx(8.0)
    assert float(row["network_area_pct"]) == pytest.approx(4.0)
    assert float(row["network_area_pct_error"]) == pytest.approx(4.0)
    assert float(row["clump_splitting_area_pct_error"]) == pytest.approx(17.0)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["network"]["area_pct_mae"] == pytest.approx(4.0)
    assert summary["clump_splitting"]["area_pct_mae"] == pytest.approx(17.0)
