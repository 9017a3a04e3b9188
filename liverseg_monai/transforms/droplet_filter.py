"""Droplet measurements and the feature filter of the steatosis pipeline.

:func:`droplet_table` measures every droplet of an instance label image with
:func:`skimage.measure.regionprops` (area and perimeter in µm, eccentricity, score).
:func:`filter_droplets` removes objects whose size, perimeter or elongation is implausible relative to
the image's average droplet, with the paper's default bounds (Guo et al., arXiv:1911.07088):
area in [0.001, 6], perimeter in [0.5, 4] and eccentricity in [0.2, 1.5] times the mean.
:class:`DropletFilterd` applies it in a MONAI ``postprocessing`` chain.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform
from skimage import measure, segmentation

DEFAULT_SIZE_RANGE = (0.001, 6.0)
DEFAULT_PERIMETER_RANGE = (0.5, 4.0)
DEFAULT_ECCENTRICITY_RANGE = (0.2, 1.5)


def _elongation(region) -> float:
    minor = region.axis_minor_length
    return float(region.axis_major_length / minor) if minor > 0 else float("inf")


def droplet_table(labels: np.ndarray, scores: Mapping[int, float] | None = None, mpp: float = 1.0) -> list[dict]:
    """One row per droplet: id, centroid (pixels), area (µm²), perimeter (µm), eccentricity, elongation, score.

    Args:
        labels: (H, W) instance ids, 0 = background.
        scores: optional score per id (the network's confidence).
        mpp: microns per pixel (areas scale with ``mpp**2``, perimeters with ``mpp``).

    Example:
        >>> lab = np.zeros((20, 20), int); lab[5:15, 5:15] = 1
        >>> droplet_table(lab, mpp=0.5)[0]["area_um2"]
        25.0
    """
    labels = np.asarray(labels).astype(np.int64)
    rows = []
    for r in measure.regionprops(labels):
        rows.append({
            "droplet_id": int(r.label),
            "centroid_y": round(float(r.centroid[0]), 2),
            "centroid_x": round(float(r.centroid[1]), 2),
            "area_px": int(r.area),
            "area_um2": float(r.area) * mpp * mpp,
            "perimeter_um": float(r.perimeter) * mpp,
            "eccentricity": float(r.eccentricity),
            "elongation": _elongation(r),
            "score": float(scores.get(int(r.label), 1.0)) if scores is not None else 1.0,
        })
    return rows


def keep_droplets(
    area: np.ndarray,
    perimeter: np.ndarray,
    shape: np.ndarray,
    border: np.ndarray | None = None,
    size_range: Sequence[float] = DEFAULT_SIZE_RANGE,
    perimeter_range: Sequence[float] = DEFAULT_PERIMETER_RANGE,
    eccentricity_range: Sequence[float] = DEFAULT_ECCENTRICITY_RANGE,
    reference: str = "mean",
) -> np.ndarray:
    """The filter's decision from measured features: which droplets to keep (bool per droplet).

    Each feature is divided by its mean (or median) over the droplets not on the border and compared
    with ``[low, high]``; border droplets (``border`` True) are always kept. Non-finite shapes (a
    one-pixel-wide object's elongation) fail the shape test. Used by :func:`filter_droplets` on one
    image and by whole-slide inference on the droplets of a slide.

    Example:
        >>> keep_droplets(np.array([100.0, 110, 1]), np.array([35.0, 37, 3]), np.array([1.0, 1.1, 1.0]),
        ...               size_range=(0.1, 6)).tolist()
        [True, True, False]
    """
    if reference not in ("mean", "median"):
        raise ValueError(f"reference must be 'mean' or 'median', got {reference!r}")
    area, perimeter = np.asarray(area, float), np.asarray(perimeter, float)
    shape = np.where(np.isfinite(np.asarray(shape, float)), shape, np.nan)
    border = np.zeros(len(area), bool) if border is None else np.asarray(border, bool)
    if border.all():
        border = np.zeros(len(area), bool)
    keep = np.ones(len(area), bool)
    for values, (lo, hi) in ((area, size_range), (perimeter, perimeter_range), (shape, eccentricity_range)):
        finite = values[np.isfinite(values) & ~border]
        mean = (np.mean(finite) if reference == "mean" else np.median(finite)) if len(finite) else np.nan
        if not np.isfinite(mean) or mean <= 0:
            continue
        ratio = np.nan_to_num(values / mean, nan=np.inf)
        keep &= (ratio >= lo) & (ratio <= hi)
    return keep | border


def filter_droplets(
    labels: np.ndarray,
    size_range: Sequence[float] = DEFAULT_SIZE_RANGE,
    perimeter_range: Sequence[float] = DEFAULT_PERIMETER_RANGE,
    eccentricity_range: Sequence[float] = DEFAULT_ECCENTRICITY_RANGE,
    eccentricity_measure: str = "elongation",
    reference: str = "mean",
    keep_border: bool = True,
    relabel: bool = False,
) -> np.ndarray:
    """Remove droplets whose features fall outside bounds relative to the image's mean droplet.

    Args:
        labels: (H, W) instance ids, 0 = background.
        size_range: [low, high] bounds on area / mean area.
        perimeter_range: [low, high] bounds on perimeter / mean perimeter.
        eccentricity_range: [low, high] bounds on shape / mean shape.
        eccentricity_measure: the shape feature: ``"elongation"`` (major / minor axis, 1 for a circle;
            default) or ``"eccentricity"`` (skimage's, 0 for a circle). With the paper's lower bound of
            0.2 x mean, skimage's eccentricity removes near-perfect circles, which are the most typical
            droplets, so elongation is the default; both are reported by :func:`droplet_table`.
        reference: ``"mean"`` (the paper) or ``"median"`` (robust when a few outliers dominate a
            tile with few droplets) of each feature over the image's objects.
        keep_border: objects touching the image border are truncated, so their features say little:
            keep them and leave them out of the means (``False`` filters them like the others).
        relabel: renumber the kept droplets 1..N.

    Returns:
        the filtered label image (same dtype).

    Example:
        >>> lab = np.zeros((40, 40), int); lab[5:15, 5:15] = 1; lab[20:30, 20:30] = 2; lab[35, 35] = 3
        >>> np.unique(filter_droplets(lab, size_range=(0.1, 6))).tolist()
        [0, 1, 2]
    """
    labels = np.asarray(labels)
    if reference not in ("mean", "median"):
        raise ValueError(f"reference must be 'mean' or 'median', got {reference!r}")
    if eccentricity_measure not in ("elongation", "eccentricity"):
        raise ValueError(f"eccentricity_measure must be 'elongation' or 'eccentricity', got {eccentricity_measure!r}")
    regions = measure.regionprops(labels.astype(np.int64))
    if not regions:
        return labels.copy()
    area = np.array([r.area for r in regions], float)
    perim = np.array([r.perimeter for r in regions], float)
    if eccentricity_measure == "elongation":
        shape = np.array([_elongation(r) for r in regions], float)
    else:
        shape = np.array([r.eccentricity for r in regions], float)
    h, w = labels.shape[:2]
    border = np.array([r.bbox[0] == 0 or r.bbox[1] == 0 or r.bbox[2] == h or r.bbox[3] == w for r in regions])
    keep = keep_droplets(area, perim, shape, border if keep_border else None, size_range, perimeter_range,
                         eccentricity_range, reference)
    removed = [r.label for r, k in zip(regions, keep) if not k]
    out = labels.copy()
    if removed:
        out[np.isin(labels, removed)] = 0
    if relabel:
        out = segmentation.relabel_sequential(out.astype(np.int64))[0].astype(labels.dtype)
    return out


class DropletFilterd(MapTransform):
    """Apply :func:`filter_droplets` to instance maps ``[1, H, W]`` or ``[2, H, W]`` (ids, scores).

    With a second (score) channel, scores of removed droplets are zeroed too.
    """

    def __init__(
        self,
        keys: KeysCollection,
        size_range: Sequence[float] = DEFAULT_SIZE_RANGE,
        perimeter_range: Sequence[float] = DEFAULT_PERIMETER_RANGE,
        eccentricity_range: Sequence[float] = DEFAULT_ECCENTRICITY_RANGE,
        eccentricity_measure: str = "elongation",
        reference: str = "mean",
        keep_border: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.kwargs = dict(size_range=size_range, perimeter_range=perimeter_range, reference=reference,
                           keep_border=keep_border,
                           eccentricity_range=eccentricity_range, eccentricity_measure=eccentricity_measure)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        import torch

        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            ids = np.rint(arr[0]).astype(np.int64)
            kept = filter_droplets(ids, **self.kwargs)
            out = arr.copy()
            out[0] = kept
            if arr.shape[0] > 1:
                out[1:, kept == 0] = 0
            if isinstance(x, torch.Tensor):  # in place on a clone keeps MetaTensor metadata
                d[key] = x.clone().copy_(torch.as_tensor(out))
            else:
                d[key] = out
        return d
