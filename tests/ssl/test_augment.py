"""Multi-crop augmentation for H&E tiles: view shapes, determinism, and each colour/geometry operation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from liverseg_monai.ssl.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiCrop,
    MultiCropd,
    adjust_colour,
    gaussian_blur,
    resized_crop,
    solarize,
)


def _tile(seed=0, size=48):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, size, size, generator=g)


def test_views_shapes_order_and_normalisation():
    crop = MultiCrop(global_size=32, local_size=16, n_local=3)
    crop.set_random_state(0)
    views = crop(_tile())
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    # normalised with the ImageNet statistics: a [0, 1] image maps into [(0 - m) / s, (1 - m) / s]
    lo = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    hi = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    assert all(v.min() >= lo - 1e-4 and v.max() <= hi + 1e-4 for v in views)


def test_deterministic_for_a_seed_and_varied_between_calls():
    a, b = MultiCrop(32, 16, 2), MultiCrop(32, 16, 2)
    a.set_random_state(7)
    b.set_random_state(7)
    tile = _tile()
    va, vb = a(tile), b(tile)
    for x, y in zip(va, vb):
        torch.testing.assert_close(x, y)
    again = a(tile)
    assert not all(torch.equal(x, y) for x, y in zip(va, again))
    assert not torch.equal(va[0], va[1])  # the two global views differ


def test_uint8_metatensor_and_small_tiles():
    crop = MultiCrop(32, 16, 1)
    crop.set_random_state(0)
    u8 = MetaTensor((_tile() * 255).round().to(torch.uint8))
    views = crop(u8)
    assert views[0].shape == (3, 32, 32) and not isinstance(views[0], MetaTensor)
    small = crop(_tile(size=10))  # smaller than the views: upsampled
    assert small[0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="channel-first RGB"):
        crop(torch.rand(1, 32, 32))


def test_dictionary_version_replaces_image():
    t = MultiCropd(keys="image", global_size=24, local_size=12, n_local=2)
    t.set_random_state(0)
    out = t({"image": _tile(), "label": 3})
    assert "image" not in out and out["label"] == 3
    assert [v.shape[-1] for v in out["crops"]] == [24, 24, 12, 12]


def test_resized_crop_is_a_crop_then_resize():
    img = torch.arange(16, dtype=torch.float32).view(1, 4, 4).repeat(3, 1, 1)
    same = resized_crop(img, 1, 1, 2, 2, 2)
    torch.testing.assert_close(same, img[:, 1:3, 1:3])


def test_colour_operations():
    img = _tile()
    torch.testing.assert_close(adjust_colour(img, 1.0, 1.0, 1.0), img)
    grey = adjust_colour(img, 1.0, 1.0, 0.0)  # saturation 0: all channels equal the luma
    torch.testing.assert_close(grey[0], grey[1])
    flat = adjust_colour(img, 1.0, 0.0, 1.0)  # contrast 0: the mean grey everywhere
    assert float(flat.std()) < 0.2 * float(img.std())
    x = torch.tensor([[[0.2, 0.5, 0.9]]])
    torch.testing.assert_close(solarize(x), torch.tensor([[[0.2, 0.5, 0.1]]]))


def test_blur_keeps_constants_and_smooths_noise():
    const = torch.full((3, 20, 20), 0.3)
    torch.testing.assert_close(gaussian_blur(const, 1.5), const)
    noise = _tile(size=32)
    assert float(gaussian_blur(noise, 1.5).std()) < 0.5 * float(noise.std())


def test_stain_jitter_changes_colour_not_geometry():
    """With every other operation off, a view of a two-colour tile keeps its layout and moves its colours."""
    tile = torch.zeros(3, 32, 32)
    tile[:, :, :16] = torch.tensor([0.55, 0.25, 0.6]).view(3, 1, 1)  # haematoxylin-ish
    tile[:, :, 16:] = torch.tensor([0.9, 0.5, 0.7]).view(3, 1, 1)  # eosin-ish
    crop = MultiCrop(32, 16, 0, global_scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=0.0, rotate90=False,
                     hed_prob=1.0, hed_sigma=0.3, hed_bias=0.0, colour_prob=0.0, blur_sigma=(0.1, 0.1),
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    crop.set_random_state(3)
    view = crop.view(tile, crop.views[1])  # blur 0.1 probability; seed chosen without blur or solarisation
    left, right = view[:, :, :14].mean(dim=(1, 2)), view[:, :, 18:].mean(dim=(1, 2))
    assert not np.allclose(left.numpy(), [0.55, 0.25, 0.6], atol=1e-3) or not np.allclose(right.numpy(), [0.9, 0.5, 0.7], atol=1e-3)
    assert float((left - right).abs().sum()) > 0.1  # still two distinct halves in the same place
