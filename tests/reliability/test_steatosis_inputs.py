"""Bad inputs to the steatosis pipeline: clear errors naming the file, no partial output."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from liverseg_monai.errors import InputError
from liverseg_monai.inferers.instances import dataset_mpp, infer_slide_instances
from liverseg_monai.transforms.clump_splitting import (
    apply_review,
    bootstrap_labels,
    read_rgb,
    segment_droplets,
)
from tests.inferers.test_instances import component_net


def _tile(size=64):
    img = np.full((size, size, 3), (232, 158, 190), np.uint8)
    img[20:34, 20:34] = 250
    return img


def test_corrupt_tile_names_file_and_writes_nothing(tmp_path):
    src = tmp_path / "tiles"
    src.mkdir()
    Image.fromarray(_tile()).save(src / "a.png")
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # truncated PNG
    with pytest.raises(InputError, match="b.png"):
        bootstrap_labels(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        bootstrap_labels(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(InputError, match="does not exist"):
        bootstrap_labels(tmp_path / "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_review_csv_problems(tmp_path):
    bad = tmp_path / "review.csv"
    bad.write_text("image,droplet_id\nx.png,1\n")
    with pytest.raises(InputError, match="missing columns"):
        apply_review(bad, tmp_path / "ds")
    src = tmp_path / "tiles"
    src.mkdir()
    Image.fromarray(_tile()).save(src / "a.png")
    review = bootstrap_labels(src, tmp_path / "boot", montage=False)
    (tmp_path / "boot" / "instances" / "a.png").unlink()
    with pytest.raises(InputError, match="instances/a.png"):
        apply_review(review, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("value", ['"abc"', "0", "1000"])
def test_bad_mpp_in_dataset(tmp_path, value):
    (tmp_path / "dataset.json").write_text(f'{{"mpp": {value}, "testing": []}}')
    with pytest.raises(InputError, match="dataset.json"):
        dataset_mpp(tmp_path)


def test_other_tools_tiles_are_read(tmp_path):
    """RGBA PNG, greyscale, 16-bit TIFF and channel-first arrays all give the same droplets."""
    img = _tile()
    Image.fromarray(np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])).save(tmp_path / "rgba.png")
    tifffile.imwrite(tmp_path / "rgb16.tif", img.astype(np.uint16) * 257)
    expected = segment_droplets(img)
    for name in ("rgba.png", "rgb16.tif"):
        rgb = read_rgb(tmp_path / name)
        assert rgb.shape == img.shape and rgb.dtype == np.uint8
        assert np.array_equal(segment_droplets(rgb), expected), name
    assert np.array_equal(segment_droplets(img.transpose(2, 0, 1)), expected)
    assert np.array_equal(segment_droplets(img / 255.0), expected)


def test_tiny_or_odd_tiles(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match="tiny.png"):
        read_rgb(tmp_path / "tiny.png")
    blank = np.full((32, 32, 3), 255, np.uint8)  # only glass: no droplets, no crash
    assert segment_droplets(blank).max() == 0


def test_slide_that_is_not_a_slide(tmp_path):
    bad = tmp_path / "slide.svs"
    bad.write_bytes(b"not a slide at all")
    with pytest.raises(InputError, match="slide.svs"):
        infer_slide_instances(bad, lambda x: x[:, :2] * 0, tmp_path / "out", mpp=0.5)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------------ whole slides
def _slide(path, tissue=True, mpp=0.5, shape=(320, 384)):
    from liverseg_monai.io.slide import write_pyramid

    rgb = np.full((*shape, 3), 226, np.uint8)  # glass
    if tissue:
        rgb[60:260, 60:320] = (230, 150, 190)
        rgb[100:116, 100:116] = 250
    write_pyramid(path, rgb, mpp=mpp, tile_size=64, compression="zlib")
    return path


def test_truncated_slide_names_file_and_writes_nothing(tmp_path):
    good = _slide(tmp_path / "good.tif")
    bad = tmp_path / "cut.tif"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.tif"):
        infer_slide_instances(bad, component_net, tmp_path / "out", tile=64, overlap=16)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_slide_without_tissue_is_an_empty_result_with_a_warning(tmp_path):
    import tifffile

    glass = _slide(tmp_path / "glass.tif", tissue=False)
    with pytest.warns(UserWarning, match="no tissue"):
        summary = infer_slide_instances(glass, component_net, tmp_path / "out", tile=64, overlap=16)
    assert summary["n_droplets"] == 0 and summary["n_tissue_tiles"] == 0
    assert summary["steatosis_fraction"] is None and "no tissue" in summary["warning"]
    lab = tifffile.imread(tmp_path / "out" / "glass_instances.tif")
    assert lab.shape == (320, 384) and lab.max() == 0
    assert (tmp_path / "out" / "glass_droplets.csv").read_text().splitlines() == [
        "droplet_id,centroid_y,centroid_x,area_px,area_um2,perimeter_um,eccentricity,elongation,score"]
    assert (tmp_path / "out" / "glass_overlay.png").is_file()


def test_slide_without_mpp_names_file(tmp_path):
    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, np.full((64, 64, 3), 200, np.uint8), photometric="rgb")
    with pytest.raises(InputError, match="nompp.tif.*microns"):
        infer_slide_instances(path, component_net, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_slide_in_a_list_stops_before_any_output(tmp_path):
    from liverseg_monai.inferers.instances import run_slide_instances

    good = _slide(tmp_path / "good.tif")
    (tmp_path / "notes.tif").write_text("II* this is text, not a TIFF")
    with pytest.raises(InputError, match="notes.tif"):
        run_slide_instances(component_net, [{"image": good}, {"image": tmp_path / "notes.tif"}], tmp_path / "out",
                            tile=64, overlap=16)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_failure_while_writing_leaves_no_partial_output(tmp_path, monkeypatch):
    from liverseg_monai.inferers import instances

    good = _slide(tmp_path / "good.tif")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(instances, "_thumbnail_overlay", fail)  # after the label TIFF and the table
    with pytest.raises(OSError, match="disk full"):
        infer_slide_instances(good, component_net, tmp_path / "out", tile=64, overlap=16)
    assert list((tmp_path / "out").iterdir()) == []
