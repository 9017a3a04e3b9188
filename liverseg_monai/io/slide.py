"""Whole-slide images: read pyramidal slides region by region, detect tissue, write pyramidal labels.

Reading (:func:`open_slide`) never loads a full level: :meth:`Slide.read_region` decodes only the
TIFF tiles (or strips) that overlap the region, with a small LRU cache of decoded tiles. TIFF-based
slides (generic pyramidal tiled TIFF, OME-TIFF with SubIFDs, Aperio SVS, ImageJ TIFF, and the other
TIFF flavours whose tiles tifffile decodes) are read with tifffile; other formats (MIRAX, Philips,
...) with OpenSlide when ``openslide-python`` is installed (optional; its tests skip without it).

Microns per pixel at level 0 (``Slide.mpp``) comes from, in order: the ``mpp=`` override, OME-XML
``PhysicalSizeX``, the Aperio ``MPP =`` description entry, a JSON description with ``"mpp"``, ImageJ
``unit=micron`` with resolution tags, TIFF resolution tags in inch or centimetre units (72/96/300 dpi
screen defaults are ignored as not being a microscope resolution), or OpenSlide's ``openslide.mpp-x``.
With none of them, :func:`open_slide` raises :class:`~liverseg_monai.errors.InputError` (pass
``mpp=`` or ``require_mpp=False``).

Writing (:func:`write_pyramid`, :class:`SlideLabelWriter`): a tiled, compressed pyramidal TIFF
(level 0 plus levels each a factor 2 or 4 smaller, as reduced-resolution pages that OpenSlide, MONAI's
``WSIReader`` and cuCIM read, or as an OME-TIFF with SubIFDs) streamed tile by tile from a callback,
a NumPy/``np.memmap`` array or a :class:`DiskArray`; the lower levels are built from row bands kept
in temporary raw files, so memory stays bounded by a few tile rows whatever the slide size. Output
files are written atomically.

MONAI (:class:`SlideWSIReader`, :func:`wsi_reader`): the same tile-wise reads as a MONAI
``BaseWSIReader`` backend, so MONAI's ``PatchWSIDataset`` / ``WSIReader`` machinery runs on them.
Why a backend of our own: MONAI's ``tifffile`` backend decodes the *whole level* for every patch
(``TiffFileWSIReader._get_patch`` calls ``wsi.asarray(level=...)``: a 100000-px level does not fit in
memory), and its cuCIM / OpenSlide backends are optional binaries; :func:`wsi_reader` picks cuCIM when
it is installed and this reader otherwise. :func:`is_whole_slide` tells a pyramidal slide from a tile.

Errors: files that are not slides, truncated files, truncated or corrupt tiles (the message names the
level and tile position) and missing mpp raise :class:`InputError` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.data.wsi_reader import BaseWSIReader

from liverseg_monai.errors import InputError
from liverseg_monai.io.atomic import atomic_path

__all__ = [
    "DiskArray",
    "Slide",
    "SlideLabelWriter",
    "SlideLevel",
    "SlideWSIReader",
    "is_whole_slide",
    "open_slide",
    "tissue_mask",
    "wsi_reader",
    "write_pyramid",
]

MPP_RANGE = (0.01, 100.0)  # plausible microns per pixel of a microscope scan


# ------------------------------------------------------------------------------ disk-backed array
class DiskArray:
    """A C-ordered array in a raw file, written and read by row bands with plain file I/O.

    Unlike ``np.memmap`` its pages never count towards the process' resident memory, so a
    full-resolution label map of any size costs only disk space. Supports ``a[y0:y1, x0:x1]`` reads
    (row bands), ``a[y0:y1] = band`` writes of full-width rows and ``len``/``shape``/``dtype``.

    Args:
        path: the raw file (created, or reused when ``mode="r"``).
        shape: ``(H, W)`` or ``(H, W, C)``.
        dtype: element type.
        mode: ``"w+"`` creates a zero-filled file, ``"r"`` opens an existing one.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype=np.uint8, mode: str = "w+"):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        if mode == "w+":
            with open(self.path, "wb") as f:
                f.truncate(self.row_bytes * self.shape[0])
        self._f = open(self.path, "r+b" if mode == "w+" else "rb")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _rows(self, key) -> tuple[int, int, tuple]:
        key = key if isinstance(key, tuple) else (key,)
        rows = key[0]
        if isinstance(rows, int):
            rows = slice(rows, rows + 1)
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("DiskArray supports contiguous row slices only")
        return start, max(start, stop), key[1:]

    def __getitem__(self, key) -> np.ndarray:
        y0, y1, rest = self._rows(key)
        with self._lock:
            self._f.seek(y0 * self.row_bytes)
            buf = self._f.read((y1 - y0) * self.row_bytes)
        band = np.frombuffer(buf, dtype=self.dtype).reshape((y1 - y0, *self.shape[1:]))
        if rest:
            band = band[(slice(None), *rest)]
        if isinstance(key, int) or (isinstance(key, tuple) and isinstance(key[0], int)):
            band = band[0]
        return band.copy()

    def __setitem__(self, key, value) -> None:
        y0, y1, rest = self._rows(key)
        if rest and any(r != slice(None) for r in rest):
            raise IndexError("DiskArray writes whole rows: use a[y0:y1] = band")
        value = np.ascontiguousarray(
            np.broadcast_to(np.asarray(value, self.dtype), (y1 - y0, *self.shape[1:]))
        )
        with self._lock:
            self._f.seek(y0 * self.row_bytes)
            self._f.write(value.tobytes())

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> DiskArray:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------ slide model
@dataclass(frozen=True)
class SlideLevel:
    """One resolution level: its index, size in pixels and downsample relative to level 0."""

    index: int
    height: int
    width: int
    downsample: float

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)


class Slide:
    """A whole-slide image opened for region reads (see :func:`open_slide`).

    Attributes:
        path: the file.
        levels: the pyramid, finest first.
        mpp: microns per pixel at level 0 (``None`` only when opened with ``require_mpp=False``).
        channels: samples per pixel of :meth:`read_region` (3 for RGB slides, 1 for label slides).
        dtype: sample type.
    """

    path: Path
    levels: list[SlideLevel]
    mpp: float | None
    channels: int
    dtype: np.dtype

    # --- to implement
    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - trivial
        pass

    # --- shared
    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 ``(height, width)``."""
        return self.levels[0].shape

    def level_mpp(self, level: int) -> float:
        if self.mpp is None:
            raise InputError(self.path, "microns per pixel unknown; open the slide with mpp=...")
        return self.mpp * self.levels[level].downsample

    def level_for_mpp(self, target_mpp: float) -> int:
        """The level whose resolution is closest to ``target_mpp`` (in log scale)."""
        errs = [abs(math.log(self.level_mpp(i) / target_mpp)) for i in range(len(self.levels))]
        return int(np.argmin(errs))

    def read_region(self, level: int, y: int, x: int, h: int, w: int, fill: int | None = None) -> np.ndarray:
        """Pixels ``[y:y+h, x:x+w]`` of ``level`` as ``(h, w, channels)``; parts outside are ``fill``.

        ``fill`` defaults to 255 (white glass) for RGB slides and 0 otherwise. Only the tiles that
        overlap the region are read and decoded.
        """
        if not 0 <= level < len(self.levels):
            raise IndexError(f"{self.path}: level {level} does not exist (slide has {len(self.levels)})")
        lev = self.levels[level]
        if fill is None:
            fill = 255 if self.channels >= 3 else 0
        out = np.full((h, w, self.channels), fill, dtype=self.dtype)
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + h, lev.height), min(x + w, lev.width)
        if y1 > y0 and x1 > x0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read(level, y0, x0, y1 - y0, x1 - x0)
        return out

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """A downsampled image whose longer side is ``max_size`` pixels (or less for a smaller slide).

        Reads the coarsest level that is at least ``max_size`` large band by band, block-averages
        it by an integer factor and resizes the small result, so memory stays bounded even for a
        slide without a pyramid.
        """
        from skimage.transform import resize

        level = len(self.levels) - 1
        for lev in self.levels:
            if max(lev.shape) >= max_size:
                level = lev.index
        lev = self.levels[level]
        f = max(1, max(lev.shape) // max_size)
        out_h, out_w = math.ceil(lev.height / f), math.ceil(lev.width / f)
        out = np.empty((out_h, out_w, self.channels), dtype=self.dtype)
        band_rows = max(f, ((1 << 22) // max(1, lev.width * self.channels)) // f * f)
        fill = 255 if self.channels >= 3 else 0
        for by in range(0, lev.height, band_rows):
            bh = min(band_rows, lev.height - by)
            band = self.read_region(level, by, 0, math.ceil(bh / f) * f, out_w * f, fill=fill)
            out[by // f : by // f + math.ceil(bh / f)] = _block_mean(band, f)
        scale = max_size / max(out_h, out_w)
        if scale < 1:
            shape = (max(1, round(out_h * scale)), max(1, round(out_w * scale)), self.channels)
            out = resize(out, shape, order=1, preserve_range=True, anti_aliasing=True)
            out = np.round(out).astype(self.dtype)
        return out

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        levels = ", ".join(f"{lv.height}x{lv.width}" for lv in self.levels)
        return f"{type(self).__name__}({self.path.name}, levels=[{levels}], mpp={self.mpp})"


# ---------------------------------------------------------------------------------- tifffile slides
def _length_to_um(value: float, unit: str | None) -> float:
    unit = (unit or "µm").strip().lower().replace("\u00b5", "u").replace("μ", "u")
    factors = {
        "um": 1.0,
        "micron": 1.0,
        "microns": 1.0,
        "micrometer": 1.0,
        "nm": 1e-3,
        "mm": 1e3,
        "cm": 1e4,
        "m": 1e6,
    }
    if unit not in factors:
        raise ValueError(f"unknown length unit {unit!r}")
    return float(value) * factors[unit]


def _plausible(mpp: float | None) -> float | None:
    if mpp is None or not np.isfinite(mpp) or not (MPP_RANGE[0] <= mpp <= MPP_RANGE[1]):
        return None
    return float(mpp)


def _mpp_from_tiff(tif, page) -> float | None:
    """Microns per pixel from OME, Aperio, JSON or ImageJ descriptions, or resolution tags."""
    if tif.is_ome and tif.ome_metadata:
        try:
            root = ET.fromstring(tif.ome_metadata)
            for el in root.iter():
                if el.tag.endswith("Pixels") and "PhysicalSizeX" in el.attrib:
                    mpp = _length_to_um(float(el.attrib["PhysicalSizeX"]), el.attrib.get("PhysicalSizeXUnit"))
                    if _plausible(mpp):
                        return mpp
                    break
        except (ET.ParseError, ValueError):
            pass
    desc = page.description or ""
    m = re.search(r"\bMPP\s*=\s*([0-9.eE+-]+)", desc)
    if m:
        try:
            if _plausible(float(m.group(1))):
                return float(m.group(1))
        except ValueError:
            pass
    if desc.lstrip().startswith("{"):
        try:
            meta = json.loads(desc)
            mpp = meta.get("mpp") or meta.get("microns_per_pixel")
            if isinstance(mpp, list | tuple):
                mpp = mpp[0]
            if _plausible(float(mpp)):
                return float(mpp)
        except (ValueError, TypeError, AttributeError):
            pass
    tags = page.tags
    if "XResolution" in tags:
        num, den = tags["XResolution"].value
        res = num / den if den else 0.0
        unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
        if res > 0:
            if unit == 1 and tif.is_imagej:
                meta = tif.imagej_metadata or {}
                try:
                    return _plausible(_length_to_um(1.0 / res, str(meta.get("unit", ""))))
                except ValueError:
                    return None
            if unit == 2 and round(res) not in (72, 96, 150, 300, 600):
                return _plausible(25400.0 / res)
            if unit == 3 and round(res * 2.54) not in (72, 96, 150, 300, 600):
                return _plausible(10000.0 / res)
    return None


class TiffSlide(Slide):
    """A TIFF-based slide read with tifffile, tile by tile (see :func:`open_slide`)."""

    def __init__(self, path: Path, mpp: float | None, require_mpp: bool, cache_tiles: int = 64):
        import tifffile

        self.path = path
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series
            if not series:
                raise ValueError("no image series")
            pages = self._level_pages(series)
        except InputError:
            raise
        except Exception as err:  # tifffile raises many types for broken files
            if hasattr(self, "_tif"):
                self._tif.close()
            raise InputError(path, f"not a readable TIFF slide ({type(err).__name__}: {err})") from None
        self._pages = pages
        first = pages[0]
        self.channels = 1 if first.samplesperpixel == 1 else min(int(first.samplesperpixel), 3)
        self._spp = int(first.samplesperpixel)
        self.dtype = np.dtype(first.dtype)
        w0 = first.imagewidth
        self.levels = [
            SlideLevel(i, int(p.imagelength), int(p.imagewidth), float(w0 / p.imagewidth))
            for i, p in enumerate(pages)
        ]
        self.mpp = _plausible(mpp) if mpp is not None else _mpp_from_tiff(self._tif, first)
        if mpp is not None and self.mpp is None:
            raise InputError(path, f"mpp={mpp} is not a plausible microns-per-pixel value {MPP_RANGE}")
        if self.mpp is None and require_mpp:
            self._tif.close()
            raise InputError(
                path,
                "no microns-per-pixel found (OME PhysicalSizeX, Aperio MPP, resolution tags); "
                "pass mpp=... (e.g. --mpp 0.5) to read it",
            )
        self._cache: OrderedDict = OrderedDict()
        self._cache_tiles = cache_tiles
        self._lock = threading.RLock()

    def _level_pages(self, series) -> list:
        main = series[0]
        extra = {ax: n for ax, n in zip(main.axes, main.shape) if ax not in "YXS" and n > 1}
        if extra:
            dims = ", ".join(f"{ax}={n}" for ax, n in extra.items())
            raise InputError(
                self.path,
                f"is an image stack ({main.axes} {main.shape}: {dims}), not a 2D RGB or label slide",
            )
        pages = []
        for lev in main.levels:
            page = lev.keyframe
            pages.append(page)
        # pyramids stored as separate pages (no SubIFDs) show up as separate series
        if len(pages) == 1 and len(series) > 1:
            p0 = pages[0]
            for s in series[1:]:
                p = s.keyframe
                if p.samplesperpixel != p0.samplesperpixel or p.imagewidth >= p0.imagewidth:
                    continue
                ratio = p0.imagewidth / p.imagewidth
                if abs(p0.imagelength / ratio - p.imagelength) <= max(2.0, 0.01 * p.imagelength) and (
                    p.is_tiled or p.imagewidth * p.imagelength <= 4096 * 4096
                ):
                    pages.append(p)
            pages.sort(key=lambda p: -p.imagewidth)
        for i, p in enumerate(pages):
            if p.imagelength == 0 or p.imagewidth == 0:
                raise InputError(self.path, f"level {i} has no pixels")
            if p.imagedepth > 1:
                raise InputError(self.path, f"level {i} is a 3D volume, not a slide")
        return pages

    def close(self) -> None:
        self._tif.close()

    # --- segments
    def _grid(self, page) -> tuple[int, int, int, int]:
        if page.is_tiled:
            tl, tw = page.tilelength, page.tilewidth
        else:
            tl, tw = min(page.rowsperstrip or page.imagelength, page.imagelength), page.imagewidth
        return tl, tw, math.ceil(page.imagelength / tl), math.ceil(page.imagewidth / tw)

    def _segment(self, level: int, ty: int, tx: int) -> np.ndarray:
        key = (level, ty, tx)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        page = self._pages[level]
        tl, tw, ny, nx = self._grid(page)
        planes = self._spp if page.planarconfig == 2 else 1
        parts = []
        for s in range(planes):
            index = s * ny * nx + ty * nx + tx
            parts.append(self._decode(page, level, index, ty, tx, tl, tw))
        seg = parts[0] if planes == 1 else np.concatenate(parts, axis=-1)
        seg = seg[..., : self.channels] if self.channels > 1 else seg[..., :1]
        with self._lock:
            self._cache[key] = seg
            while len(self._cache) > self._cache_tiles:
                self._cache.popitem(last=False)
        return seg

    def _decode(self, page, level, index, ty, tx, tl, tw) -> np.ndarray:
        where = f"level {level} {'tile' if page.is_tiled else 'strip'} (row {ty}, column {tx})"
        try:
            offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        except IndexError:
            raise InputError(self.path, f"{where} is missing from the tile table") from None
        rows = tl if page.is_tiled else min(tl, page.imagelength - ty * tl)
        samples = page.samplesperpixel if page.planarconfig == 1 else 1
        if count == 0 or offset == 0:
            return np.zeros((rows, tw, samples), dtype=page.dtype)
        fh = self._tif.filehandle
        with self._lock:
            if offset + count > fh.size:
                raise InputError(
                    self.path,
                    f"{where} is truncated: needs bytes {offset}..{offset + count} but the file has {fh.size} "
                    "(incomplete copy or download?)",
                )
            fh.seek(offset)
            data = fh.read(count)
        if len(data) < count:
            raise InputError(self.path, f"{where} is truncated ({len(data)} of {count} bytes)")
        kwargs = {"_fullsize": bool(page.is_tiled)}
        if page.compression in (6, 7, 33007, 34892):
            kwargs["jpegtables"] = page.jpegtables
            kwargs["jpegheader"] = page.keyframe.jpegheader
        try:
            arr, _, shape = page.decode(data, index, **kwargs)
        except Exception as err:
            raise InputError(self.path, f"{where} cannot be decoded ({type(err).__name__}: {err})") from None
        if arr is None:
            return np.zeros((rows, tw, samples), dtype=page.dtype)
        return np.asarray(arr).reshape(shape[-3], shape[-2], shape[-1])

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        page = self._pages[level]
        tl, tw, _, _ = self._grid(page)
        out = np.empty((h, w, self.channels), dtype=self.dtype)
        for ty in range(y // tl, (y + h - 1) // tl + 1):
            for tx in range(x // tw, (x + w - 1) // tw + 1):
                seg = self._segment(level, ty, tx)
                sy0, sx0 = ty * tl, tx * tw
                a0, a1 = max(y, sy0), min(y + h, sy0 + seg.shape[0])
                b0, b1 = max(x, sx0), min(x + w, sx0 + seg.shape[1])
                if a1 > a0 and b1 > b0:
                    out[a0 - y : a1 - y, b0 - x : b1 - x] = seg[a0 - sy0 : a1 - sy0, b0 - sx0 : b1 - sx0]
        return out


# ---------------------------------------------------------------------------------- OpenSlide slides
class OpenSlideSlide(Slide):
    """A slide read with OpenSlide (MIRAX, Philips, Ventana, ... when ``openslide-python`` is installed)."""

    def __init__(self, path: Path, mpp: float | None, require_mpp: bool):
        import openslide

        self.path = path
        try:
            self._osr = openslide.OpenSlide(str(path))
        except Exception as err:
            raise InputError(path, f"not a readable slide ({type(err).__name__}: {err})") from None
        self.levels = [
            SlideLevel(i, int(h), int(w), float(ds))
            for i, ((w, h), ds) in enumerate(zip(self._osr.level_dimensions, self._osr.level_downsamples))
        ]
        self.channels, self.dtype = 3, np.dtype(np.uint8)
        found = None
        try:
            found = float(self._osr.properties.get("openslide.mpp-x", "nan"))
        except ValueError:
            pass
        self.mpp = _plausible(mpp if mpp is not None else found)
        if self.mpp is None and require_mpp:
            self._osr.close()
            raise InputError(path, "no microns-per-pixel found (openslide.mpp-x); pass mpp=... to read it")

    def close(self) -> None:
        self._osr.close()

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        ds = self.levels[level].downsample
        try:
            img = self._osr.read_region((int(round(x * ds)), int(round(y * ds))), level, (w, h))
        except Exception as err:
            raise InputError(
                self.path, f"level {level} region ({y}, {x}, {h}, {w}) cannot be read: {err}"
            ) from None
        rgba = np.asarray(img, dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        return np.round(rgba[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)


def open_slide(
    path: str | os.PathLike,
    mpp: float | None = None,
    require_mpp: bool = True,
    cache_tiles: int = 64,
    backend: str = "auto",
) -> Slide:
    """Open a whole-slide image for region reads.

    Args:
        path: a TIFF-based slide (.tif/.tiff/.ome.tif/.svs/...) or, with openslide-python
            installed, any format OpenSlide reads.
        mpp: microns per pixel at level 0; overrides what the file says.
        require_mpp: raise when the file gives no microns per pixel and ``mpp`` is not passed.
        cache_tiles: decoded tiles kept in memory (LRU) for overlapping reads (tifffile backend).
        backend: ``"auto"`` (tifffile for TIFF files, else OpenSlide), ``"tifffile"`` or ``"openslide"``.

    Raises:
        InputError: naming the file, when it is missing, not a slide, broken, or lacks the mpp.
    """
    if backend not in ("auto", "tifffile", "openslide"):
        raise ValueError(f"backend must be 'auto', 'tifffile' or 'openslide', got {backend!r}")
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "slide file does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if backend == "tifffile" or (backend == "auto" and magic[:2] in (b"II", b"MM")):
        return TiffSlide(path, mpp, require_mpp, cache_tiles)
    try:
        import openslide  # noqa: F401
    except ImportError:
        raise InputError(
            path,
            "not a TIFF-based slide; other whole-slide formats need openslide-python "
            "(pip install openslide-python openslide-bin)",
        ) from None
    return OpenSlideSlide(path, mpp, require_mpp)


def is_whole_slide(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a whole-slide image rather than a tile: a TIFF with a resolution pyramid (reduced
    pages, SubIFDs, Aperio SVS, OME pyramid), or a non-TIFF file OpenSlide recognises. Reads headers only.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "s.tiff")
    >>> _ = write_pyramid(p, np.zeros((1024, 1024, 3), np.uint8), mpp=0.5, min_size=256)
    >>> is_whole_slide(p)
    True
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return False
    if magic[:2] not in (b"II", b"MM"):
        try:
            import openslide
        except ImportError:
            return False
        return openslide.OpenSlide.detect_format(str(path)) not in (None, "generic-tiff")
    try:
        with TiffSlide(path, None, require_mpp=False, cache_tiles=0) as slide:
            return len(slide.levels) > 1
    except InputError:
        return False


class SlideWSIReader(BaseWSIReader):
    """MONAI ``BaseWSIReader`` backend over :func:`open_slide`: patches decode only the tiles they overlap.

    Plugs into MONAI's ``PatchWSIDataset(reader=SlideWSIReader(...))``, ``WSIReader`` users and
    ``WSISlidingWindowSplitter``. Locations are in level-0 pixels (MONAI's convention), sizes in pixels of
    the requested level; parts outside the slide read as white glass. Returns ``(C, h, w)`` arrays.

    Args:
        level: default level of :meth:`get_data`.
        slide_mpp: microns per pixel at level 0 for files that lack it (see :func:`open_slide`).
        kwargs: the other ``BaseWSIReader`` arguments (``channel_dim``, ``dtype``, ``mode``, ...).
    """

    supported_suffixes = ["tif", "tiff", "svs", "ndpi", "scn", "bif", "mrxs", "vms", "vmu", "svslide"]
    backend = "liverseg"

    def __init__(self, level: int | None = None, slide_mpp: float | None = None, **kwargs):
        super().__init__(level=level, **kwargs)
        self.slide_mpp = slide_mpp

    def read(self, data, **kwargs) -> Slide | list[Slide]:
        """Open one slide (or a list of slides) for region reads."""
        paths = [data] if isinstance(data, str | os.PathLike) else list(data)
        slides = [open_slide(p, mpp=self.slide_mpp, require_mpp=False) for p in paths]
        return slides[0] if len(slides) == 1 else slides

    def get_level_count(self, wsi: Slide) -> int:
        return len(wsi.levels)

    def get_size(self, wsi: Slide, level: int) -> tuple[int, int]:
        return wsi.levels[level].shape

    def get_downsample_ratio(self, wsi: Slide, level: int) -> float:
        return wsi.levels[level].downsample

    def get_file_path(self, wsi: Slide) -> str:
        return str(wsi.path)

    def get_mpp(self, wsi: Slide, level: int) -> tuple[float, float]:
        mpp = wsi.level_mpp(level)
        return (mpp, mpp)

    def get_power(self, wsi: Slide, level: int) -> float:
        raise ValueError(f"{wsi.path}: objective power is not read; select by level or mpp")

    def _get_patch(self, wsi: Slide, location, size, level: int, dtype, mode: str) -> np.ndarray:
        ds = wsi.levels[level].downsample
        y, x = (int(round(v / ds)) for v in location)
        patch = wsi.read_region(level, y, x, int(size[0]), int(size[1]))
        if mode == "RGB" and patch.shape[-1] == 1:
            patch = np.repeat(patch, 3, axis=-1)
        return np.moveaxis(patch.astype(dtype, copy=False), -1, self.channel_dim)


def wsi_reader(backend: str = "auto", **kwargs) -> BaseWSIReader:
    """The best available MONAI whole-slide reader: ``"cucim"`` when cuCIM is installed (GPU/multi-threaded
    tile decoding), else :class:`SlideWSIReader`. ``backend`` forces one (``"cucim"``, ``"openslide"``,
    ``"liverseg"``); MONAI's ``"tifffile"`` backend is refused: it decodes a whole level per patch."""
    from monai.data import WSIReader
    from monai.utils import optional_import

    backend = backend.lower()
    if backend == "auto":
        backend = "cucim" if optional_import("cucim")[1] else "liverseg"
    if backend == "liverseg":
        return SlideWSIReader(**kwargs)
    if backend == "tifffile":
        raise ValueError("MONAI's tifffile WSI backend decodes a whole level per patch; use 'liverseg'")
    kwargs.pop("slide_mpp", None)
    return WSIReader(backend=backend, **kwargs)


# -------------------------------------------------------------------------------------- tissue
def tissue_mask(
    thumbnail: np.ndarray,
    threshold: float | None = None,
    min_saturation: float = 0.07,
    min_object_fraction: float = 0.0005,
    closing_radius: int = 2,
) -> np.ndarray:
    """Boolean tissue mask of a low-resolution RGB slide image (True = tissue).

    Stained tissue is coloured, glass is grey-white: Otsu's threshold on the HSV saturation (on the
    darkness for grey images; never
    below ``min_saturation``, so an all-glass slide gives an empty mask instead of thresholding
    noise), then a closing, removal of specks and filling of small holes (fat, lumens).

    Args:
        thumbnail: ``(h, w, 3)`` uint8 (or float in [0, 1]) RGB image, e.g. :meth:`Slide.thumbnail`,
            or a grey ``(h, w)`` / ``(h, w, 1)`` image.
        threshold: fixed saturation threshold in [0, 1] instead of Otsu's.
        min_saturation: lower bound of the threshold.
        min_object_fraction: tissue pieces and holes smaller than this fraction of the image are removed.
        closing_radius: radius in thumbnail pixels of the morphological closing.

    Returns:
        ``(h, w)`` bool array.

    Example:
        >>> img = np.full((64, 64, 3), 240, np.uint8); img[16:48, 16:48] = (200, 120, 170)
        >>> int(tissue_mask(img).sum())
        1024
    """
    from scipy import ndimage
    from skimage import filters, morphology

    img = np.asarray(thumbnail, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(f"tissue_mask needs an (h, w, 3) RGB or (h, w) grey image, got shape {img.shape}")
    img = img[..., :3] / (255.0 if img.max() > 1.5 else 1.0)
    vmax, vmin = img.max(-1), img.min(-1)
    if img.shape[-1] == 1:  # grey scan: tissue is darker than the glass
        sat = 1.0 - vmax
    else:
        sat = np.where(vmax > 1e-3, (vmax - vmin) / np.maximum(vmax, 1e-3), 0.0)
    if threshold is None:
        try:
            threshold = float(filters.threshold_otsu(sat))
        except ValueError:  # constant image
            threshold = min_saturation
        threshold = max(threshold, min_saturation)
    mask = (sat > threshold) & (vmax > 0.12)  # not glass, not black border/pen shadow
    if closing_radius > 0:
        mask = morphology.closing(mask, morphology.disk(closing_radius))
    min_size = max(4, int(min_object_fraction * mask.size))
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        mask = (sizes >= min_size)[labels] & mask
    holes, n = ndimage.label(~mask)
    if n:
        sizes = np.bincount(holes.ravel())
        border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        small = sizes < min_size
        small[border] = False
        small[0] = False
        mask = mask | small[holes]
    return mask.astype(bool)


# ------------------------------------------------------------------------------------- writing
Source = Callable[[int, int, int, int], np.ndarray]


def _as_source(data) -> tuple[Source, tuple[int, ...], np.dtype]:
    """A ``(y, x, h, w) -> array`` reader for an ndarray, np.memmap or :class:`DiskArray`."""
    if callable(data) and not hasattr(data, "shape"):
        raise TypeError("a callable source needs shape and dtype")
    arr = data

    def read(y: int, x: int, h: int, w: int) -> np.ndarray:
        return np.asarray(arr[y : y + h, x : x + w])

    return read, tuple(arr.shape), np.dtype(arr.dtype)


def _block_mean(band: np.ndarray, f: int) -> np.ndarray:
    """Mean over ``f x f`` blocks of a ``(h, w, c)`` array whose h and w are multiples of ``f``."""
    if f == 1:
        return band
    h, w, c = band.shape
    blocks = band.reshape(h // f, f, w // f, f, c)
    if np.issubdtype(band.dtype, np.integer) and band.dtype.itemsize <= 2:
        total = blocks.sum(axis=(1, 3), dtype=np.uint32 if band.dtype.kind == "u" else np.int32)
        return ((total + (f * f) // 2) // (f * f)).astype(band.dtype)
    return blocks.mean(axis=(1, 3), dtype=np.float32).astype(band.dtype)


def _downsample(band: np.ndarray, f: int, resample: str) -> np.ndarray:
    """Reduce a ``(h, w, c)`` band by ``f``: block mean or nearest (edges padded by replication)."""
    h, w = band.shape[:2]
    ph, pw = (-h) % f, (-w) % f
    if ph or pw:
        band = np.pad(band, ((0, ph), (0, pw), (0, 0)), mode="edge")
    if resample == "nearest":
        return band[::f, ::f]
    return _block_mean(band, f)


def pyramid_shapes(shape: tuple[int, int], factor: int = 2, min_size: int = 512) -> list[tuple[int, int]]:
    """Level sizes: level 0, then each ``factor`` smaller until the longer side is <= ``min_size``."""
    shapes = [(int(shape[0]), int(shape[1]))]
    while max(shapes[-1]) > min_size and min(shapes[-1]) >= factor:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / factor), math.ceil(w / factor)))
    return shapes


def write_pyramid(
    path: str | os.PathLike,
    source: Source | np.ndarray | DiskArray,
    mpp: float,
    shape: tuple[int, ...] | None = None,
    dtype=np.uint8,
    tile_size: int = 256,
    compression: str | None = None,
    quality: int = 90,
    factor: int = 2,
    min_size: int = 512,
    resample: str = "mean",
    description: dict | None = None,
    layout: str = "pages",
    progress: bool = False,
) -> Path:
    """Write a tiled pyramidal TIFF, streaming tile by tile.

    Args:
        path: output file (written atomically; ``.tif``/``.tiff``).
        source: ``f(y, x, h, w) -> (h, w[, c]) array`` giving level-0 pixels (then ``shape`` and
            ``dtype`` are required), or an array-like read by row bands (ndarray, ``np.memmap``,
            :class:`DiskArray`).
        mpp: microns per pixel at level 0 (OME PhysicalSizeX/Y and resolution tags per level).
        shape: level-0 ``(H, W)`` or ``(H, W, C)`` with C 1 (grey/labels) or 3 (RGB).
        dtype: sample type.
        tile_size: TIFF tile edge (a multiple of 16).
        compression: ``"jpeg"`` (lossy; RGB uint8 only), ``"zlib"`` (lossless deflate), ``None`` for
            JPEG on RGB and deflate otherwise.
        quality: JPEG quality.
        factor: downsample between levels (2 or 4).
        min_size: stop adding levels when the longer side is at most this.
        resample: ``"mean"`` (images) or ``"nearest"`` (label maps) for the lower levels.
        description: extra JSON-serialisable entries, stored as JSON in the OME ``Image/Description``
            (``"ome"``) or the level-0 ``ImageDescription`` (``"pages"``).
        layout: ``"ome"``: OME-TIFF, lower levels in SubIFDs, mpp in OME PhysicalSizeX/Y (Bio-Formats,
            QuPath, tifffile); ``"pages"``: generic tiled TIFF, lower levels as reduced-resolution
            pages in the main IFD chain, mpp in the resolution tags and a JSON ``ImageDescription``
            (OpenSlide, MONAI ``WSIReader``, cuCIM, libvips). Both carry centimetre resolution tags.
        progress: show a tqdm bar.

    Memory: one row band of ``tile_size`` rows of level 0 plus one of each lower level.
    """
    import tifffile
    from tqdm import tqdm

    if factor not in (2, 4):
        raise ValueError(f"factor must be 2 or 4, got {factor}")
    if tile_size % 16:
        raise ValueError(f"tile_size must be a multiple of 16, got {tile_size}")
    if callable(source) and not hasattr(source, "shape"):
        if shape is None:
            raise ValueError("shape is required with a callable source")
        read, dtype = source, np.dtype(dtype)
    else:
        read, shape, dtype = _as_source(source)
    shape = tuple(int(s) for s in shape)
    channels = shape[2] if len(shape) == 3 else 1
    if channels not in (1, 3):
        raise ValueError(f"need 1 or 3 channels, got shape {shape}")
    if compression is None:
        compression = "jpeg" if channels == 3 and dtype == np.uint8 else "zlib"
    if compression == "jpeg" and (channels != 3 or dtype != np.uint8):
        raise ValueError("JPEG compression needs uint8 RGB; use zlib for labels")
    comp_args = {"level": quality} if compression == "jpeg" else {"level": 6}
    shapes = pyramid_shapes(shape[:2], factor, min_size)
    path = Path(path)
    ts = tile_size
    bigtiff = int(np.prod(shape)) * dtype.itemsize > 2**31 - 2**26

    with tempfile.TemporaryDirectory(
        prefix=".pyramid.", dir=path.parent if path.parent.exists() else None
    ) as tmpdir:
        stores = [
            DiskArray(Path(tmpdir) / f"level{i}.raw", (*s, channels), dtype)
            for i, s in enumerate(shapes[1:], 1)
        ]

        def level_tiles(level: int) -> Iterator[np.ndarray]:
            h, w = shapes[level]
            nxt = stores[level] if level + 1 < len(shapes) else None
            bar = tqdm(
                total=math.ceil(h / ts) * math.ceil(w / ts),
                desc=f"{path.name} level {level}",
                disable=not progress,
                leave=False,
            )
            for y in range(0, h, ts):
                th = min(ts, h - y)
                if level == 0:
                    tiles = []
                    for x in range(0, w, ts):
                        t = np.asarray(read(y, x, th, min(ts, w - x)))
                        tiles.append(t.reshape(th, -1, channels).astype(dtype, copy=False))
                    band = np.concatenate(tiles, axis=1)
                else:
                    band = stores[level - 1][y : y + th]
                if band.shape != (th, w, channels):
                    raise ValueError(
                        f"source gave a band of shape {band.shape}, expected {(th, w, channels)}"
                    )
                if nxt is not None:  # before yielding: tifffile stops pulling after the last tile
                    small = _downsample(band, factor, resample)
                    nxt[y // factor : y // factor + small.shape[0]] = small
                    if y + th >= h:
                        nxt.flush()
                for x in range(0, w, ts):
                    tile = band[:, x : x + ts]
                    if tile.shape[:2] != (ts, ts):
                        tile = np.pad(
                            tile, ((0, ts - tile.shape[0]), (0, ts - tile.shape[1]), (0, 0)), mode="edge"
                        )
                    bar.update()
                    if bar.n == bar.total:
                        bar.close()
                    # a copy, so tifffile holding on to a tile does not keep the whole band alive
                    yield np.ascontiguousarray(tile if channels == 3 else tile[..., 0])
                del band

        options = {
            "tile": (ts, ts),
            "dtype": dtype,
            "photometric": "rgb" if channels == 3 else "minisblack",
            "compression": compression,
            "compressionargs": comp_args,
            "resolutionunit": "CENTIMETER",
            "maxworkers": 1,
        }
        metadata = {
            "axes": "YXS" if channels == 3 else "YX",
            "PhysicalSizeX": float(mpp),
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": float(mpp),
            "PhysicalSizeYUnit": "µm",
        }
        if layout not in ("ome", "pages"):
            raise ValueError(f"layout must be 'ome' or 'pages', got {layout!r}")
        if description and layout == "ome":
            metadata["Description"] = json.dumps(description)
        try:
            with atomic_path(path) as tmp:
                with tifffile.TiffWriter(tmp, bigtiff=bigtiff, ome=layout == "ome") as tif:
                    for level, (h, w) in enumerate(shapes):
                        ds = shape[1] / w
                        kw = dict(options, shape=(h, w, channels) if channels == 3 else (h, w))
                        res = (1e4 / (mpp * ds), 1e4 / (mpp * ds))
                        if level == 0 and layout == "ome":
                            tif.write(
                                level_tiles(0),
                                subifds=len(shapes) - 1,
                                resolution=res,
                                metadata=metadata,
                                **kw,
                            )
                        elif level == 0:
                            desc = json.dumps({"mpp": float(mpp), **(description or {})})
                            tif.write(level_tiles(0), resolution=res, description=desc, metadata=None, **kw)
                        else:
                            tif.write(level_tiles(level), subfiletype=1, resolution=res, metadata=None, **kw)
        finally:
            for s in stores:
                s.close()
    return path


class SlideLabelWriter:
    """Write a label map (class index per pixel) as a tiled pyramidal TIFF carrying its mpp.

    Lower levels use nearest-neighbour subsampling so they stay valid class indices. Written
    atomically: a failure leaves no file.

    Args:
        path: output ``.tiff``.
        shape: ``(H, W)`` of the label map (the inference level's size).
        mpp: microns per pixel of this label map (level-0 mpp times the level's downsample).
        tile_size: TIFF tile edge.
        class_names: stored in the description for readers.
        dtype: uint8 (up to 256 classes) or uint16.
        layout: ``"pages"`` or ``"ome"``, see :func:`write_pyramid`.
        factor: downsample between pyramid levels (2 or 4).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp(); p = os.path.join(d, "lab.tiff")
        >>> SlideLabelWriter(p, (300, 500), mpp=2.0).write(np.ones((300, 500), np.uint8))  # doctest: +ELLIPSIS
        PosixPath(...)
        >>> with open_slide(p) as s: (s.shape, s.mpp, int(s.read_region(0, 0, 0, 4, 4).max()))
        ((300, 500), 2.0, 1)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, int],
        mpp: float,
        tile_size: int = 256,
        class_names: list[str] | tuple[str, ...] | None = None,
        dtype=np.uint8,
        layout: str = "pages",
        factor: int = 2,
    ):
        self.path = Path(path)
        self.layout = layout
        self.factor = factor
        self.shape = (int(shape[0]), int(shape[1]))
        self.mpp = float(mpp)
        self.tile_size = tile_size
        self.class_names = list(class_names) if class_names is not None else None
        self.dtype = np.dtype(dtype)

    @classmethod
    def for_level(cls, slide: Slide, level: int, path: str | os.PathLike, **kwargs) -> SlideLabelWriter:
        """A writer for a label map of ``slide`` at ``level`` (its size and microns per pixel)."""
        return cls(path, slide.levels[level].shape, slide.level_mpp(level), **kwargs)

    def write(self, source: Source | np.ndarray | DiskArray, progress: bool = False) -> Path:
        """Stream ``source`` (array-like with row-band slicing, or ``f(y, x, h, w)``) into the TIFF."""
        if not callable(source) or hasattr(source, "shape"):
            if tuple(source.shape[:2]) != self.shape:
                raise ValueError(f"label source has shape {tuple(source.shape)}, writer expects {self.shape}")
            src = _as_source(source)[0]
        else:
            src = source

        def read(y: int, x: int, h: int, w: int) -> np.ndarray:
            return np.asarray(src(y, x, h, w)).astype(self.dtype, copy=False)

        extra = (
            {"content": "label", "classes": self.class_names} if self.class_names else {"content": "label"}
        )
        return write_pyramid(
            self.path,
            read,
            mpp=self.mpp,
            shape=self.shape,
            dtype=self.dtype,
            tile_size=self.tile_size,
            compression="zlib",
            resample="nearest",
            description=extra,
            layout=self.layout,
            factor=self.factor,
            progress=progress,
        )
