"""Class-index maps from channel scores, fast on large volumes.

``torch.argmax`` over a channel dimension that is not the innermost one (``(C, X, Y, Z)`` volumes,
``(B, C, X, Y, Z)`` batches) takes a slow path on CPU in torch 2.x: on a ``(2, 512, 512, 128)`` float
volume it took 3.2 s where ``torch.max(...).indices`` took 0.34 s, with identical results (both return
the first index of a tie). MONAI's ``AsDiscreted(argmax=True)`` calls ``torch.argmax``; the
:class:`Argmaxd` transform below is its drop-in for the volumes of the CT bundles.

Example:
    >>> import torch
    >>> x = torch.tensor([[[0.2, 0.7]], [[0.8, 0.3]]])  # (C=2, 1, 2)
    >>> channel_argmax(x).tolist()
    [[[1.0, 0.0]]]
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform


def channel_argmax(x: torch.Tensor, dim: int = 0, keepdim: bool = True, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.argmax(x, dim, keepdim)`` computed with ``torch.max`` (same result, several times faster on
    CPU for a leading channel dimension), cast to ``dtype`` (float32, as MONAI's ``AsDiscrete``).

    A :class:`~monai.data.MetaTensor` input gives a MetaTensor with the same metadata and applied
    operations, so ``Invertd`` and the writers see the input's geometry.
    """
    x_t = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
    out = torch.max(x_t, dim=dim, keepdim=keepdim).indices.to(dtype)
    if isinstance(x, MetaTensor):
        return MetaTensor(out, meta=x.meta, applied_operations=x.applied_operations)
    return out


class Argmax(Transform):
    """Array transform of :func:`channel_argmax` over the channel dimension (0), keeping it (size 1)."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return channel_argmax(img, 0, True, self.dtype)


class Argmaxd(MapTransform):
    """Dictionary :class:`Argmax`: the drop-in for ``AsDiscreted(keys, argmax=True)``."""

    def __init__(self, keys: KeysCollection, dtype: torch.dtype = torch.float32, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.argmax = Argmax(dtype)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.argmax(d[key])
        return d
