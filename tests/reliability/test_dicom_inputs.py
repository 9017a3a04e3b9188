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


# ------------------------------------------------------------------------------ prepare hcc-tace


@pytest.fixture(scope="module")
def hcc_raw(tmp_path_factory) -> Path:
    from liverseg_monai.data.synth.hcc import synth_hcc

    out = tmp_path_factory.mktemp("hcc_raw")
    synth_hcc(out, seed=4, n=3, size=(16, 16, 8), extra_series=False)
    return out


def _copy(raw: Path, dest: Path) -> Path:
    shutil.copytree(raw, dest)
    return dest


def test_prepare_patient_without_seg(hcc_raw, tmp_path):
    from liverseg_monai.data.prepare.hcc_tace import prepare_hcc_tace

    src = _copy(hcc_raw, tmp_path / "src")
    for seg in (src / "HCC_002").glob("*/300-*"):
        shutil.rmtree(seg)
    with pytest.raises(InputError, match="HCC_002 has CT series but no DICOM-SEG") as err:
        prepare_hcc_tace(src, tmp_path / "out")
    assert "HCC_002" in str(err.value.path)
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match="HCC_002 has no DICOM-SEG"):
        prepare_hcc_tace(src, tmp_path / "out", skip_incomplete=True)
    assert not (tmp_path / "out" / "imagesTr" / "HCC_002.nii.gz").exists()


def test_prepare_seg_referencing_a_missing_series(hcc_raw, tmp_path):
    from liverseg_monai.data.prepare.hcc_tace import prepare_hcc_tace

    src = _copy(hcc_raw, tmp_path / "src")
    seg = next((src / "HCC_003").glob("*/300-*/1-1.dcm"))
    ds = pydicom.dcmread(seg)
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4.5.6.7"
    ds.save_as(seg)
    with pytest.raises(InputError, match="references CT series 1.2.3.4.5.6.7") as err:
        prepare_hcc_tace(src, tmp_path / "out")
    assert str(seg) in str(err.value)
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match="patient HCC_003 left out"):
        prepare_hcc_tace(src, tmp_path / "out", skip_incomplete=True)
    assert sorted(p.name for p in (tmp_path / "out" / "labelsTr").iterdir()) == ["HCC_001.nii.gz", "HCC_002.nii.gz"]


def test_prepare_seg_of_another_patients_series(hcc_raw, tmp_path):
    from liverseg_monai.data.prepare.hcc_tace import prepare_hcc_tace

    src = _copy(hcc_raw, tmp_path / "src")
    seg1 = next((src / "HCC_001").glob("*/300-*/1-1.dcm"))
    seg2 = next((src / "HCC_002").glob("*/300-*/1-1.dcm"))
    ds = pydicom.dcmread(seg2)
    ds.PatientID = "HCC_001"  # a SEG filed under patient 1 that segments patient 2's series
    seg1.unlink()
    ds.save_as(seg1)
    with pytest.raises(InputError) as err:
        prepare_hcc_tace(src, tmp_path / "out")
    assert "1-1.dcm" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_prepare_clinical_table_problems(hcc_raw, tmp_path):
    import csv

    from liverseg_monai.data.prepare.hcc_tace import prepare_hcc_tace
    from liverseg_monai.data.synth.hcc import CLINICAL_NAME

    rows = list(csv.DictReader((hcc_raw / CLINICAL_NAME).open()))

    def table(name: str, rows: list[dict]) -> Path:
        path = tmp_path / name
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path

    no_bclc = table("no_bclc.csv", [{k: v for k, v in r.items() if k != "BCLC"} for r in rows])
    with pytest.raises(InputError, match="missing clinical column.*BCLC") as err:
        prepare_hcc_tace(hcc_raw, tmp_path / "out", clinical=no_bclc)
    assert str(no_bclc) in str(err.value) and not (tmp_path / "out").exists()

    no_id = table("no_id.csv", [{("Subject" if k == "TCIA_ID" else k): v for k, v in r.items()} for r in rows])
    with pytest.raises(InputError, match="no patient identifier column"):
        prepare_hcc_tace(hcc_raw, tmp_path / "out", clinical=no_id)

    strangers = table("strangers.csv", [{**r, "TCIA_ID": f"XYZ_{i}"} for i, r in enumerate(rows)])
    with pytest.raises(InputError, match="none of its 3 patients") as err:
        prepare_hcc_tace(hcc_raw, tmp_path / "out", clinical=strangers)
    assert str(strangers) in str(err.value) and not (tmp_path / "out").exists()

    with pytest.raises(InputError, match="clinical table not found"):
        prepare_hcc_tace(hcc_raw, tmp_path / "out", clinical=tmp_path / "nope.csv")

    partial = table("partial.csv", [{**rows[0], "TCIA_ID": "HCC-001"}, {**rows[1], "TCIA_ID": "HCC_999"}])
    with pytest.warns(UserWarning) as record:
        prepare_hcc_tace(hcc_raw, tmp_path / "out", clinical=partial)
    messages = " ".join(str(w.message) for w in record)
    assert "HCC_999" in messages and "HCC_002" in messages and "HCC_003" in messages
    ids = [r["patient_id"] for r in csv.DictReader((tmp_path / "out" / "clinical.csv").open())]
    assert ids == ["HCC_001", "HCC_999"]  # HCC-001 matched to the imaging ID, the unknown kept


def test_prepare_missing_source(tmp_path):
    from liverseg_monai.data.prepare.hcc_tace import prepare_hcc_tace

    with pytest.raises(InputError, match="does not exist"):
        prepare_hcc_tace(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM CT series"):
        prepare_hcc_tace(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_gantry_tilt_and_slice_size(tmp_path):
    paths = series(tmp_path / "tilt")
    for k, path in enumerate(paths):  # shear the stack: each slice shifted 1 mm along y
        ds = pydicom.dcmread(path)
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1] + k * 1.0, pos[2]]
        ds.save_as(path)
    with pytest.raises(InputError, match="gantry tilt"):
        read_series(tmp_path / "tilt")

    paths = series(tmp_path / "size")
    ds = pydicom.dcmread(paths[2])
    ds.Rows = ds.Rows - 1
    ds.save_as(paths[2])
    with pytest.raises(InputError, match="slice size") as err:
        read_series(tmp_path / "size")
    assert paths[2].name in str(err.value)


def test_seg_label_whose_series_is_not_next_to_it(tmp_path):
    from liverseg_monai.io.dicom import write_seg

    series(tmp_path / "study" / "ct")
    seg = write_seg(np.ones(SHAPE, np.uint8), tmp_path / "study" / "ct", tmp_path / "a" / "b" / "seg" / "1-1.dcm", {1: "Liver"})
    with pytest.raises(InputError, match="the series it references") as err:
        LoadImage(reader=DicomSeriesReader(), image_only=True)(str(seg))
    assert "1-1.dcm" in str(err.value)
    with pytest.raises(InputError, match="no segment labelled 'Mass'"):  # HCC-TACE-Seg labels by default
        LoadImage(reader=DicomSeriesReader(series_root=tmp_path / "study"), image_only=True)(str(seg))
    reader = DicomSeriesReader(series_root=tmp_path / "study", segment_labels={"Liver": 1})
    got = LoadImage(reader=reader, image_only=True)(str(seg))
    assert tuple(got.shape) == SHAPE and float(got.min()) == 1.0


def test_to_series_grid_refuses_another_grid(tmp_path):
    from liverseg_monai.io.dicom import to_series_grid

    series(tmp_path / "s")
    affine = phantom_affine(SHAPE, (1.0, 1.0, 2.0), "LPS")
    assert to_series_grid(np.ones(SHAPE), affine, tmp_path / "s").shape == SHAPE
    with pytest.raises(InputError, match="grid"):
        to_series_grid(np.ones(SHAPE), phantom_affine(SHAPE, (1.0, 1.0, 2.0), "LPS", rotation_deg=30), tmp_path / "s")
    with pytest.raises(InputError, match="does not cover"):
        to_series_grid(np.ones((4, 4, 4)), affine, tmp_path / "s")
