"""DICOM round trip through a real Orthanc server over DICOMweb, with a bundle's inference in between.

synthetic CT series --STOW-RS--> Orthanc --WADO-RS--> folder --two-stage tumour bundle--> label map
--write_seg (references the series)--> DICOM-SEG --STOW-RS--> Orthanc --QIDO/WADO-RS--> read_seg == label map
label map --write_ct_report (references the SEG and the series)--> DICOM SR --STOW-RS--> Orthanc --WADO-RS--> same read-out

The checkpoints are randomly initialised (``init_random_weights``): this checks the plumbing (geometry,
UIDs, transfer, SEG encoding), not segmentation quality, which the bundle tests cover.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from liverseg_monai.data.synth.hcc import synth_hcc
from liverseg_monai.ecosystem.orthanc import retrieve_series, search_series, stow, tag_value
from liverseg_monai.io.dicom import read_seg, read_series, referenced_series_uids, to_series_grid, write_seg
from liverseg_monai.io.sr import ct_readout, read_ct_report, write_ct_report
from tools.runner import init_random_weights, run_bundle

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # real servers; CI runs them (make test), test-fast skips them
STUDY_UID, SERIES_UID, MODALITY = "0020000D", "0020000E", "00080060"
TUMOR = "liver_tumor_ct_segresnetvae"
# the tumour bundle's smoke-scale settings (as in its recipe)
SMALL = {"spacing": [8.0, 8.0, 10.0], "liver#roi_size": [32, 32, 16], "tumor#roi_size": [32, 32, 16], "init_filters": 8}


def _ct_series_folder(dataset_json: Path) -> Path:
    item = json.loads(dataset_json.read_text())["training"][0]
    return dataset_json.parent / item["image"]


def test_series_round_trip_through_orthanc(orthanc, tmp_path: Path) -> None:
    source = _ct_series_folder(synth_hcc(tmp_path / "synth", seed=3, n=1, size=(32, 32, 16), extra_series=False))
    n_files = len(list(source.glob("*.dcm")))
    assert len(stow(orthanc.dicomweb_url, [source])) == n_files

    found = search_series(orthanc.dicomweb_url, Modality="CT")
    assert len(found) == 1
    study_uid, series_uid = tag_value(found[0], STUDY_UID), tag_value(found[0], SERIES_UID)

    back = tmp_path / "dataset" / "series"
    assert len(retrieve_series(orthanc.dicomweb_url, study_uid, series_uid, back)) == n_files
    array_src, affine_src, _ = read_series(source)
    array_back, affine_back, meta = read_series(back)
    np.testing.assert_array_equal(array_back, array_src)
    np.testing.assert_allclose(affine_back, affine_src, atol=1e-4)
    assert meta["series_instance_uid"] == series_uid

    # the two-stage tumour bundle on the retrieved series folder (ct_reader reads DICOM folders), at smoke size
    bundle = shutil.copytree(REPO / "bundles" / TUMOR, tmp_path / "bundle")
    init_random_weights(bundle, {"models/model_liver.pt": "liver#network_def", "models/model_tumor.pt": "tumor#network_def"},
                        overrides=SMALL)
    (tmp_path / "dataset" / "dataset.json").write_text(json.dumps({"testing": [{"image": "series"}]}))
    out = tmp_path / "infer"
    run_bundle(bundle, ["inference.json"], dataset_dir=tmp_path / "dataset", output_dir=out,
               overrides={key: json.dumps(value) for key, value in SMALL.items()}, timeout=600)
    (pred_path,) = out.glob("*_seg.nii.gz")
    pred = nib.load(pred_path)
    label = to_series_grid(np.asarray(pred.dataobj), pred.affine, back).astype(np.uint8)
    assert label.shape == array_back.shape
    assert set(np.unique(label).tolist()) <= {0, 1, 2}

    seg_path = write_seg(label, back, tmp_path / "pred_seg.dcm", {1: "Liver", 2: "Mass"})
    assert referenced_series_uids(seg_path) == [series_uid]
    # the clinical read-out as a DICOM SR referencing that SEG and the series
    readout = ct_readout(label, meta["spacing"])
    sr_path = write_ct_report(readout, back, seg_path, tmp_path / "pred_sr.dcm")
    # the synthetic reference SEG (four segments, shuffled order) travels too
    reference_seg = _reference_seg(source.parent.parent)
    assert len(stow(orthanc.dicomweb_url, [seg_path, reference_seg, sr_path])) == 3

    (sr_found,) = search_series(orthanc.dicomweb_url, Modality="SR", StudyInstanceUID=study_uid)
    sr_series = str(pydicom.dcmread(sr_path, stop_before_pixels=True).SeriesInstanceUID)
    assert tag_value(sr_found, SERIES_UID) == sr_series
    (sr_back,) = retrieve_series(orthanc.dicomweb_url, study_uid, sr_series, tmp_path / "sr_back")
    report = read_ct_report(sr_back)
    assert report["seg_sop_instance_uid"] == str(pydicom.dcmread(seg_path, stop_before_pixels=True).SOPInstanceUID)
    assert report["source_series_uid"] == series_uid
    for key, value in readout.items():
        assert report[key] == pytest.approx(value, rel=1e-9, nan_ok=True)

    segs = search_series(orthanc.dicomweb_url, Modality="SEG", StudyInstanceUID=study_uid)
    assert len(segs) == 2 and {tag_value(s, MODALITY) for s in segs} == {"SEG"}
    wanted = {"Liver": 1, "Mass": 2}
    for original, labels, expected in [(seg_path, wanted, label),
                                       (reference_seg, wanted, read_seg(reference_seg, source, wanted))]:
        seg_series = str(pydicom.dcmread(original, stop_before_pixels=True).SeriesInstanceUID)
        (seg_back,) = retrieve_series(orthanc.dicomweb_url, study_uid, seg_series, tmp_path / seg_series)
        np.testing.assert_array_equal(read_seg(seg_back, back, labels), expected)


def _reference_seg(study_folder: Path) -> Path:
    (seg,) = [p for p in study_folder.rglob("*.dcm") if "Segmentation" in p.parent.name]
    return seg
