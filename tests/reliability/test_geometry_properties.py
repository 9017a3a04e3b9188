"""Geometry invariants, property-based (hypothesis): for random voxel orientations (any axis
permutation and flips, plus oblique rotations), spacings and sizes, the CT bundle's inference output
has exactly the input's shape and affine, and a known synthetic liver lands in the same physical place.

The bundle's real inference config runs in-process (preprocessing, SliceInferer, Invertd,
connected-component clean-up, SaveImaged); only the trained network is replaced by an oracle that
thresholds intensity, so any flip, transpose or resampling error shows up as a misplaced mask.
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


def _liver(shape, affine):
    """A bright ellipsoid at a fixed place in patient space (patient right, anterior): 400 HU on 0 HU."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    centre, axes = np.array([-25.0, 10.0, 5.0]), np.array([30.0, 22.0, 26.0])
    inside = (((xyz - centre) / axes) ** 2).sum(1) < 1
    return inside.reshape(shape)


def _run_inference(bundle: str, image: Path, data: Path, out: Path):
    (data / "dataset.json").write_text(json.dumps({"testing": [image.name]}))
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(REPO / "bundles" / bundle)
    parser["dataset_dir"] = str(data)
    parser["output_dir"] = str(out)
    parser["spatial_size"] = [64, 64]
    parser["network_def"] = IntensityOracle()
    parser["initialize"] = []
    parser["handlers"] = []
    parser.get_parsed_content("evaluator").run()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    perm=st.permutations([0, 1, 2]),
    flips=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    spacing=st.tuples(st.floats(1.5, 3.5), st.floats(1.5, 3.5), st.floats(1.5, 5.0)),
    angle=st.sampled_from([0.0, 0.0, 17.0, -30.0]),
    extra=st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 6)),
)
def test_liver_ct_unet_output_geometry(tmp_path_factory, perm, flips, spacing, angle, extra):
    tmp = tmp_path_factory.mktemp("geom")
    shape = tuple(int(np.ceil(120 / s)) + e for s, e in zip(spacing, extra))
    affine = _affine(perm, flips, spacing, angle, shape)
    truth = _liver(shape, affine)
    nib.save(nib.Nifti1Image(np.where(truth, 400, 0).astype(np.int16), affine), str(tmp / "case.nii.gz"))
    _run_inference("liver_ct_unet_segmentation", tmp / "case.nii.gz", tmp, tmp / "out")
    out = nib.load(tmp / "out" / "case_seg.nii.gz")
    assert out.shape == shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    pred = np.asarray(out.dataobj) > 0
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.85, f"liver misplaced: Dice {dice:.3f} for perm {perm}, flips {flips}, angle {angle}"
