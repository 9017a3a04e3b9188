"""Synthetic pyramidal slides: format, geometry, labels, determinism, bounded memory."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import tifffile

from liverseg_monai.data.datalist import load_datalist
from liverseg_monai.data.synth.histo import HISTO_CLASSES
from liverseg_monai.data.synth.slide import synth_slide
from liverseg_monai.io.slide import open_slide


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("slide")
    synth_slide(out, seed=3, n=1, width=1280, height=1024, mpp=0.5, progress=False)
    return out


def test_dataset_json_lists_slide_and_label(slide_dir):
    content = json.loads((slide_dir / "dataset.json").read_text())
    assert content["testing"] == [{"image": "slide_0.tiff", "label": "slide_0_label.tiff"}]
    assert content["classes"] == list(HISTO_CLASSES) and content["mpp"] == 0.5
    items = load_datalist(slide_dir, "testing", require=("image", "label"))
    assert items[0]["image"].endswith("slide_0.tiff")
    assert sorted(p.name for p in slide_dir.iterdir()) == [
        "dataset.json",
        "slide_0.tiff",
        "slide_0_label.tiff",
    ]


def test_tiff_is_tiled_pyramidal_with_mpp(slide_dir):
    with tifffile.TiffFile(slide_dir / "slide_0.tiff") as tif:
        # generic pyramidal TIFF: levels are reduced-resolution pages of the main IFD chain
        assert [p.shape for p in tif.pages] == [(1024, 1280, 3), (512, 640, 3), (256, 320, 3)]
        assert [p.subfiletype for p in tif.pages] == [0, 1, 1]
        page = tif.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        assert page.compression == tifffile.COMPRESSION.JPEG
        num, den = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == 3 and abs(1e4 / (num / den) - 0.5) < 1e-6
        assert json.loads(page.description)["mpp"] == 0.5
    with tifffile.TiffFile(slide_dir / "slide_0_label.tiff") as tif:
        page = tif.pages[0]
        assert page.shape == (1024, 1280) and page.dtype == np.uint8 and len(tif.pages) == 3
        assert page.compression in (tifffile.COMPRESSION.ADOBE_DEFLATE, tifffile.COMPRESSION.DEFLATE)


def test_ome_layout_and_factor_4(tmp_path):
    synth_slide(
        tmp_path, seed=0, width=1100, height=640, mpp=0.25, layout="ome", level_factor=4, progress=False
    )
    with tifffile.TiffFile(tmp_path / "slide_0.tiff") as tif:
        assert tif.is_ome and 'PhysicalSizeX="0.25"' in tif.ome_metadata
        assert [lv.shape for lv in tif.series[0].levels] == [(640, 1100, 3), (160, 275, 3)]
    with open_slide(tmp_path / "slide_0.tiff") as img, open_slide(tmp_path / "slide_0_label.tiff") as lab:
        assert img.mpp == lab.mpp == 0.25 and len(img.levels) == len(lab.levels) == 2
        assert img.levels[1].downsample == 4.0 and img.level_mpp(1) == 1.0


def test_labels_match_image(slide_dir):
    with open_slide(slide_dir / "slide_0.tiff") as img, open_slide(slide_dir / "slide_0_label.tiff") as lab:
        assert img.mpp == lab.mpp == 0.5 and img.shape == lab.shape
        rgb = img.read_region(0, 0, 0, 1024, 1280).astype(float)
        label = lab.read_region(0, 0, 0, 1024, 1280)[..., 0]
    frac = np.bincount(label.ravel(), minlength=7) / label.size
    assert 0.3 < frac[0] < 0.95  # a large glass area to skip, and tissue
    assert label.max() < len(HISTO_CLASSES) and (frac[1:3] > 0.01).all()
    glass, tissue = rgb[label == 0], rgb[(label == 1) | (label == 2)]
    assert glass.mean() > 215 and glass.std(0).max() < 15
    assert tissue.mean() < glass.mean() - 25
    assert (tissue[:, 0] - tissue[:, 1]).mean() > 20  # eosin pink: red above green


def test_deterministic(tmp_path):
    a = synth_slide(tmp_path / "a", seed=1, width=512, height=384, mpp=1.0, progress=False).parent
    b = synth_slide(tmp_path / "b", seed=1, width=512, height=384, mpp=1.0, progress=False).parent
    la = tifffile.imread(a / "slide_0_label.tiff", level=0)
    np.testing.assert_array_equal(la, tifffile.imread(b / "slide_0_label.tiff", level=0))
    np.testing.assert_array_equal(
        tifffile.imread(a / "slide_0.tiff", level=0), tifffile.imread(b / "slide_0.tiff", level=0)
    )


def test_streaming_memory_does_not_grow_with_height(tmp_path):
    """Tile-by-tile generation: 8x the rows must not mean 8x the memory."""

    def peak(height: int) -> int:
        tracemalloc.start()
        synth_slide(tmp_path / f"h{height}", seed=0, width=512, height=height, mpp=2.0, progress=False)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(256), peak(2048)
    full_rgb = 2048 * 512 * 3
    assert large < small + full_rgb / 2, (small, large)


def test_full_realism_slide(tmp_path):
    """realism="full": lobular tissue with portal tracts and vessels, a stain site per slide, deterministic."""
    kw = dict(seed=1, n=2, width=512, height=384, mpp=1.0, progress=False, realism="full")
    path = synth_slide(tmp_path / "a", **kw)
    content = json.loads(path.read_text())
    assert [it["site"] for it in content["testing"]] == [0, 1] and len(content["stain_sites"]) == 2
    assert content["stain_sites"][0]["h_vector"] != content["stain_sites"][1]["h_vector"]
    label = tifffile.imread(tmp_path / "a" / "slide_0_label.tiff", level=0)
    assert label.shape == (384, 512) and label.max() < len(HISTO_CLASSES)
    assert (np.bincount(label.ravel(), minlength=7)[:2] > 0).all()
    synth_slide(tmp_path / "b", **kw)
    for name in ("slide_0.tiff", "slide_1_label.tiff"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "a" / name, level=0),
                                      tifffile.imread(tmp_path / "b" / name, level=0))
    basic = tifffile.imread(synth_slide(tmp_path / "c", seed=1, width=512, height=384, mpp=1.0,
                                        progress=False).parent / "slide_0.tiff", level=0)
    assert not np.array_equal(basic, tifffile.imread(tmp_path / "a" / "slide_0.tiff", level=0))
