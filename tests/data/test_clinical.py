import logging
import math

import nibabel as nib
import numpy as np
import pytest

from liverseg_monai.data.clinical import (
    fit_severity,
    read_clinical,
    stage_group,
    tumor_fraction,
    with_severity_prior,
)
from liverseg_monai.errors import InputError


def write_label(path, tumor_voxels: int, liver_voxels: int = 100):
    lab = np.zeros(1000, np.uint8)
    lab[:liver_voxels] = 1
    lab[:tumor_voxels] = 2
    nib.save(nib.Nifti1Image(lab.reshape(10, 10, 10), np.eye(4)), str(path))
    return str(path)


@pytest.fixture()
def cohort(tmp_path):
    """Five patients: A with 10 % and 20 % tumour, B with 50 %, C without a BCLC value, E not in the table."""
    items = []
    for pid, t in [("P1", 10), ("P2", 20), ("P3", 50), ("P4", 30), ("P5", 40)]:
        items.append({"image": str(tmp_path / f"{pid}.nii.gz"), "label": write_label(tmp_path / f"{pid}_seg.nii.gz", t), "patient_id": pid})
    table = tmp_path / "clinical.csv"
    table.write_text("patient_id,BCLC,AFP\nP1,A,10\nP2, a ,12\nP3,B,400\nP4,,3\n")
    return items, table


def test_stage_group_normalises():
    assert stage_group(" b ") == "B" and stage_group("2.0") == "2" and stage_group(3) == "3"
    assert stage_group(None) is None and stage_group(float("nan")) is None and stage_group(" NA ") is None


def test_tumor_fraction_of_a_label_map():
    lab = np.zeros(100, np.uint8)
    lab[:40] = 1
    lab[:10] = 2
    lab[50:60] = 3
    assert tumor_fraction(lab) == pytest.approx(0.25)
    assert tumor_fraction(np.zeros(5)) == 0.0


def test_fit_per_group_mean_and_spread(cohort):
    items, table = cohort
    ind = fit_severity(items, read_clinical(table), "BCLC", min_std=0.01)
    mean_a, std_a, n_a = ind.groups["A"]
    assert (mean_a, n_a) == (pytest.approx(0.15), 2) and std_a == pytest.approx(0.05)
    mean_b, std_b, n_b = ind.groups["B"]
    assert mean_b == pytest.approx(0.5) and n_b == 1
    assert std_b == pytest.approx(np.std([0.1, 0.2, 0.5]))  # a single patient gets the pooled spread
    assert ind.overall[0] == pytest.approx(np.mean([0.1, 0.2, 0.5]))
    assert ind.prior("D") == (ind.overall[0], ind.overall[1])  # unseen group: population figures
    assert all(math.isnan(v) for v in ind.prior(None))


def test_priors_attached_and_missing_patients_logged(cohort, caplog):
    items, table = cohort
    with caplog.at_level(logging.WARNING):
        out = with_severity_prior(items, table, "BCLC")
    priors = {it["patient_id"]: it["tumor_fraction_prior"] for it in out}
    assert priors["P1"] == pytest.approx(0.15) and priors["P3"] == pytest.approx(0.5)
    assert math.isnan(priors["P4"]) and math.isnan(priors["P5"])
    assert "P4" in caplog.text and "P5" in caplog.text and "skip" in caplog.text
    assert "tumor_fraction_prior" not in items[0]  # inputs not modified


def test_fit_on_training_items_only(cohort):
    items, table = cohort
    out = with_severity_prior(items, table, "BCLC", fit_items=items[:1])
    assert out[1]["tumor_fraction_prior"] == pytest.approx(0.1)  # P2 in group A, fitted on P1 alone


def test_no_table_switches_the_term_off(cohort, tmp_path, caplog):
    items, _ = cohort
    with caplog.at_level(logging.WARNING):
        out = with_severity_prior(items, tmp_path / "none.csv")
    assert all(math.isnan(it["tumor_fraction_prior"]) for it in out)
    assert "no clinical table" in caplog.text


def test_tcia_identifier_column_and_excel_like_whitespace(tmp_path):
    path = tmp_path / "clinical.csv"
    path.write_text("TCIA_ID;BCLC\nHCC_001 ;C\nHCC_002;D\n")
    table = read_clinical(path)
    assert list(table.index) == ["HCC_001", "HCC_002"]


def test_bad_tables_name_the_file(tmp_path):
    no_id = tmp_path / "a.csv"
    no_id.write_text("name,BCLC\nx,A\n")
    with pytest.raises(InputError, match="a.csv.*identifier"):
        read_clinical(no_id)
    dup = tmp_path / "b.csv"
    dup.write_text("patient_id,BCLC\nP1,A\nP1,B\n")
    with pytest.raises(InputError, match="b.csv.*repeat"):
        read_clinical(dup)
    with pytest.raises(InputError, match="not found"):
        read_clinical(tmp_path / "missing.csv")


def test_missing_group_column(cohort):
    items, table = cohort
    with pytest.raises(InputError, match="no column 'Okuda'"):
        fit_severity(items, read_clinical(table), "Okuda")
