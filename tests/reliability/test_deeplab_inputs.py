"""Bad inputs to the H&E DeepLabV3+ bundle's code: clear errors naming the file, no partial output."""

import numpy as np
import pytest
import torch
from PIL import Image

from liverseg_monai.errors import InputError
from liverseg_monai.transforms.tiles import LoadTiled, SaveTilePredictiond, save_label_png


@pytest.fixture
def tile(tmp_path):
    path = tmp_path / "tile.png"
    Image.fromarray(np.full((16, 16, 3), 180, np.uint8)).save(path)
    return str(path)


def _label(tmp_path, array, name="label.png"):
    path = tmp_path / name
    Image.fromarray(array).save(path)
    return str(path)


def test_missing_and_corrupt_tiles(tmp_path, tile):
    with pytest.raises(InputError, match="nothere.png: missing"):
        LoadTiled()({"image": str(tmp_path / "nothere.png")})
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match="broken.png"):
        LoadTiled()({"image": str(bad)})
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((4, 30, 3), np.uint8)).save(small)
    with pytest.raises(InputError, match="small.png.*smaller"):
        LoadTiled()({"image": str(small)})
    with pytest.raises(InputError, match="tile.png: 16x16 pixels is too large.*inference_slide"):
        LoadTiled(max_pixels=100)({"image": tile})


def test_label_problems_name_the_label_file(tmp_path, tile):
    with pytest.raises(InputError, match="wrong_size.png: label size 8x16"):
        LoadTiled()({"image": tile, "label": _label(tmp_path, np.zeros((16, 8), np.uint8), "wrong_size.png")})
    with pytest.raises(InputError, match=r"too_high.png: label values \[9\]"):
        LoadTiled(num_classes=7)({"image": tile, "label": _label(tmp_path, np.full((16, 16), 9, np.uint8), "too_high.png")})
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[..., 0] = 255
    with pytest.raises(InputError, match="colour.png.*RGB channels differ"):
        LoadTiled()({"image": tile, "label": _label(tmp_path, colour, "colour.png")})


def test_no_partial_output_when_writing_fails(tmp_path, tile):
    out = tmp_path / "out"
    item = LoadTiled(label_key=None)({"image": tile})
    with pytest.raises(ValueError):
        save_label_png(out / "x.png", np.full((4, 4), 300))
    with pytest.raises(ValueError):
        SaveTilePredictiond(output_dir=out)({**item, "pred": torch.full((1, 4, 4), -1.0)})
    assert not out.exists() or not any(out.iterdir())


def test_bundle_inference_without_weights_says_so(tmp_path):
    from liverseg_monai.engines.checkpoints import require_checkpoint

    with pytest.raises(InputError, match="model.pt: no trained weights"):
        require_checkpoint(tmp_path / "models" / "model.pt")


def test_network_rejects_mismatched_block():
    from liverseg_monai.networks.blocks.aspp import ASPP
    from liverseg_monai.networks.deeplab import DeepLabV3Plus

    with pytest.raises(ValueError, match="aspp.in_channels=256"):
        DeepLabV3Plus(3, 7, encoder="resnet18", aspp=ASPP(256, 16))
