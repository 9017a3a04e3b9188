"""Reading H&E tiles and writing tile predictions inside MONAI transform chains.

``LoadTiled`` reads RGB tiles (PNG, TIFF, JPEG, BMP; grey, palette, alpha and 16-bit images are
converted, see :func:`liverseg_monai.data.readers_pathology.read_rgb`) and single-channel class-index
label maps, checks that they match, and returns channel-first ``MetaTensor`` s in the image's own
row/column order (no axis reversal, unlike MONAI's ``PILReader`` default). ``SaveTilePredictiond``
writes the predicted label map as a PNG in that same order plus an overlay PNG.
Every problem raises :class:`~liverseg_monai.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from liverseg_monai.data.readers_pathology import read_label_map, read_rgb
from liverseg_monai.errors import InputError
from liverseg_monai.io.atomic import all_or_none, atomic_path
from liverseg_monai.io.naming import case_stem
from liverseg_monai.transforms.validate import source_name


def check_tile_label(label: np.ndarray, image_shape: Sequence[int], num_classes: int | None, path: str) -> np.ndarray:
    """Check a ``(H, W)`` label map against its ``(H, W)`` image and the class count; returns it as uint8."""
    if tuple(label.shape) != tuple(image_shape):
        raise InputError(path, f"label size {label.shape[1]}x{label.shape[0]} differs from its image ({image_shape[1]}x{image_shape[0]})")
    if label.size and label.min() < 0:
        raise InputError(path, "label map holds negative class indices")
    if num_classes is not None and label.size and label.max() >= num_classes:
        bad = np.unique(label[label >= num_classes])[:5].tolist()
        raise InputError(path, f"label values {bad} outside the {num_classes} classes 0..{num_classes - 1}")
    return label.astype(np.uint8) if label.max(initial=0) < 256 else label.astype(np.int64)


class LoadTiled(MapTransform):
    """Load an RGB tile as ``(3, H, W)`` float32 (0..255) and its label map as ``(1, H, W)``.

    Args:
        keys: the image key(s).
        label_key: key of the label map path; skipped when absent from the item.
        num_classes: labels with a value ``>= num_classes`` raise (``None``: no check).
        min_size: tiles smaller than this (either side) raise.
        max_pixels: larger images (a whole slide given as a tile) raise before being decoded; use the
            whole-slide inference (``configs/inference_slide.json``) for those. A pyramidal slide (TIFF
            with reduced-resolution levels, SVS, OME-TIFF pyramid) raises whatever its size.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        label_key: str | None = "label",
        num_classes: int | None = None,
        min_size: int = 8,
        max_pixels: int = 8192 * 8192,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.num_classes = num_classes
        self.min_size = min_size
        self.max_pixels = max_pixels

    def _check_size(self, path: str) -> None:
        from PIL import Image

        from liverseg_monai.io.slide import is_whole_slide

        if is_whole_slide(path):  # headers only: a pyramid is never decoded whole, whatever its size
            raise InputError(path, "is a pyramidal whole-slide image; segment it with whole-slide inference "
                                   "(configs/inference_slide.json), not as a tile")
        try:
            with Image.open(path) as im:  # lazy: reads the header only
                w, h = im.size
        except Exception:  # unreadable files are reported by read_rgb with the reason
            return
        if w * h > self.max_pixels:
            raise InputError(path, f"{w}x{h} pixels is too large for tile inference; use whole-slide inference "
                                   "(configs/inference_slide.json)")

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            self._check_size(path)
            rgb = read_rgb(path)
            if min(rgb.shape[:2]) < self.min_size:
                raise InputError(path, f"tile of {rgb.shape[1]}x{rgb.shape[0]} pixels is smaller than {self.min_size}")
            d[key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float(),
                                meta={"filename_or_obj": path, "spatial_shape": rgb.shape[:2]})
            if self.label_key and isinstance(d.get(self.label_key), str | os.PathLike):
                lpath = str(d[self.label_key])
                label = check_tile_label(read_label_map(lpath), rgb.shape[:2], self.num_classes, lpath)
                d[self.label_key] = MetaTensor(torch.from_numpy(label[None].astype(np.float32)),
                                               meta={"filename_or_obj": lpath, "spatial_shape": label.shape})
        return d


def save_label_png(path: str | os.PathLike, label: np.ndarray) -> str:
    """Write a ``(H, W)`` class-index map as an 8-bit PNG (atomically)."""
    from PIL import Image

    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"expected a 2D label map, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError("class indices must lie in 0..255 for an 8-bit PNG")
    with atomic_path(path) as tmp:
        Image.fromarray(label.astype(np.uint8)).save(tmp, format="PNG")
    return str(path)


def _index_map(x) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else arr.argmax(0)
    return np.rint(arr).astype(np.int64)


class SaveTilePredictiond(MapTransform):
    """Write ``<output_dir>/<tile>_<postfix>.png`` (class indices) and ``<tile>_overlay.png``, both or neither.

    ``<tile>`` is the tile's :func:`~liverseg_monai.io.naming.case_stem` (``histo.jpg`` -> ``histo``).

    The prediction (``(1, H, W)`` indices or ``(C, H, W)`` one-hot) must be on the tile's grid; the
    overlay shows the original tile file (read again from ``image_key``'s source) with the prediction
    and, when ``label_key`` is in the item, the reference below it. Data pass through unchanged.

    Args:
        keys: the prediction key.
        image_key: key whose ``filename_or_obj`` names the tile.
        output_dir: destination folder.
        postfix: suffix of the label PNG name.
        label_key: reference label map key for the overlay (optional).
        overlay: write the overlay PNG.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        image_key: str = "image",
        output_dir: str | os.PathLike = ".",
        postfix: str = "label",
        label_key: str | None = None,
        overlay: bool = True,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.label_key = image_key, label_key
        self.output_dir = Path(output_dir)
        self.postfix, self.overlay = postfix, overlay

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from liverseg_monai.visualize import save_overlay

        d = dict(data)
        for key in self.key_iterator(d):
            source = source_name(d[self.image_key])
            stem = case_stem(source)
            pred = _index_map(d[key])
            with all_or_none():  # the label PNG and the overlay appear together or not at all
                save_label_png(self.output_dir / f"{stem}_{self.postfix}.png", pred)
                if self.overlay:
                    rgb = read_rgb(source)
                    ref = _index_map(d[self.label_key]) if self.label_key and self.label_key in d else None
                    save_overlay(self.output_dir / f"{stem}_overlay.png", rgb, pred, ref, window=None, title=stem)
        return d
