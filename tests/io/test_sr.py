"""The CT read-out DICOM SR: written, read back with pydicom and highdicom, the values equal."""

from __future__ import annotations

import math

import highdicom as hd
import numpy as np
import pydicom
import pytest

from liverseg_monai.errors import InputError
from liverseg_monai.io.dicom import read_series, write_seg, write_series
from liverseg_monai.io.sr import ct_readout, read_ct_report, write_ct_report

SPACING = (0.8, 0.7, 2.5)


@pytest.fixture
def series(tmp_path):
    folder = tmp_path / "series"
    write_series(folder, np.zeros((20, 18, 8)), np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0]), uid_entropy="sr")
    return folder


def _labels():
    labels = np.zeros((20, 18, 8), np.uint8)
    labels[2:16, 2:15, 1:7] = 1
    labels[3:5, 3:5, 2:4] = 2  # two tumours, touching nowhere
    labels[10:13, 10:12, 4:6] = 2
    return labels


def test_readout_values():
    labels = _labels()
    voxel_ml = np.prod(SPACING) / 1000
    r = ct_readout(labels, SPACING)
    assert r["tumor_count"] == 2
    assert r["liver_volume_ml"] == pytest.approx(14 * 13 * 6 * voxel_ml)
    assert r["tumor_volume_ml"] == pytest.approx((2 * 2 * 2 + 3 * 2 * 2) * voxel_ml)
    assert r["tumor_burden_pct"] == pytest.approx(100 * 20 / (14 * 13 * 6))
    diagonal = np.zeros((4, 4, 4), int)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = 2  # corner-touching voxels are one lesion
    assert ct_readout(diagonal, (1, 1, 1))["tumor_count"] == 1
    assert math.isnan(ct_readout(np.zeros((3, 3, 3)), (1, 1, 1))["tumor_burden_pct"])
    assert set(ct_readout(labels, SPACING, tumor_labels=None)) == {"liver_volume_ml"}
    with pytest.raises(ValueError, match="spacing"):
        ct_readout(labels, (1, 0, 1))


def test_sr_round_trip_references_the_seg_and_the_series(tmp_path, series):
    labels = _labels()
    seg_path = write_seg(labels, series, tmp_path / "case_seg.dcm", {1: "Liver", 2: "Mass"})
    readout = ct_readout(labels, SPACING)
    sr_path = write_ct_report(readout, series, seg_path, tmp_path / "case_sr.dcm", uid_entropy="case")

    back = read_ct_report(sr_path)
    for key, value in readout.items():
        assert back[key] == pytest.approx(value, rel=1e-12)
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    _, _, meta = read_series(series)
    assert back["liver_segment"] == 1 and back["tumor_segment"] == 2
    assert back["seg_sop_instance_uid"] == seg.SOPInstanceUID
    assert back["source_series_uid"] == meta["series_instance_uid"]

    # plain pydicom: a Comprehensive 3D SR of the CT's study, TID 1500, with the CT and the SEG as evidence
    ds = pydicom.dcmread(sr_path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR Storage
    assert ds.StudyInstanceUID == meta["study_instance_uid"] and ds.Modality == "SR"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    evidence = {ref.ReferencedSOPInstanceUID for study in ds.CurrentRequestedProcedureEvidenceSequence
                for series_item in study.ReferencedSeriesSequence for ref in series_item.ReferencedSOPSequence}
    assert evidence == {seg.SOPInstanceUID, *meta["sop_instance_uids"]}
    # highdicom's parser sees the volumetric groups with their segment references
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["Liver", "Tumour"]
    # the Image Library (111028) lists the CT images
    (library,) = [item for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "111028"]
    listed = {entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
              for group in library.ContentSequence for entry in group.ContentSequence if entry.ValueType == "IMAGE"}
    assert listed == set(meta["sop_instance_uids"])


def test_no_tumour_gives_an_image_level_group_with_zeros(tmp_path, series):
    labels = _labels()
    labels[labels == 2] = 1
    seg_path = write_seg(labels, series, tmp_path / "case_seg.dcm", {1: "Liver"})
    readout = ct_readout(labels, SPACING)
    back = read_ct_report(write_ct_report(readout, series, seg_path, tmp_path / "case_sr.dcm"))
    assert back["tumor_count"] == 0 and back["tumor_volume_ml"] == 0 and back["tumor_burden_pct"] == 0
    assert "tumor_segment" not in back
    assert back["liver_volume_ml"] == pytest.approx(readout["liver_volume_ml"])


def test_a_seg_without_the_liver_segment_or_of_another_series_is_refused(tmp_path, series):
    labels = _labels()
    seg_path = write_seg(labels, series, tmp_path / "case_seg.dcm", {1: "Spleen", 2: "Mass"})
    with pytest.raises(InputError, match=r"case_seg\.dcm.*no segment 'Liver'"):
        write_ct_report(ct_readout(labels, SPACING), series, seg_path, tmp_path / "sr.dcm")
    other = tmp_path / "other"
    write_series(other, np.zeros((20, 18, 8)), np.diag([-0.8, -0.7, 2.5, 1.0]), uid_entropy="another")
    seg_other = write_seg(labels, other, tmp_path / "other_seg.dcm", {1: "Liver", 2: "Mass"})
    with pytest.raises(InputError, match=r"other_seg\.dcm.*not the CT series"):
        write_ct_report(ct_readout(labels, SPACING), series, seg_other, tmp_path / "sr.dcm")
    assert not (tmp_path / "sr.dcm").exists()
