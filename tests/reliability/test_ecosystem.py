"""Bad inputs to the ecosystem glue (Auto3DSeg template filling, DICOMweb client) and the MONAI Label harness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liverseg_monai.ecosystem import auto3dseg, orthanc
from liverseg_monai.errors import ConfigError
from tools.ecosystem import monailabel

STATS = {"stats_summary": {
    "label_stats": {"labels": [0, 1, 2]},
    "image_stats": {"spacing": {"median": [1.0, 1.0, 2.0]}, "sizemm": {"median": [200.0, 200.0, 120.0]},
                    "channels": {"max": 1}},
    "image_foreground_stats": {"intensity": {"percentile_00_5": -100.0, "percentile_99_5": 250.0}},
}}


def test_fold_without_validation_items_names_the_datalist(tmp_path: Path) -> None:
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "b.nii.gz", "fold": 1}]}))
    with pytest.raises(ConfigError, match="datalist.json: fold 0 leaves 1 training and 0 validation"):
        auto3dseg.fold_datalists(datalist, tmp_path, 0)


def test_roi_not_a_multiple_of_16_is_refused(tmp_path: Path) -> None:
    config = {"dataroot": str(tmp_path), "datalist": str(tmp_path / "d.json"), "roi_size": [40, 40, 16]}
    with pytest.raises(ConfigError, match=r"roi_size \[40, 40, 16\] must be multiples of 16"):
        auto3dseg.fill_hyper_parameters(STATS, config, str(tmp_path), 0)


def test_roi_from_statistics_is_a_multiple_of_16_within_the_cap(tmp_path: Path) -> None:
    config = {"dataroot": str(tmp_path), "datalist": str(tmp_path / "d.json"), "roi_size_max": [128, 128, 48]}
    filled = auto3dseg.fill_hyper_parameters(STATS, config, str(tmp_path), 2)
    assert filled["roi_size"] == [128, 128, 48] and filled["output_classes"] == 3 and filled["fold"] == 2
    assert filled["intensity_bounds"] == [-100.0, 250.0]


def test_stow_of_an_empty_folder_stores_nothing(tmp_path: Path) -> None:
    with pytest.raises(orthanc.DicomWebError, match="nothing to store"):
        orthanc.stow("http://127.0.0.1:9/dicom-web", [tmp_path])


def test_multipart_answer_without_boundary_is_refused() -> None:
    with pytest.raises(orthanc.DicomWebError, match="without boundary"):
        orthanc._multipart_parts(b"--x\r\n\r\nabc\r\n--x--", 'multipart/related; type="application/dicom"')


def test_missing_monailabel_environment_says_how_to_make_it(tmp_path: Path) -> None:
    assert monailabel.monailabel_python(tmp_path / "none") is None
    with pytest.raises(FileNotFoundError, match="setup_monailabel.sh"):
        monailabel.sample_app(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="setup_monailabel.sh"):
        monailabel.MonaiLabelServer(tmp_path, tmp_path, ["x"], tmp_path / "log", venv=tmp_path / "none")
