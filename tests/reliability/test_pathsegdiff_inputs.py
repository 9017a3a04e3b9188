"""Bad inputs to the PathSegDiff pieces: a clear InputError naming the file, and no partial output."""

import numpy as np
import pytest
import torch
from PIL import Image

from liverseg_monai.data.prepare.bcss import prepare_bcss
from liverseg_monai.data.prepare.glas import prepare_glas
from liverseg_monai.data.readers_pathology import load_unlabelled, read_label_map, read_rgb
from liverseg_monai.engines.diffusion import load_module_weights, tiny_pathsegdiff_parts
from liverseg_monai.errors import DatasetError, InputError
from liverseg_monai.networks.pathsegdiff import PathSegDiffFeatureExtractor

STEM = "TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500"


def bcss(root, mask=None, image=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(root / "images" / "TCGA-A2-A0CM-DX1_xmin1_ymin1_MPP-0.2500.png")
    Image.fromarray(np.ones((8, 8), np.uint8)).save(root / "masks" / "TCGA-A2-A0CM-DX1_xmin1_ymin1_MPP-0.2500.png")
    if image is None:
        Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(root / "images" / f"{STEM}.png")
    else:
        (root / "images" / f"{STEM}.png").write_bytes(image)
    if mask is not None:
        Image.fromarray(mask).save(root / "masks" / f"{STEM}.png")
    return root


def assert_nothing_written(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial")]


@pytest.mark.parametrize(
    "kwargs, where, problem",
    [
        ({"mask": np.ones((8, 8), np.uint8), "image": b"\x89PNG\r\n\x1a\n broken"}, f"images/{STEM}.png", "not a readable image"),
        ({"mask": None}, "masks", "no mask"),
        ({"mask": np.ones((8, 9), np.uint8)}, f"masks/{STEM}.png", "differs from image"),
        ({"mask": np.dstack([np.ones((8, 8), np.uint8), np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)])},
         f"masks/{STEM}.png", "colours"),
        ({"mask": np.full((8, 8), 30, np.uint8)}, f"masks/{STEM}.png", "not BCSS ground-truth codes"),
    ],
)
def test_bad_bcss_inputs(tmp_path, kwargs, where, problem):
    src = bcss(tmp_path / "BCSS", **kwargs)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=problem) as err:
        prepare_bcss(src, out)
    assert str(err.value).startswith(str(src / where))
    assert_nothing_written(out)


def test_bcss_bad_options_and_folders(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        prepare_bcss(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image folder"):
        prepare_bcss(tmp_path / "empty", tmp_path / "out")
    src = bcss(tmp_path / "BCSS", mask=np.ones((8, 8), np.uint8))
    with pytest.raises(InputError, match="grouping"):
        prepare_bcss(src, tmp_path / "out", grouping="coarse")
    with pytest.raises(InputError, match="both"):
        prepare_bcss(src, tmp_path / "out", grouping='{"a": [1], "b": [1, 2]}')
    assert_nothing_written(tmp_path / "out")


def glas(root, anno_shape=(10, 12), grade="name,patient ID,grade (GlaS)\ntrain_1,1,benign\n"):
    root.mkdir(parents=True)
    for name in ("train_1", "train_2"):
        Image.fromarray(np.full((10, 12, 3), 150, np.uint8)).save(root / f"{name}.bmp")
    Image.fromarray(np.ones((10, 12), np.uint8)).save(root / "train_1_anno.bmp")
    if anno_shape is not None:
        Image.fromarray(np.ones(anno_shape, np.uint8)).save(root / "train_2_anno.bmp")
    if grade is not None:
        (root / "Grade.csv").write_text(grade)
    return root


@pytest.mark.parametrize(
    "kwargs, name, problem",
    [
        ({"anno_shape": None}, "train_2.bmp", "no annotation"),
        ({"anno_shape": (11, 12)}, "train_2_anno.bmp", "differs from image"),
        ({"grade": "image,grade\n"}, "Grade.csv", "no 'name' column"),
        ({"grade": "name,patient ID,grade (GlaS)\ntrain_1\n"}, "Grade.csv", "line 2"),
    ],
)
def test_bad_glas_inputs(tmp_path, kwargs, name, problem):
    src = glas(tmp_path / "GlaS", **kwargs)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=problem) as err:
        prepare_glas(src, out)
    assert str(err.value).startswith(str(src / name))
    assert_nothing_written(out)


def test_unreadable_images_and_label_maps(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="not a readable image") as err:
        read_rgb(tmp_path / "empty.png")
    assert str(tmp_path / "empty.png") in str(err.value)
    with pytest.raises(InputError, match="missing"):
        read_label_map(tmp_path / "none.png")
    # a 16-bit grey image and a palette image still read
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(tmp_path / "g16.png")
    assert read_rgb(tmp_path / "g16.png").shape == (8, 8, 3)
    palette = Image.new("P", (4, 4))
    palette.putdata(list(range(16)))
    palette.putpalette([v for k in range(256) for v in (k, 255 - k, 0)])
    palette.save(tmp_path / "p.png")
    assert read_label_map(tmp_path / "p.png").max() == 15


def test_stage_weights_errors_name_the_file(tmp_path):
    ae, ldm = tiny_pathsegdiff_parts(ae_channels=(8, 16), unet_channels=(16, 32), context_dim=16)
    with pytest.raises(InputError, match="run the train_autoencoder.json stage first") as err:
        load_module_weights(ae, tmp_path / "autoencoder.pt", "train_autoencoder.json")
    assert str(tmp_path / "autoencoder.pt") in str(err.value)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch state dict"):
        load_module_weights(ae, tmp_path / "garbage.pt")
    torch.save(ldm.state_dict(), tmp_path / "diffusion.pt")
    with pytest.raises(InputError, match="does not fit the network"):
        load_module_weights(ae, tmp_path / "diffusion.pt")  # the wrong stage's file


def test_unlabelled_pool_needs_images(tmp_path):
    (tmp_path / "dataset.json").write_text('{"testing": [{"image": "a.png"}]}')
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="no images in training, validation"):
        load_unlabelled(tmp_path)


def test_extractor_accepts_tiny_and_odd_tiles():
    ae, ldm = tiny_pathsegdiff_parts(ae_channels=(8, 16), unet_channels=(16, 32, 32), context_dim=16)
    ex = PathSegDiffFeatureExtractor(ae, ldm)
    assert ex.size_divisor == 8
    assert ex(torch.rand(1, 3, 5, 7)).shape == (1, ex.out_channels, 5, 7)
