import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from liverseg_monai.errors import InputError
from liverseg_monai.transforms.validate import CheckCTImaged, check_ct_volume, check_image_label_pair


def _img(array, affine=None, name="case.nii.gz"):
    t = MetaTensor(torch.as_tensor(array), affine=torch.as_tensor(affine if affine is not None else np.eye(4)))
    t.meta["filename_or_obj"] = name
    return t


def test_a_good_volume_passes():
    check_ct_volume(_img(np.random.default_rng(0).normal(0, 100, (1, 8, 8, 4)).astype(np.float32)))


@pytest.mark.parametrize(
    "array, affine, message",
    [
        (np.zeros((3, 8, 8, 4)), None, "3 channels"),
        (np.zeros((1, 8, 8)), None, "expected a 3D volume"),
        (np.zeros((1, 8, 8, 1)), None, "2D image"),
        (np.full((1, 4, 4, 4), np.nan), None, "NaN or infinite"),
        (np.full((1, 4, 4, 4), 1e6), None, "outside the Hounsfield range"),
        (np.zeros((1, 4, 4, 4)), np.diag([1.0, 0.0, 1.0, 1.0]), "invalid voxel spacing"),
    ],
)
def test_bad_volumes_raise_naming_the_file(array, affine, message):
    with pytest.raises(InputError, match=message) as err:
        check_ct_volume(_img(array.astype(np.float32), affine, name="/data/bad.nii.gz"))
    assert "/data/bad.nii.gz" in str(err.value)


def test_constant_image_only_warns(caplog):
    check_ct_volume(_img(np.zeros((1, 4, 4, 4), np.float32)))
    assert "constant image" in caplog.text


def test_label_pair_checks():
    img = _img(np.zeros((1, 4, 4, 4), np.float32), name="img.nii.gz")
    with pytest.raises(InputError, match="shape"):
        check_image_label_pair(img, _img(np.zeros((1, 4, 4, 5)), name="lab.nii.gz"))
    with pytest.raises(InputError, match="affines differ"):
        check_image_label_pair(img, _img(np.zeros((1, 4, 4, 4)), np.diag([2.0, 1, 1, 1]), "lab.nii.gz"))
    with pytest.raises(InputError, match=r"label values \[7\]"):
        check_image_label_pair(img, _img(np.full((1, 4, 4, 4), 7), name="lab.nii.gz"), num_classes=3)


def test_dictionary_transform_passes_data_through_and_skips_unloaded_labels():
    img = _img(np.zeros((1, 4, 4, 4), np.float32))
    out = CheckCTImaged(keys="image", label_key="label")({"image": img, "label": "not/loaded.nii.gz"})
    assert out["image"] is img
