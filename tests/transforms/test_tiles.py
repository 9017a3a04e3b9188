import numpy as np
import pytest
import torch
from PIL import Image

from liverseg_monai.transforms.tiles import LoadTiled, SaveTilePredictiond, save_label_png


def _write(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)
    return str(path)


def test_load_keeps_row_column_order_and_converts_modes(tmp_path):
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[2, 15] = (255, 0, 0)
    label = np.zeros((10, 20), np.uint8)
    label[2, 15] = 3
    item = LoadTiled(num_classes=7)({"image": _write(tmp_path / "t.png", rgb), "label": _write(tmp_path / "l.png", label)})
    img, lab = item["image"], item["label"]
    assert img.shape == (3, 10, 20) and lab.shape == (1, 10, 20)
    assert img[0, 2, 15] == 255 and lab[0, 2, 15] == 3
    assert img.meta["filename_or_obj"].endswith("t.png")
    rgba = np.concatenate([rgb, np.full((10, 20, 1), 255, np.uint8)], -1)
    grey = rgb[..., 0]
    assert LoadTiled(label_key=None)({"image": _write(tmp_path / "a.png", rgba)})["image"].shape == (3, 10, 20)
    assert LoadTiled(label_key=None)({"image": _write(tmp_path / "g.png", grey)})["image"].shape == (3, 10, 20)
    assert "label" not in LoadTiled()({"image": str(tmp_path / "t.png")})


def test_save_prediction_and_overlay(tmp_path):
    rgb = np.full((12, 16, 3), 200, np.uint8)
    item = LoadTiled(label_key=None)({"image": _write(tmp_path / "tile_7.png", rgb)})
    pred = torch.zeros(1, 12, 16)
    pred[0, :4, :8] = 2
    out = tmp_path / "out"
    SaveTilePredictiond(output_dir=out, label_key="ref")({**item, "pred": pred, "ref": pred.clone()})
    saved = np.asarray(Image.open(out / "tile_7_label.png"))
    assert saved.shape == (12, 16) and saved[0, 0] == 2 and saved[5, 0] == 0
    assert (out / "tile_7_overlay.png").is_file()
    onehot = torch.nn.functional.one_hot(pred[0].long(), 3).permute(2, 0, 1)
    SaveTilePredictiond(output_dir=out, postfix="seg", overlay=False)({**item, "pred": onehot})
    np.testing.assert_array_equal(np.asarray(Image.open(out / "tile_7_seg.png")), saved)
    save_label_png(out / "x.png", np.ones((3, 3), np.int64))
    assert sorted(p.name for p in out.iterdir()) == ["tile_7_label.png", "tile_7_overlay.png", "tile_7_seg.png", "x.png"]


def test_outputs_are_named_by_the_stem_for_every_tile_format(tmp_path):
    rgb = np.full((8, 8, 3), 120, np.uint8)
    out = tmp_path / "out"
    for i, ext in enumerate((".jpg", ".jpeg", ".bmp", ".tif")):
        item = LoadTiled(label_key=None)({"image": _write(tmp_path / f"histo{i}{ext}", rgb)})
        SaveTilePredictiond(output_dir=out)({**item, "pred": torch.ones(1, 8, 8)})
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"histo{i}_{what}.png" for i in range(4) for what in ("label", "overlay"))


def test_a_failed_overlay_leaves_no_label_png(tmp_path):
    rgb = np.full((8, 8, 3), 120, np.uint8)
    item = LoadTiled(label_key=None)({"image": _write(tmp_path / "histo.jpg", rgb)})
    (tmp_path / "histo.jpg").unlink()  # the overlay reads the tile again: it fails
    out = tmp_path / "out"
    with pytest.raises(Exception, match="histo.jpg"):
        SaveTilePredictiond(output_dir=out)({**item, "pred": torch.ones(1, 8, 8)})
    assert not out.exists() or list(out.iterdir()) == []
