import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from liverseg_monai.transforms.active_contour import ActiveContourd, refine_lesions


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def scene(lesion_hu: float = 15.0, true_r: float = 7.0, pred_r: float = 4.5, shape=(40, 40, 40), centre=(20, 20, 20), seed=0):
    """A liver cube (60 HU) with a spherical lesion; the prediction is a smaller sphere."""
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    r = np.sqrt(sum((g[i] - centre[i]) ** 2 for i in range(3)))
    img = np.full(shape, -100.0)
    lab = np.zeros(shape, np.uint8)
    lab[4:-4, 4:-4, 4:-4] = 1
    img[lab == 1] = 60.0
    img[(r < true_r) & (lab == 1)] = lesion_hu
    img += np.random.default_rng(seed).normal(0, 8, shape)
    lab[(r < pred_r) & (lab == 1)] = 2
    return img, lab, (r < true_r) & (lab > 0)


@pytest.mark.parametrize("lesion_hu", [15.0, 115.0])  # hypo- and hyper-dense
def test_under_segmented_lesion_grows_to_its_boundary(lesion_hu):
    img, lab, truth = scene(lesion_hu)
    out = refine_lesions(img, lab, iterations=15, smoothing=1)
    assert dice(out == 2, truth) > 0.9 > dice(lab == 2, truth) + 0.2


def test_over_segmented_lesion_shrinks():
    img, lab, truth = scene(true_r=5.0, pred_r=7.5)
    out = refine_lesions(img, lab, iterations=15, max_growth=6.0)
    assert dice(out == 2, truth) > dice(lab == 2, truth) + 0.15
    assert ((lab == 2) & (out == 1)).any()  # voxels given up return to the liver


def test_contour_stays_inside_the_organ():
    # a lesion touching the liver edge: outside the liver is dark fat (-100 HU) like the lesion
    img, lab, truth = scene(lesion_hu=-50.0, centre=(6, 20, 20), true_r=6.0, pred_r=4.0)
    out = refine_lesions(img, lab, iterations=20, margin=5)
    assert not ((out == 2) & (lab == 0)).any()
    assert (out[lab == 0] == 0).all()


def test_other_labels_untouched_and_zero_iterations_is_identity():
    img, lab, _ = scene()
    lab[30:34, 30:34, 30:34] = 3  # portal vein
    lab[0:2, 0:2, 0:2] = 4  # aorta
    out = refine_lesions(img, lab, iterations=10)
    assert (out[lab == 3] == 3).all() and (out[lab == 4] == 4).all()
    assert np.array_equal(refine_lesions(img, lab, iterations=0), lab)


def test_each_lesion_refined_on_its_own():
    img1, lab1, t1 = scene(centre=(12, 12, 20), true_r=5.0, pred_r=3.5, shape=(40, 40, 40))
    img2, lab2, t2 = scene(centre=(28, 28, 20), true_r=5.0, pred_r=3.5, shape=(40, 40, 40), seed=1)
    img = np.where(t2, img2, img1)
    lab = np.maximum(lab1, lab2)
    out = refine_lesions(img, lab, iterations=15)
    for truth in (t1, t2):
        assert dice((out == 2) & truth, truth) > 0.85
    assert dice(out == 2, t1 | t2) > 0.85


def test_leaking_contour_is_rejected():
    img, lab, _ = scene(lesion_hu=60.0)  # invisible lesion: nothing to converge to
    img[:] = 60.0
    img[5:35, 5:35, 5:35] = 10.0  # a dark region much larger than the lesion
    out = refine_lesions(img, lab, iterations=30, margin=15, max_growth=1.5)
    assert np.array_equal(out == 2, lab == 2)


def test_geodesic_method_runs_and_stays_in_organ():
    img, lab, truth = scene()
    out = refine_lesions(img, lab, method="geodesic", iterations=10, balloon=1.0)
    assert not ((out == 2) & (lab == 0)).any()
    assert (out == 2).sum() >= (lab == 2).sum()


def test_bad_arguments():
    img, lab, _ = scene()
    with pytest.raises(ValueError, match="shape"):
        refine_lesions(img[:-1], lab)
    with pytest.raises(ValueError, match="method"):
        refine_lesions(img, lab, method="snake")


def test_no_lesion_returns_a_copy():
    img, lab, _ = scene()
    lab[lab == 2] = 1
    out = refine_lesions(img, lab)
    assert np.array_equal(out, lab) and out is not lab


def test_dict_transform_keeps_metadata_and_can_be_switched_off():
    img, lab, truth = scene()
    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0]))
    data = {"image": MetaTensor(torch.as_tensor(img[None]).float(), affine=affine),
            "pred": MetaTensor(torch.as_tensor(lab[None]).float(), affine=affine, meta={"filename_or_obj": "case.nii.gz"})}
    out = ActiveContourd("pred", iterations=15)(data)
    assert isinstance(out["pred"], MetaTensor) and out["pred"].meta["filename_or_obj"] == "case.nii.gz"
    torch.testing.assert_close(out["pred"].affine, affine.double() if out["pred"].affine.dtype == torch.float64 else affine)
    assert dice(out["pred"][0].numpy() == 2, truth) > 0.9
    assert torch.equal(data["pred"], torch.as_tensor(lab[None]).float())  # input not modified
    off = ActiveContourd("pred", enabled=False)(data)
    assert off["pred"] is data["pred"]
