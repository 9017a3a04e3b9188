"""2.5D input: neighbouring slices as channels."""

from __future__ import annotations

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform


def stack_neighbour_slices(volume: torch.Tensor, context: int, axis: int = -1) -> torch.Tensor:
    """Turn a one-channel volume ``(1, X, Y, Z)`` into ``(2*context+1, X, Y, Z)``.

    Channel ``c`` holds slice ``z + c - context`` for every slice ``z`` (clamped at the volume's ends),
    so a 2D network that sees one slice of the result sees the slice and its ``context`` neighbours on
    each side. ``context=0`` returns the input unchanged.

    Example:
        >>> v = torch.arange(3.0).reshape(1, 1, 1, 3)
        >>> stack_neighbour_slices(v, 1)[:, 0, 0, :].tolist()
        [[0.0, 0.0, 1.0], [0.0, 1.0, 2.0], [1.0, 2.0, 2.0]]
    """
    if context <= 0:
        return volume
    if volume.shape[0] != 1:
        raise ValueError(f"expected one channel, got {volume.shape[0]}")
    axis = axis % volume.ndim
    depth = volume.shape[axis]
    index = torch.arange(depth, device=volume.device)
    chans = [volume.index_select(axis, (index + off).clamp(0, depth - 1)) for off in range(-context, context + 1)]
    return torch.cat(chans, dim=0)


class StackNeighbourSlices(Transform):
    def __init__(self, context: int = 0, axis: int = -1):
        self.context, self.axis = context, axis

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return stack_neighbour_slices(img, self.context, self.axis)


class StackNeighbourSlicesd(MapTransform):
    """Dictionary version of :func:`stack_neighbour_slices` (keeps MetaTensor metadata)."""

    def __init__(self, keys: KeysCollection, context: int = 0, axis: int = -1, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.op = StackNeighbourSlices(context, axis)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d
