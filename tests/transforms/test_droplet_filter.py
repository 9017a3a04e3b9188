import numpy as np
import pytest
import torch

from liverseg_monai.transforms.droplet_filter import DropletFilterd, droplet_table, filter_droplets


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _scene():
    """20 droplets (ids 1..20, radii 4-8), a thin sliver (21) and a one-pixel speck (22)."""
    lab = np.zeros((150, 120), np.int32)
    rng = np.random.default_rng(0)
    for i in range(20):
        cy, cx = 12 + 25 * (i // 4), 12 + 25 * (i % 4)
        lab[_disc(lab.shape, cy, cx, rng.uniform(4, 8))] = i + 1
    lab[140:142, 20:60] = 21  # a long thin sliver (a sinusoid edge, not a droplet)
    lab[130, 110] = 22
    return lab


def test_filter_removes_sliver_and_keeps_droplets():
    out = filter_droplets(_scene())
    kept = set(np.unique(out)) - {0}
    assert set(range(1, 21)) <= kept
    assert 21 not in kept  # elongation far above 1.5 x mean
    assert 22 not in kept  # perimeter below 0.5 x mean


def test_filter_size_bounds_relative_to_mean():
    lab = _scene()
    out = filter_droplets(lab, size_range=(0.1, 6), perimeter_range=(0, 100), eccentricity_range=(0, 100))
    assert 22 not in out and 21 in out  # the speck is < 0.1 x mean area
    relabelled = filter_droplets(lab, size_range=(0.1, 6), relabel=True)
    assert relabelled.max() == len(np.unique(relabelled)) - 1


def test_eccentricity_measure_choice():
    lab = _scene()
    with pytest.raises(ValueError):
        filter_droplets(lab, eccentricity_measure="roundness")
    with pytest.raises(ValueError):
        filter_droplets(lab, reference="mode")
    # skimage eccentricity with the paper's lower bound drops perfect circles (documented pitfall)
    out = filter_droplets(lab, eccentricity_measure="eccentricity", size_range=(0, 100), perimeter_range=(0, 100))
    assert 1 not in out


def test_table_units():
    lab = np.zeros((20, 20), int)
    lab[5:15, 5:15] = 1
    row = droplet_table(lab, {1: 0.7}, mpp=0.5)[0]
    assert row["area_um2"] == pytest.approx(25.0)
    assert row["score"] == pytest.approx(0.7)
    assert 0 <= row["eccentricity"] < 0.1


def test_dict_transform_zeroes_scores():
    lab = _scene().astype(np.float32)
    pred = torch.from_numpy(np.stack([lab, (lab > 0) * 0.9]).astype(np.float32))
    out = DropletFilterd("pred")({"pred": pred})["pred"]
    assert out.shape == pred.shape and isinstance(out, torch.Tensor)
    assert not (out[0] == 21).any() and float(out[1][pred[0] == 21].max()) == 0.0
    assert (out[0] == 1).any()


def test_border_objects_are_kept_and_not_counted():
    lab = _scene()
    lab[0:2, 60:100] = 23  # a truncated sliver on the image border
    out = filter_droplets(lab)
    assert 23 in out and 21 not in out
    assert 23 not in filter_droplets(lab, keep_border=False)
