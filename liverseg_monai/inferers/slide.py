"""Whole-slide inference composed of MONAI's patch machinery, with memory flat in the slide size.

:func:`infer_slide` runs one level of a slide through:

1. tissue detection on a thumbnail (:func:`~liverseg_monai.io.slide.tissue_mask`) and the patch grid
   (:func:`patch_starts`) kept where the mask shows tissue (:class:`TissueIndex`, O(1) per patch);
2. MONAI's ``PatchWSIDataset`` over those locations, read by the best available ``BaseWSIReader``
   (:func:`~liverseg_monai.io.slide.wsi_reader`: cuCIM when installed, else a tile-wise tifffile/OpenSlide
   reader) through a ``monai.data.DataLoader`` (worker processes with ``num_workers > 0``) that a
   background thread keeps ``prefetch`` batches ahead, so the network does not wait for decoding;
3. MONAI's ``PatchInferer`` (this module's :class:`TissuePatchSplitter` feeds it) calling the network,
   with a postprocessing that resizes outputs to the patch, applies the activation and weights them by
   MONAI's ``compute_importance_map`` (Gaussian blending);
4. MONAI's ``ZarrAvgMerger`` accumulating the weighted probabilities in zarr arrays on disk (in a
   temporary folder next to the output, removed afterwards);
5. the label map streamed tile by tile from the merged zarr array (argmax; pixels no patch covered are
   ``background_class``) into ``<stem>_label.tiff`` (:class:`~liverseg_monai.io.slide.SlideLabelWriter`,
   pyramidal, with its microns per pixel), while the per-class pixel counts and a nearest-neighbour label
   thumbnail are gathered for ``<stem>_areas.csv`` (mm^2) and ``<stem>_overlay.png``.

Memory: a few batches of patches, one zarr chunk per array being merged and one TIFF row band of the
label pyramid, whatever the slide size. Disk: the merged float maps of the tissue (``C`` float32 + ``C``
uint8 counts per pixel, zstd-compressed, untouched glass chunks not stored) plus the float output map.

What stays ours, and why MONAI's part does not do the job:

- :class:`TissuePatchSplitter` instead of ``WSISlidingWindowSplitter``: the latter reads *every* patch,
  glass included, in the caller's thread and filters afterwards, and pads past the last row/column
  instead of placing the last patch flush with the border (:func:`patch_starts`);
- :func:`prefetch` instead of ``ThreadDataLoader`` / ``ThreadBuffer``: those end the iteration silently
  when the reading thread raises (a truncated tile would give a label map with holes); ours re-raises
  the reader's :class:`~liverseg_monai.errors.InputError` in the caller;
- :class:`SlideMerger`: ``ZarrAvgMerger`` with its three stores in one given folder (its default output
  store is ``merged.zarr`` in the working directory), chunks of ``chunk_size`` pixels in the plane, and a
  ``finalize`` that divides only the chunks a patch touched (MONAI's divides every chunk of the plane, so
  on a mostly-glass 20000-px slide it spent more time on glass than the network on tissue); the output
  is NaN (no patch) elsewhere without being written;
- the tissue mask (Otsu on saturation plus closing and speck removal, see ``tissue_mask``) instead of
  MONAI's ``ForegroundMask``, which has no clean-up of pen marks and specks.

A slide with no tissue is not an error: the label map is all background, the areas are zero and a
warning says so.

Bundle use (``inference_slide.json``)::

    "run": "$liverseg_monai.inferers.slide.run_slide_inference(@network, @datalist, @output_dir,
            patch_size=512, level=0, overlap=0.25, batch_size=4, device=@device, class_names=@class_names)"
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import zarr
from monai.data import DataLoader, PatchWSIDataset
from monai.data.utils import compute_importance_map
from monai.data.wsi_reader import BaseWSIReader
from monai.inferers import PatchInferer, ZarrAvgMerger
from monai.inferers.splitter import Splitter

from liverseg_monai.io.atomic import all_or_none, atomic_path, atomic_write_text
from liverseg_monai.io.readout import REPORT_SUFFIX, bundle_identity, tissue_class_report, write_report
from liverseg_monai.io.slide import Slide, SlideLabelWriter, open_slide, tissue_mask, wsi_reader
from liverseg_monai.io.tables import write_table

Predictor = Callable[[torch.Tensor], torch.Tensor | np.ndarray]

__all__ = [
    "Patch",
    "SlideMerger",
    "SlideResult",
    "TissueIndex",
    "TissuePatchSplitter",
    "compare_label_slides",
    "evaluate_slides",
    "infer_slide",
    "iter_patches",
    "patch_starts",
    "prefetch",
    "run_slide_inference",
    "slide_stem",
]


# ----------------------------------------------------------------------------------------- grid
def patch_starts(length: int, patch_size: int, stride: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with windows of ``patch_size``; the last one is flush.

    >>> patch_starts(1000, 256, 192)
    [0, 192, 384, 576, 744]
    >>> patch_starts(100, 256, 192)
    [0]
    """
    if length <= patch_size:
        return [0]
    starts = list(range(0, length - patch_size + 1, stride))
    if starts[-1] != length - patch_size:
        starts.append(length - patch_size)
    return starts


class TissueIndex:
    """Tissue fraction of any level rectangle in O(1), from a low-resolution tissue mask.

    Args:
        mask: ``(h, w)`` bool tissue mask covering the whole slide (e.g. of its thumbnail), or None
            (everything is tissue).
        level_shape: ``(H, W)`` of the level the rectangles refer to.
    """

    def __init__(self, mask: np.ndarray | None, level_shape: tuple[int, int]):
        self.level_shape = level_shape
        self.mask = None if mask is None else np.asarray(mask, bool)
        if self.mask is not None:
            m = self.mask.astype(np.int64)
            self._sum = np.pad(m.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            self._sy = self.mask.shape[0] / level_shape[0]
            self._sx = self.mask.shape[1] / level_shape[1]

    def fraction(self, y: int, x: int, h: int, w: int) -> float:
        if self.mask is None:
            return 1.0
        mh, mw = self.mask.shape
        y0 = min(max(int(math.floor(y * self._sy)), 0), mh - 1)
        x0 = min(max(int(math.floor(x * self._sx)), 0), mw - 1)
        y1 = min(max(int(math.ceil((y + h) * self._sy)), y0 + 1), mh)
        x1 = min(max(int(math.ceil((x + w) * self._sx)), x0 + 1), mw)
        s = self._sum
        total = s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0]
        return float(total) / ((y1 - y0) * (x1 - x0))


@dataclass(frozen=True)
class Patch:
    """A patch of the grid: top-left ``(y, x)`` at the level, grid ``row``/``col``, tissue fraction."""

    y: int
    x: int
    row: int
    col: int
    tissue: float


def iter_patches(
    slide: Slide,
    level: int = 0,
    patch_size: int = 256,
    overlap: float = 0.25,
    tissue_mask: np.ndarray | None = None,
    tissue_threshold: float = 0.05,
    columns: tuple[int, int] | None = None,
) -> Iterator[Patch]:
    """The patch grid of a slide level in row-major order, without patches lacking tissue.

    Args:
        slide: an opened slide.
        level: pyramid level the grid is laid on (patch coordinates are in its pixels).
        patch_size: patch edge in pixels.
        overlap: fraction of the patch shared with the next one (0 <= overlap < 1).
        tissue_mask: low-resolution bool mask covering the whole slide; None keeps every patch.
        tissue_threshold: keep patches whose tissue fraction is at least this (0 keeps all).
        columns: only patches overlapping level columns ``[x0, x1)``.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    H, W = slide.levels[level].shape
    stride = max(1, int(round(patch_size * (1 - overlap))))
    index = TissueIndex(tissue_mask, (H, W))
    xs = patch_starts(W, patch_size, stride)
    for row, y in enumerate(patch_starts(H, patch_size, stride)):
        for col, x in enumerate(xs):
            if columns is not None and not (x < columns[1] and x + patch_size > columns[0]):
                continue
            frac = index.fraction(y, x, patch_size, patch_size)
            if frac >= tissue_threshold and (frac > 0 or tissue_threshold <= 0):
                yield Patch(y, x, row, col, frac)


# ------------------------------------------------------------------------------------ predictors
def as_predictor(
    model: torch.nn.Module | Predictor,
    device: str | torch.device | None = None,
    inferer: Callable | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Predictor:
    """Wrap a network (optionally with a MONAI inferer and channel normalisation) as a predictor.

    The predictor takes ``[B, 3, H, W]`` float in [0, 1] and returns ``[B, C, h, w]`` on the CPU.
    Networks returning a dict (torchvision segmentation: ``"out"``) or a tuple use the first output.
    """
    device = torch.device(device) if device is not None else None
    if isinstance(model, torch.nn.Module):
        if device is not None:
            model = model.to(device)
        model.eval()
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) if mean is not None else None
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) if std is not None else None

    def predict(batch: torch.Tensor) -> torch.Tensor:
        if m is not None:
            batch = batch - m
        if s is not None:
            batch = batch / s
        if device is not None:
            batch = batch.to(device)
        with torch.inference_mode():
            out = inferer(batch, model) if inferer is not None else model(batch)
        if isinstance(out, dict):
            out = out["out"] if "out" in out else next(iter(out.values()))
        if isinstance(out, list | tuple):
            out = out[0]
        return out.detach().float().cpu()

    return predict


# ------------------------------------------------------------------------------ MONAI composition
def prefetch(iterable: Iterable, depth: int = 2) -> Iterator:
    """Iterate ``iterable`` in one background thread, ``depth`` items ahead; its exceptions are raised here.

    >>> list(prefetch(range(5)))
    [0, 1, 2, 3, 4]
    """
    done = object()
    it = iter(iterable)
    with ThreadPoolExecutor(1, thread_name_prefix="prefetch") as pool:
        ahead = deque(pool.submit(next, it, done) for _ in range(max(1, depth)))
        while True:
            item = ahead.popleft().result()
            if item is done:
                return
            ahead.append(pool.submit(next, it, done))
            yield item


class TissuePatchSplitter(Splitter):
    """MONAI ``Splitter`` giving the patches of one slide level at given locations, read ahead in the background.

    Each patch is read by MONAI's ``PatchWSIDataset`` with ``reader`` and batched by a
    ``monai.data.DataLoader`` (``num_workers`` worker processes, or none); :func:`prefetch` keeps
    ``prefetch_batches`` batches ready while the caller runs the network. Use with ``PatchInferer``.

    Args:
        locations: top-left ``(y, x)`` of every patch, in pixels of ``level``.
        level: the slide level.
        patch_size: ``(h, w)`` (or an int) in pixels of ``level``.
        level_shape: ``(H, W)`` of ``level``.
        downsample: ``level``'s downsample relative to level 0 (MONAI locations are level-0 pixels).
        reader: a MONAI ``BaseWSIReader`` (default :func:`~liverseg_monai.io.slide.wsi_reader`).
        batch_size: patches per read batch.
        num_workers: DataLoader worker processes (0: read in the prefetch thread).
        prefetch_batches: batches read ahead.

    ``splitter(path)`` yields ``([1, 3, h, w]`` float in [0, 1], ``(y, x))`` in the order of ``locations``.
    """

    def __init__(
        self,
        locations: Sequence[tuple[int, int]],
        level: int,
        patch_size: int | Sequence[int],
        level_shape: tuple[int, int],
        downsample: float = 1.0,
        reader: BaseWSIReader | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        prefetch_batches: int = 2,
    ) -> None:
        size = (int(patch_size), int(patch_size)) if np.isscalar(patch_size) else tuple(int(p) for p in patch_size)
        super().__init__(size)
        self.locations = [(int(y), int(x)) for y, x in locations]
        self.level, self.level_shape, self.downsample = int(level), tuple(level_shape), float(downsample)
        self.reader = reader if reader is not None else wsi_reader()
        self.batch_size, self.num_workers = max(1, int(batch_size)), int(num_workers)
        self.prefetch_batches = int(prefetch_batches)

    def get_input_shape(self, inputs) -> tuple:
        return self.level_shape

    def get_padded_shape(self, inputs) -> tuple:
        """The level, enlarged to one patch where it is smaller (the patch is then cropped by the merger)."""
        return tuple(max(s, p) for s, p in zip(self.level_shape, self.patch_size))

    def dataset(self, path: str | os.PathLike) -> PatchWSIDataset:
        """MONAI's dataset of this splitter's patches of the slide ``path``."""
        ds = self.downsample
        data = [{"image": str(path), "location": [round(y * ds), round(x * ds)]} for y, x in self.locations]
        return PatchWSIDataset(
            data, self.patch_size, self.level, include_label=False, center_location=False, reader=self.reader
        )

    def __call__(self, inputs: str | os.PathLike) -> Iterator[tuple[torch.Tensor, tuple[int, int]]]:
        dataset = self.dataset(inputs)
        loader = DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers)
        start = 0
        try:
            for batch in prefetch(loader, self.prefetch_batches):
                images = batch["image"]
                images = images.as_tensor() if hasattr(images, "as_tensor") else images
                images = images.float().div_(255.0)
                for i in range(images.shape[0]):
                    yield images[i : i + 1], self.locations[start + i]
                start += images.shape[0]
        finally:  # the slide handles the dataset opened in this process
            for wsi in dataset.wsi_object_dict.values():
                if hasattr(wsi, "close"):
                    wsi.close()


class SlideMerger(ZarrAvgMerger):
    """MONAI's ``ZarrAvgMerger`` with its value, count and output stores in ``directory`` and square chunks.

    Args:
        merged_shape, cropped_shape: as ``ZarrAvgMerger`` (``[1, C, H, W]``; set by ``PatchInferer``).
        directory: an existing folder for the three zarr stores (the caller removes it).
        chunk_size: chunk edge in pixels of the plane (all channels in one chunk).
    """

    def __init__(
        self,
        merged_shape: Sequence[int],
        cropped_shape: Sequence[int] | None = None,
        directory: str | os.PathLike = ".",
        chunk_size: int = 256,
    ) -> None:
        d = Path(directory)
        chunks = (*[int(s) for s in merged_shape[:-2]], int(chunk_size), int(chunk_size))
        super().__init__(
            merged_shape,
            cropped_shape,
            store=str(d / "merged.zarr"),
            value_store=str(d / "values.zarr"),
            count_store=str(d / "counts.zarr"),
            chunks=chunks,
        )

        self.chunk_size = int(chunk_size)
        # untouched chunks read as NaN (no patch) without being stored: finalize skips them
        self.output = zarr.full(shape=self.merged_shape, fill_value=np.nan, chunks=self.chunks,
                                dtype=self.output_dtype, store=self.store, overwrite=True)
        self.touched: set[tuple[int, int]] = set()

    def aggregate(self, values: torch.Tensor, location: Sequence[int]) -> None:
        super().aggregate(values, location)
        (y, x), (h, w), c = location[-2:], values.shape[-2:], self.chunk_size
        with self.lock:
            self.touched.update((cy, cx) for cy in range(y // c, (y + h - 1) // c + 1)
                                for cx in range(x // c, (x + w - 1) // c + 1))

    def finalize(self):
        """``values / counts`` on the touched chunks only (0/0 = NaN marks pixels no patch covered)."""
        if not self.is_finalized:
            c, lead = self.chunk_size, (slice(None),) * (len(self.merged_shape) - 2)
            with np.errstate(invalid="ignore", divide="ignore"):
                for cy, cx in sorted(self.touched):
                    chunk = (*lead, slice(cy * c, (cy + 1) * c), slice(cx * c, (cx + 1) * c))
                    self.output[chunk] = self.values[chunk] / self.counts[chunk]
            self.output.resize(self.cropped_shape)
            self.is_finalized = True
        return self.output


def patch_postprocessing(
    patch_size: tuple[int, int], activation: str | None = "softmax", blend: str = "gaussian"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``[B, C, h, w]`` network output -> resized to ``patch_size``, activated, weighted for blending.

    The weight is MONAI's ``compute_importance_map`` (``"gaussian"``: sigma 0.125 of the patch, never
    zero; ``"constant"``). The merger's division by the patch count does not change the argmax, so the
    labels are those of the weight-normalised blend.
    """
    if activation not in ("softmax", "sigmoid", None):
        raise ValueError(f"activation must be 'softmax', 'sigmoid' or None, got {activation!r}")
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    weight = compute_importance_map(tuple(patch_size), mode=blend, sigma_scale=0.125, device="cpu")

    def post(out) -> torch.Tensor:
        if isinstance(out, dict):
            out = out["out"] if "out" in out else next(iter(out.values()))
        if isinstance(out, list | tuple):
            out = out[0]
        out = torch.as_tensor(out).detach().float().cpu()
        if out.ndim != 4:
            raise ValueError(f"predict_fn must return [B, C, H, W], got {tuple(out.shape)}")
        if tuple(out.shape[-2:]) != tuple(patch_size):
            out = torch.nn.functional.interpolate(out, size=tuple(patch_size), mode="bilinear", align_corners=False)
        if activation == "softmax":
            out = torch.softmax(out, dim=1)
        elif activation == "sigmoid":
            out = torch.sigmoid(out)
        return out * weight

    return post


# -------------------------------------------------------------------------------------- results
@dataclass
class SlideResult:
    """What :func:`infer_slide` produced for one slide.

    ``n_patches``: patches in the grid; ``n_tissue``: those with tissue; ``n_predicted``: model
    evaluations (patches across a strip border are evaluated once per strip).
    """

    image: Path
    label_path: Path | None
    overlay_path: Path | None
    areas_path: Path | None
    level: int
    mpp: float
    shape: tuple[int, int]
    n_patches: int
    n_tissue: int
    n_predicted: int
    areas: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "image": str(self.image),
            "label": str(self.label_path) if self.label_path else None,
            "overlay": str(self.overlay_path) if self.overlay_path else None,
            "areas": str(self.areas_path) if self.areas_path else None,
            "level": self.level,
            "mpp": self.mpp,
            "shape": list(self.shape),
            "patches": self.n_patches,
            "tissue_patches": self.n_tissue,
            "predicted_patches": self.n_predicted,
        }


def _areas_table(counts: np.ndarray, mpp: float, class_names: Sequence[str]) -> list[dict]:
    px_mm2 = (mpp / 1000.0) ** 2
    tissue = counts[1:].sum()
    rows = []
    for c, n in enumerate(counts):
        rows.append(
            {
                "class_index": c,
                "class_name": class_names[c] if c < len(class_names) else f"class_{c}",
                "pixels": int(n),
                "area_mm2": float(n) * px_mm2,
                "fraction_of_foreground": float(n) / float(tissue) if c > 0 and tissue else 0.0,
            }
        )
    return rows


class _LabelSource:
    """Label tiles from the merged ``[1, C, H, W]`` zarr map, counting classes and filling a label thumbnail.

    Called by :func:`~liverseg_monai.io.slide.write_pyramid` once per level-0 tile, in any order.
    """

    def __init__(self, merged, shape: tuple[int, int], background: int, thumb_shape: tuple[int, int],
                 patches: Sequence[tuple[int, int]] = (), patch_size: int = 0, cell: int = 256):
        self.merged, self.level_shape, self.background = merged, shape, int(background)
        # which cell x cell squares any patch covers: tiles of glass become background without a read
        self.cell = int(cell)
        self.covered = np.zeros((-(-shape[0] // self.cell), -(-shape[1] // self.cell)), bool)
        for py, px in patches:
            self.covered[py // self.cell:(py + patch_size - 1) // self.cell + 1,
                         px // self.cell:(px + patch_size - 1) // self.cell + 1] = True
        H, W = shape
        self.ty = np.minimum(((np.arange(thumb_shape[0]) + 0.5) * H / thumb_shape[0]).astype(int), H - 1)
        self.tx = np.minimum(((np.arange(thumb_shape[1]) + 0.5) * W / thumb_shape[1]).astype(int), W - 1)
        self.thumbnail = np.full(thumb_shape, self.background, np.uint8)
        self.counts = np.zeros(max(self.background + 1, 1), np.int64)

    def __call__(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        c = self.cell
        if self.merged is None or not self.covered[y // c:(y + h - 1) // c + 1, x // c:(x + w - 1) // c + 1].any():
            lab = np.full((h, w), self.background, np.uint8)
        else:
            prob = np.asarray(self.merged[0, :, y : y + h, x : x + w])
            covered = ~np.isnan(prob[0])
            lab = np.where(covered, np.argmax(np.nan_to_num(prob, nan=0.0), axis=0), self.background)
            lab = lab.astype(np.uint8)
        binc = np.bincount(lab.ravel())
        if len(binc) > len(self.counts):
            self.counts = np.pad(self.counts, (0, len(binc) - len(self.counts)))
        self.counts[: len(binc)] += binc
        rows = np.flatnonzero((self.ty >= y) & (self.ty < y + h))
        cols = np.flatnonzero((self.tx >= x) & (self.tx < x + w))
        if len(rows) and len(cols):
            self.thumbnail[np.ix_(rows, cols)] = lab[np.ix_(self.ty[rows] - y, self.tx[cols] - x)]
        return lab


def _save_overlay(path: Path, thumbnail: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    from liverseg_monai.visualize import blend_labels

    over = blend_labels(thumbnail[..., :3], labels, alpha=0.45)
    panel = np.concatenate(
        [thumbnail[..., :3].astype(np.float32) / 255.0, np.ones((thumbnail.shape[0], 4, 3)), over], axis=1
    )
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(np.clip(panel, 0, 1) * 255).astype(np.uint8)).save(tmp, format="PNG")


def slide_stem(path: str | os.PathLike) -> str:
    """File name without slide suffixes: ``a/b/case1.ome.tiff`` -> ``case1`` (:func:`liverseg_monai.io.naming.case_stem`)."""
    from liverseg_monai.io.naming import case_stem

    return case_stem(path)


# ---------------------------------------------------------------------------------- the inferer
def infer_slide(
    slide: Slide | str | os.PathLike,
    predict_fn: Predictor | torch.nn.Module,
    out_path: str | os.PathLike,
    patch_size: int = 256,
    overlap: float = 0.25,
    level: int = 0,
    batch_size: int = 8,
    tissue_threshold: float = 0.05,
    activation: str | None = "softmax",
    blend: str = "gaussian",
    class_names: Sequence[str] | None = None,
    overlay_path: str | os.PathLike | None = None,
    areas_path: str | os.PathLike | None = None,
    thumbnail_size: int = 1024,
    background_class: int = 0,
    mpp: float | None = None,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    reader: BaseWSIReader | None = None,
    progress: bool = True,
    report_path: str | os.PathLike | None = None,
    model: Mapping | None = None,
) -> SlideResult:
    """Segment a whole slide patch by patch and write the label TIFF, overlay PNG and area CSV.

    Args:
        slide: an opened :class:`~liverseg_monai.io.slide.Slide` or a slide file.
        predict_fn: ``f(batch) -> [B, C, h, w]`` logits or probabilities for ``batch`` a
            ``[B, 3, P, P]`` float tensor in [0, 1] (outputs of another size are resized to P), or a
            network (wrapped by :func:`as_predictor` on ``device``).
        out_path: the label TIFF to write (class indices at ``level``; atomic).
        patch_size: patch edge ``P`` in pixels of ``level``.
        overlap: fraction of overlap between neighbouring patches.
        level: pyramid level to infer on (``slide.level_for_mpp(target)`` picks one by resolution).
        batch_size: patches per model call.
        tissue_threshold: patches with a smaller tissue fraction are skipped (background).
        activation: ``"softmax"`` / ``"sigmoid"`` applied to outputs before blending, or None when
            ``predict_fn`` returns probabilities already.
        blend: ``"gaussian"`` (centre-weighted, hides patch seams) or ``"constant"``.
        class_names: names for the CSV (defaults to ``class_0``...).
        overlay_path: PNG to write (None: none).
        areas_path: CSV to write (None: none).
        thumbnail_size: longer side of the thumbnail used for tissue detection and the overlay.
        background_class: label of pixels no patch predicted (glass).
        mpp: microns per pixel at level 0 when the file lacks it (when ``slide`` is a path).
        device: device for a network ``predict_fn``.
        num_workers: reader processes (0: patches are read in one background thread).
        reader: the MONAI ``BaseWSIReader`` reading patches (default: :func:`~liverseg_monai.io.slide.wsi_reader`).
        progress: tqdm progress bar.
        report_path: JSON read-out to write with the CSV (tissue-class areas in mm^2, see
            :func:`liverseg_monai.io.readout.tissue_class_report`; None: none).
        model: the model named in the report (``{"bundle", "name", "version"}``).

    Returns:
        a :class:`SlideResult` with the paths and the per-class areas (mm^2).
    """
    from tqdm import tqdm

    own = not isinstance(slide, Slide)
    if own:
        slide = open_slide(slide, mpp=mpp)
    try:
        if isinstance(predict_fn, torch.nn.Module):
            predict_fn = as_predictor(predict_fn, device)
        if not 0 <= level < len(slide.levels):
            raise ValueError(
                f"{slide.path}: level {level} does not exist (slide has {len(slide.levels)} levels)"
            )
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        H, W = slide.levels[level].shape
        level_mpp = slide.level_mpp(level)
        P = int(patch_size)
        post = patch_postprocessing((P, P), activation, blend)
        thumb = slide.thumbnail(thumbnail_size)
        mask = tissue_mask(thumb) if tissue_threshold > 0 else None
        stride = max(1, int(round(P * (1 - overlap))))
        n_total = len(patch_starts(H, P, stride)) * len(patch_starts(W, P, stride))
        patches = list(iter_patches(slide, level, P, overlap, mask, tissue_threshold))
        if not patches:
            warnings.warn(
                f"{slide.path}: no tissue found; the label map is all background (class {background_class})",
                stacklevel=2,
            )
        if reader is None:
            reader = wsi_reader(slide_mpp=slide.mpp)
        splitter = TissuePatchSplitter(
            [(p.y, p.x) for p in patches],
            level,
            P,
            (H, W),
            slide.levels[level].downsample,
            reader,
            batch_size,
            num_workers,
        )
        bar = tqdm(total=len(patches), desc=f"slide {slide.path.name}", disable=not progress, leave=False)

        def network(batch: torch.Tensor) -> torch.Tensor:
            out = predict_fn(batch)
            if torch.as_tensor(out).shape[0] != batch.shape[0]:
                raise ValueError(f"predict_fn must return [B, C, H, W] for B={batch.shape[0]}")
            bar.update(batch.shape[0])
            return out

        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{out_path.name}.", dir=out_path.parent) as work:
            inferer = PatchInferer(
                splitter, SlideMerger, batch_size=batch_size, postprocessing=post, directory=work
            )
            merged = inferer(str(slide.path), network) if patches else None
            bar.close()
            n_classes = int(merged.shape[1]) if merged is not None else 0
            source = _LabelSource(merged, (H, W), background_class, thumb.shape[:2],
                                  [(p.y, p.x) for p in patches], P)
            n_classes = max(len(class_names) if class_names else 0, n_classes, background_class + 1)
            names = list(class_names) if class_names else [f"class_{c}" for c in range(n_classes)]
            with all_or_none():  # the label slide, overlay and table appear together or not at all
                SlideLabelWriter(out_path, (H, W), level_mpp, class_names=names).write(source)
                counts = np.pad(source.counts, (0, max(0, n_classes - len(source.counts))))
                areas = _areas_table(counts, level_mpp, names)
                if overlay_path is not None:
                    _save_overlay(Path(overlay_path), thumb, source.thumbnail)
                if areas_path is not None:
                    write_table(areas_path, areas)
                if report_path is not None:
                    report = tissue_class_report(slide.path, areas, level_mpp, level, model, background_class)
                    write_report(report_path, report)
        return SlideResult(
            image=slide.path,
            label_path=out_path,
            overlay_path=Path(overlay_path) if overlay_path else None,
            areas_path=Path(areas_path) if areas_path else None,
            level=level,
            mpp=level_mpp,
            shape=(H, W),
            n_patches=n_total,
            n_tissue=len(patches),
            n_predicted=len(patches),
            areas=areas,
        )
    finally:
        if own:
            slide.close()


# --------------------------------------------------------------------------------- bundle entry
def run_slide_inference(
    network: torch.nn.Module | Predictor,
    slides: Sequence[dict | str | os.PathLike],
    output_dir: str | os.PathLike,
    patch_size: int = 512,
    level: int = 0,
    overlap: float = 0.25,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    class_names: Sequence[str] | None = None,
    tissue_threshold: float = 0.05,
    target_mpp: float | None = None,
    mpp: float | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    inferer: Callable | None = None,
    activation: str | None = "softmax",
    checkpoint: str | os.PathLike | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Run :func:`infer_slide` on each slide of a datalist; the entry point for bundle configs.

    Writes ``<stem>_label.tiff``, ``<stem>_overlay.png``, ``<stem>_areas.csv`` and ``<stem>_report.json``
    (tissue-class areas in mm^2, naming the bundle that holds ``checkpoint``) per slide into
    ``output_dir``, plus ``slides.json`` listing them.

    Args:
        network: the segmentation network (or a predictor callable).
        slides: datalist items (``{"image": path, ...}``, e.g. from ``load_datalist``) or paths.
        output_dir: output folder.
        patch_size, overlap, batch_size, tissue_threshold, activation: see :func:`infer_slide`.
        level: pyramid level; ignored when ``target_mpp`` is given (closest level by resolution).
        device: where the network runs.
        class_names: class names for the CSV and the label TIFF.
        mpp: microns per pixel at level 0 for slides whose files lack it.
        mean, std: per-channel normalisation applied to the [0, 1] patches before the network.
        inferer: a MONAI inferer ``inferer(inputs, network)`` (e.g. ``SimpleInferer()``).
        checkpoint: a state dict file (``models/model.pt``) loaded into ``network`` first, if given.
        num_workers: reader processes (0: patches are read ahead in one background thread).

    Returns:
        one summary dict per slide (see :meth:`SlideResult.as_dict`).
    """
    import json

    if checkpoint is not None:
        from liverseg_monai.networks.weights import load_module_weights

        load_module_weights(network, checkpoint, "train.json")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    predict = as_predictor(network, device, inferer=inferer, mean=mean, std=std)
    model = bundle_identity(checkpoint)
    results = []
    for item in slides:
        path = item["image"] if isinstance(item, dict) else item
        stem = slide_stem(path)
        with open_slide(path, mpp=mpp) as slide:
            lvl = slide.level_for_mpp(target_mpp) if target_mpp else level
            res = infer_slide(
                slide,
                predict,
                output_dir / f"{stem}_label.tiff",
                patch_size=patch_size,
                overlap=overlap,
                level=lvl,
                batch_size=batch_size,
                tissue_threshold=tissue_threshold,
                activation=activation,
                class_names=class_names,
                overlay_path=output_dir / f"{stem}_overlay.png",
                areas_path=output_dir / f"{stem}_areas.csv",
                report_path=output_dir / f"{stem}{REPORT_SUFFIX}",
                model=model,
                num_workers=num_workers,
                progress=progress,
            )
        results.append(res.as_dict())
    atomic_write_text(output_dir / "slides.json", json.dumps(results, indent=2))
    return results


def compare_label_slides(
    pred: str | os.PathLike, reference: str | os.PathLike, num_classes: int, band_rows: int = 512
) -> np.ndarray:
    """Pixel confusion matrix (rows = reference, columns = prediction) of two label slides.

    The prediction may be at a coarser level than the reference: the reference level with the same
    size is used (label slides keep nearest-neighbour levels, so they stay valid class maps).
    Reads both by row bands.
    """
    from liverseg_monai.errors import InputError

    with open_slide(pred, require_mpp=False) as p, open_slide(reference, require_mpp=False) as r:
        shape = p.levels[0].shape
        match = [lv.index for lv in r.levels if lv.shape == shape]
        if not match:
            sizes = ", ".join(f"{lv.height}x{lv.width}" for lv in r.levels)
            raise InputError(
                reference, f"no level of size {shape[0]}x{shape[1]} to compare with {pred} (levels: {sizes})"
            )
        level = match[0]
        cm = np.zeros((num_classes, num_classes), np.int64)
        for y in range(0, shape[0], band_rows):
            h = min(band_rows, shape[0] - y)
            a = p.read_region(0, y, 0, h, shape[1])[..., 0]
            b = r.read_region(level, y, 0, h, shape[1])[..., 0]
            keep = b < num_classes
            if a.max(initial=0) >= num_classes:
                raise InputError(pred, f"holds class {int(a.max())} but num_classes is {num_classes}")
            idx = b[keep].astype(np.int64) * num_classes + a[keep]
            cm += np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)
    return cm


def evaluate_slides(
    pred_dir: str | os.PathLike,
    items: Sequence[dict],
    output_dir: str | os.PathLike,
    class_names: Sequence[str],
) -> dict:
    """Compare ``<pred_dir>/<stem>_label.tiff`` with each item's ``label`` slide; write the report.

    Writes ``per_case.csv``, ``confusion_matrix.csv`` and ``summary.json`` (per-class IoU/Dice, pixel
    accuracy) into ``output_dir`` with :func:`liverseg_monai.metrics.segmentation.write_segmentation_report`.

    Args:
        pred_dir: where :func:`run_slide_inference` wrote the label slides.
        items: datalist items with ``image`` and ``label`` (absolute paths, e.g. from ``load_datalist``).
        output_dir: report folder.
        class_names: the class names, index order.

    Raises:
        InputError: naming a missing prediction or a label slide with no level of the prediction's size.
    """
    from liverseg_monai.errors import InputError
    from liverseg_monai.metrics.segmentation import write_segmentation_report

    matrices, names = [], []
    for item in items:
        stem = slide_stem(item["image"])
        pred = Path(pred_dir) / f"{stem}_label.tiff"
        if not pred.is_file():
            raise InputError(pred, f"no prediction for {item['image']}; run inference first")
        matrices.append(compare_label_slides(pred, item["label"], len(class_names)))
        names.append(stem)
    return write_segmentation_report(output_dir, np.stack(matrices), class_names, names)
