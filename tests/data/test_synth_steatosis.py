import json

import numpy as np
from PIL import Image

from liverseg_monai.data.datalist import load_datalist
from liverseg_monai.data.synth import get_synthesizer
from liverseg_monai.data.synth.steatosis import make_steatosis_tile, mask_to_rle, rle_to_mask
from liverseg_monai.metrics.instance import touching_ids


def test_layout_and_coco(tmp_path):
    path = get_synthesizer("steatosis")(tmp_path, seed=3, n=5, size=96)
    content = json.loads(path.read_text())
    assert content["mpp"] == 0.5
    items = load_datalist(tmp_path, "training", require=("image", "label"))
    assert len(items) == 3 and len(load_datalist(tmp_path, "testing", require=("image", "label"))) == 1
    img = np.asarray(Image.open(items[0]["image"]))
    lab = np.asarray(Image.open(items[0]["label"]))
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert lab.shape == (96, 96) and lab.dtype == np.uint16
    assert set(np.unique(lab)) == set(range(int(lab.max()) + 1))  # ids 1..N, no gaps
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert coco["categories"][0]["name"] == "droplet"
    first = [a for a in coco["annotations"] if a["image_id"] == 1]
    assert len(first) == lab.max()
    for ann in first:
        m = rle_to_mask(ann["segmentation"])
        assert m.sum() == ann["area"]
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(m)
        assert (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (x, y, w, h)
    # every annotation is one instance of the label image
    ids = [int(np.unique(lab[rle_to_mask(a["segmentation"])])[0]) for a in first]
    assert sorted(ids) == list(range(1, int(lab.max()) + 1))


def test_deterministic_per_seed(tmp_path):
    a = make_steatosis_tile(np.random.default_rng(5), 128)
    b = make_steatosis_tile(np.random.default_rng(5), 128)
    c = make_steatosis_tile(np.random.default_rng(6), 128)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_droplets_are_white_and_some_touch():
    touching, total = 0, 0
    for seed in range(4):
        img, lab = make_steatosis_tile(np.random.default_rng(seed), 192)
        grey = img.mean(-1)
        assert grey[lab > 0].mean() > grey[lab == 0].mean() + 30  # white fat on pink/purple tissue
        touching += len(touching_ids(lab))
        total += int(lab.max())
    assert total > 20 and touching >= 0.3 * total  # clumps of touching/overlapping droplets


def test_rle_roundtrip_edge_cases():
    for mask in (np.zeros((4, 5), bool), np.ones((4, 5), bool), np.eye(5, dtype=bool)):
        rle = mask_to_rle(mask)
        assert sum(rle["counts"]) == mask.size
        assert np.array_equal(rle_to_mask(rle), mask)
    assert mask_to_rle(np.ones((2, 2), bool))["counts"][0] == 0  # COCO: runs start with background


def test_steatotic_slide_windows_agree_and_droplets_lie_on_tissue(tmp_path):
    import tifffile

    from liverseg_monai.data.synth.steatosis import SteatosisSlide

    slide = SteatosisSlide(384, 512, seed=5)
    whole = slide.labels(0, 0, 384, 512)
    assert whole.dtype == np.uint32 and whole.max() > 10
    for y, x in ((0, 0), (100, 250), (300, 400)):  # any tiling renders the same droplet ids
        assert np.array_equal(slide.labels(y, x, 84, 112), whole[y : y + 84, x : x + 112])
    region, _, _ = slide.field.regions(*np.mgrid[:384, :512].astype(float))
    assert (region[whole > 0] > 0).all()  # droplets only on tissue
    rgb = slide.rgb(0, 0, 384, 512)
    assert rgb[whole > 0].mean() > 235 and rgb[(whole == 0) & (region > 0)].mean() < 215  # white on pink

    path = get_synthesizer("steatosis")(tmp_path, seed=1, n=3, size=64, slides=1, slide_size=(256, 320))
    item = load_datalist(tmp_path, "slides", require=("image", "label"))[0]
    assert "slides" in json.loads(path.read_text()) and load_datalist(tmp_path, "testing")
    with tifffile.TiffFile(item["image"]) as img, tifffile.TiffFile(item["label"]) as lab:
        assert img.pages[0].shape == (256, 320, 3) and lab.pages[0].shape == (256, 320)
        assert lab.pages[0].asarray().max() > 0
