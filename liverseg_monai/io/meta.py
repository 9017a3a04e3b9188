"""What an image loaded by MONAI carries with it: where it came from and where its voxels are.

MONAI's readers return a ``MetaTensor`` whose ``meta`` holds the source file (``filename_or_obj``)
and whose ``affine`` maps voxel indices to world coordinates. Transforms, handlers and writers all
need these two facts; they read them here, so every layer reads them the same way.
"""

from __future__ import annotations

import numpy as np
import torch


def source_name(img: object) -> str:
    """The file an image came from, as MONAI's readers record it (``filename_or_obj``).

    A batched image (a list of names) gives its first name; an image without metadata gives
    ``"<in-memory image>"``.

    >>> source_name(np.zeros(3))
    '<in-memory image>'
    """
    meta = getattr(img, "meta", None) or {}
    name = meta.get("filename_or_obj", "<in-memory image>")
    return str(name[0] if isinstance(name, list | tuple) and name else name)


def affine_of(img: object) -> np.ndarray | None:
    """The image's voxel-to-world affine as a ``(4, 4)`` numpy array, or ``None`` if it has none.

    A batched affine ``(B, 4, 4)`` gives the first item's.

    >>> affine_of(np.zeros(3)) is None
    True
    """
    aff = getattr(img, "affine", None)
    if aff is None:
        return None
    aff = aff.detach().cpu().numpy() if isinstance(aff, torch.Tensor) else np.asarray(aff)
    return aff[0] if aff.ndim == 3 else aff


def voxel_spacing(img: object) -> np.ndarray:
    """Voxel size along each of the three spatial axes, from the affine (``(1, 1, 1)`` without one)."""
    affine = affine_of(img)
    return np.linalg.norm(affine[:3, :3], axis=0) if affine is not None else np.ones(3)
