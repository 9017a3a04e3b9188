"""AntiAliasd + Resized(anti_aliasing=False) is MONAI's anti-aliased Resized, faster; Invertd still works."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Orientationd, Resized

from liverseg_monai.transforms.resample import AntiAliasd, anti_alias_sigmas


def _volume() -> MetaTensor:
    rng = np.random.default_rng(0)
    x = rng.random((1, 64, 48, 10)).astype(np.float32)  # noise: what aliasing shows most
    x[:, 20:40, 10:30] += 1.0
    return MetaTensor(torch.from_numpy(x), affine=torch.diag(torch.tensor([-0.7, -0.7, 3.0, 1.0])))


def test_sigma_rule_matches_monai():
    assert anti_alias_sigmas((512, 512, 128), (128, 128, -1)) == (1.5, 1.5, 0.0)
    assert anti_alias_sigmas((64, 32), (128, 16)) == (0.0, 0.5)  # upsampling axis: no smoothing
    with pytest.raises(ValueError, match="spatial shape"):
        anti_alias_sigmas((64, 32, 8), (16, 16))


def test_same_image_as_monai_anti_aliased_resize():
    size = [16, 12, -1]
    monai = Resized("image", size, mode="trilinear", anti_aliasing=True)({"image": _volume()})["image"]
    ours = Compose([AntiAliasd("image", size), Resized("image", size, mode="trilinear", anti_aliasing=False)])(
        {"image": _volume()})["image"]
    plain = Resized("image", size, mode="trilinear", anti_aliasing=False)({"image": _volume()})["image"]
    assert ours.shape == monai.shape == (1, 16, 12, 10)
    # the two filters agree everywhere (zero padding at the border as MONAI; the kernels differ only in
    # how they are sampled)
    diff = float((ours - monai).abs().max())
    assert diff < 0.03, diff
    assert float((plain - monai).abs().max()) > 5 * diff  # without smoothing it is clearly different
    reflect = AntiAliasd("image", size, mode="reflect")({"image": _volume()})["image"]
    assert float(reflect[0, 0].mean()) > float(AntiAliasd("image", size)({"image": _volume()})["image"][0, 0].mean())


def test_invertd_undoes_the_resize_and_skips_the_smoothing():
    pre = Compose([Orientationd("image", axcodes="RAS"), AntiAliasd("image", [16, 12, -1]),
                   Resized("image", [16, 12, -1], mode="trilinear", anti_aliasing=False)])
    data = pre({"image": _volume()})
    data["pred"] = MetaTensor(torch.ones_like(data["image"].as_tensor()), meta=data["image"].meta,
                              applied_operations=data["image"].applied_operations)
    back = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(data)["pred"]
    assert back.shape == (1, 64, 48, 10)
    np.testing.assert_allclose(back.affine, _volume().affine)
    np.testing.assert_allclose(back.as_tensor().numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize("sigmas", [(1.5, 1.5, 0.0), (0.7, 2.0, 1.0)])
def test_device_path_equals_scipy(sigmas):
    """The torch smoothing used for GPU tensors (run here on the CPU) is scipy's filter, zero padding."""
    from scipy import ndimage

    from liverseg_monai.transforms.resample import gaussian_smooth_torch

    x = np.random.default_rng(0).normal(size=(2, 40, 36, 12)).astype(np.float32)
    ref = np.stack([ndimage.gaussian_filter(c, sigmas, truncate=4.0, mode="constant") for c in x])
    out = gaussian_smooth_torch(torch.from_numpy(x), sigmas).numpy()
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)
