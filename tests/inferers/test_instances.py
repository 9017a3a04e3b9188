import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi

from liverseg_monai.inferers.instances import (
    Instance,
    TiledInstanceInferer,
    dataset_mpp,
    merge_instances,
    save_droplet_outputs,
    tile_starts,
)
from liverseg_monai.metrics.instance import instance_ious
from liverseg_monai.transforms.droplet_filter import filter_droplets


def _scene(shape=(150, 170), seed=0):
    """White discs (radius 5-12) on pink; the reference instance map."""
    rng = np.random.default_rng(seed)
    img = np.zeros((3, *shape), np.float32)
    img[0], img[1], img[2] = 0.9, 0.6, 0.75
    ref = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    k = 0
    for _ in range(200):
        r = rng.uniform(5, 12)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if (ndi.binary_dilation(ref > 0, iterations=2) & m).any():
            continue
        k += 1
        ref[m] = k
        img[:, m] = 0.97
        if k == 25:
            break
    return torch.from_numpy(img), ref


def component_net(batch: torch.Tensor) -> torch.Tensor:
    """A stand-in instance network: connected white components (score 0.8); deterministic and blind to
    where a window starts, so tiled and single-window runs must find the same droplets."""
    out = torch.zeros(batch.shape[0], 2, *batch.shape[-2:])
    for b, img in enumerate(batch):
        lab, _ = ndi.label(img.mean(0).numpy() > 0.95)
        out[b, 0] = torch.from_numpy(lab.astype(np.float32))
        out[b, 1] = torch.from_numpy((lab > 0) * 0.8)
    return out


def test_tile_starts_cover():
    assert tile_starts(100, 128, 32) == [0]
    starts = tile_starts(300, 128, 32)
    assert starts[0] == 0 and starts[-1] == 300 - 128
    assert all(b - a <= 96 for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("tile,overlap", [(64, 30), (80, 40), (200, 32)])
def test_tiled_equals_whole_image(tile, overlap):
    img, ref = _scene()
    out = TiledInstanceInferer(roi_size=tile, overlap=overlap, sw_batch_size=3)(img[None], component_net)
    assert out.shape == (1, 2, *ref.shape)
    pred = out[0, 0].numpy().astype(int)
    iou, pids, rids = instance_ious(pred, ref)
    assert len(pids) == len(rids)  # no duplicates, no droplet split into pieces
    assert (iou.max(0) > 0.99).all()  # every droplet whole


def test_droplets_larger_than_overlap_are_joined():
    img = torch.full((3, 60, 120), 0.5)
    img[:, 20:40, 30:90] = 1.0  # 60 px wide, the overlap is 10
    out = TiledInstanceInferer(roi_size=50, overlap=10)(img[None], component_net)
    ids = np.unique(out[0, 0].numpy())
    assert list(ids) == [0, 1]
    assert int((out[0, 0] == 1).sum()) == 20 * 60


def test_merge_suppresses_duplicates_by_mask_iou():
    m = np.ones((10, 10), bool)
    a = Instance((0, 0, 10, 10), m, 0.9)
    b = Instance((1, 0, 11, 10), m, 0.8)  # IoU 0.82 with a
    c = Instance((30, 30, 40, 40), m, 0.7)
    kept = merge_instances([b, c, a])
    assert [k.score for k in kept] == [0.9, 0.7]


def test_overlap_must_be_smaller_than_tile():
    with pytest.raises(ValueError, match="overlap"):
        TiledInstanceInferer(roi_size=64, overlap=64)


def test_outputs(tmp_path):
    img, ref = _scene((64, 64), seed=1)
    pred = component_net(img[None])[0].numpy()
    row = save_droplet_outputs(tmp_path, "case", img.numpy(), pred, mpp=0.5, reference=ref)
    assert row["n_droplets"] == int(ref.max())
    assert row["steatosis_fraction"] == pytest.approx((ref > 0).sum() / ref.size, rel=1e-6)
    lab = tifffile.imread(tmp_path / "case_instances.tif")
    assert lab.dtype == np.uint16 and np.array_equal(lab > 0, ref > 0)
    csv_rows = (tmp_path / "case_droplets.csv").read_text().splitlines()
    assert csv_rows[0].startswith("droplet_id") and len(csv_rows) == int(ref.max()) + 1
    assert (tmp_path / "case_overlay.png").is_file()


def test_dataset_mpp(tmp_path):
    assert dataset_mpp(tmp_path, default=0.25) == 0.25
    (tmp_path / "dataset.json").write_text('{"mpp": 0.46}')
    assert dataset_mpp(tmp_path) == pytest.approx(0.46)


def test_whole_slide_inference(tmp_path):
    from liverseg_monai.inferers.instances import infer_slide_instances
    from liverseg_monai.io.slide import write_pyramid

    img, ref = _scene((300, 340), seed=2)
    rgb = (img.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    slide = tmp_path / "slide.tif"
    write_pyramid(slide, rgb, mpp=0.5, tile_size=128, compression="zlib")  # lossless: exact comparison
    summary = infer_slide_instances(slide, component_net, tmp_path / "out", tile=128, overlap=40)
    assert summary["n_droplets"] == int(ref.max())
    lab = tifffile.imread(tmp_path / "out" / "slide_instances.tif")
    iou, pids, rids = instance_ious(lab, ref)
    assert len(pids) == len(rids) and (iou.max(0) > 0.99).all()
    assert (tmp_path / "out" / "slide_droplets.csv").is_file() and (tmp_path / "out" / "slide_overlay.png").is_file()
    assert 0 < summary["steatosis_fraction"] < 1


def test_whole_slide_level_and_droplet_filter(tmp_path):
    """Level 1 output has the level's shape and µm at its resolution; the filter compares each droplet
    with the slide's mean droplet, exactly as ``filter_droplets`` does on the whole label image."""
    import csv

    from liverseg_monai.inferers.instances import infer_slide_instances
    from liverseg_monai.io.slide import open_slide, write_pyramid

    img, ref = _scene((600, 680), seed=4)
    rgb = (img.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    rgb[500:590, 500:670] = 250  # a white region 20x the mean droplet
    slide = tmp_path / "slide.tif"
    write_pyramid(slide, rgb, mpp=0.25, tile_size=128, compression="zlib")
    with open_slide(slide) as s:
        level1 = s.levels[1].shape
    filters = {"size_range": [0.001, 6.0], "perimeter_range": [0.5, 4.0], "eccentricity_range": [0.2, 1.5]}
    kept = infer_slide_instances(slide, component_net, tmp_path / "a", level=1, tile=96, overlap=32,
                                 droplet_filter=filters)
    everything = infer_slide_instances(slide, component_net, tmp_path / "b", level=1, tile=96, overlap=32)
    assert kept["shape"] == list(level1) and kept["mpp"] == pytest.approx(0.5)
    assert tifffile.imread(tmp_path / "a" / "slide_instances.tif").shape == level1
    assert everything["n_droplets"] == kept["n_droplets"] + kept["n_filtered"] and kept["n_filtered"] >= 1
    whole = tifffile.imread(tmp_path / "b" / "slide_instances.tif")
    assert len(np.unique(filter_droplets(whole, **filters))) - 1 == kept["n_droplets"]
    rows = list(csv.DictReader((tmp_path / "a" / "slide_droplets.csv").open()))
    assert max(float(r["area_um2"]) for r in rows) < 100  # the blob is gone: discs of radius <= 6 px at 0.5 µm/px
    assert all(float(r["area_um2"]) == pytest.approx(int(r["area_px"]) * 0.25) for r in rows)
