"""Input checks that turn silently wrong inputs into clear errors naming the file.

``check_ct_volume`` and ``check_image_label_pair`` are pure functions; ``CheckCTImaged`` runs them in a
MONAI preprocessing chain right after ``LoadImaged`` + ``EnsureChannelFirstd``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from liverseg_monai.errors import InputError
from liverseg_monai.io.meta import affine_of, source_name

logger = logging.getLogger(__name__)

# source_name lives in liverseg_monai.io.meta; re-exported here for imports written before it moved
__all__ = ["CheckCTImaged", "check_ct_volume", "check_image_label_pair", "source_name"]


def check_ct_volume(img, name: str | None = None, hu_range: tuple[float, float] = (-3000.0, 32767.0)) -> None:
    """Raise :class:`InputError` unless ``img`` (channel-first, ``(1, X, Y, Z)``) is a usable CT volume.

    Checks: one channel (not RGB, not 4D/multi-echo), three spatial dimensions with at least two
    voxels each, finite values (no NaN/Inf), a non-degenerate affine with positive spacing, and values
    in a Hounsfield range (``hu_range``). A constant image is allowed but logged as a warning.
    """
    name = name or source_name(img)
    shape = tuple(img.shape)
    if len(shape) != 4:
        raise InputError(name, f"expected a 3D volume, got array of shape {shape[1:] if len(shape) > 1 else shape}")
    if shape[0] != 1:
        raise InputError(
            name, f"expected one channel (a greyscale CT), got {shape[0]} channels "
            "(an RGB image, or a 4D/multi-volume series?)"
        )
    if min(shape[1:]) < 2:
        raise InputError(name, f"expected a 3D volume, got spatial shape {shape[1:]} (a 2D image?)")
    data = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
    if data.dtype.is_floating_point and not bool(torch.isfinite(data).all()):
        bad = int((~torch.isfinite(data)).sum())
        raise InputError(name, f"contains {bad} NaN or infinite voxels")
    lo, hi = float(data.min()), float(data.max())
    if lo < hu_range[0] or hi > hu_range[1]:
        raise InputError(name, f"values {lo:g}..{hi:g} are outside the Hounsfield range {hu_range} (not a CT in HU?)")
    if lo == hi:
        logger.warning("%s: constant image (all voxels %g); the prediction will be empty", name, lo)
    aff = affine_of(img)
    if aff is not None:
        spacing = np.linalg.norm(aff[:3, :3], axis=0)
        if not np.all(np.isfinite(aff)) or np.any(spacing <= 1e-6) or abs(np.linalg.det(aff[:3, :3])) <= 1e-9:
            raise InputError(name, f"invalid voxel spacing/affine (spacing {np.round(spacing, 4).tolist()})")


def check_image_label_pair(image, label, num_classes: int | None = None, name: str | None = None) -> None:
    """Raise unless ``label`` is on ``image``'s voxel grid and holds only class values ``0..num_classes-1``."""
    lname = name or source_name(label)
    iname = source_name(image)
    if tuple(image.shape[1:]) != tuple(label.shape[1:]):
        raise InputError([iname, lname], f"image shape {tuple(image.shape[1:])} and label shape {tuple(label.shape[1:])} differ")
    ia, la = affine_of(image), affine_of(label)
    if ia is not None and la is not None and not np.allclose(ia, la, atol=1e-3):
        raise InputError([iname, lname], "image and label affines differ (not on the same voxel grid)")
    if num_classes is not None:
        values = torch.unique(torch.as_tensor(label))
        bad = [v for v in values.tolist() if v < 0 or v >= num_classes or v != int(v)]
        if bad:
            raise InputError(lname, f"label values {bad[:5]} outside the classes 0..{num_classes - 1}")


class CheckCTImaged(MapTransform):
    """Dictionary transform running :func:`check_ct_volume` on ``keys`` and, when ``label_key`` is
    present, :func:`check_image_label_pair`. Data pass through unchanged."""

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str | None = None,
        num_label_values: int | None = None,
        hu_range: Sequence[float] = (-3000.0, 32767.0),
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.num_label_values = num_label_values
        self.hu_range = tuple(hu_range)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            check_ct_volume(d[key], hu_range=self.hu_range)
            if self.label_key is not None and hasattr(d.get(self.label_key), "shape"):  # loaded, not a path
                check_image_label_pair(d[key], d[self.label_key], self.num_label_values)
        return d
