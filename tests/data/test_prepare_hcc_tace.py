"""prepare hcc-tace: TCIA DICOM layout -> NIfTI dataset with dataset.json, labels read by segment name."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from liverseg_monai.cli import main
from liverseg_monai.data.datalist import load_datalist
from liverseg_monai.data.prepare import get_preparer
from liverseg_monai.data.prepare.hcc_tace import prepare_hcc_tace
from liverseg_monai.data.synth.hcc import CLINICAL_NAME, synth_hcc
from liverseg_monai.errors import InputError
from liverseg_monai.io.dicom import read_seg, read_series_geometry

N = 5
SIZE = (24, 24, 12)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hcc_raw")
    synth_hcc(out, seed=1, n=N, size=SIZE, orientations=("LPS", "LPI", "RAS"))
    return out


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hcc_prepared")
    prepare_hcc_tace(raw, out, seed=0)
    return out


def raw_items(raw: Path) -> dict[str, dict]:
    return {it["patient_id"]: it for key in ("training", "validation", "testing") for it in load_datalist(raw, key)}


def test_dataset_json_and_split(prepared):
    assert get_preparer("hcc-tace") is prepare_hcc_tace
    train = load_datalist(prepared, "training", require=("image", "label", "patient_id"))
    val = load_datalist(prepared, "validation", require=("image", "label", "patient_id"))
    test = load_datalist(prepared, "testing")
    ids_train, ids_val = {it["patient_id"] for it in train}, {it["patient_id"] for it in val}
    assert not ids_train & ids_val and len(ids_train | ids_val) == N
    assert len(ids_val) == 1  # 20 % of 5
    assert all("fold" in it for it in train)
    assert {it["patient_id"] for it in test} == ids_val
    assert all(Path(it["image"]).parent.name == "imagesTr" for it in train + val)


def test_images_and_labels_match_the_dicom(raw, prepared):
    items = raw_items(raw)
    for it in load_datalist(prepared, "training") + load_datalist(prepared, "validation"):
        src = items[it["patient_id"]]
        img, lab = nib.load(it["image"]), nib.load(it["label"])
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        shape, affine = read_series_geometry(src["image"])
        assert img.shape == shape and lab.shape == shape
        np.testing.assert_allclose(img.affine, affine, atol=1e-4)
        np.testing.assert_allclose(lab.affine, affine, atol=1e-4)
        label = np.asanyarray(lab.dataobj)
        assert (label == 1).sum() > 0 and (label == 2).sum() > 0, it["patient_id"]
        assert set(np.unique(label)) <= {0, 1, 2, 3, 4}
        # the mass is whole (painted last) and equals the SEG's Mass segment
        mass = read_seg(src["label"], src["image"], {"Mass": 1})
        np.testing.assert_array_equal(label == 2, mass == 1)
        hu = np.asanyarray(img.dataobj)
        assert hu.min() >= -1024 and 40 < np.median(hu[label == 1]) < 90  # liver parenchyma HU


def test_clinical_csv(prepared):
    rows = list(csv.DictReader((prepared / "clinical.csv").open()))
    assert list(rows[0])[0] == "patient_id" and "TCIA_ID" not in rows[0]
    assert sorted(r["patient_id"] for r in rows) == [f"HCC_{i:03d}" for i in range(1, N + 1)]
    assert all(r["BCLC"] for r in rows)


def test_seed_changes_the_split_only(raw, prepared, tmp_path):
    from liverseg_monai.data.prepare.hcc_tace import split_patients

    ids = [f"HCC_{i:03d}" for i in range(1, 11)]
    splits = {tuple(split_patients(ids, seed)["validation"]) for seed in range(5)}
    assert len(splits) > 1 and all(len(s) == 2 for s in splits)
    prepare_hcc_tace(raw, tmp_path / "again", seed=0)
    assert (tmp_path / "again" / "dataset.json").read_text() == (prepared / "dataset.json").read_text()
    for sub in ("imagesTr", "labelsTr"):
        for path in (prepared / sub).iterdir():
            assert (tmp_path / "again" / sub / path.name).read_bytes() == path.read_bytes()


def test_real_tcia_folder_names_and_cli_clinical_option(raw, prepared, tmp_path):
    """TCIA names series folders like '4.000000-LIVER PORTAL-52117' and nests the collection in a manifest folder."""
    src = tmp_path / "manifest-1643035385102" / "HCC-TACE-Seg"
    shutil.copytree(raw, src, ignore=shutil.ignore_patterns("dataset.json", CLINICAL_NAME))
    for series in sorted(src.glob("HCC_*/*/*"), reverse=True):
        number, rest = series.name.split("-", 1)
        series.rename(series.with_name(f"{number}.000000-{rest}"))
    # one patient's SEG saved among its CT slices instead of in its own series folder
    (seg,) = src.glob("HCC_002/*/300.000000-*/1-1.dcm")
    (ct,) = src.glob("HCC_002/*/4.000000-*")
    shutil.move(seg, ct / "seg.dcm")
    seg.parent.rmdir()
    table = tmp_path / "tables" / "clinical_v2.csv"
    table.parent.mkdir()
    shutil.copy(raw / CLINICAL_NAME, table)
    out = tmp_path / "out"
    assert main(["prepare", "hcc-tace", "--src", str(tmp_path / "manifest-1643035385102"), "--out", str(out),
                 "--clinical", str(table)]) == 0
    items = load_datalist(out, "training", require=("image", "label", "patient_id"))
    assert len(items) == N - 1 and (out / "clinical.csv").is_file()
    for it in items:  # same labels as from the plain layout
        np.testing.assert_array_equal(np.asanyarray(nib.load(it["label"]).dataobj),
                                      np.asanyarray(nib.load(prepared / "labelsTr" / f"{it['patient_id']}.nii.gz").dataobj))


def test_xlsx_clinical_table(raw, tmp_path):
    import pandas as pd

    table = tmp_path / "clinical.xlsx"
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        table.write_bytes(b"PK\x03\x04 not really a workbook")
        with pytest.raises(InputError, match="openpyxl") as err:
            prepare_hcc_tace(raw, tmp_path / "out", clinical=table)
        assert str(table) in str(err.value) and not (tmp_path / "out").exists()
        return
    pd.read_csv(raw / CLINICAL_NAME, dtype=str).to_excel(table, index=False)
    prepare_hcc_tace(raw, tmp_path / "out", clinical=table)
    rows = list(csv.DictReader((tmp_path / "out" / "clinical.csv").open()))
    assert len(rows) == N and rows[0]["patient_id"] == "HCC_001"


def test_clinical_table_with_patient_id_column_and_lower_case_ids(raw, tmp_path):
    import pandas as pd

    table = pd.read_csv(raw / CLINICAL_NAME, dtype=str).rename(columns={"TCIA_ID": "patient_id"})
    table["patient_id"] = table["patient_id"].str.lower().str.replace("_", "-")
    table.to_csv(tmp_path / "clinical.tsv", sep="\t", index=False)
    prepare_hcc_tace(raw, tmp_path / "out", clinical=tmp_path / "clinical.tsv")
    rows = list(csv.DictReader((tmp_path / "out" / "clinical.csv").open()))
    assert [r["patient_id"] for r in rows] == [f"HCC_{i:03d}" for i in range(1, N + 1)]
    assert list(rows[0]).count("patient_id") == 1

