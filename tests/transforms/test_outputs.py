"""A CT case's outputs (NIfTI mask, overlay, DICOM-SEG, SR) are written all or none."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, LoadImaged, SaveImaged

from liverseg_monai.errors import InputError, find_error
from liverseg_monai.io.dicom import DicomSeriesReader, read_seg, write_series
from liverseg_monai.io.dicom_writers import SaveDicomSegd, SaveDicomSRd
from liverseg_monai.io.naming import CaseFolderLayout
from liverseg_monai.io.sr import ct_readout, read_ct_report
from liverseg_monai.transforms.outputs import CaseOutputs
from liverseg_monai.transforms.overlay import SaveOverlayd

SHAPE = (24, 20, 6)


def _case(tmp_path, name="1.2.840.99.7"):
    """A DICOM series folder (named by a UID, dots included) loaded as the bundles load it, and a label map."""
    folder = tmp_path / "data" / name
    affine = np.diag([-0.9, -0.9, 2.5, 1.0])
    hu = np.full(SHAPE, -100.0)
    write_series(folder, hu, affine, uid_entropy="outputs")
    item = EnsureChannelFirstd("image")(LoadImaged("image", reader=DicomSeriesReader(), image_only=True)({"image": str(folder)}))
    labels = np.zeros(SHAPE, np.float32)
    labels[3:20, 2:18, 1:5] = 1
    labels[5:8, 4:7, 2:4] = 2
    labels[14:17, 12:15, 2:3] = 2
    item["pred"] = MetaTensor(torch.as_tensor(labels)[None], meta=dict(item["image"].meta))
    return folder, item, labels


def _writers(out):
    return CaseOutputs([
        SaveImaged("pred", output_ext=".nii.gz", output_dtype=np.uint8, resample=False, print_log=False,
                   writer="liverseg_monai.io.writers.AtomicNibabelWriter",
                   folder_layout=CaseFolderLayout(out, "seg", ".nii.gz")),
        SaveOverlayd("pred", output_dir=out),
        SaveDicomSegd("pred", output_dir=str(out)),
        SaveDicomSRd("pred", output_dir=str(out)),
    ])


def test_a_dicom_case_gets_mask_overlay_seg_and_sr_named_by_the_series_folder(tmp_path):
    folder, item, labels = _case(tmp_path)
    out = tmp_path / "out"
    _writers(out)(item)
    stem = folder.name
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}_{x}" for x in ("seg.nii.gz", "overlay.png", "seg.dcm", "sr.dcm"))
    np.testing.assert_array_equal(read_seg(out / f"{stem}_seg.dcm", folder, {"Liver": 1, "Mass": 2}), labels)
    report = read_ct_report(out / f"{stem}_sr.dcm")
    expected = ct_readout(labels, (0.9, 0.9, 2.5))
    assert expected["tumor_count"] == 2
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, rel=1e-9)


def test_a_failed_dicom_seg_leaves_none_of_the_case_outputs(tmp_path):
    folder, item, _ = _case(tmp_path)
    shutil.rmtree(folder)  # the series is gone when the DICOM-SEG is written: that write fails
    folder.mkdir()
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="SaveDicomSegd") as raised:  # MONAI's Compose wraps the error
        _writers(out)(item)
    error = find_error(raised.value)
    assert isinstance(error, InputError) and str(folder) in str(error) and "no DICOM files" in str(error)
    assert list(out.iterdir()) == []  # no mask, no overlay, no temporaries


def test_a_nifti_case_gets_mask_and_overlay_only(tmp_path):
    _, item, _ = _case(tmp_path)
    item["pred"].meta["filename_or_obj"] = str(tmp_path / "volume-3.nii.gz")
    item["image"].meta["filename_or_obj"] = str(tmp_path / "volume-3.nii.gz")
    out = tmp_path / "out"
    _writers(out)(item)
    assert sorted(p.name for p in out.iterdir()) == ["volume-3_overlay.png", "volume-3_seg.nii.gz"]
