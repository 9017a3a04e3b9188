"""GlaS object-level F1 and object Dice against hand-computed cases."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from liverseg_monai.metrics.glas import (
    GlasObjectReport,
    glas_scores,
    label_objects,
    object_dice,
    object_f1,
    summarise_glas,
)


def box(shape, *boxes):
    """Instance map with object k+1 filling boxes[k] = (y0, y1, x0, x1)."""
    m = np.zeros(shape, np.int32)
    for k, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        m[y0:y1, x0:x1] = k
    return m


def test_perfect_match():
    g = box((10, 10), (0, 4, 0, 4), (6, 9, 6, 9))
    s = g.copy()
    s[s == 1], s[s == 2] = 7, 3  # instance ids need not agree
    assert object_f1(s, g) == {"tp": 2, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert object_dice(s, g) == pytest.approx(1.0)


def test_gland_split_in_two_halves():
    g = box((4, 8), (0, 4, 0, 4))  # 16 px
    s = box((4, 8), (0, 4, 0, 2), (0, 4, 2, 4))  # two 8 px halves, each covers exactly 50%
    # one ground-truth object is matched once: TP 1, FP 1, FN 0 -> F1 = 2/3
    r = object_f1(s, g)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 0) and r["f1"] == pytest.approx(2 / 3)
    # Dice(G, S1) = Dice(G, S2) = 2*8/24 = 2/3 in both terms
    assert object_dice(s, g) == pytest.approx(2 / 3)


def test_missed_gland_and_false_positive():
    g = box((10, 10), (0, 4, 0, 4), (8, 10, 8, 10))  # 16 px + 4 px
    s = box((10, 10), (0, 4, 0, 4), (8, 10, 0, 2))  # exact + 4 px on background
    r = object_f1(s, g)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1) and r["f1"] == pytest.approx(0.5)
    # G term: 16/20 * 1 + 4/20 * 0 ; S term: 16/20 * 1 + 4/20 * 0
    assert object_dice(s, g) == pytest.approx(0.8)


def test_coverage_below_half_is_not_a_detection():
    g = box((5, 10), (0, 5, 0, 10))  # 50 px
    s = box((5, 10), (0, 5, 0, 4))  # 20 px = 40 % of the gland
    r = object_f1(s, g)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 1, 1) and r["f1"] == 0.0
    # but object Dice still credits the overlap: Dice = 2*20/70 in both terms
    assert object_dice(s, g) == pytest.approx(40 / 70)


def test_merged_glands():
    g = box((2, 8), (0, 2, 0, 5), (0, 2, 5, 8))  # 10 px and 6 px side by side
    s = box((2, 8), (0, 2, 0, 8))  # one 16 px object over both
    r = object_f1(s, g)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 1) and r["f1"] == pytest.approx(2 / 3)
    d1, d2 = 2 * 10 / (10 + 16), 2 * 6 / (6 + 16)
    expected = 0.5 * ((10 / 16) * d1 + (6 / 16) * d2 + 1.0 * d1)
    assert object_dice(s, g) == pytest.approx(expected)


def test_empty_maps():
    empty, one = np.zeros((4, 4), int), box((4, 4), (0, 2, 0, 2))
    assert object_f1(empty, empty)["f1"] == 1.0 and object_dice(empty, empty) == 1.0
    assert object_f1(one, empty)["f1"] == 0.0 and object_dice(one, empty) == 0.0
    r = object_f1(empty, one)
    assert (r["tp"], r["fp"], r["fn"], r["f1"]) == (0, 0, 1, 0.0) and object_dice(empty, one) == 0.0
    with pytest.raises(ValueError, match="shape"):
        object_f1(np.zeros((3, 3), int), one)


def test_summary_sums_counts_and_averages_dice():
    rows = [glas_scores(box((4, 8), (0, 4, 0, 2), (0, 4, 2, 4)), box((4, 8), (0, 4, 0, 4))),  # TP1 FP1
            glas_scores(np.zeros((4, 4), int), box((4, 4), (0, 2, 0, 2)))]  # FN1
    s = summarise_glas(rows)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 1)
    assert s["object_f1"] == pytest.approx(0.5) and s["object_dice"] == pytest.approx((2 / 3 + 0) / 2)


def test_label_objects_min_size_and_connectivity():
    mask = np.zeros((6, 6), bool)
    mask[0:2, 0:2] = True  # 4 px
    mask[2, 2] = True  # touches the first only diagonally
    mask[4:6, 4:6] = True
    assert label_objects(mask).max() == 3
    assert label_objects(mask, connectivity=2).max() == 2
    small_dropped = label_objects(mask, min_size=2)
    assert small_dropped.max() == 2 and small_dropped[2, 2] == 0


def test_report_handler_uses_instance_files(tmp_path):
    # two touching glands in the reference instances; the mask alone would make them one object
    inst = box((4, 8), (0, 4, 0, 4), (0, 4, 4, 8)).astype(np.uint16)
    Image.fromarray(inst).save(tmp_path / "inst.png")
    label = torch.from_numpy((inst > 0).astype(np.float32))[None]
    pred = torch.from_numpy(box((4, 8), (0, 4, 0, 4)).astype(np.float32))[None]  # finds the left gland
    engine = SimpleNamespace(state=SimpleNamespace(output=[{"pred": pred, "label": label}],
                                                   batch=[{"instance": "inst.png"}]))
    report = GlasObjectReport(tmp_path / "out", object_class=1, dataset_dir=tmp_path)
    report._reset()
    report._update(engine)
    summary = report._write()
    assert (summary["tp"], summary["fp"], summary["fn"]) == (1, 0, 1)
    assert json.loads((tmp_path / "out" / "object_summary.json").read_text())["object_f1"] == pytest.approx(2 / 3)
    assert (tmp_path / "out" / "object_per_case.csv").read_text().splitlines()[0].startswith("case,tp,fp,fn")
    # without the instance file the components of the reference mask are used: one merged gland
    engine.state.batch = [{}]
    report._reset()
    report._update(engine)
    assert report._write()["tp"] == 1 and report.rows[0]["fn"] == 0
