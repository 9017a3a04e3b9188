"""Slide read-out reports: areas from pixel counts and mpp, bundle identity, errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liverseg_monai.errors import InputError
from liverseg_monai.io.readout import bundle_identity, pixel_area_mm2, steatosis_report, tissue_class_report

REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def test_bundle_identity_reads_the_enclosing_bundles_metadata(tmp_path) -> None:
    bundle = REPO_BUNDLES / "liver_steatosis_maskrcnn"
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    ident = bundle_identity(bundle / "models" / "model.pt")  # need not exist
    assert ident == {"bundle": "liver_steatosis_maskrcnn", "name": meta["name"], "version": meta["version"]}
    assert bundle_identity(tmp_path / "model.pt") is None and bundle_identity(None) is None


def test_bundle_identity_names_a_broken_metadata_file(tmp_path) -> None:
    (tmp_path / "b" / "configs").mkdir(parents=True)
    (tmp_path / "b" / "configs" / "metadata.json").write_text("{not json")
    with pytest.raises(InputError, match="metadata.json"):
        bundle_identity(tmp_path / "b" / "models" / "model.pt")


def test_tissue_class_report_areas_and_percentages() -> None:
    rows = [{"class_index": 0, "class_name": "background", "pixels": 1000},
            {"class_index": 1, "class_name": "parenchyma", "pixels": 300},
            {"class_index": 2, "class_name": "steatosis", "pixels": 100}]
    rep = tissue_class_report("s.tiff", rows, mpp=2.0, level=1, model={"bundle": "b", "name": "n", "version": "1"})
    assert [c["area_mm2"] for c in rep["classes"]] == pytest.approx([4e-3, 1.2e-3, 4e-4])
    assert rep["tissue_area_mm2"] == pytest.approx(1.6e-3) == pixel_area_mm2(400, 2.0)
    assert [c["percent_of_tissue"] for c in rep["classes"]] == [None, 75.0, 25.0]
    assert rep["units"]["area_mm2"] == "mm2" and rep["mpp"] == 2.0 and rep["level"] == 1
    with pytest.raises(InputError, match="s.tiff"):
        tissue_class_report("s.tiff", rows, mpp=None)


def test_steatosis_report_converts_the_summary() -> None:
    summary = {"mpp": 0.5, "level": 0, "n_droplets": 3, "droplet_area_um2": 2500.0, "tissue_area_um2": 1e5,
               "steatosis_fraction": 0.025, "warning": None}
    rep = steatosis_report("s.tiff", summary)
    assert rep["droplet_count"] == 3 and rep["steatosis_percent_of_tissue"] == pytest.approx(2.5)
    assert rep["droplet_area_mm2"] == pytest.approx(2.5e-3) and rep["tissue_area_mm2"] == pytest.approx(0.1)
    empty = steatosis_report("s.tiff", {**summary, "steatosis_fraction": None, "warning": "no tissue"})
    assert empty["steatosis_percent_of_tissue"] is None and empty["warning"] == "no tissue"
