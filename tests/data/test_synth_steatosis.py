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


# ------------------------------------------------------------------------------ realism "full"
def _pairs(lab: np.ndarray, gap: int) -> set[tuple[int, int]]:
    """Pairs of instances whose masks, dilated by ``gap`` pixels, meet."""
    from scipy import ndimage as ndi

    pairs = set()
    for i in range(1, int(lab.max()) + 1):
        grown = ndi.binary_dilation(lab == i, iterations=gap)
        pairs |= {(i, int(j)) for j in np.unique(lab[grown]) if j > i}
    return pairs


def test_full_droplets_touch_with_membranes_and_overlap():
    from liverseg_monai.data.synth.steatosis import _sample_droplets, render_droplets

    touching = adjacent = total = 0
    for seed in range(3):
        img, lab = make_steatosis_tile(np.random.default_rng(seed), 192, realism="full")
        assert img.shape == (192, 192, 3) and lab.dtype == np.uint16
        assert set(np.unique(lab)) == set(range(int(lab.max()) + 1))
        grey = img.mean(-1)
        assert grey[lab > 0].mean() > grey[lab == 0].mean() + 30  # clear fat on stained tissue
        touching += len(_pairs(lab, 2))
        adjacent += len(_pairs(lab, 1))
        total += int(lab.max())
    assert total > 20 and touching >= 0.3 * total
    assert touching > adjacent  # some droplets touch only across a membrane gap
    # overlaps: some clump members' ellipses intersect (their union is one clump)
    drops = _sample_droplets(np.random.default_rng(0), 192, np.zeros((192, 192), bool), (5.0, 16.0), 6, 6,
                             (2, 6), membranes=True)
    single = [render_droplets([d], 192) > 0 for d in drops]
    overlaps = sum(int((single[i] & single[j]).any()) for i in range(len(drops)) for j in range(i))
    assert overlaps >= 2


def test_full_membrane_is_eosinophilic():
    """The 1-2 px rim around droplets is pinker (more eosin) than the cytoplasm around it."""
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed

    from liverseg_monai.data.synth.acquisition import Acquisition

    rims, rings = [], []
    for seed in range(3):
        img, lab = make_steatosis_tile(np.random.default_rng(seed), 192, realism="full", acquisition=Acquisition())
        e = rgb2hed(img)[..., 1]
        fat = lab > 0
        rim = ndi.binary_dilation(fat, iterations=1) & ~fat
        ring = ndi.binary_dilation(fat, iterations=6) & ~ndi.binary_dilation(fat, iterations=3)
        rims.append(e[rim].mean())
        rings.append(np.median(e[ring]))
    assert np.mean(rims) > np.mean(rings), (rims, rings)


def test_full_deterministic_and_basic_unchanged(tmp_path):
    a = make_steatosis_tile(np.random.default_rng(5), 96, realism="full")
    b = make_steatosis_tile(np.random.default_rng(5), 96, realism="full")
    c = make_steatosis_tile(np.random.default_rng(6), 96, realism="full")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    basic = make_steatosis_tile(np.random.default_rng(5), 96)
    assert np.array_equal(make_steatosis_tile(np.random.default_rng(5), 96, realism="basic")[0], basic[0])
    assert not np.array_equal(a[0], basic[0])

    path = get_synthesizer("steatosis")(tmp_path, seed=3, n=4, size=64, realism="full", sites=2)
    content = json.loads(path.read_text())
    assert len(content["stain_sites"]) == 2 and content["stain_sites"][0] != content["stain_sites"][1]
    items = load_datalist(tmp_path, "training", require=("image", "label"))
    assert [it["site"] for it in items] == [0, 1]
    coco = json.loads((tmp_path / "annotations.json").read_text())
    lab = np.asarray(Image.open(items[0]["label"]))
    assert len([a for a in coco["annotations"] if a["image_id"] == 1]) == lab.max()


def test_full_steatotic_slide_windows_agree():
    from liverseg_monai.data.synth.steatosis import SteatosisSlide

    slide = SteatosisSlide(384, 512, seed=5, realism="full")
    whole = slide.labels(0, 0, 384, 512)
    assert whole.max() > 5
    assert np.array_equal(slide.labels(60, 100, 84, 112), whole[60:144, 100:212])
    _, tissue = slide.field.render(0, 0, 384, 512)
    assert (tissue[whole > 0] == 1).all()  # droplets only in parenchyma (hepatocytes)
    rgb = slide.rgb(0, 0, 384, 512)
    assert rgb[whole > 0].mean() > rgb[(whole == 0) & (tissue > 0)].mean() + 30
