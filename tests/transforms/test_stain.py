import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from skimage.color import rgb2hed

from liverseg_monai.transforms.stain import RandHEDJitter, RandHEDJitterd, hed_jitter


def _he_tile(seed=0):
    rng = np.random.default_rng(seed)
    pink = np.array([0.9, 0.6, 0.8])[:, None, None]
    purple = np.array([0.4, 0.3, 0.6])[:, None, None]
    mix = rng.random((1, 16, 16))
    return (mix * pink + (1 - mix) * purple).astype(np.float32)


def test_identity_and_channel_axis():
    tile = _he_tile()
    np.testing.assert_allclose(hed_jitter(tile), tile, atol=1e-5)
    last = np.moveaxis(tile, 0, -1)
    out = hed_jitter(last, alpha=(1.2, 0.9, 1.0), channel_axis=-1)
    np.testing.assert_allclose(np.moveaxis(out, -1, 0), hed_jitter(tile, alpha=(1.2, 0.9, 1.0)), atol=1e-6)


def test_scaling_haematoxylin_changes_only_haematoxylin():
    tile = _he_tile()
    out = hed_jitter(tile, alpha=(1.5, 1.0, 1.0))
    before, after = rgb2hed(tile, channel_axis=0), rgb2hed(out, channel_axis=0)
    assert after[0].mean() > before[0].mean() * 1.3
    np.testing.assert_allclose(after[1], before[1], atol=2e-3)  # eosin untouched
    assert out.min() >= 0 and out.max() <= 1 and out.dtype == np.float32


def test_bad_input():
    with pytest.raises(ValueError, match="3 channels"):
        hed_jitter(np.zeros((4, 8, 8)))


def test_random_transforms_are_seeded_and_keep_type():
    tile = MetaTensor(torch.from_numpy(_he_tile()), meta={"filename_or_obj": "t.png"})
    t1 = RandHEDJitterd("image", prob=1.0, sigma=0.2, bias=0.05).set_random_state(3)
    t2 = RandHEDJitterd("image", prob=1.0, sigma=0.2, bias=0.05).set_random_state(3)
    a, b = t1({"image": tile})["image"], t2({"image": tile})["image"]
    assert isinstance(a, MetaTensor) and a.meta["filename_or_obj"] == "t.png"
    torch.testing.assert_close(a, b)
    assert (a - tile).abs().max() > 0.01
    never = RandHEDJitterd("image", prob=0.0)
    assert never({"image": tile})["image"] is tile
    arr = RandHEDJitter(prob=1.0, sigma=0.1).set_random_state(0)(_he_tile())
    assert isinstance(arr, np.ndarray) and arr.shape == (3, 16, 16)
    with pytest.raises(ValueError):
        RandHEDJitter(sigma=-1)
