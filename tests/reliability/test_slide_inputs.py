"""Bad slide inputs: a clear InputError naming the file (and the tile), never partial output."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from liverseg_monai.errors import InputError
from liverseg_monai.inferers.slide import infer_slide, run_slide_inference
from liverseg_monai.io.slide import open_slide, write_pyramid


def _slide(path, compression="zlib", size=(600, 700)):
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    write_pyramid(path, lambda y, x, h, w: tile[:h, :w], mpp=0.5, shape=(*size, 3), compression=compression)
    return path


def _predict(batch: torch.Tensor) -> torch.Tensor:
    return torch.cat([batch[:, :1], 1 - batch[:, :1]], 1)


def _read_all(path):
    with open_slide(path) as s:
        for lv in s.levels:
            s.read_region(lv.index, 0, 0, lv.height, lv.width)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nothere.tiff: slide file does not exist"):
        open_slide(tmp_path / "nothere.tiff")


def test_not_a_tiff(tmp_path):
    (tmp_path / "notes.tiff").write_text("II* this is not really a TIFF")
    with pytest.raises(InputError, match="notes.tiff: not a readable TIFF slide"):
        open_slide(tmp_path / "notes.tiff")
    (tmp_path / "photo.svs").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    try:
        import openslide  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="photo.svs: not a TIFF-based slide.*openslide"):
            open_slide(tmp_path / "photo.svs")
    else:
        with pytest.raises(InputError, match="photo.svs"):
            open_slide(tmp_path / "photo.svs")


def test_truncated_file_names_file_and_tile(tmp_path):
    path = _slide(tmp_path / "cut.tiff")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(InputError, match=r"cut.tiff: level 0 tile \(row \d+, column \d+\) is truncated"):
        _read_all(path)


def test_corrupt_tile_names_the_tile(tmp_path):
    path = _slide(tmp_path / "bad.tiff")
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[0].keyframe
        offset, count = page.dataoffsets[3], page.databytecounts[3]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(min(count, 64)))
    with open_slide(path) as s:
        s.read_region(0, 0, 0, 256, 256)  # an intact tile still reads
        with pytest.raises(InputError, match=r"bad.tiff: level 0 tile \(row 1, column 0\) cannot be decoded"):
            s.read_region(0, 256, 0, 10, 10)


def test_missing_mpp_is_an_error_unless_given(tmp_path):
    img = np.full((300, 300, 3), 200, np.uint8)
    tifffile.imwrite(tmp_path / "nompp.tif", img, tile=(128, 128), photometric="rgb")
    with pytest.raises(InputError, match="nompp.tif: no microns-per-pixel"):
        infer_slide(tmp_path / "nompp.tif", _predict, tmp_path / "out" / "l.tiff", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    res = infer_slide(
        tmp_path / "nompp.tif",
        _predict,
        tmp_path / "out" / "l.tiff",
        mpp=0.25,
        tissue_threshold=0,
        progress=False,
    )
    assert res.mpp == 0.25


def test_image_stack_is_not_a_slide(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 64, 64), np.uint8), imagej=True)
    with pytest.raises(InputError, match="stack.tif: is an image stack"):
        open_slide(tmp_path / "stack.tif", mpp=1.0)


def test_failed_inference_leaves_no_partial_output(tmp_path):
    path = _slide(tmp_path / "ok.tiff")
    calls = []

    def flaky(batch):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("out of memory")
        return _predict(batch)

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="out of memory"):
        infer_slide(
            path,
            flaky,
            out / "l.tiff",
            patch_size=128,
            tissue_threshold=0,
            batch_size=1,
            overlay_path=out / "o.png",
            areas_path=out / "a.csv",
            progress=False,
        )
    assert list(out.iterdir()) == []


def test_truncated_slide_in_run_stops_with_input_error(tmp_path):
    path = _slide(tmp_path / "cut.tiff", size=(1024, 1024))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    net = torch.nn.Conv2d(3, 2, 1)
    with pytest.raises(InputError, match="cut.tiff"):
        run_slide_inference(
            net, [{"image": str(path)}], tmp_path / "run", patch_size=128, tissue_threshold=0, progress=False
        )
    assert not (tmp_path / "run" / "cut_label.tiff").exists()
    assert not list((tmp_path / "run").glob(".*"))
