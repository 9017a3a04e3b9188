"""Argmaxd: the same class-index map as MONAI's AsDiscreted(argmax=True), metadata kept."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, Invertd, Orientationd

from liverseg_monai.transforms.discrete import Argmaxd, channel_argmax


def test_same_result_as_asdiscreted_including_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (3, 9, 8, 7), generator=g).float()  # many ties between channels
    ours = Argmaxd("pred")({"pred": x})["pred"]
    monai = AsDiscreted("pred", argmax=True)({"pred": x})["pred"]
    assert ours.shape == (1, 9, 8, 7) and ours.dtype == monai.dtype
    assert torch.equal(torch.as_tensor(ours), torch.as_tensor(monai))
    assert torch.equal(channel_argmax(x[None], dim=1, keepdim=False, dtype=torch.int64), x[None].argmax(1))


def test_metatensor_keeps_geometry_and_inverts():
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    img = MetaTensor(torch.zeros(1, 6, 5, 4), affine=torch.as_tensor(affine))
    orient = Orientationd("image", axcodes="RAS")
    data = orient({"image": img})
    pred = torch.zeros(2, 6, 5, 4)
    pred[1, :2] = 1.0  # class 1 in the first two rows of the RAS-oriented volume
    data["pred"] = MetaTensor(pred, meta=data["image"].meta, applied_operations=data["image"].applied_operations)
    out = Argmaxd("pred")(data)["pred"]
    assert isinstance(out, MetaTensor)
    np.testing.assert_allclose(out.affine, data["image"].affine)
    back = Invertd("pred", transform=orient, orig_keys="image")({**data, "pred": out})
    np.testing.assert_allclose(back["pred"].affine, affine)
    assert float(back["pred"][0, -2:].sum()) == 2 * 5 * 4  # flipped back to the original voxel order
