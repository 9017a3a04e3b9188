"""Reading histology tiles and their label maps as other tools write them: one reader for every bundle.

``read_rgb`` gives uint8 ``(H, W, 3)`` RGB from PNG / JPEG / BMP (Pillow) or TIFF (tifffile, first
series, full resolution): grey is repeated to RGB, palette / CMYK / YCbCr are converted, transparent
pixels are composited on white (glass: tools export "no tissue" as alpha 0), channel-first TIFFs are
moved to channels-last, 16-bit and float images are scaled to 8 bits. ``read_label_map`` gives an
``int64`` ``(H, W)`` class map from grey or palette images, or RGB ones whose channels agree.

Problems raise :class:`~liverseg_monai.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from liverseg_monai.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ome.tif", ".ome.tiff")


def _is_tiff(path: Path) -> bool:
    return path.name.lower().endswith(TIFF_SUFFIXES)


def _unit(arr: np.ndarray, path) -> np.ndarray:
    """Values scaled to [0, 1]: uint8 / 255, 16-bit / 65535 (/ 255 if all values fit 8 bits), floats as they are
    if at most 1, else / 255; booleans 0 / 1."""
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError(path, "image contains NaN or infinite values")
        return arr.astype(np.float64) / (1.0 if arr.max() <= 1.0 else 255.0)
    if arr.dtype == np.uint8:
        return arr / 255.0
    return arr.astype(np.float64) / (65535.0 if arr.max() > 255 else 255.0)


def to_uint8_rgb(arr: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """An image array (grey, grey + alpha, RGB, RGBA; channels first or last; any dtype) as uint8 RGB."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channel-first TIFF
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
        raise InputError(path, f"expected a grey or RGB(A) image, got an array of shape {arr.shape}")
    n = arr.shape[-1]
    if arr.dtype == np.uint8 and n in (1, 3):
        out = arr
    else:
        unit = _unit(arr, path)
        if n in (2, 4):  # alpha: composite on white
            alpha = unit[..., -1:]
            unit = unit[..., :-1] * alpha + (1.0 - alpha)
        out = np.clip(np.round(unit * 255.0), 0, 255).astype(np.uint8)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out[..., :3])


def read_rgb(path: str | os.PathLike, min_size: int = 8) -> np.ndarray:
    """A tile as uint8 ``(H, W, 3)`` RGB (see the module docstring for the conversions).

    Raises:
        InputError: the file is missing, unreadable, not an image, or smaller than ``min_size`` pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "missing: the image file does not exist")
    try:
        if _is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                arr = tif.series[0].levels[0].asarray()
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBa", "La"):
                    im = im.convert("RGBA" if "A" in im.mode or "a" in im.mode or "transparency" in im.info else "RGB")
                arr = np.asarray(im)
    except Exception as err:  # Pillow / tifffile raise many types on bad bytes
        raise InputError(path, f"not a readable image ({type(err).__name__}: {str(err)[:200]})") from None
    rgb = to_uint8_rgb(arr, path)
    if min(rgb.shape[:2]) < min_size:
        raise InputError(path, f"image is {rgb.shape[1]}x{rgb.shape[0]} pixels, smaller than {min_size}")
    return rgb


def read_label_map(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A class-index label map as ``int64`` ``(H, W)``; checked against the tile's ``shape`` if given.

    Grey and palette images give their values (palette indices, not colours); RGB(A) is accepted only
    when the colour channels agree (a grey map saved as RGB).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "missing: the label file does not exist")
    try:
        if _is_tiff(path):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im)
    except Exception as err:
        raise InputError(path, f"not a readable label image ({type(err).__name__}: {str(err)[:200]})") from None
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise InputError(path, "label image has colours (RGB channels differ); expected one class code per pixel")
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(path, f"expected a 2D label map, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(path, "label map holds non-integer values")
    elif arr.dtype.kind not in "iub":
        raise InputError(path, f"expected an integer class map, got {arr.dtype}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise InputError(path, f"label map is {arr.shape[1]}x{arr.shape[0]} but its image is {shape[1]}x{shape[0]}")
    return arr.astype(np.int64)
