"""The crop between the two stages of a cascade: a mask's bounding box plus a margin, and paste-back.

Pure functions on arrays (numpy or torch, channel-free ``(X, Y, Z)``); the two-stage segmenter in
:mod:`liverseg_monai.engines.two_stage` uses them on the liver mask of stage 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Box = tuple[slice, ...]


def bounding_box(mask: np.ndarray | torch.Tensor, margin: int | Sequence[int] = 0) -> Box | None:
    """The smallest box holding every non-zero voxel of ``mask``, grown by ``margin`` voxels per side.

    Args:
        mask: a spatial array (any number of dimensions), non-zero inside the object.
        margin: voxels added on each side, one number or one per axis; the box is clipped to the array.

    Returns:
        a tuple of slices (one per axis), or ``None`` when ``mask`` is empty.

    Example:
        >>> m = np.zeros((10, 10, 10), bool); m[4:6, 3:5, 2:8] = True
        >>> bounding_box(m, 2)
        (slice(2, 8, None), slice(1, 7, None), slice(0, 10, None))
    """
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    margins = [int(margin)] * arr.ndim if np.isscalar(margin) else [int(m) for m in margin]
    if len(margins) != arr.ndim:
        raise ValueError(f"margin has {len(margins)} entries for a {arr.ndim}D mask")
    box = []
    for axis in range(arr.ndim):
        other = tuple(a for a in range(arr.ndim) if a != axis)
        nz = np.flatnonzero(np.any(arr, axis=other) if other else arr)
        if nz.size == 0:
            return None
        lo = max(int(nz[0]) - margins[axis], 0)
        hi = min(int(nz[-1]) + 1 + margins[axis], arr.shape[axis])
        box.append(slice(lo, hi))
    return tuple(box)


def paste_box(target: np.ndarray | torch.Tensor, patch: np.ndarray | torch.Tensor, box: Box,
              where: np.ndarray | torch.Tensor | None = None) -> np.ndarray | torch.Tensor:
    """Write ``patch`` into ``target[box]`` (in place) and return ``target``.

    Args:
        target: the full array; its trailing ``len(box)`` axes are the spatial ones.
        patch: values of the box's shape (leading axes as in ``target``).
        box: slices from :func:`bounding_box`.
        where: optional boolean array of the patch's shape: only these voxels are written.
    """
    index = (Ellipsis, *box)
    if where is None:
        target[index] = patch
    else:
        region = target[index]
        region[where] = patch[where]
        target[index] = region
    return target
