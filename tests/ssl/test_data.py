"""Reading tiles from other tools (grey, RGBA, palette, 16-bit, TIFF) and random patches of slides."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from liverseg_monai.ssl.data import LoadRGBPatchd, pretraining_items, read_label_map, read_rgb


def test_tile_modes_become_uint8_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((20, 30), 255, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    tifffile.imwrite(tmp_path / "chw.tif", np.moveaxis(rgb, -1, 0))
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    for name in ("rgb.png", "rgba.png", "grey.png", "palette.png", "grey16.png", "chw.tif", "rgb.jpg"):
        out = read_rgb(tmp_path / name)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8, name
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgba.png"), rgb)
    np.testing.assert_array_equal(read_rgb(tmp_path / "chw.tif"), rgb)
    np.testing.assert_array_equal(read_rgb(tmp_path / "grey16.png")[..., 1], rgb[..., 0])
    # transparent pixels (tools export "no tissue" as alpha 0 over black) read as white glass
    alpha = np.full((20, 30), 255, np.uint8)
    alpha[:, :10] = 0
    Image.fromarray(np.dstack([np.zeros_like(rgb), alpha])).save(tmp_path / "transparent.png")
    out = read_rgb(tmp_path / "transparent.png")
    assert (out[:, :10] == 255).all() and (out[:, 10:] == 0).all()


def test_load_patch_of_a_large_tile(tmp_path):
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[:, :, 0] = np.arange(50)[None, :]
    Image.fromarray(rgb).save(tmp_path / "big.png")
    t = LoadRGBPatchd(keys="image", patch_size=16)
    t.set_random_state(0)
    out = t({"image": str(tmp_path / "big.png")})["image"]
    assert out.shape == (3, 16, 16) and out.meta["filename_or_obj"].endswith("big.png")
    assert float(out.max()) <= 1.0
    whole = LoadRGBPatchd(keys="image")({"image": str(tmp_path / "big.png")})["image"]
    assert whole.shape == (3, 40, 50)
    torch.testing.assert_close(whole[0, 0, :5], torch.arange(5, dtype=torch.float32) / 255)


def test_random_tissue_patches_from_a_slide(tmp_path):
    from liverseg_monai.data.synth.slide import synth_slide

    synth_slide(tmp_path / "slides", seed=0, n=1, width=1024, height=768, mpp=1.0, tile_size=128, progress=False)
    slide = sorted((tmp_path / "slides").rglob("*.tif*"))
    slide = [p for p in slide if "label" not in p.name][0]
    t = LoadRGBPatchd(keys="image", patch_size=64, slide_min_size=512)
    t.set_random_state(0)
    patches = [t({"image": str(slide)})["image"] for _ in range(4)]
    assert all(p.shape == (3, 64, 64) for p in patches)
    assert not torch.equal(patches[0], patches[1])
    # centred on tissue: stained (not white glass) on average
    assert np.mean([float(p.mean()) for p in patches]) < 0.9


def test_pretraining_items_drop_labels_and_repeat(tmp_path):
    from liverseg_monai.data.synth.histo import synth_histo

    synth_histo(tmp_path, seed=0, n=5, size=32)
    items = pretraining_items(tmp_path, "training", repeat=2)
    assert len(items) == 6 and all(set(it) == {"image"} for it in items)
    both = pretraining_items(tmp_path, ["training", "validation"])
    assert len(both) == 4


def test_label_map_reads_grey_png(tmp_path):
    lab = np.random.default_rng(0).integers(0, 7, (12, 10), dtype=np.uint8)
    Image.fromarray(lab).save(tmp_path / "lab.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "lab.png", (12, 10)), lab)


@pytest.mark.parametrize("size", [96])
def test_histo_tiles_read_back(tmp_path, size):
    from liverseg_monai.data.synth.histo import synth_histo

    synth_histo(tmp_path, seed=1, n=3, size=size)
    item = pretraining_items(tmp_path)[0]
    assert read_rgb(item["image"]).shape == (size, size, 3)
