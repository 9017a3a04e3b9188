import numpy as np
import torch

from liverseg_monai.transforms.crop import bounding_box, paste_box


def test_bounding_box_with_margin_is_clipped():
    m = np.zeros((10, 12, 8), bool)
    m[4:6, 3:5, 1:7] = True
    assert bounding_box(m, 2) == (slice(2, 8), slice(1, 7), slice(0, 8))
    assert bounding_box(m, (0, 1, 0)) == (slice(4, 6), slice(2, 6), slice(1, 7))
    assert bounding_box(torch.as_tensor(m)) == bounding_box(m)


def test_empty_mask_has_no_box():
    assert bounding_box(np.zeros((4, 4, 4))) is None


def test_paste_box_round_trip_and_where():
    target = torch.zeros(1, 6, 6, 6)
    box = (slice(1, 3), slice(2, 5), slice(0, 6))
    patch = torch.ones(1, 2, 3, 6)
    paste_box(target, patch, box)
    assert target.sum() == 36 and torch.equal(target[(Ellipsis, *box)], patch)
    where = torch.zeros(1, 2, 3, 6, dtype=torch.bool)
    where[0, 0, 0, 0] = True
    paste_box(target, patch * 5, box, where=where)
    assert target.sum() == 36 + 4
