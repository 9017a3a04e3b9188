"""Slide reading (tile-wise regions, levels, mpp sources), tissue masks and pyramidal writing."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile

from liverseg_monai.errors import InputError
from liverseg_monai.io.slide import DiskArray, SlideLabelWriter, open_slide, tissue_mask, write_pyramid


def _pattern(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 7 + y) % 251, (y * 3) % 253, (x + y * 5) % 255], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def lossless(tmp_path_factory):
    img = _pattern(700, 1000)
    path = tmp_path_factory.mktemp("s") / "rgb.tiff"
    write_pyramid(
        path,
        lambda y, x, h, w: img[y : y + h, x : x + w],
        mpp=0.25,
        shape=img.shape,
        compression="zlib",
        min_size=250,
    )
    return path, img


def test_levels_and_mpp(lossless):
    path, img = lossless
    with open_slide(path) as s:
        assert [lv.shape for lv in s.levels] == [(700, 1000), (350, 500), (175, 250)]
        assert [lv.downsample for lv in s.levels] == [1.0, 2.0, 4.0]
        assert s.mpp == 0.25 and s.level_mpp(2) == 1.0 and s.channels == 3
        assert s.level_for_mpp(0.9) == 2


def test_read_region_exact_with_padding(lossless):
    path, img = lossless
    with open_slide(path) as s:
        np.testing.assert_array_equal(s.read_region(0, 123, 456, 300, 301), img[123:423, 456:757])
        edge = s.read_region(0, 600, 900, 200, 200)
        np.testing.assert_array_equal(edge[:100, :100], img[600:, 900:])
        assert (edge[100:] == 255).all() and (edge[:, 100:] == 255).all()
        neg = s.read_region(0, -10, -20, 30, 40, fill=0)
        assert (neg[:10] == 0).all() and (neg[:, :20] == 0).all()
        np.testing.assert_array_equal(neg[10:, 20:], img[:20, :20])
        lvl1 = s.read_region(1, 0, 0, 350, 500).astype(float)
        expect = img.reshape(350, 2, 500, 2, 3).astype(float).mean((1, 3))
        assert np.abs(lvl1 - expect).max() <= 1.0


def test_read_region_decodes_only_needed_tiles(lossless):
    path, _ = lossless
    with open_slide(path) as s:
        calls = []
        decode = s._decode
        s._decode = lambda *a, **k: calls.append(a[2]) or decode(*a, **k)
        s.read_region(0, 10, 10, 20, 20)
        assert len(calls) == 1
        s.read_region(0, 250, 250, 20, 20)  # straddles 4 tiles, one of them cached
        assert len(calls) == 4
        s.read_region(0, 10, 10, 20, 20)
        assert len(calls) == 4


def test_thumbnail(lossless):
    path, img = lossless
    with open_slide(path) as s:
        th = s.thumbnail(100)
    assert max(th.shape[:2]) <= 100 and th.shape[2] == 3
    assert th.shape[:2] == (70, 100)


def test_mpp_sources(tmp_path):
    data = _pattern(64, 64)
    # Aperio SVS-style description
    tifffile.imwrite(
        tmp_path / "a.tif",
        data,
        tile=(32, 32),
        description="Aperio Image Library v12\n64x64 |AppMag = 20|MPP = 0.5020",
    )
    assert open_slide(tmp_path / "a.tif").mpp == pytest.approx(0.502)
    # resolution tags in centimetres
    tifffile.imwrite(
        tmp_path / "b.tif", data, tile=(32, 32), resolution=(40000, 40000), resolutionunit="CENTIMETER"
    )
    assert open_slide(tmp_path / "b.tif").mpp == pytest.approx(0.25)
    # ImageJ: unit micron with pixels per micron
    tifffile.imwrite(
        tmp_path / "c.tif",
        data,
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"unit": "micron", "axes": "YXS"},
    )
    assert open_slide(tmp_path / "c.tif").mpp == pytest.approx(0.5)
    # a 72 dpi screen default is not a microscope resolution
    tifffile.imwrite(tmp_path / "d.tif", data, tile=(32, 32), resolution=(72, 72), resolutionunit="INCH")
    with pytest.raises(InputError, match="d.tif.*microns-per-pixel"):
        open_slide(tmp_path / "d.tif")
    assert open_slide(tmp_path / "d.tif", mpp=0.3).mpp == 0.3
    assert open_slide(tmp_path / "d.tif", require_mpp=False).mpp is None


def test_ome_subifd_layout(tmp_path):
    img = _pattern(600, 520)
    write_pyramid(tmp_path / "o.tiff", img, mpp=0.8, compression="zlib", layout="ome", min_size=300)
    with tifffile.TiffFile(tmp_path / "o.tiff") as tif:
        assert tif.is_ome and len(tif.pages) == 1 and len(tif.series[0].levels) == 2
    with open_slide(tmp_path / "o.tiff") as s:
        assert s.mpp == 0.8 and [lv.shape for lv in s.levels] == [(600, 520), (300, 260)]
        np.testing.assert_array_equal(s.read_region(0, 0, 0, 600, 520), img)


def test_pages_layout_reads_in_monai_wsireader(lossless):
    """The default layout is a generic pyramidal TIFF that MONAI's WSIReader understands."""
    from monai.data import WSIReader

    path, img = lossless
    reader = WSIReader(backend="tifffile", level=0)
    wsi = reader.read(str(path))
    assert reader.get_level_count(wsi) == 3 and reader.get_size(wsi, 1) == (350, 500)
    assert reader.get_mpp(wsi, 0) == pytest.approx((0.25, 0.25))
    patch, _ = reader.get_data(wsi, location=(100, 200), size=(64, 80), level=0)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(patch), 0, -1), img[100:164, 200:280])


def test_stripped_tiff_and_separate_page_pyramid(tmp_path):
    img = _pattern(300, 400)
    tifffile.imwrite(
        tmp_path / "strips.tif", img, rowsperstrip=64, resolution=(20000, 20000), resolutionunit="CENTIMETER"
    )
    with open_slide(tmp_path / "strips.tif") as s:
        np.testing.assert_array_equal(s.read_region(0, 100, 50, 150, 300), img[100:250, 50:350])
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:  # pyramid as plain pages, no SubIFDs
        tif.write(img, tile=(64, 64), resolution=(20000, 20000), resolutionunit="CENTIMETER")
        tif.write(img[::2, ::2].copy(), tile=(64, 64))
    with open_slide(tmp_path / "pages.tif") as s:
        assert [lv.shape for lv in s.levels] == [(300, 400), (150, 200)]
        np.testing.assert_array_equal(s.read_region(1, 0, 0, 150, 200), img[::2, ::2])


def test_tissue_mask():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(238, 3, (200, 300, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:200, 0:300]
    disc = (yy - 100) ** 2 + (xx - 150) ** 2 < 60**2
    img[disc] = np.clip(rng.normal((215, 140, 185), 12, (disc.sum(), 3)), 0, 255).astype(np.uint8)
    img[95:105, 145:155] = 245  # a lumen inside the tissue: filled
    img[5:8, 5:8] = (200, 120, 170)  # a speck: removed
    mask = tissue_mask(img)
    iou = (mask & disc).sum() / (mask | disc).sum()
    assert iou > 0.95 and not mask[:20, :20].any()
    glass = np.clip(rng.normal(238, 3, (200, 300, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(glass).any()
    grey = img.mean(-1).astype(np.uint8)  # a grey scan: darker tissue
    assert ((tissue_mask(grey) & disc).sum() / (tissue_mask(grey) | disc).sum()) > 0.95


def test_disk_array_roundtrip(tmp_path):
    a = DiskArray(tmp_path / "a.raw", (50, 30, 2), np.int16)
    band = np.arange(10 * 30 * 2, dtype=np.int16).reshape(10, 30, 2)
    a[20:30] = band
    np.testing.assert_array_equal(a[20:30, 5:9], band[:, 5:9])
    assert (a[0:20] == 0).all() and a[25].shape == (30, 2)
    a.close()


def test_label_writer_sources_and_atomicity(tmp_path):
    lab = (np.arange(300 * 520).reshape(300, 520) % 5).astype(np.uint8)
    d = DiskArray(tmp_path / "lab.raw", lab.shape)
    d[0:300] = lab
    SlideLabelWriter(tmp_path / "a.tiff", lab.shape, mpp=1.5, tile_size=128).write(d)
    SlideLabelWriter(tmp_path / "b.tiff", lab.shape, mpp=1.5).write(
        lambda y, x, h, w: lab[y : y + h, x : x + w]
    )
    for name in ("a.tiff", "b.tiff"):
        with open_slide(tmp_path / name) as s:
            assert s.mpp == 1.5 and s.channels == 1
            np.testing.assert_array_equal(s.read_region(0, 0, 0, 300, 520)[..., 0], lab)
            np.testing.assert_array_equal(s.read_region(1, 0, 0, 150, 260)[..., 0], lab[::2, ::2])

    def broken(y, x, h, w):
        if y > 0:
            raise RuntimeError("prediction failed")
        return lab[y : y + h, x : x + w]

    with pytest.raises(RuntimeError):
        SlideLabelWriter(tmp_path / "c.tiff", lab.shape, mpp=1.5).write(broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tiff", "b.tiff", "lab.raw"]


def test_write_pyramid_memory_is_bounded(tmp_path):
    """Streaming: peak traced memory depends on the width (row bands), not on the height."""
    tile = _pattern(256, 256)

    def src(y, x, h, w):
        return tile[:h, :w]

    def peak(height: int) -> int:
        tracemalloc.start()
        write_pyramid(tmp_path / f"h{height}.tiff", src, mpp=0.5, shape=(height, 4096, 3))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(512), peak(4096)
    assert large < small + 4 * 2**20, (small, large)
    assert large < 4096 * 4096 * 3 / 3  # a full level 0 would be 48 MiB
    with open_slide(tmp_path / "h4096.tiff") as s:
        assert len(s.levels) == 4 and s.levels[-1].shape == (512, 512)


@pytest.mark.parametrize("variant", ["planar", "rgba", "uint16"])
def test_other_tiff_flavours(tmp_path, variant):
    """Planar RGB, RGBA (alpha dropped) and 16-bit grey TIFFs from other tools read correctly."""
    img = _pattern(300, 400)
    opts = dict(tile=(64, 64), resolution=(20000, 20000), resolutionunit="CENTIMETER")
    path = tmp_path / f"{variant}.tif"
    if variant == "planar":
        tifffile.imwrite(
            path, np.moveaxis(img, -1, 0).copy(), planarconfig="separate", photometric="rgb", **opts
        )
        expect = img
    elif variant == "rgba":
        rgba = np.concatenate([img, np.full((300, 400, 1), 255, np.uint8)], -1)
        tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"], **opts)
        expect = img
    else:
        expect = img[..., :1].astype(np.uint16) * 250
        tifffile.imwrite(path, expect[..., 0], **opts)
    with open_slide(path) as s:
        assert s.mpp == 0.5 and s.channels == expect.shape[-1]
        np.testing.assert_array_equal(s.read_region(0, 10, 20, 200, 300), expect[10:210, 20:320])


def test_openslide_reads_the_default_layout(lossless):
    """OpenSlide (optional) sees every level and the mpp, and its backend returns the same pixels."""
    pytest.importorskip("openslide")
    path, img = lossless
    with open_slide(path, backend="openslide") as s, open_slide(path) as t:
        assert type(s).__name__ == "OpenSlideSlide" and s.mpp == pytest.approx(0.25)
        assert [lv.shape for lv in s.levels] == [lv.shape for lv in t.levels]
        for level in range(len(s.levels)):
            np.testing.assert_array_equal(
                s.read_region(level, 30, 40, 100, 120), t.read_region(level, 30, 40, 100, 120)
            )
        np.testing.assert_array_equal(s.read_region(0, 0, 0, 700, 1000), img)


def test_pyramidal_slides_are_told_from_tiles(tmp_path):
    """A pyramid (any size) is a whole slide; a one-page TIFF or a PNG is a tile. LoadTiled refuses slides."""
    from PIL import Image

    from liverseg_monai.io.slide import is_whole_slide
    from liverseg_monai.transforms.tiles import LoadTiled

    small = write_pyramid(tmp_path / "small.tiff", np.full((600, 700, 3), 200, np.uint8), mpp=0.5, min_size=256)
    ome = write_pyramid(tmp_path / "s.ome.tiff", np.full((600, 700, 3), 200, np.uint8), mpp=0.5, min_size=256,
                        layout="ome")
    tifffile.imwrite(tmp_path / "tile.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "tile.png")
    assert is_whole_slide(small) and is_whole_slide(ome)
    assert not is_whole_slide(tmp_path / "tile.tif") and not is_whole_slide(tmp_path / "tile.png")
    for slide in (small, ome):
        with pytest.raises(InputError, match=r"s\.?\w*\.tiff: is a pyramidal whole-slide image.*inference_slide\.json"):
            LoadTiled(label_key=None)({"image": str(slide)})
    assert LoadTiled(label_key=None)({"image": str(tmp_path / "tile.tif")})["image"].shape == (3, 64, 64)
