"""Synthetic HCC-TACE-Seg: TCIA layout, DICOM correctness, anatomy in the right physical place, clinical signal."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from liverseg_monai.data.datalist import load_datalist
from liverseg_monai.data.synth import get_synthesizer
from liverseg_monai.data.synth.ct_anatomy import HCC_LESION_MIX, LESION_KINDS, draw_anatomy
from liverseg_monai.data.synth.hcc import (
    CLINICAL_NAME,
    HCC_ORIENTATIONS,
    PHANTOMS_NAME,
    SEGMENTS,
    clinical_row,
    synth_hcc,
)
from liverseg_monai.data.synth.phantom import FOV_MM, make_ct_phantom, phantom_affine
from liverseg_monai.io.dicom import read_seg, read_series, segment_labels
from tests.io.test_dicom import physical_resample

SIZE = (32, 32, 16)
N = 4
ORIENT = ("LPS", "LPI", "RAS", "oblique")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hcc_raw")
    synth_hcc(out, seed=5, n=N, size=SIZE, orientations=ORIENT)
    return out


def test_registered_and_layout(raw):
    assert get_synthesizer("hcc") is synth_hcc
    items = [it for key in ("training", "validation", "testing") for it in load_datalist(raw, key)]
    assert sorted(it["patient_id"] for it in items) == [f"HCC_{i:03d}" for i in range(1, N + 1)]
    for it in items:
        folder, seg = Path(it["image"]), Path(it["label"])
        assert folder.is_dir() and seg.is_file()
        assert folder.parts[-3] == it["patient_id"]  # HCC_00N/<study>/<series>
        assert seg.parent.parent == folder.parent  # the SEG series sits in the same study
        files = sorted(folder.glob("*.dcm"))
        assert len(files) == SIZE[2]
        ds = pydicom.dcmread(files[0])
        assert ds.Modality == "CT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.PatientID == it["patient_id"]
        for key in ("FrameOfReferenceUID", "StudyInstanceUID", "SeriesInstanceUID", "PixelSpacing", "SliceThickness",
                    "ImageOrientationPatient", "ImagePositionPatient", "RescaleSlope", "RescaleIntercept"):
            assert key in ds
        # file names are not in slice order
        order = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in files]
        assert order != sorted(order)
        assert sorted(segment_labels(seg).values()) == sorted(SEGMENTS)
    # unsigned and signed storage both occur
    reps = {pydicom.dcmread(next(Path(it["image"]).glob("*.dcm"))).PixelRepresentation for it in items}
    assert reps == {0, 1}
    # some segment order differs from TCIA's listing order (read by label, never by position)
    assert any(list(segment_labels(it["label"]).values()) != list(SEGMENTS) for it in items)


def test_extra_series_and_studies_exist(raw):
    series = {p.parent for p in raw.glob("HCC_*/*/*/*.dcm")}
    assert len(series) > 2 * N  # CT + SEG per patient, plus arterial/follow-up series
    assert len({p.parent.parent for p in raw.glob("HCC_*/*/*/*.dcm")}) > N  # some patient has two studies


def test_liver_in_the_patients_right_and_masks_where_the_phantom_put_them(raw):
    spacing = tuple(f / s for f, s in zip(FOV_MM, SIZE))
    items = sorted((it for key in ("training", "validation", "testing") for it in load_datalist(raw, key)),
                   key=lambda it: it["patient_id"])
    for i, it in enumerate(items):
        ct, affine, _ = read_series(it["image"])
        label = read_seg(it["label"], it["image"], {"Liver": 1, "Abdominal aorta": 4, "Mass": 2})
        ijk = np.argwhere(np.isin(label, (1, 2)))
        centre = affine[:3, :3] @ ijk.mean(0) + affine[:3, 3]
        assert centre[0] < -20, f"{it['patient_id']}: liver centre {centre} not in the patient's right (RAS x < 0)"
        aorta = affine[:3, :3] @ np.argwhere(label == 4).mean(0) + affine[:3, 3]
        assert aorta[1] < centre[1], "aorta should lie posterior of the liver centre"

        # regenerate the phantom on the writer's grid and compare in patient space
        name = ORIENT[i % len(ORIENT)]
        rot = 20.0 if name == "oblique" else 0.0
        grid = phantom_affine(SIZE, spacing, HCC_ORIENTATIONS["LPS" if name == "oblique" else name], rotation_deg=rot)
        ph = make_ct_phantom(SIZE, grid, np.random.default_rng(5 * 1000 + i))
        np.testing.assert_array_equal(physical_resample(ph.ct, grid, ct.shape, affine), ct)
        for segment, mask in SEGMENTS.items():
            expected = physical_resample(ph.masks[mask], grid, ct.shape, affine)
            np.testing.assert_array_equal(read_seg(it["label"], it["image"], {segment: 1}) == 1, expected, err_msg=segment)


def test_clinical_table(raw):
    rows = list(csv.DictReader((raw / CLINICAL_NAME).open()))
    assert [r["TCIA_ID"] for r in rows] == [f"HCC_{i:03d}" for i in range(1, N + 1)]
    for col in ("Sex", "Age", "BCLC", "Okuda", "CLIP", "CLIP_Score", "TNM", "AFP", "Tr_Size", "T_involvment"):
        assert all(r[col] != "" for r in rows), col
    assert all(r["BCLC"] in {"0", "A", "B", "C", "D"} for r in rows)
    # the DICOM header agrees with the table
    first = next((raw / "HCC_001").glob("*/4-*/*.dcm"))
    assert pydicom.dcmread(first).PatientSex == rows[0]["Sex"]


def test_stage_follows_tumour_burden():
    """The BCLC stage group carries signal about the tumour fraction of the liver."""
    size = (24, 24, 12)
    spacing = tuple(f / s for f, s in zip(FOV_MM, size))
    severity = {"0": 0, "A": 0, "B": 1, "C": 2, "D": 3}
    fractions, stages = [], []
    for i in range(24):
        rng = np.random.default_rng(100 + i)
        ph = make_ct_phantom(size, phantom_affine(size, spacing, "LPS"), rng)
        row = clinical_row(f"P{i}", ph, rng, "M", 60)
        fractions.append(ph.masks["tumor"].sum() / ph.masks["liver"].sum())
        stages.append(severity[row["BCLC"]])
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    rho = np.corrcoef(ranks(fractions), ranks(stages))[0, 1]
    assert rho > 0.5, f"Spearman correlation of stage and tumour fraction only {rho:.2f}"


def test_deterministic_for_a_seed(tmp_path):
    a = synth_hcc(tmp_path / "a", seed=2, n=1, size=(16, 16, 8)).parent
    b = synth_hcc(tmp_path / "b", seed=2, n=1, size=(16, 16, 8)).parent

    def digest(root: Path) -> dict:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(a) == digest(b)
    c = synth_hcc(tmp_path / "c", seed=3, n=1, size=(16, 16, 8)).parent
    assert digest(a) != digest(c)


# ---------------------------------------------------------------------------------------------------------
# realism "full" and the unchanged "basic" preset


def test_basic_preset_unchanged(tmp_path):
    """Regression value computed with the generator before the full preset existed (commit 583cd78)."""
    synth_hcc(tmp_path, seed=2, n=1, size=(16, 16, 8))
    it = load_datalist(tmp_path, "training")[0]
    ct, _, _ = read_series(it["image"])
    lab = read_seg(it["label"], it["image"], {"Liver": 1, "Mass": 2, "Portal vein": 3, "Abdominal aorta": 4})
    h = hashlib.sha256(np.ascontiguousarray(ct, dtype=np.int16).tobytes())
    h.update(np.ascontiguousarray(lab, dtype=np.uint8).tobytes())
    assert h.hexdigest() == "45cb5662d122754ab0b8680950aeac9ad61bdd8dea068b619a1e5006da039036"
    assert not (tmp_path / PHANTOMS_NAME).exists()


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hcc_full")
    synth_hcc(out, seed=4, n=4, size=(40, 40, 20), realism="full")
    return out


def test_full_layout_segments_and_lipiodol(full):
    record = json.loads((full / PHANTOMS_NAME).read_text())
    cases = {c["patient_id"]: c for c in record["cases"]}
    items = [it for key in ("training", "validation", "testing") for it in load_datalist(full, key)]
    assert sorted(cases) == sorted(it["patient_id"] for it in items) == [f"HCC_{i:03d}" for i in range(1, 5)]
    lipiodol_hu = []
    for it in items:
        case = cases[it["patient_id"]]
        assert sorted(segment_labels(it["label"]).values()) == sorted(SEGMENTS)
        ct, affine, _ = read_series(it["image"])
        np.testing.assert_allclose(sorted(np.linalg.norm(affine[:3, :3], axis=0)), sorted(case["spacing_mm"]), rtol=1e-4)
        assert 0.6 <= case["pixel_mm"] <= 0.9 and 0.7 <= case["slice_thickness_mm"] <= 5.0
        label = read_seg(it["label"], it["image"], {"Liver": 1, "Mass": 2})
        assert 90 < np.median(ct[label == 1]) < 140  # portal-venous liver
        if any(les["kind"] == "lipiodol" and les["n_voxels"] >= 4 for les in case["lesions"]):
            lipiodol_hu.append(ct[label == 2].max())
    # lipiodol deposits (> 300 HU inside the Mass segment) are the commonest kind after TACE
    kinds = [les["kind"] for c in cases.values() for les in c["lesions"]]
    assert kinds.count("lipiodol") == max(kinds.count(k) for k in set(kinds))
    assert lipiodol_hu and min(lipiodol_hu) > 300


def test_full_lesion_mix_is_post_tace():
    """Over a dozen patients every lesion kind occurs and lipiodol is frequent (anatomy only, no rendering)."""
    kinds = [les.kind for seed in range(12) for les in draw_anatomy(np.random.default_rng(seed), HCC_LESION_MIX).lesions]
    assert set(kinds) == set(LESION_KINDS)
    assert kinds.count("lipiodol") / len(kinds) > 0.3


def test_full_deterministic_for_a_seed(tmp_path):
    def digest(root: Path) -> dict:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    a = synth_hcc(tmp_path / "a", seed=6, n=1, size=(24, 24, 12), realism="full").parent
    b = synth_hcc(tmp_path / "b", seed=6, n=1, size=(24, 24, 12), realism="full").parent
    c = synth_hcc(tmp_path / "c", seed=7, n=1, size=(24, 24, 12), realism="full").parent
    assert digest(a) == digest(b) and PHANTOMS_NAME in digest(a)
    assert digest(a) != digest(c)
