"""liver_steatosis_maskrcnn beyond the shared harness: the learning test and whole-slide inference.

Learning test: the Mask R-CNN bundle learns synthetic steatosis droplets and beats clump splitting.

Trains the bundle (ResNet-18 FPN, narrow heads, 128-px tiles) through ``monai.bundle run`` for about
360 SGD iterations on synthetic tiles, then runs evaluate.json on the held-out validation tiles. The
network must reach AP50 >= 0.80 on all droplets and beat the classical clump-splitting baseline on
droplets that touch another droplet.
"""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.recipes import synthesize
from tools.runner import copy_bundle, run_stage

BUNDLE = "liver_steatosis_maskrcnn"
NETWORK = {"depth": 18, "fpn_channels": 64, "representation_size": 256, "mask_head_channels": [64, 64],
           "proposals_per_image": 200, "tile_size": 128, "tile_overlap": 32}


@pytest.mark.slow
def test_learns_droplets_and_beats_clump_splitting(tmp_path):
    start = time.time()
    data = synthesize({"kind": "steatosis", "n": 80, "seed": 11, "options": {"size": 128, "density": 2.0}},
                      tmp_path / "data")
    root = copy_bundle(BUNDLE, tmp_path / BUNDLE)
    train = {
        **NETWORK, "max_epochs": 30, "heads_epochs": 1, "val_interval": 30, "ckpt_interval": 30,
        "train_tile_size": 128, "batch_size": 4, "num_workers": 0, "learning_rate": 0.02,
        "warmup_iters": 50, "lr_step_iters": 290, "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 64,
    }
    run_stage({"name": "train", "config": ["inference.json", "train.json"], "output_dir": "train", "overrides": train},
              root, data, tmp_path)
    assert (root / "models" / "model.pt").is_file()
    run_stage({"name": "evaluate", "config": ["inference.json", "evaluate.json"], "output_dir": "eval",
               "overrides": NETWORK}, root, data, tmp_path)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    net, base = summary["network"], summary["clump_splitting"]
    net_t, base_t = summary["network_touching"], summary["clump_splitting_touching"]
    report = (f"network AP50 {net['AP50']:.3f} (touching {net_t['AP50']:.3f}), clump splitting AP50 "
              f"{base['AP50']:.3f} (touching {base_t['AP50']:.3f}), {time.time() - start:.0f} s")
    print(report)
    assert net["AP50"] >= 0.80, report
    assert net_t["AP50"] > base_t["AP50"], report
    assert net["F1"] > 0.75, report


# --------------------------------------------------------------------------------- whole slides
class WhiteComponentNet(torch.nn.Module):
    """A stand-in instance network: each connected component of white pixels is a droplet (score 0.8).

    Deterministic and blind to where a window starts, so a tiled whole-slide run must give exactly the
    droplets of a single-window run; any duplicate or cut droplet at a tile border shows.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from tests.inferers.test_instances import component_net

        return component_net(images)


def _disc_slide(folder: Path, shape=(600, 760), mpp=0.5, seed=3) -> np.ndarray:
    """A lossless pyramidal slide: pink tissue on grey glass with white discs (radius 5-12, some
    across the bundle's tile borders); returns the reference droplet ids."""
    from scipy import ndimage as ndi

    from liverseg_monai.io.slide import write_pyramid

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    tissue = ((yy - shape[0] / 2) / (0.42 * shape[0])) ** 2 + ((xx - shape[1] / 2) / (0.42 * shape[1])) ** 2 < 1
    rgb = np.where(tissue[..., None], np.array([230, 150, 190], np.uint8), np.array([225, 225, 228], np.uint8))
    ref = np.zeros(shape, np.int32)
    for _ in range(600):
        r = rng.uniform(5, 12)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if not tissue[m].all() or (ndi.binary_dilation(ref > 0, iterations=2) & m).any():
            continue
        ref[m] = ref.max() + 1
        rgb[m] = 250
    folder.mkdir(parents=True)
    write_pyramid(folder / "disc_slide.tif", rgb.astype(np.uint8), mpp=mpp, tile_size=128, compression="zlib")
    (folder / "dataset.json").write_text(json.dumps({"testing": ["disc_slide.tif"]}))
    return ref


def test_slide_inference_through_the_bundle_tiled_equals_single_window(tmp_path):
    """inference_slide.json on overlapping 128-px tiles gives the droplets of one whole-slide window:
    none duplicated or cut at tile borders; label TIFF of the level's shape; CSV in µm; fraction."""
    import csv

    import tifffile

    from liverseg_monai.metrics.instance import instance_ious

    ref = _disc_slide(tmp_path / "data")
    root = copy_bundle(BUNDLE, tmp_path / BUNDLE)
    torch.save(WhiteComponentNet().state_dict(), root / "models" / "model.pt")
    stand_in = {"network_def": {"_target_": f"{__name__}.WhiteComponentNet"}}
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    outputs = {}
    for name, tiling in (("tiled", {"tile_size": 128, "tile_overlap": 40}), ("window", {"tile_size": 1024, "tile_overlap": 0})):
        run_stage({"name": name, "config": ["inference.json", "inference_slide.json"], "output_dir": name,
                   "overrides": {**stand_in, **tiling}}, root, tmp_path / "data", tmp_path, env=env)
        outputs[name] = tifffile.imread(tmp_path / name / "disc_slide_instances.tif")
        assert outputs[name].shape == ref.shape  # level 0 of the slide
    tiled, window = outputs["tiled"], outputs["window"]
    summary = json.loads((tmp_path / "tiled" / "disc_slide_summary.json").read_text())
    assert summary["n_tissue_tiles"] < summary["n_tiles"]  # glass tiles skipped
    assert summary["n_droplets"] == int(ref.max()) == len(np.unique(window)) - 1
    iou, pids, rids = instance_ious(tiled, window)
    assert len(pids) == len(rids) and (iou.max(0) > 0.999).all() and (iou.max(1) > 0.999).all()
    iou, _, _ = instance_ious(tiled, ref)
    assert (iou.max(0) > 0.999).all()  # every reference disc found whole, once

    with (tmp_path / "tiled" / "disc_slide_droplets.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["droplet_id", "centroid_y", "centroid_x", "area_px", "area_um2", "perimeter_um",
                             "eccentricity", "elongation", "score"]
    assert sorted(int(r["droplet_id"]) for r in rows) == list(range(1, len(rows) + 1))
    for r in rows:
        assert float(r["area_um2"]) == pytest.approx(int(r["area_px"]) * 0.25)  # 0.5 µm/px
        assert int(r["area_px"]) == int((tiled == int(r["droplet_id"])).sum())
    fraction = summary["steatosis_fraction"]
    tissue_px = summary["tissue_area_um2"] / 0.25
    assert 0 < fraction < 1 and fraction == pytest.approx((ref > 0).sum() / tissue_px)
    assert tissue_px == pytest.approx(np.pi * 0.42**2 * ref.size, rel=0.05)  # the tissue ellipse
