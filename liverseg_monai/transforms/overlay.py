"""Overlay PNGs from inside a MONAI post-processing chain."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from liverseg_monai.io.meta import affine_of, source_name
from liverseg_monai.io.naming import case_stem
from liverseg_monai.visualize import save_overlay


def to_ras(array: np.ndarray, affine: np.ndarray | None) -> np.ndarray:
    """Reorient the spatial axes of a 3D ``array`` to RAS for display (radiological view after rot90)."""
    if affine is None:
        return array
    import nibabel.orientations as nio

    ornt = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt("RAS"))
    return nio.apply_orientation(array, ornt)


class SaveOverlayd(MapTransform):
    """Write ``<output_dir>/<case>_overlay.png`` showing ``image`` with the ``keys`` label map on top
    (and ``label_key``, the reference, in a second row when present). 3D volumes are shown as three
    axial slices in RAS orientation whatever the stored orientation. Data pass through unchanged."""

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str = "image",
        output_dir: str | os.PathLike = ".",
        label_key: str | None = None,
        window: Sequence[float] | None = (-160.0, 240.0),
        postfix: str = "overlay",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.label_key = image_key, label_key
        self.output_dir = Path(output_dir)
        self.window = tuple(window) if window is not None else None
        self.postfix = postfix

    @staticmethod
    def _np(x) -> np.ndarray:
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return x[0] if x.ndim == 4 else x  # drop the channel of (1, X, Y, Z)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            image, pred = d[self.image_key], d[key]
            if image.shape[0] != 1:
                image = image[image.shape[0] // 2 : image.shape[0] // 2 + 1]  # 2.5D: the centre slice channel
            affine = affine_of(image)
            img = to_ras(self._np(image), affine)
            prd = to_ras(self._np(pred), affine)
            ref = None
            if self.label_key and self.label_key in d:
                ref = to_ras(self._np(d[self.label_key]), affine)
            stem = case_stem(source_name(image))
            save_overlay(self.output_dir / f"{stem}_{self.postfix}.png", img, prd, ref, window=self.window, title=stem)
        return d
