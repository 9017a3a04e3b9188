import nibabel as nib
import numpy as np

from liverseg_monai.data import load_datalist
from liverseg_monai.data.synth.lits import synth_lits
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
