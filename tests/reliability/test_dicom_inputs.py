"""Bad DICOM inputs give an InputError that names the folder or file and the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage
from pydicom.data import get_testdata_file

from liverseg_monai.data.synth.phantom import phantom_affine
from liverseg_monai.errors import InputError
from liverseg_monai.io.dicom import DicomSeriesReader, read_series, read_series_geometry, write_series

SHAPE = (8, 6, 5)


def series(folder: Path, seed: int = 0, spacing=(1.0, 1.0, 2.0)) -> list[Path]:
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1000, SHAPE).astype(np.int16)
    return write_series(folder, hu, phantom_affine(SHAPE, spacing, "LPS"), uid_entropy=f"bad-{seed}")


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_series(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM files") as err:
        read_series(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)


def test_missing_slice_names_the_neighbours(tmp_path):
    paths = series(tmp_path / "s")
    paths[2].unlink()
    with pytest.raises(InputError, match="missing slice") as err:
        read_series(tmp_path / "s")
    assert paths[1].name in str(err.value) and paths[3].name in str(err.value)
    with pytest.raises(InputError, match="missing slice"):
        read_series_geometry(tmp_path / "s")


def test_two_series_in_one_folder_lists_the_uids_and_series_uid_picks_one(tmp_path):
    series(tmp_path / "s", seed=0)
    other = series(tmp_path / "t", seed=1)
    for p in other:
        shutil.move(p, tmp_path / "s" / f"other_{p.name}")
    with pytest.raises(InputError, match="2 DICOM series") as err:
        read_series(tmp_path / "s")
    uid = str(pydicom.dcmread(tmp_path / "s" / f"other_{other[0].name}").SeriesInstanceUID)
    assert uid in str(err.value)
    array, _, meta = read_series(tmp_path / "s", series_uid=uid)
    assert array.shape == SHAPE and meta["series_instance_uid"] == uid


def test_inconsistent_spacing_orientation_and_size(tmp_path):
    paths = series(tmp_path / "a")
    ds = pydicom.dcmread(paths[3])
    ds.PixelSpacing = [0.5, 0.5]
    ds.save_as(paths[3])
    with pytest.raises(InputError, match="PixelSpacing") as err:
        read_series(tmp_path / "a")
    assert paths[3].name in str(err.value)

    paths = series(tmp_path / "b")
    ds = pydicom.dcmread(paths[1])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(paths[1])
    with pytest.raises(InputError, match="ImageOrientationPatient"):
        read_series(tmp_path / "b")

    paths = series(tmp_path / "c")
    ds = pydicom.dcmread(paths[4])
    pos = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 0.6]  # 2.6 mm instead of 2 mm
    ds.save_as(paths[4])
    with pytest.raises(InputError, match="inconsistent slice spacing"):
        read_series(tmp_path / "c")


def test_duplicate_position(tmp_path):
    paths = series(tmp_path / "s")
    ds = pydicom.dcmread(paths[0])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "s" / "copy.dcm")
    with pytest.raises(InputError, match="same position"):
        read_series(tmp_path / "s")


def test_truncated_file_is_named(tmp_path):
    paths = series(tmp_path / "s")
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 40])
    with pytest.raises(InputError) as err:
        read_series(tmp_path / "s")
    assert paths[2].name in str(err.value)


def test_non_ct_and_seg_given_as_image(tmp_path):
    (tmp_path / "mr").mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "mr" / "mr.dcm")
    with pytest.raises(InputError, match="modality is 'MR'") as err:
        read_series(tmp_path / "mr")
    assert "mr.dcm" in str(err.value)
    assert read_series(tmp_path / "mr", modality=None)[0].ndim == 3


def test_dicom_series_reader_raises_input_error_through_loadimage(tmp_path):
    paths = series(tmp_path / "s")
    paths[1].unlink()
    with pytest.raises(InputError, match="missing slice"):
        LoadImage(reader=DicomSeriesReader(), image_only=True)(str(tmp_path / "s"))


def test_seg_given_as_image(tmp_path):
    (tmp_path / "seg").mkdir()
    shutil.copy(get_testdata_file("liver_1frame.dcm"), tmp_path / "seg" / "1-1.dcm")
    with pytest.raises(InputError, match="is a DICOM-SEG") as err:
        read_series(tmp_path / "seg")
    assert "1-1.dcm" in str(err.value)


def test_seg_of_another_series(tmp_path):
    from liverseg_monai.io.dicom import read_seg, write_seg

    series(tmp_path / "a", seed=0)
    series(tmp_path / "b", seed=1)
    seg = write_seg(np.ones(SHAPE, np.uint8), tmp_path / "a", tmp_path / "a_seg.dcm", {1: "Liver"})
    with pytest.raises(InputError, match="references series") as err:
        read_seg(seg, tmp_path / "b", {"Liver": 1})
    assert "a_seg.dcm" in str(err.value)
    # a real SEG (pydicom's test file) against our series
    with pytest.raises(InputError, match="references series"):
        read_seg(get_testdata_file("liver_1frame.dcm"), tmp_path / "b", {"Liver": 1})


def test_seg_path_that_is_not_a_seg(tmp_path):
    from liverseg_monai.io.dicom import read_seg

    paths = series(tmp_path / "a")
    with pytest.raises(InputError, match="is not a DICOM-SEG"):
        read_seg(paths[0], tmp_path / "a", {"Liver": 1})
    with pytest.raises(InputError, match="does not exist"):
        read_seg(tmp_path / "missing.dcm", tmp_path / "a", {"Liver": 1})
