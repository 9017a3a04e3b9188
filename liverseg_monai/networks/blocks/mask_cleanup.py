"""Binary-mask clean-up inside a network: largest connected component and hole filling, in torch.

MONAI's ``KeepLargestConnectedComponent`` and ``FillHoles`` run scikit-image / SciPy on numpy arrays,
so a network that cleans an intermediate mask with them cannot be exported with TorchScript. These
modules compute the same masks with torch operations only (``torch.jit.script`` compiles them), by
propagating labels with 3x3x3 max pooling, i.e. full (26-) connectivity in 3D as MONAI's defaults:

- :class:`KeepLargestComponent` = ``KeepLargestConnectedComponent(applied_labels=[1])`` on a binary
  mask (``connectivity=None``); among components of equal size the one met first in C order is kept,
  as scikit-image's labelling does.
- :class:`FillHoles` = ``FillHoles(applied_labels=[1])`` on a binary mask (``connectivity=None``):
  background not connected to the array border becomes foreground.

Both work on the mask's bounding box (plus one voxel), so the cost follows the object, not the volume;
the number of pooling steps is the object's longest geodesic path in voxels, which on CPU is slow (a
240x240x110 volume holding a liver-sized ellipsoid: 24 s against MONAI's 1.3 s, one thread). The modules
therefore call MONAI's transforms when run eagerly and the torch functions only inside TorchScript;
``tests/networks/test_mask_cleanup.py`` checks that both give the same masks.

Shapes: ``(X, Y, Z)`` boolean in, ``(X, Y, Z)`` boolean out.
"""

from __future__ import annotations

from typing import List, Optional  # noqa: UP035 (TorchScript needs typing.List, Optional)

import torch
import torch.nn.functional as F
from torch import nn


def mask_bounds(mask: torch.Tensor, pad: int = 0, pads: Optional[List[int]] = None) -> List[int]:  # noqa: UP006,UP045
    """``[lo0, hi0, lo1, hi1, lo2, hi2]`` of the non-zero voxels of a 3D ``mask`` grown by ``pad`` voxels
    per side (or ``pads[axis]`` per axis) and clipped to the array; an empty list for an empty mask."""
    nz = torch.nonzero(mask)
    if nz.shape[0] == 0:
        return []
    lo = nz.min(dim=0).values
    hi = nz.max(dim=0).values
    out: List[int] = []  # noqa: UP006
    for axis in range(3):
        p = pad if pads is None else pads[axis]
        out.append(max(int(lo[axis]) - p, 0))
        out.append(min(int(hi[axis]) + 1 + p, mask.shape[axis]))
    return out


def _pool_max(x: torch.Tensor) -> torch.Tensor:
    """3x3x3 maximum of a ``(X, Y, Z)`` array (out-of-array neighbours ignored)."""
    return F.max_pool3d(x[None, None], kernel_size=3, stride=1, padding=1)[0, 0]


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """The largest 26-connected component of a 3D boolean ``mask`` (an empty mask stays empty)."""
    b = mask_bounds(mask)
    if len(b) == 0:
        return mask.clone()
    sub = mask[b[0]:b[1], b[2]:b[3], b[4]:b[5]]
    n = sub.numel()
    big = float(n + 1)
    index = torch.arange(1, n + 1, dtype=torch.float64, device=mask.device).reshape(sub.shape)
    labels = torch.where(sub, index, torch.full_like(index, big))
    while True:  # each component takes its smallest (first in C order) index
        spread = torch.where(sub, -_pool_max(-labels), labels)
        if torch.equal(spread, labels):
            break
        labels = spread
    values, counts = torch.unique(labels[sub], return_counts=True)
    keep = torch.zeros_like(mask)
    keep[b[0]:b[1], b[2]:b[3], b[4]:b[5]] = sub & (labels == values[torch.argmax(counts)])
    return keep


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` with every background region that does not reach the array border (26-connected) filled."""
    b = mask_bounds(mask, pad=1)
    if len(b) == 0:
        return mask.clone()
    sub = mask[b[0]:b[1], b[2]:b[3], b[4]:b[5]]
    free = ~sub
    # the box's faces are outside the object's box (or on the array border): background reaching out
    outside = torch.zeros(sub.shape, dtype=torch.float32, device=mask.device)
    outside[0] = 1.0
    outside[-1] = 1.0
    outside[:, 0] = 1.0
    outside[:, -1] = 1.0
    outside[:, :, 0] = 1.0
    outside[:, :, -1] = 1.0
    outside = outside * free
    while True:
        spread = _pool_max(outside) * free
        if torch.equal(spread, outside):
            break
        outside = spread
    filled = mask.clone()
    filled[b[0]:b[1], b[2]:b[3], b[4]:b[5]] = outside == 0
    return filled


class KeepLargestComponent(nn.Module):
    """:func:`largest_component` as a module: ``(X, Y, Z)`` boolean -> ``(X, Y, Z)`` boolean.

    Eagerly MONAI's ``KeepLargestConnectedComponent(applied_labels=[1])``; in TorchScript the torch code.
    """

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return largest_component(mask)
        return self._monai(mask)

    @torch.jit.unused
    def _monai(self, mask: torch.Tensor) -> torch.Tensor:
        from monai.transforms import KeepLargestConnectedComponent

        return torch.as_tensor(KeepLargestConnectedComponent(applied_labels=[1])(mask[None].to(torch.uint8)))[0] > 0


class FillHoles(nn.Module):
    """:func:`fill_holes` as a module: ``(X, Y, Z)`` boolean -> ``(X, Y, Z)`` boolean.

    Eagerly MONAI's ``FillHoles(applied_labels=[1])``; in TorchScript the torch code.
    """

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return fill_holes(mask)
        return self._monai(mask)

    @torch.jit.unused
    def _monai(self, mask: torch.Tensor) -> torch.Tensor:
        from monai.transforms import FillHoles as MonaiFillHoles

        return torch.as_tensor(MonaiFillHoles(applied_labels=[1])(mask[None].to(torch.uint8)))[0] > 0


class MaskCleanup(nn.Module):
    """Clean a binary mask: keep its largest component, then fill its holes (each step switchable).

    Args:
        largest_component: keep only the largest 26-connected component (:class:`KeepLargestComponent`).
        fill_holes: fill background not connected to the border (:class:`FillHoles`).

    Shapes: ``(X, Y, Z)`` boolean in, ``(X, Y, Z)`` boolean out.
    """

    def __init__(self, largest_component: bool = True, fill_holes: bool = True):
        super().__init__()
        self.largest = KeepLargestComponent() if largest_component else nn.Identity()
        self.fill = FillHoles() if fill_holes else nn.Identity()

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.fill(self.largest(mask))
