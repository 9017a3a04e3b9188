"""Whole-slide inference: blending geometry, tissue skipping, outputs, bounded memory."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from liverseg_monai.inferers.slide import (
    TissueIndex,
    compare_label_slides,
    evaluate_slides,
    infer_slide,
    iter_patches,
    patch_starts,
    run_slide_inference,
)
from liverseg_monai.io.slide import open_slide, write_pyramid


def disc_slide(path, height, width, mpp=0.5, compression="zlib", tissue=True, radius=0.3):
    """Pink textured tissue (a disc, with a dark stripe pattern) on white glass, written tile by tile."""
    cy, cx, r = height / 2, width / 2, radius * min(height, width)

    def src(y, x, h, w):
        out = np.full((h, w, 3), 240, np.uint8)
        near = abs(np.clip(cy, y, y + h) - cy) < r and abs(np.clip(cx, x, x + w) - cx) < r
        if tissue and near:
            yy, xx = np.mgrid[y : y + h, x : x + w]
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            dark = ((yy // 16 + xx // 16) % 3) == 0
            out[inside] = (220, 140, 190)
            out[inside & dark] = (120, 60, 140)
        return out

    write_pyramid(path, src, mpp=mpp, shape=(height, width, 3), compression=compression)
    return path


def colour_classes(rgb: np.ndarray) -> np.ndarray:
    """Reference per-pixel rule: 0 glass, 1 pink, 2 dark purple."""
    rgb = rgb.astype(np.int32)
    sat = rgb.max(-1) - rgb.min(-1)
    return np.where(sat < 30, 0, np.where(rgb[..., 0] < 170, 2, 1)).astype(np.uint8)


calls: list[int] = []


def colour_predictor(batch: torch.Tensor) -> torch.Tensor:
    """One-hot logits of :func:`colour_classes`, so any correct blending reproduces the rule."""
    calls.append(batch.shape[0])
    rgb = (batch.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    cls = torch.from_numpy(colour_classes(rgb)).long()
    return torch.nn.functional.one_hot(cls, 3).permute(0, 3, 1, 2).float() * 5


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    return disc_slide(tmp_path_factory.mktemp("s") / "disc.tiff", 900, 1100)


def test_patch_grid_helpers():
    assert patch_starts(1000, 256, 256) == [0, 256, 512, 744]
    idx = TissueIndex(np.pad(np.ones((5, 5), bool), 5), (150, 150))  # 15x15 mask, centre third tissue
    assert idx.fraction(50, 50, 50, 50) == 1.0 and idx.fraction(0, 0, 40, 40) == 0.0
    assert 0.2 < idx.fraction(25, 25, 50, 50) < 0.3


@pytest.mark.parametrize("level,patch,overlap,blend", [(0, 256, 0.25, "gaussian"), (0, 200, 0.5, "constant"), (1, 128, 0.0, "gaussian")])
def test_blended_labels_equal_pixel_rule(slide_path, tmp_path, level, patch, overlap, blend):
    out = tmp_path / "lab.tiff"
    res = infer_slide(
        slide_path,
        colour_predictor,
        out,
        patch_size=patch,
        overlap=overlap,
        level=level,
        tissue_threshold=0.0,
        blend=blend,
        progress=False,
    )
    with open_slide(slide_path) as s, open_slide(out) as lab:
        H, W = s.levels[level].shape
        assert lab.shape == (H, W) and lab.mpp == pytest.approx(0.5 * s.levels[level].downsample)
        expect = colour_classes(s.read_region(level, 0, 0, H, W))
        got = lab.read_region(0, 0, 0, H, W)[..., 0]
    if level == 0:
        np.testing.assert_array_equal(got, expect)
    else:  # level 1 is a block mean: the rule flips only at colour edges
        assert np.mean(got == expect) > 0.99
    assert res.n_tissue == res.n_patches == res.n_predicted


def test_tissue_skipping_areas_and_outputs(slide_path, tmp_path):
    calls.clear()
    res = infer_slide(
        slide_path,
        colour_predictor,
        tmp_path / "l.tiff",
        patch_size=128,
        overlap=0.25,
        batch_size=5,
        overlay_path=tmp_path / "o.png",
        areas_path=tmp_path / "a.csv",
        class_names=["glass", "pink", "dark"],
        progress=False,
    )
    assert 0 < res.n_tissue == res.n_predicted < res.n_patches
    assert sum(calls) == res.n_predicted and max(calls) <= 5
    with open_slide(slide_path) as s, open_slide(tmp_path / "l.tiff") as lab:
        expect = colour_classes(s.read_region(0, 0, 0, 900, 1100))
        got = lab.read_region(0, 0, 0, 900, 1100)[..., 0]
    inside = expect > 0
    assert np.mean(got[inside] == expect[inside]) > 0.99  # tissue fully predicted
    assert (got[:60] == 0).all()  # far glass skipped -> background
    rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert [r["class_name"] for r in rows] == ["glass", "pink", "dark"]
    pixels = np.array([int(r["pixels"]) for r in rows])
    assert pixels.sum() == 900 * 1100
    np.testing.assert_array_equal(pixels, np.bincount(got.ravel(), minlength=3))
    assert float(rows[1]["area_mm2"]) == pytest.approx(pixels[1] * 0.25e-6)
    disc_mm2 = np.pi * 270**2 * 0.25e-6
    assert float(rows[1]["area_mm2"]) + float(rows[2]["area_mm2"]) == pytest.approx(disc_mm2, rel=0.02)
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "o.png"))
    assert png.ndim == 3 and png.shape[1] > png.shape[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "l.tiff", "o.png"]  # no temp files left


def test_iter_patches_skips_glass(slide_path):
    with open_slide(slide_path) as s:
        from liverseg_monai.io.slide import tissue_mask

        mask = tissue_mask(s.thumbnail(256))
        kept = list(iter_patches(s, 0, 128, 0.0, mask, tissue_threshold=0.5))
        everything = list(iter_patches(s, 0, 128, 0.0, None))
    assert len(everything) == 8 * 9 and 0 < len(kept) < len(everything)
    for p in kept:
        assert (p.y + 64 - 450) ** 2 + (p.x + 64 - 550) ** 2 < (270 + 91) ** 2


def test_no_tissue_gives_empty_label_and_warning(tmp_path):
    path = disc_slide(tmp_path / "glass.tiff", 300, 400, tissue=False)
    calls.clear()
    with pytest.warns(UserWarning, match="no tissue found"):
        res = infer_slide(
            path,
            colour_predictor,
            tmp_path / "g.tiff",
            patch_size=128,
            progress=False,
            areas_path=tmp_path / "g.csv",
        )
    assert calls == [] and res.n_predicted == 0
    with open_slide(tmp_path / "g.tiff") as lab:
        assert not lab.read_region(0, 0, 0, 300, 400).any()


def test_low_resolution_output_and_network(slide_path, tmp_path):
    def half(batch):
        return torch.nn.functional.avg_pool2d(colour_predictor(batch), 2)

    infer_slide(slide_path, half, tmp_path / "h.tiff", patch_size=128, tissue_threshold=0.0, progress=False)
    cm = compare_label_slides(tmp_path / "h.tiff", tmp_path / "h.tiff", 3)
    assert cm.sum() == 900 * 1100 and np.trace(cm) == cm.sum()

    net = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0]))  # always class 2
    torch.save(net.state_dict(), tmp_path / "model.pt")
    net = torch.nn.Conv2d(3, 4, 1)  # fresh weights: the checkpoint must be loaded
    res = run_slide_inference(
        net,
        [{"image": str(slide_path)}],
        tmp_path / "run",
        patch_size=256,
        batch_size=2,
        progress=False,
        checkpoint=tmp_path / "model.pt",
    )
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["disc_areas.csv", "disc_label.tiff", "disc_overlay.png", "disc_report.json", "slides.json"]
    assert json.loads((tmp_path / "run" / "slides.json").read_text())[0]["label"].endswith("disc_label.tiff")
    assert res[0]["predicted_patches"] > 0
    with open_slide(tmp_path / "run" / "disc_label.tiff") as lab:
        got = lab.read_region(0, 0, 0, 900, 1100)[..., 0]
    assert set(np.unique(got)) == {0, 2} and got[450, 550] == 2

    # evaluation against a reference label slide: the run's own output is a perfect reference
    item = {"image": str(slide_path), "label": str(tmp_path / "run" / "disc_label.tiff")}
    summary = evaluate_slides(tmp_path / "run", [item], tmp_path / "eval", ["glass", "a", "b", "c"])
    assert summary["n_cases"] == 1 and summary["pixel_accuracy"] == 1.0
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "confusion_matrix.csv",
        "per_case.csv",
        "summary.json",
    ]


MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from liverseg_monai.inferers.slide import infer_slide
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
    def predict(batch):
        sat = batch.max(1).values - batch.min(1).values
        return torch.stack([0.2 - sat, sat - 0.2], 1)
    for slide, label in zip(sys.argv[1::2], sys.argv[2::2]):  # the first run is a warm-up (lazy imports)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set size (VmHWM) to the current one
        before = status("VmRSS:")
        infer_slide(slide, predict, label, patch_size=256, overlap=0.25, batch_size=8, progress=False)
        print(status("VmHWM:") - before)
    """
)


@pytest.mark.timeout(300)
def test_memory_is_bounded_by_bands_not_slide_size(tmp_path):
    """8192^2 vs 2048^2 (16x the pixels): peak RSS growth differs by far less than one full-size map."""
    paths = {}
    for size in (512, 2048, 8192):
        slide = disc_slide(
            tmp_path / f"s{size}.tiff", size, size, compression="jpeg", radius=min(0.3, 600 / size)
        )
        paths[size] = [str(slide), str(tmp_path / f"l{size}.tiff")]
    growth = {}
    for size in (2048, 8192):  # one process each: freed memory stays with a process and hides growth
        run = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, *paths[512], *paths[size]],
            capture_output=True,
            text=True,
            timeout=280,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        growth[size] = int(run.stdout.split()[-1])
    small, large = growth[2048], growth[8192]
    full_probabilities = 8192 * 8192 * 2 * 4  # what holding the C-channel map would cost (512 MiB)
    assert large - small < 64 * 2**20, (small, large)
    assert large < full_probabilities / 4, (small, large)
    with open_slide(tmp_path / "l8192.tiff") as lab:
        assert lab.shape == (8192, 8192) and lab.read_region(2, 1024, 1024, 1, 1)[0, 0, 0] == 1
        assert lab.read_region(2, 100, 100, 1, 1)[0, 0, 0] == 0


def test_end_to_end_on_synthetic_slide(tmp_path):
    """synth slide -> run_slide_inference (tissue vs glass by saturation) -> evaluate_slides."""
    from monai.inferers import SimpleInferer

    from liverseg_monai.data.datalist import load_datalist
    from liverseg_monai.data.synth.slide import synth_slide

    synth_slide(tmp_path / "data", seed=2, width=1024, height=768, mpp=1.0, progress=False)
    items = load_datalist(tmp_path / "data", "testing", require=("image", "label"))

    class Saturation(torch.nn.Module):
        def forward(self, x):  # x normalised with mean 0.5, std 0.5 -> back to [0, 1]
            x = x * 0.5 + 0.5
            sat = x.max(1).values - x.min(1).values
            return torch.stack([0.08 - sat, sat - 0.08], 1) * 50

    res = run_slide_inference(
        Saturation(),
        items,
        tmp_path / "out",
        patch_size=256,
        level=0,
        class_names=["glass", "tissue"],
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        inferer=SimpleInferer(),
        progress=False,
    )
    assert 0 < res[0]["tissue_patches"] < res[0]["patches"]
    with open_slide(tmp_path / "out" / "slide_0_label.tiff") as pred, open_slide(items[0]["label"]) as ref:
        got = pred.read_region(0, 0, 0, 768, 1024)[..., 0]
        tissue = ref.read_region(0, 0, 0, 768, 1024)[..., 0] > 0
    iou = (tissue & (got == 1)).sum() / (tissue | (got == 1)).sum()
    assert iou > 0.85, iou  # image, reference label slide and prediction are aligned
    areas = list(csv.DictReader((tmp_path / "out" / "slide_0_areas.csv").open()))
    assert float(areas[1]["area_mm2"]) == pytest.approx((got == 1).sum() * 1e-6)


def test_traced_memory_does_not_grow_with_slide_size(tmp_path):
    """Same tissue on a 1024^2 and a 4096^2 slide (16x the pixels): the peak of the memory Python and NumPy
    allocate (tracemalloc, deterministic) stays the same, far below one full-size probability map."""
    import tracemalloc

    def predict(batch):
        sat = batch.max(1).values - batch.min(1).values
        return torch.stack([0.2 - sat, sat - 0.2], 1)

    peaks = {}
    for size in (1024, 4096):
        path = disc_slide(tmp_path / f"s{size}.tiff", size, size, compression="jpeg", radius=250 / size)
        tracemalloc.start()
        try:
            res = infer_slide(path, predict, tmp_path / f"l{size}.tiff", patch_size=256, thumbnail_size=256,
                              progress=False)
            peaks[size] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert 0 < res.n_predicted < res.n_patches
        with open_slide(tmp_path / f"l{size}.tiff") as lab:
            assert lab.shape == (size, size) and lab.read_region(0, size // 2, size // 2, 1, 1)[0, 0, 0] == 1
    full_map = 4096 * 4096 * 2 * 4  # the 2-class float32 probabilities of the large slide: 128 MiB
    assert peaks[4096] < peaks[1024] + 4 * 2**20, peaks
    assert peaks[4096] < full_map / 8, peaks


def test_slide_merger_divides_only_touched_chunks_and_equals_monai(tmp_path):
    """SlideMerger: MONAI ZarrAvgMerger's average where patches landed, NaN (no patch) elsewhere, and no
    output chunk written for the glass between them."""
    from monai.inferers import ZarrAvgMerger

    from liverseg_monai.inferers.slide import SlideMerger

    shape = [1, 3, 1000, 700]
    rng = np.random.default_rng(0)
    patches = [((0, 0), 128), ((64, 96), 128), ((700, 500), 200), ((872, 572), 128)]
    (tmp_path / "ours").mkdir()
    ours = SlideMerger(shape, directory=tmp_path / "ours", chunk_size=128)
    ref = ZarrAvgMerger(shape, store=str(tmp_path / "ref.zarr"), value_store=str(tmp_path / "v.zarr"),
                        count_store=str(tmp_path / "c.zarr"), chunks=(1, 3, 128, 128))
    for (y, x), size in patches:
        values = torch.as_tensor(rng.random((1, 3, size, size)), dtype=torch.float32)
        ours.aggregate(values, (y, x))
        ref.aggregate(values, (y, x))
    got = np.asarray(ours.finalize()[:])
    with np.errstate(invalid="ignore", divide="ignore"):
        want = np.asarray(ref.finalize()[:])
    assert got.shape == want.shape == tuple(shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))  # NaN exactly where no patch fell
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)])
    # touched: chunks (0..1, 0..1) from the first two patches, (5..7, 3..5) from the last two
    assert ours.touched == {(cy, cx) for cy in (0, 1) for cx in (0, 1)} | {(cy, cx) for cy in (5, 6, 7) for cx in (3, 4, 5)}
    assert ours.output.nchunks_initialized == len(ours.touched)
