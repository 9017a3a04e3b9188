import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from liverseg_monai.data import load_datalist
from liverseg_monai.data.synth.ct_anatomy import (
    LESION_KINDS,
    SCANNER_MATRIX,
    draw_acquisition,
    draw_anatomy,
    make_realistic_case,
    render_ct,
)
from liverseg_monai.data.synth.lits import PHANTOMS_NAME, synth_lits
from liverseg_monai.data.synth.phantom import make_ct_phantom, phantom_affine


def test_lits_layout_values_and_split(tmp_path):
    synth_lits(tmp_path, seed=3, n=5, size=(40, 40, 16))
    train = load_datalist(tmp_path, "training", require=("image", "label"))
    val = load_datalist(tmp_path, "validation", require=("image", "label"))
    test = load_datalist(tmp_path, "testing")
    assert (len(train), len(val), len(test)) == (3, 1, 1)
    assert sorted(p.name for p in tmp_path.glob("volume-*.nii.gz")) == [f"volume-{i}.nii.gz" for i in range(5)]
    vol = nib.load(tmp_path / "volume-0.nii.gz")
    seg = nib.load(tmp_path / "segmentation-0.nii.gz")
    assert vol.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
    ct = np.asarray(vol.dataobj)
    lab = np.asarray(seg.dataobj)
    assert set(np.unique(lab)) <= {0, 1, 2} and (lab == 1).sum() > 0 and (lab == 2).sum() > 0
    assert ct.min() <= -990  # air
    liver_hu = np.median(ct[lab == 1])
    assert 40 < liver_hu < 90, liver_hu
    spacing = nib.affines.voxel_sizes(vol.affine)
    assert spacing[2] > spacing[0]  # anisotropic
    # case 0 is RAS, case 1 LPS
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert nib.aff2axcodes(nib.load(tmp_path / "volume-1.nii.gz").affine) == ("L", "P", "S")


def test_deterministic_for_a_seed(tmp_path):
    synth_lits(tmp_path / "a", seed=7, n=3, size=(24, 24, 8))
    synth_lits(tmp_path / "b", seed=7, n=3, size=(24, 24, 8))
    synth_lits(tmp_path / "c", seed=8, n=3, size=(24, 24, 8))
    a = np.asarray(nib.load(tmp_path / "a" / "volume-2.nii.gz").dataobj)
    assert np.array_equal(a, np.asarray(nib.load(tmp_path / "b" / "volume-2.nii.gz").dataobj))
    assert not np.array_equal(a, np.asarray(nib.load(tmp_path / "c" / "volume-2.nii.gz").dataobj))


def test_liver_lands_in_the_same_physical_place_whatever_the_orientation():
    shape, spacing = (48, 48, 20), (400 / 48, 400 / 48, 12.0)
    masks = {}
    for code in ("RAS", "LPS"):
        aff = phantom_affine(shape, spacing, code)
        ph = make_ct_phantom(shape, aff, np.random.default_rng(0))
        ijk = np.argwhere(ph.masks["liver"])
        masks[code] = (aff[:3, :3] @ ijk.T).T + aff[:3, 3]
    centre_ras, centre_lps = masks["RAS"].mean(0), masks["LPS"].mean(0)
    np.testing.assert_allclose(centre_ras, centre_lps, atol=1.0)
    assert centre_ras[0] < 0  # the liver is in the patient's right (RAS x < 0)


# ---------------------------------------------------------------------------------------------------------
# realism "full" (liverseg_monai/data/synth/ct_anatomy.py) and the unchanged "basic" preset


def _phantom_digest(ph) -> str:
    h = hashlib.sha256(ph.ct.tobytes())
    for k in sorted(ph.masks):
        h.update(k.encode())
        h.update(np.packbits(ph.masks[k]).tobytes())
    return h.hexdigest()


def test_basic_preset_unchanged():
    """Regression values computed with the generator before the full preset existed (commit 583cd78)."""
    for seed, size, code, expected in (
        (3, (24, 24, 12), "LPS", "879373028776c3c73d416b397fe0f7484fa66d85995f929a7b0b27ad326d661b"),
        (4, (20, 24, 10), "RAS", "695d8eb9550a6c708ac4a0320fb8ed4e450a180a5a3e5e643b8319c11da95a68"),
    ):
        aff = phantom_affine(size, tuple(f / s for f, s in zip((400, 400, 240), size)), code)
        assert _phantom_digest(make_ct_phantom(size, aff, np.random.default_rng(seed))) == expected


def test_basic_lits_files_unchanged(tmp_path):
    synth_lits(tmp_path, seed=3, n=2, size=(24, 24, 12))
    expected = ["10faaf279ee036ed4dd982c222193a379e0f3c6a0508ecfc109162d0f8468a85",
                "84bc295406992b8462eede88c324abaaccaf88d2921b252ff667a5c880d033dc"]
    for i in range(2):
        h = hashlib.sha256()
        for name in (f"volume-{i}.nii.gz", f"segmentation-{i}.nii.gz"):
            img = nib.load(tmp_path / name)
            h.update(np.asarray(img.dataobj).tobytes())
            h.update(img.affine.tobytes())
        assert h.hexdigest() == expected[i]
    assert not (tmp_path / PHANTOMS_NAME).exists()  # the basic layout gains no file


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lits_full")
    synth_lits(out, seed=1, n=6, size=(48, 48, 24), realism="full")
    return out


def test_full_lesion_kinds_sizes_and_labels(full):
    cases = json.loads((full / PHANTOMS_NAME).read_text())["cases"]
    assert len(cases) == 6
    lesions = [les for c in cases for les in c["lesions"]]
    assert {les["kind"] for les in lesions} == set(LESION_KINDS)
    assert all(5 <= les["diameter_mm"] <= 60 for les in lesions)
    # sizes: several small lesions and some large ones over a dozen patients (anatomy only, no rendering)
    diameters = [2 * les.radius for seed in range(12) for les in draw_anatomy(np.random.default_rng(seed)).lesions]
    assert sum(d < 10 for d in diameters) >= 3 and max(diameters) > 40, diameters
    seen_lipiodol = False
    for c in cases:
        ct = np.asarray(nib.load(full / c["image"]).dataobj)
        lab = np.asarray(nib.load(full / c["label"]).dataobj)
        assert set(np.unique(lab)) <= {0, 1, 2} and (lab == 1).sum() > 0
        assert (lab == 2).sum() <= sum(les["n_voxels"] for les in c["lesions"])
        assert 90 < np.median(ct[lab == 1]) < 140  # portal-venous liver
        lipiodol = [les for les in c["lesions"] if les["kind"] == "lipiodol" and les["n_voxels"] >= 4]
        if lipiodol:  # lipiodol deposits show as > 300 HU inside the tumour label
            seen_lipiodol = True
            assert ct[lab == 2].max() > 300
    assert seen_lipiodol


def test_full_spacing_ranges_and_body_inside_the_field(full):
    for c in json.loads((full / PHANTOMS_NAME).read_text())["cases"]:
        assert 0.6 <= c["pixel_mm"] <= 0.9 and 0.7 <= c["slice_thickness_mm"] <= 5.0
        img = nib.load(full / c["image"])
        spacing = nib.affines.voxel_sizes(img.affine)
        np.testing.assert_allclose(spacing, c["spacing_mm"], rtol=1e-4)
        np.testing.assert_allclose(spacing[0], c["pixel_mm"] * SCANNER_MATRIX / 48, rtol=1e-3)  # resampled 512 scan
        assert spacing[2] >= c["slice_thickness_mm"] - 1e-6
        ct = np.asarray(img.dataobj).astype(float)
        border = np.concatenate([ct[0].ravel(), ct[-1].ravel(), ct[:, 0].ravel(), ct[:, -1].ravel()])
        assert border.max() < -850, "the body must lie inside the field of view"


def test_full_512_slices_use_the_scanner_pixel():
    affine, ph = make_realistic_case((512, 512, 2), np.random.default_rng(3))
    spacing = nib.affines.voxel_sizes(affine)
    assert 0.6 <= spacing[0] == spacing[1] <= 0.9 and spacing[0] == pytest.approx(ph.meta["pixel_mm"], rel=1e-3)
    assert ph.ct.shape == (512, 512, 2)
    body = ph.masks["body"]
    assert not (body[0].any() or body[-1].any() or body[:, 0].any() or body[:, -1].any())


def test_full_organs_in_the_liver_range_touch_it():
    spleen_touches = 0
    for seed in range(4):
        affine, ph = make_realistic_case((64, 64, 32), np.random.default_rng(seed))
        spacing = nib.affines.voxel_sizes(affine)
        m = ph.masks
        dist = ndimage.distance_transform_edt(~m["liver"], sampling=spacing)  # mm from the liver
        near = float(np.linalg.norm(spacing)) + 0.1  # neighbouring voxels, diagonals included
        for organ in ("muscle", "stomach", "kidneys"):
            assert dist[m[organ]].min() <= near, (seed, organ)
        assert dist[m["heart"]].min() <= 5.0 + 2 * spacing.max(), seed  # across the diaphragm
        spleen_touches += dist[m["spleen"]].min() <= near
        liver_hu = np.median(ph.ct[m["liver"] & ~m["tumor"]])
        assert abs(np.median(ph.ct[m["spleen"]]) - liver_hu) < 35  # spleen as bright as the liver
        assert np.median(ph.ct[m["kidneys"]]) > liver_hu  # kidneys brighter
        assert np.median(ph.ct[m["muscle"]]) < liver_hu and np.median(ph.ct[m["bone"]]) > 200
        assert (ph.ct[m["gas"]] < -600).mean() > 0.5 and m["gas"].any()
        # vessels brighter than the parenchyma (thin hepatic veins less so: partial volume at 6 mm voxels)
        for vessels, margin in (("portal_vein", 15), ("hepatic_veins", 0)):
            inside = m[vessels] & m["liver"]
            assert inside.any() and np.median(ph.ct[inside]) > liver_hu + margin, vessels
    assert spleen_touches >= 1


def test_full_noise_is_spatially_correlated():
    size = (48, 48, 24)
    rng = np.random.default_rng(5)
    anatomy = draw_anatomy(rng)
    acq = draw_acquisition(size, anatomy, rng)
    affine = phantom_affine(size, acq.spacing, "RAS")
    a = render_ct(anatomy, acq, size, affine, np.random.default_rng(1))
    b = render_ct(anatomy, acq, size, affine, np.random.default_rng(2))
    noise = (a.ct.astype(float) - b.ct) / np.sqrt(2)  # same anatomy: only the noise differs
    body = a.masks["body"]
    assert abs(noise[body].std() - acq.noise_hu) < 0.15 * acq.noise_hu
    for axis in (0, 1):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        both = body[tuple(lo)] & body[tuple(hi)]
        r = np.corrcoef(noise[tuple(lo)][both], noise[tuple(hi)][both])[0, 1]
        assert r > 0.3, f"neighbouring-voxel noise correlation {r:.2f} along axis {axis}"


def test_full_deterministic_and_orientation_independent(tmp_path):
    synth_lits(tmp_path / "a", seed=2, n=1, size=(32, 32, 16), realism="full")
    synth_lits(tmp_path / "b", seed=2, n=1, size=(32, 32, 16), realism="full")
    synth_lits(tmp_path / "c", seed=9, n=1, size=(32, 32, 16), realism="full")
    arrays = {k: np.asarray(nib.load(tmp_path / k / "volume-0.nii.gz").dataobj) for k in "abc"}
    assert np.array_equal(arrays["a"], arrays["b"]) and not np.array_equal(arrays["a"], arrays["c"])
    assert (tmp_path / "a" / PHANTOMS_NAME).read_text() == (tmp_path / "b" / PHANTOMS_NAME).read_text()
    centres = []
    for code in ("RAS", "LPS"):
        affine, ph = make_realistic_case((40, 40, 20), np.random.default_rng(4), orientation=code)
        centres.append(affine[:3, :3] @ np.argwhere(ph.masks["liver"]).mean(0) + affine[:3, 3])
    np.testing.assert_allclose(centres[0], centres[1], atol=1.0)
    assert centres[0][0] < 0  # patient's right


def test_full_from_the_command_line(tmp_path):
    from liverseg_monai.cli import main

    assert main(["synth", "lits", "--out", str(tmp_path), "--n", "1", "--realism", "full", "--size", "24x24x12"]) == 0
    assert json.loads((tmp_path / PHANTOMS_NAME).read_text())["realism"] == "full"
    assert nib.load(tmp_path / "volume-0.nii.gz").shape == (24, 24, 12)
    with pytest.raises(ValueError, match="realism"):
        synth_lits(tmp_path / "x", n=1, realism="fancy")
