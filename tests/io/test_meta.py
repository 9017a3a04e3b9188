import numpy as np
import torch
from monai.data import MetaTensor

from liverseg_monai.io.meta import affine_of, source_name, voxel_spacing


def test_source_name_and_affine_of_a_loaded_image():
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    img = MetaTensor(torch.zeros(1, 2, 2, 2), affine=torch.as_tensor(affine), meta={"filename_or_obj": "/d/ct.nii.gz"})
    assert source_name(img) == "/d/ct.nii.gz"
    np.testing.assert_allclose(affine_of(img), affine)
    np.testing.assert_allclose(voxel_spacing(img), [0.8, 0.8, 2.5])


def test_batched_and_bare_inputs():
    img = MetaTensor(torch.zeros(2, 1, 2, 2, 2), meta={"filename_or_obj": ["a.nii", "b.nii"]})
    img.affine = torch.eye(4).repeat(2, 1, 1)
    assert source_name(img) == "a.nii"
    assert affine_of(img).shape == (4, 4)
    bare = np.zeros((1, 2, 2, 2))
    assert source_name(bare) == "<in-memory image>"
    assert affine_of(bare) is None
    np.testing.assert_array_equal(voxel_spacing(bare), [1.0, 1.0, 1.0])
