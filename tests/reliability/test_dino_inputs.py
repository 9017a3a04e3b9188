"""Bad inputs of the DINO pretraining bundle: clear errors naming the file, no partial output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from liverseg_monai.errors import DatasetError, InputError
from liverseg_monai.ssl.data import LoadRGBPatchd, pretraining_items, read_label_map, read_rgb

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "pathology_dino_pretraining"


def _dataset(tmp_path: Path, images: dict[str, bytes | np.ndarray]) -> Path:
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    items = []
    for name, content in images.items():
        path = tmp_path / "images" / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            Image.fromarray(content).save(path)
        items.append({"image": f"images/{name}"})
    (tmp_path / "dataset.json").write_text(json.dumps({"training": items}))
    return tmp_path


def test_corrupt_png_names_the_file(tmp_path):
    good = np.full((16, 16, 3), 200, np.uint8)
    data = _dataset(tmp_path, {"good.png": good, "broken.png": b"\x89PNG\r\n\x1a\n truncated"})
    loader = LoadRGBPatchd(keys="image")
    items = pretraining_items(data)
    assert loader(items[0])["image"].shape == (3, 16, 16)
    with pytest.raises(InputError, match=r"broken\.png: not a readable image"):
        loader(items[1])


def test_tiny_and_non_finite_images(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match=r"tiny\.png: image is 4x4 pixels"):
        read_rgb(tmp_path / "tiny.png")
    arr = np.full((16, 16, 3), 0.5, np.float32)
    arr[3, 3, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", arr)
    with pytest.raises(InputError, match=r"nan\.tif: image contains NaN"):
        read_rgb(tmp_path / "nan.tif")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 16, 16, 7), np.uint8))
    with pytest.raises(InputError, match="stack.tif"):
        read_rgb(tmp_path / "stack.tif")


def test_missing_image_in_datalist(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "images/gone.png"}]}))
    with pytest.raises(DatasetError, match="gone.png"):
        pretraining_items(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"validation": [{"image": "a.png"}]}))
    with pytest.raises(DatasetError, match="no 'training' items"):
        pretraining_items(tmp_path)


def test_label_map_problems(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "lab.png")
    with pytest.raises(InputError, match=r"lab\.png: label map is 8x8 but its image is 10x8"):
        read_label_map(tmp_path / "lab.png", (8, 10))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match=r"rgb\.png: label image has colours"):
        read_label_map(tmp_path / "rgb.png")


def _inference_parser(bundle_root: Path, dataset_dir: Path, output_dir: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_root)
    parser["dataset_dir"] = str(dataset_dir)
    parser["output_dir"] = str(output_dir)
    parser["arch"] = "resnet18"
    parser["device"] = "cpu"
    return parser


def test_inference_without_or_with_wrong_backbone_writes_nothing(tmp_path):
    from liverseg_monai.networks.weights import save_backbone
    from liverseg_monai.ssl.dino import resnet_backbone

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    Image.fromarray(np.full((32, 32, 3), 180, np.uint8)).save(data / "images" / "t.png")
    (data / "dataset.json").write_text(json.dumps({"testing": [{"image": "images/t.png"}]}))
    root, out = tmp_path / "bundle", tmp_path / "out"
    (root / "models").mkdir(parents=True)

    parser = _inference_parser(root, data, out)
    with pytest.raises(RuntimeError) as err:
        parser.get_parsed_content("initialize")
    assert isinstance(err.value.__cause__, InputError)
    assert "model.pt: backbone weights file does not exist" in str(err.value.__cause__)

    # a ResNet-50 model.pt while the config says resnet18: refused, not half-loaded
    save_backbone(resnet_backbone("resnet50"), root / "models" / "model.pt")
    parser = _inference_parser(root, data, out)
    with pytest.raises(RuntimeError) as err:
        parser.get_parsed_content("initialize")
    assert isinstance(err.value.__cause__, InputError)
    assert "does not match the encoder" in str(err.value.__cause__)

    (root / "models" / "model.pt").write_bytes(b"not a checkpoint")
    parser = _inference_parser(root, data, out)
    with pytest.raises(RuntimeError) as err:
        parser.get_parsed_content("initialize")
    assert "not a readable torch weights file" in str(err.value.__cause__)
    assert not out.exists() or not any(out.iterdir())


def test_non_finite_loss_stops_training():
    from types import SimpleNamespace

    from torch import nn

    from liverseg_monai.ssl.dino import (
        DINOHead,
        DINOIteration,
        DINOLoss,
        MultiCropWrapper,
        make_teacher,
        param_groups,
    )

    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    student = MultiCropWrapper(backbone, DINOHead(4, 8, hidden_dim=8, bottleneck_dim=4))
    teacher = make_teacher(student)
    engine = SimpleNamespace(network=student, optimizer=torch.optim.SGD(param_groups(student), lr=0.1),
                             loss_function=DINOLoss(8), amp=False,
                             state=SimpleNamespace(epoch=1, iteration=1, epoch_length=1, max_epochs=1, device="cpu"))
    crops = [torch.full((2, 3, 8, 8), math.nan)] * 2
    with pytest.raises(RuntimeError, match="DINO loss is nan"):
        DINOIteration(teacher)(engine, {"crops": crops})
