"""The torch morphsnakes port against scikit-image, its reference.

The pure functions must give scikit-image's level set voxel for voxel (float32 input, same iterations,
smoothing and balloon); ``refine_lesions`` with either backend may differ on at most 0.5 % of the
voxels (in practice also none: both run the same arithmetic on the same float32 crop).
scikit-image alternates its two smoothing operators through a module-level cycle that carries over
between calls, so every reference call restarts it first (``_reset_smoothing_phase``), which is the
phase the torch functions always start from.
"""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from skimage.segmentation import morphsnakes

from liverseg_monai.transforms import active_contour_torch as act
from liverseg_monai.transforms.active_contour import (
    ActiveContourd,
    _reset_smoothing_phase,
    contour_backend,
    refine_lesions,
)

SHAPES = {2: (40, 36), 3: (22, 26, 18)}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def blob(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dark noisy blob (20 vs 60) cut by the array's first face, and a smaller, shifted initial region
    that also touches that face, so the contour must move both ways and meet the border."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(float)
    centre = [2.0] + [s / 2 for s in shape[1:]]
    r = np.sqrt(sum((grid[i] - centre[i]) ** 2 for i in range(len(shape))))
    image = np.where(r < 0.45 * min(shape), 20.0, 60.0) + np.random.default_rng(seed).normal(0, 12, shape)
    shifted = np.sqrt(sum((grid[i] - centre[i] - (3 if i == 1 else 0)) ** 2 for i in range(len(shape))))
    return image.astype(np.float32), (shifted < 0.3 * min(shape)).astype(np.int8)


@pytest.mark.parametrize("ndim", [2, 3])
def test_curvature_operators_equal_scikit_image(ndim):
    for seed, fill in enumerate((0.3, 0.5, 0.8)):
        u = (np.random.default_rng(seed).random(SHAPES[ndim]) < fill).astype(np.int8)
        np.testing.assert_array_equal(act.sup_inf(torch.as_tensor(u)).numpy(), morphsnakes.sup_inf(u) > 0)
        np.testing.assert_array_equal(act.inf_sup(torch.as_tensor(u)).numpy(), morphsnakes.inf_sup(u) > 0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_inverse_gaussian_gradient_equals_scikit_image(ndim):
    image, _ = blob(SHAPES[ndim])
    for alpha, sigma in ((100.0, 5.0), (10.0, 1.5)):
        expected = morphsnakes.inverse_gaussian_gradient(image, alpha=alpha, sigma=sigma)
        got = act.inverse_gaussian_gradient(torch.as_tensor(image), alpha=alpha, sigma=sigma)
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), expected)  # bit for bit on float32
    wide = image.astype(np.float64)
    np.testing.assert_allclose(act.inverse_gaussian_gradient(torch.as_tensor(wide)).numpy(),
                               morphsnakes.inverse_gaussian_gradient(wide), rtol=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("iterations", [1, 4, 9])
@pytest.mark.parametrize("smoothing", [1, 2, 3])
def test_chan_vese_equals_scikit_image(ndim, iterations, smoothing):
    image, init = blob(SHAPES[ndim], seed=iterations)
    for lambda1, lambda2 in ((1.0, 1.0), (1.0, 2.0)):
        _reset_smoothing_phase()
        expected = morphsnakes.morphological_chan_vese(image, iterations, init.copy(), smoothing=smoothing,
                                                       lambda1=lambda1, lambda2=lambda2)
        got = act.morphological_chan_vese(torch.as_tensor(image), iterations, torch.as_tensor(init),
                                          smoothing=smoothing, lambda1=lambda1, lambda2=lambda2)
        assert got.dtype == torch.int8 and got.shape == image.shape
        np.testing.assert_array_equal(got.numpy(), expected)
    assert (expected != init).any()  # the contour moved: the comparison is not of two copies of init


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("iterations", [1, 4, 9])
@pytest.mark.parametrize("smoothing", [1, 2, 3])
@pytest.mark.parametrize("balloon", [-1.0, 0.0, 1.0])
def test_geodesic_equals_scikit_image(ndim, iterations, smoothing, balloon):
    image, init = blob(SHAPES[ndim], seed=iterations)
    edges = morphsnakes.inverse_gaussian_gradient(image, alpha=10.0, sigma=1.5)
    _reset_smoothing_phase()
    expected = morphsnakes.morphological_geodesic_active_contour(edges, iterations, init.copy(), smoothing=smoothing,
                                                                 balloon=balloon)
    got = act.morphological_geodesic_active_contour(torch.as_tensor(edges), iterations, torch.as_tensor(init),
                                                    smoothing=smoothing, balloon=balloon)
    np.testing.assert_array_equal(got.numpy(), expected)
    assert (expected != init).any()


def test_geodesic_with_a_given_threshold_equals_scikit_image():
    image, init = blob(SHAPES[3])
    edges = morphsnakes.inverse_gaussian_gradient(image, alpha=10.0, sigma=1.5)
    _reset_smoothing_phase()
    expected = morphsnakes.morphological_geodesic_active_contour(edges, 5, init.copy(), threshold=0.5, balloon=0.5)
    got = act.morphological_geodesic_active_contour(torch.as_tensor(edges), 5, torch.as_tensor(init),
                                                    threshold=0.5, balloon=0.5)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_bad_input_is_refused_with_the_problem_named():
    image, init = blob(SHAPES[2])
    with pytest.raises(ValueError, match="differ in shape"):
        act.morphological_chan_vese(torch.as_tensor(image), 2, torch.as_tensor(init[:-1]))
    with pytest.raises(ValueError, match="2D or 3D"):
        act.morphological_geodesic_active_contour(torch.zeros(2, 3, 4, 5), 2, torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="at least 2 voxels"):
        act.morphological_chan_vese(torch.zeros(1, 8), 2, torch.zeros(1, 8))
    with pytest.raises(TypeError, match="torch tensors"):
        act.morphological_chan_vese(image, 2, init)
    with pytest.raises(ValueError, match="threshold"):
        act.morphological_geodesic_active_contour(torch.as_tensor(image), 2, torch.as_tensor(init), threshold="otsu")
    with pytest.raises(ValueError, match="backend"):
        contour_backend("cupy")


def test_auto_backend_is_torch_on_a_gpu_and_scikit_image_on_the_cpu():
    assert contour_backend("auto", "cpu") == "skimage"
    assert contour_backend("auto", torch.device("cuda", 0)) == "torch"
    assert contour_backend("torch", "cpu") == "torch" and contour_backend("skimage", "cuda") == "skimage"


def liver_scene(predicted_radius: float = 4.5, shape=(44, 40, 36)) -> tuple[np.ndarray, np.ndarray]:
    """A liver block (60 HU, noisy) in fat (-100 HU) with two lesions of radius 6.5 voxels, one dark and
    one bright, one of them at the liver's edge, predicted as spheres of ``predicted_radius``."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    image = np.full(shape, -100.0)
    labels = np.zeros(shape, np.uint8)
    labels[4:-4, 4:-4, 4:-4] = 1
    image[labels == 1] = 60.0
    for centre, hu in (((14, 14, 18), 15.0), ((30, 27, 8), 115.0)):
        r = np.sqrt(sum((grid[i] - centre[i]) ** 2 for i in range(3)))
        image[(r < 6.5) & (labels == 1)] = hu
        labels[(r < predicted_radius) & (labels == 1)] = 2
    image += np.random.default_rng(0).normal(0, 8, shape)
    return image, labels


@pytest.mark.parametrize("method, balloon, predicted_radius", [
    ("chan_vese", 0.0, 4.5), ("chan_vese", 0.0, 8.0), ("geodesic", 0.0, 4.5), ("geodesic", 1.0, 4.5), ("geodesic", -1.0, 8.0),
])
def test_refine_lesions_backends_agree(method, balloon, predicted_radius):
    image, labels = liver_scene(predicted_radius)
    kwargs = dict(method=method, iterations=8, smoothing=1, margin=4, balloon=balloon)
    reference = refine_lesions(image, labels, backend="skimage", **kwargs)
    ported = refine_lesions(image, labels, backend="torch", **kwargs)
    assert (reference != labels).any()
    assert (reference != ported).mean() <= 0.005  # measured: 0 voxels differ


def test_active_contourd_with_the_torch_backend_on_the_data_device():
    image, labels = liver_scene()
    affine = torch.diag(torch.tensor([0.8, 0.8, 2.5, 1.0]))
    data = {"image": MetaTensor(torch.as_tensor(image[None]).float(), affine=affine).to(DEVICE),
            "pred": MetaTensor(torch.as_tensor(labels[None]).float(), affine=affine,
                               meta={"filename_or_obj": "case.nii.gz"}).to(DEVICE)}
    out = ActiveContourd("pred", backend="torch", iterations=8)(data)["pred"]
    assert isinstance(out, MetaTensor) and out.device == data["pred"].device and out.dtype == torch.float32
    assert out.meta["filename_or_obj"] == "case.nii.gz"
    torch.testing.assert_close(out.affine.float().cpu(), affine)
    reference = refine_lesions(image, labels, backend="skimage", iterations=8)
    assert (out[0].cpu().numpy() != reference).mean() <= 0.005
    assert (out[0].cpu().numpy() != labels).any()


def test_pure_functions_run_on_the_input_device():
    image, init = blob(SHAPES[3])
    x, u = torch.as_tensor(image, device=DEVICE), torch.as_tensor(init, device=DEVICE)
    level = act.morphological_geodesic_active_contour(act.inverse_gaussian_gradient(x), 4, u, balloon=1.0)
    assert level.device == x.device
    _reset_smoothing_phase()
    expected = morphsnakes.morphological_geodesic_active_contour(morphsnakes.inverse_gaussian_gradient(image), 4,
                                                                 init.copy(), balloon=1.0)
    assert (level.cpu().numpy() != expected).mean() <= 0.005  # exact on the CPU; GPU sums may round apart
