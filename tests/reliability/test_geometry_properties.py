"""Geometry invariants, property-based (hypothesis): for random voxel orientations (any axis
permutation and flips, plus oblique rotations), spacings and sizes, every CT bundle's inference output
has exactly the input's shape and affine, and a known synthetic liver (and, for the tumour bundle, a
known tumour inside it) lands in the same physical place.

The bundles' real inference configs run in-process (preprocessing, inferer, Invertd, post-processing,
SaveImaged); only the trained networks are replaced by oracles that threshold intensity, so any flip,
transpose, crop or resampling error shows up as a misplaced mask. For the two-stage tumour bundle both
stages are oracles: stage 1 sees the whole volume on its coarse grid, stage 2 the liver's bounding box
on its own grid, and the crop-and-paste between them, the active-contour refinement and the inversion
to the input grid are the bundle's own code.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]


class IntensityOracle(torch.nn.Module):
    """Logits (background, liver) that call every voxel above 0.9 of the HU window "liver"."""

    def forward(self, x):
        centre = x[:, x.shape[1] // 2 : x.shape[1] // 2 + 1]
        return torch.cat([-(centre - 0.9) * 50, (centre - 0.9) * 50], dim=1)


def _affine(perm, flips, spacing, angle_deg, shape):
    direction = np.zeros((3, 3))
    for axis, (p, f) in enumerate(zip(perm, flips)):
        direction[p, axis] = -1.0 if f else 1.0
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ direction * np.asarray(spacing)[None, :]
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape) - 1) / 2) + np.array([3.0, -7.0, 11.0])
    return aff


class ThresholdOracle(torch.nn.Module):
    """Logits (background, foreground) calling every voxel of the one-channel input above ``level``
    foreground: stands in for a trained 3D stage of the two-stage bundle (input already windowed)."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level

    def forward(self, x):
        return torch.cat([-(x - self.level) * 50, (x - self.level) * 50], dim=1)


def _ellipsoid(shape, affine, centre, axes):
    """Voxels of the grid ``(shape, affine)`` inside an ellipsoid fixed in patient space (mm)."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    inside = (((xyz - np.asarray(centre)) / np.asarray(axes)) ** 2).sum(1) < 1
    return inside.reshape(shape)


def _liver(shape, affine):
    """A bright ellipsoid at a fixed place in patient space (patient right, anterior)."""
    return _ellipsoid(shape, affine, (-25.0, 10.0, 5.0), (30.0, 22.0, 26.0))


def _tumor(shape, affine):
    """A smaller ellipsoid inside :func:`_liver`, off its centre (so a flip would move it)."""
    return _ellipsoid(shape, affine, (-35.0, 14.0, 10.0), (15.0, 12.0, 13.0))


def _dice(a, b):
    return 2 * (a & b).sum() / max(1, a.sum() + b.sum())


def _run_inference(bundle: str, image: Path, data: Path, out: Path, overrides: dict):
    (data / "dataset.json").write_text(json.dumps({"testing": [image.name]}))
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(REPO / "bundles" / bundle)
    parser["dataset_dir"] = str(data)
    parser["output_dir"] = str(out)
    for key, value in overrides.items():
        parser[key] = value
    parser["initialize"] = []
    parser["handlers"] = []
    parser.get_parsed_content("evaluator").run()


def _random_grid(perm, flips, spacing, angle, extra):
    shape = tuple(int(np.ceil(120 / s)) + e for s, e in zip(spacing, extra))
    return shape, _affine(perm, flips, spacing, angle, shape)


GRIDS = dict(
    perm=st.permutations([0, 1, 2]),
    flips=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    spacing=st.tuples(st.floats(1.5, 3.5), st.floats(1.5, 3.5), st.floats(1.5, 5.0)),
    angle=st.sampled_from([0.0, 0.0, 17.0, -30.0]),
    extra=st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 6)),
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**GRIDS)
def test_liver_ct_unet_output_geometry(tmp_path_factory, perm, flips, spacing, angle, extra):
    tmp = tmp_path_factory.mktemp("geom")
    shape, affine = _random_grid(perm, flips, spacing, angle, extra)
    truth = _liver(shape, affine)
    nib.save(nib.Nifti1Image(np.where(truth, 400, 0).astype(np.int16), affine), str(tmp / "case.nii.gz"))
    _run_inference("liver_ct_unet_segmentation", tmp / "case.nii.gz", tmp, tmp / "out",
                   {"spatial_size": [64, 64], "network_def": IntensityOracle()})
    out = nib.load(tmp / "out" / "case_seg.nii.gz")
    assert out.shape == shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    dice = _dice(np.asarray(out.dataobj) > 0, truth)
    assert dice > 0.85, f"liver misplaced: Dice {dice:.3f} for perm {perm}, flips {flips}, angle {angle}"


# Intensities (HU) and oracle levels: liver 150 on 0 HU background, tumour 400. Stage 1 windows to
# [-200, 300] (background 0.4, liver 0.7, tumour 1.0) and calls > 0.55 liver; stage 2 windows to
# [-100, 250] (liver 0.71, tumour 1.0) and calls > 0.86 tumour.
TUMOR_BUNDLE = {"spacing": [2.0, 2.0, 3.0], "liver#roi_size": [48, 48, 32], "tumor#roi_size": [32, 32, 32]}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**GRIDS)
def test_liver_tumor_two_stage_output_geometry(tmp_path_factory, perm, flips, spacing, angle, extra):
    tmp = tmp_path_factory.mktemp("geom_tumor")
    shape, affine = _random_grid(perm, flips, spacing, angle, extra)
    liver, tumor = _liver(shape, affine), _tumor(shape, affine)
    assert tumor.any() and not (tumor & ~liver).any()
    hu = np.where(tumor, 400, np.where(liver, 150, 0)).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, affine), str(tmp / "case.nii.gz"))
    _run_inference("liver_tumor_ct_segresnetvae", tmp / "case.nii.gz", tmp, tmp / "out",
                   {**TUMOR_BUNDLE, "liver#network_def": ThresholdOracle(0.55), "tumor#network_def": ThresholdOracle(0.86)})
    out = nib.load(tmp / "out" / "case_seg.nii.gz")
    assert out.shape == shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    labels = np.asarray(out.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2}
    where = f"perm {perm}, flips {flips}, spacing {spacing}, angle {angle}"
    liver_dice, tumor_dice = _dice(labels > 0, liver), _dice(labels == 2, tumor)
    assert liver_dice > 0.85, f"liver misplaced: Dice {liver_dice:.3f} for {where}"
    assert tumor_dice > 0.75, f"tumour misplaced: Dice {tumor_dice:.3f} for {where}"
