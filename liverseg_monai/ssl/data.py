"""Reading H&E tiles (and patches of larger images) for self-supervised pretraining and feature extraction.

Tiles come from a dataset folder's ``dataset.json`` (``training`` items with an ``image``; a
``label`` is ignored for pretraining). Any PNG / JPEG / TIFF that Pillow or tifffile reads is accepted:
grey-scale is repeated to RGB, transparent pixels are composited on white, 16-bit images are scaled to
8 bits (:mod:`liverseg_monai.io.rgb`).
Whole-slide images and large tiles are sampled as random patches (:class:`LoadRGBPatchd`).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

from liverseg_monai.io.rgb import TIFF_SUFFIXES, read_label_map, read_rgb, to_uint8_rgb  # noqa: F401 (also this module's API)


class LoadRGBd(MapTransform):
    """Load tiles as channel-first float ``MetaTensor`` ``(3, H, W)`` in ``[0, 1]`` (rows first, unlike
    ``LoadImaged``'s PIL reader), with ``filename_or_obj`` in the metadata.

    Args:
        keys: keys holding file paths.
        min_size: smallest accepted tile edge (smaller tiles raise :class:`InputError`).
    """

    def __init__(self, keys, min_size: int = 8, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.min_size = min_size

    def __call__(self, data: Mapping[Hashable, str]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            rgb = read_rgb(path, self.min_size)
            tensor = torch.from_numpy(np.moveaxis(rgb, -1, 0).astype(np.float32) / 255.0)
            d[key] = MetaTensor(tensor, meta={"filename_or_obj": path, "spatial_shape": rgb.shape[:2]})
        return d


class LoadRGBPatchd(Randomizable, MapTransform):
    """Load a tile, or a random patch of a tile or whole-slide image, as ``(3, h, w)`` float in ``[0, 1]``.

    - PNG / JPEG / small TIFF tiles are read whole (:func:`read_rgb`); with ``patch_size > 0`` a random
      ``patch_size`` square is cut from tiles larger than that.
    - Whole-slide images (a TIFF with a pyramid or larger than ``slide_min_size`` pixels, read with
      :func:`liverseg_monai.io.slide.open_slide`, which decodes only the tiles a region needs) give a
      random ``patch_size`` (default 256) patch centred on tissue (the slide's low-resolution tissue mask
      is computed once per slide and process) at the level closest to ``slide_mpp`` microns per pixel
      (level 0 when ``None`` or the slide has no resolution).

    Args:
        keys: keys holding file paths.
        patch_size: edge of the random patch (0: whole tiles; slides then use 256).
        slide_mpp: target resolution for slides.
        slide_min_size: a TIFF whose level 0 is larger than this (either side) is treated as a slide.
        min_size: smallest accepted tile edge.
    """

    def __init__(self, keys, patch_size: int = 0, slide_mpp: float | None = None, slide_min_size: int = 4096,
                 min_size: int = 8, allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.patch_size = int(patch_size or 0)
        self.slide_mpp = slide_mpp
        self.slide_min_size = slide_min_size
        self.min_size = min_size
        self._slides: dict[str, tuple] = {}

    def randomize(self, data=None) -> None:
        pass

    def _slide(self, path: str):
        """(slide, level, tissue pixel coordinates in level pixels) for a whole-slide file, else None."""
        if path in self._slides:
            return self._slides[path]
        entry = None
        if path.lower().endswith(TIFF_SUFFIXES):
            from liverseg_monai.io.slide import open_slide, tissue_mask

            slide = open_slide(path, require_mpp=False)
            if len(slide.levels) > 1 or max(slide.shape) > self.slide_min_size:
                level = 0
                if self.slide_mpp and slide.mpp:
                    level = slide.level_for_mpp(self.slide_mpp)
                thumb = slide.thumbnail(1024)
                mask = tissue_mask(thumb)
                ys, xs = np.nonzero(mask) if mask.any() else np.nonzero(np.ones(mask.shape, bool))
                lev = slide.levels[level]
                fy, fx = lev.height / mask.shape[0], lev.width / mask.shape[1]
                coords = np.stack([(ys + 0.5) * fy, (xs + 0.5) * fx], axis=1)
                entry = (slide, level, coords, (fy, fx))
            else:
                slide.close()
        self._slides[path] = entry
        return entry

    def _crop(self, rgb: np.ndarray) -> np.ndarray:
        p = self.patch_size
        h, w = rgb.shape[:2]
        if p <= 0 or (h <= p and w <= p):
            return rgb
        y = int(self.R.randint(0, max(h - p, 0) + 1))
        x = int(self.R.randint(0, max(w - p, 0) + 1))
        return rgb[y : y + p, x : x + p]

    def __call__(self, data: Mapping[Hashable, str]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            slide = self._slide(path) if Path(path).is_file() else None
            if slide is not None:
                sl, level, coords, (fy, fx) = slide
                p = self.patch_size or 256
                cy, cx = coords[int(self.R.randint(0, len(coords)))]
                cy += self.R.uniform(-0.5, 0.5) * fy
                cx += self.R.uniform(-0.5, 0.5) * fx
                rgb = to_uint8_rgb(sl.read_region(level, int(cy - p / 2), int(cx - p / 2), p, p), Path(path))
            else:
                rgb = self._crop(read_rgb(path, self.min_size))
            tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(rgb, -1, 0)).astype(np.float32) / 255.0)
            d[key] = MetaTensor(tensor, meta={"filename_or_obj": path})
        return d


def pretraining_items(dataset_dir: str | os.PathLike, keys: str | Sequence[str] = ("training",),
                      repeat: int = 1) -> list[dict]:
    """Image-only items (labels dropped) of the given datalist keys, for self-supervised pretraining.

    Args:
        dataset_dir: the dataset folder with ``dataset.json``.
        keys: datalist keys to use (``training``; add ``validation`` to pretrain on more tiles).
        repeat: each image listed this many times (random patches per slide or large tile per epoch).
    """
    from liverseg_monai.data.datalist import load_datalist

    items: list[dict] = []
    for key in [keys] if isinstance(keys, str) else keys:
        items += [{"image": it["image"]} for it in load_datalist(dataset_dir, key)]
    return items * max(1, int(repeat))
