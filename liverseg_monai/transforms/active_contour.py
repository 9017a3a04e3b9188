"""Active-contour refinement of predicted lesions, limited to the organ (morphsnakes).

:func:`refine_lesions` is a pure function: each connected lesion of the predicted label map is
refined on its own bounding-box crop (so the cost grows with lesion size, not volume size) by a
morphological Chan-Vese or geodesic active contour (Márquez-Neila et al., TPAMI 2014), initialised
from the predicted lesion and confined to the organ mask. The contour runs either in scikit-image
(the reference, numpy on the CPU) or in its torch port
(:mod:`liverseg_monai.transforms.active_contour_torch`, same result, on the CPU or the GPU).
:class:`ActiveContourd` wraps it for a MONAI ``postprocessing`` chain.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage
from skimage.segmentation import (
    inverse_gaussian_gradient,
    morphological_chan_vese,
    morphological_geodesic_active_contour,
)

from liverseg_monai.transforms import active_contour_torch

METHODS = ("chan_vese", "geodesic")
BACKENDS = ("auto", "skimage", "torch")


def contour_backend(backend: str, device: str | torch.device = "cpu") -> str:
    """The implementation :func:`refine_lesions` uses for ``backend`` when the work is on ``device``:
    ``"skimage"`` or ``"torch"``.

    ``"auto"`` picks torch on an accelerator (a CUDA GPU: the crops are evolved where the data already
    is) and scikit-image on the CPU. Both give the same level sets (bit for bit on float32 crops, see
    ``tests/transforms/test_active_contour_torch.py``). On the CPU torch is faster with one thread
    (10 Chan-Vese iterations on a 160x160x64 crop: 0.6-0.7 s against 4-5 s in scikit-image) but with
    two threads on a busy 2-core machine its many small parallel operations wait on each other and it
    became slower than scikit-image (6-8 s), so on the CPU it is chosen only explicitly.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "skimage" if torch.device(device).type == "cpu" else "torch"
    return backend


def _evolve(crop: np.ndarray, lesion: np.ndarray, method: str, iterations: int, smoothing: int, lambda1: float,
            lambda2: float, balloon: float, backend: str, device: torch.device) -> np.ndarray:
    """The contour's final inside (boolean) on one crop, initialised from ``lesion``."""
    if backend == "torch":
        image = torch.as_tensor(crop, device=device)
        init = torch.as_tensor(lesion, device=device)
        if method == "chan_vese":
            level = active_contour_torch.morphological_chan_vese(image, iterations, init, smoothing=smoothing,
                                                                 lambda1=lambda1, lambda2=lambda2)
        else:
            edges = active_contour_torch.inverse_gaussian_gradient(image)
            level = active_contour_torch.morphological_geodesic_active_contour(edges, iterations, init,
                                                                               smoothing=smoothing, balloon=balloon)
        return level.cpu().numpy() > 0
    _reset_smoothing_phase()
    if method == "chan_vese":
        level = morphological_chan_vese(crop, num_iter=iterations, init_level_set=lesion.astype(np.int8),
                                        smoothing=smoothing, lambda1=lambda1, lambda2=lambda2)
    else:
        level = morphological_geodesic_active_contour(inverse_gaussian_gradient(crop), num_iter=iterations,
                                                      init_level_set=lesion.astype(np.int8), smoothing=smoothing,
                                                      balloon=balloon)
    return level > 0


def _numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _reset_smoothing_phase() -> None:
    """Make morphsnakes deterministic: scikit-image alternates its two curvature operators (SIoIS,
    ISoSI) through a module-level cycle that carries over between calls, so the same call can give
    different results depending on what ran before. Restart the cycle (no-op if the internals change)."""
    from skimage.segmentation import morphsnakes

    if all(hasattr(morphsnakes, n) for n in ("_curvop", "_fcycle", "sup_inf", "inf_sup")):
        morphsnakes._curvop = morphsnakes._fcycle(
            [lambda u: morphsnakes.sup_inf(morphsnakes.inf_sup(u)), lambda u: morphsnakes.inf_sup(morphsnakes.sup_inf(u))]
        )


def refine_lesions(
    image: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    lesion_label: int = 2,
    organ_labels: Sequence[int] = (1, 2),
    method: str = "chan_vese",
    iterations: int = 10,
    smoothing: int = 1,
    margin: int = 3,
    window: tuple[float, float] | None = (-100.0, 250.0),
    lambda1: float = 1.0,
    lambda2: float = 1.0,
    balloon: float = 0.0,
    min_voxels: int = 8,
    max_growth: float = 4.0,
    beyond_contrast: float | None = None,
    backend: str = "auto",
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Refine every connected lesion of ``labels`` with a morphological active contour.

    Args:
        image: the intensity volume (2D or 3D; HU for CT), same shape as ``labels``; a numpy array or a
            torch tensor (its device is where the torch backend runs unless ``device`` says otherwise).
        labels: integer label map (numpy array or torch tensor); ``lesion_label`` voxels are the lesions to refine, ``organ_labels``
            the organ they must stay in (the lesion label included).
        lesion_label: the label value of lesions (2 = tumour).
        organ_labels: label values forming the organ mask the contour may not leave.
        method: ``"chan_vese"`` (region based, :func:`skimage.segmentation.morphological_chan_vese`)
            or ``"geodesic"`` (edge based, :func:`skimage.segmentation.morphological_geodesic_active_contour`).
        iterations: contour iterations per lesion (``num_iter``); 0 returns ``labels`` unchanged.
        smoothing: smoothing operator applications per iteration (0 to 4; higher = smoother surface).
        margin: voxels added around each lesion's bounding box; the contour can grow this far.
        window: intensity range ``(lo, hi)`` the image is clipped to before the contour (HU); ``None`` keeps it.
        lambda1, lambda2: Chan-Vese weights of the inside and outside region terms.
        balloon: geodesic balloon force (>0 inflates, <0 deflates, 0 none).
        min_voxels: lesions smaller than this are kept as predicted (too small to refine).
        beyond_contrast: voxels further from the organ's intensity than the lesion's mean by more than
            ``beyond_contrast`` times the lesion-organ contrast (for example contrast-filled vessels next
            to a hyper-dense lesion) are treated as organ, so the contour does not follow them; ``None``
            keeps every voxel.
        max_growth: a refined lesion larger than ``max_growth`` times (or smaller than ``1/max_growth``
            times) the predicted one is rejected and the prediction kept (a contour that leaked).
        backend: ``"skimage"`` (scikit-image, the reference), ``"torch"``
            (:mod:`~liverseg_monai.transforms.active_contour_torch`, same result) or ``"auto"`` (torch
            on a GPU, scikit-image on the CPU; see :func:`contour_backend`). The crops and the bookkeeping are numpy either way.
        device: where the torch backend evolves each crop; ``None`` = ``image``'s device if it is a
            tensor, else the CPU.

    Returns:
        a new numpy label map: refined lesion voxels get ``lesion_label``; organ voxels a lesion gave up get
        the first of ``organ_labels`` that is not ``lesion_label``. Other labels are never changed.

    Example:
        >>> z, y, x = np.mgrid[:40, :40, :40]; r = np.sqrt((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2)
        >>> img = np.where(r < 7, 10.0, 60.0)   # a hypo-dense lesion (radius 7 voxels) in the liver, HU
        >>> lab = np.zeros((40, 40, 40), np.uint8); lab[5:35, 5:35, 5:35] = 1; lab[r < 5] = 2  # under-segmented
        >>> out = refine_lesions(img, lab, iterations=10, smoothing=1)
        >>> def dice(a, b): return round(float(2 * (a & b).sum() / (a.sum() + b.sum())), 2)
        >>> dice(lab == 2, r < 7), dice(out == 2, r < 7)
        (0.52, 0.98)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if device is None:
        device = image.device if isinstance(image, torch.Tensor) else "cpu"
    device = torch.device(device)
    backend = contour_backend(backend, device)
    image = _numpy(image).astype(np.float32, copy=False)
    labels = _numpy(labels)
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    out = labels.copy()
    if iterations <= 0:
        return out
    lesions, n = ndimage.label(labels == lesion_label)
    if n == 0:
        return out
    organ = np.isin(labels, organ_labels)
    fill = next((v for v in organ_labels if v != lesion_label), 0)
    if window is not None:
        image = np.clip(image, *window)
    for index, box in enumerate(ndimage.find_objects(lesions), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, size)) for s, size in zip(box, labels.shape))
        lesion = lesions[box] == index
        size = int(lesion.sum())
        if size < min_voxels:
            continue
        allowed = organ[box] & ((lesions[box] == 0) | lesion)
        crop = image[box].copy()
        rest = organ[box] & ~lesion
        organ_hu = float(np.median(crop[rest])) if rest.any() else float(crop[lesion].mean())
        outside = ~organ[box]
        if beyond_contrast is not None and rest.any():
            lesion_hu = float(crop[lesion].mean())
            contrast = lesion_hu - organ_hu
            outside |= (crop - lesion_hu) * np.sign(contrast) > beyond_contrast * abs(contrast)
        if outside.any():  # they look like the organ, so the contour never prefers them
            crop[outside] = organ_hu
        refined = _evolve(crop, lesion, method, iterations, smoothing, lambda1, lambda2, balloon, backend, device) & allowed
        grown = int(refined.sum())
        if grown == 0 or grown > max_growth * size or grown * max_growth < size:
            continue
        region = out[box]
        region[lesion & ~refined] = fill
        region[refined] = lesion_label
        out[box] = region
    return out


class ActiveContourd(MapTransform):
    """Dictionary transform around :func:`refine_lesions` for a MONAI ``postprocessing`` chain.

    ``keys`` name channel-first label maps ``(1, X, Y, Z)``; ``image_key`` the intensity volume on the
    same grid. The label maps keep their type and metadata (so ``Invertd`` still works afterwards).

    Args:
        keys: label-map keys to refine.
        image_key: the image the contour evolves on.
        enabled: ``False`` passes the data through (the ablation switch).
        allow_missing_keys: don't raise for missing keys.
        kwargs: the parameters of :func:`refine_lesions` (``iterations``, ``smoothing``, ``method``,
            ``backend``, ...); the torch backend runs on the image's device unless ``device`` is given.
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image", enabled: bool = True,
                 allow_missing_keys: bool = False, **kwargs):
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.enabled = enabled
        self.kwargs = kwargs

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.enabled:
            return d
        image = d[self.image_key]
        kwargs = {"device": image.device if isinstance(image, torch.Tensor) else None, **self.kwargs}
        image = _numpy(image)
        for key in self.key_iterator(d):
            pred = d[key]
            array = _numpy(pred)
            refined = np.stack([refine_lesions(image[0], array[c], **kwargs) for c in range(array.shape[0])])
            if isinstance(pred, torch.Tensor):
                result = pred.clone()
                result[...] = torch.as_tensor(refined, dtype=pred.dtype, device=pred.device)
            else:
                result = refined.astype(array.dtype)
            d[key] = result
        return d
