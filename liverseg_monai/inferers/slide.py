"""Patch-wise whole-slide inference with bounded memory.

:func:`infer_slide` walks a grid of overlapping patches over one level of a slide, skips patches
without tissue (a low-resolution :func:`~liverseg_monai.io.slide.tissue_mask`), runs the model on
batches of patches, blends overlapping predictions with a Gaussian (or constant) weight and writes:

- ``<stem>_label.tiff``: the class-index map at the inference level, a pyramidal tiled TIFF carrying
  its microns per pixel (:class:`~liverseg_monai.io.slide.SlideLabelWriter`);
- ``<stem>_overlay.png``: the slide thumbnail next to the thumbnail with the classes painted on;
- ``<stem>_areas.csv``: area per class in mm^2 (pixel area from the level's mpp).

Memory: predictions are accumulated only for the current band of patch rows inside a vertical strip
of at most ``strip_width`` pixels, then turned into labels and written to a disk-backed array
(:class:`~liverseg_monai.io.slide.DiskArray`). Peak memory is about
``4 * (C + 1) * patch_size * (strip_width + 2 * patch_size)`` bytes plus a batch of patches,
whatever the slide size; patches overlapping a strip border are predicted once per strip.

A slide with no tissue is not an error: the label map is all background, the areas are zero and a
warning says so.

Bundle use (``inference.json``)::

    "run": "$liverseg_monai.inferers.slide.run_slide_inference(@network, @datalist, @output_dir,
            patch_size=512, level=0, overlap=0.25, batch_size=4, device=@device, class_names=@class_names)"
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from liverseg_monai.io.atomic import atomic_path, atomic_write_text
from liverseg_monai.io.slide import DiskArray, Slide, SlideLabelWriter, open_slide, tissue_mask

Predictor = Callable[[torch.Tensor], torch.Tensor | np.ndarray]

__all__ = [
    "Patch",
    "SlideResult",
    "TissueIndex",
    "compare_label_slides",
    "evaluate_slides",
    "infer_slide",
    "iter_patches",
    "patch_starts",
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


def _weight_map(patch_size: int, blend: str, sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weight of a patch: a centred Gaussian (``sigma = sigma_scale * P``, peak 1, as MONAI's
    ``compute_importance_map``) or constant; never exactly zero so every covered pixel has a weight."""
    if blend == "constant":
        return np.ones((patch_size, patch_size), np.float32)
    if blend != "gaussian":
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    c = np.arange(patch_size, dtype=np.float64) - (patch_size - 1) / 2
    g = np.exp(-0.5 * (c / (sigma_scale * patch_size)) ** 2)
    w = np.outer(g, g)
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


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


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _label_thumbnail(labels: DiskArray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour label map of ``shape`` read row by row from the disk array."""
    H, W = labels.shape[:2]
    ys = np.minimum(((np.arange(shape[0]) + 0.5) * H / shape[0]).astype(int), H - 1)
    xs = np.minimum(((np.arange(shape[1]) + 0.5) * W / shape[1]).astype(int), W - 1)
    out = np.empty(shape, labels.dtype)
    for i, y in enumerate(ys):
        out[i] = labels[int(y)][xs]
    return out


def _save_overlay(path: Path, thumbnail: np.ndarray, labels: DiskArray) -> None:
    from PIL import Image

    from liverseg_monai.visualize import blend_labels

    lab = _label_thumbnail(labels, thumbnail.shape[:2])
    over = blend_labels(thumbnail[..., :3], lab, alpha=0.45)
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
    strip_width: int = 4096,
    background_class: int = 0,
    mpp: float | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
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
        strip_width: width of the vertical strips processed one after the other (bounds memory;
            at least ``patch_size``).
        background_class: label of pixels no patch predicted (glass).
        mpp: microns per pixel at level 0 when the file lacks it (when ``slide`` is a path).
        device: device for a network ``predict_fn``.
        progress: tqdm progress bar.

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
        H, W = slide.levels[level].shape
        level_mpp = slide.level_mpp(level)
        P = int(patch_size)
        thumb = slide.thumbnail(thumbnail_size)
        mask = tissue_mask(thumb) if tissue_threshold > 0 else None
        weight = _weight_map(P, blend)
        stride = max(1, int(round(P * (1 - overlap))))
        strip_width = max(int(strip_width), P)
        strips = [(x0, min(x0 + strip_width, W)) for x0 in range(0, W, strip_width)]
        n_total = len(patch_starts(H, P, stride)) * len(patch_starts(W, P, stride))
        todo = [
            list(iter_patches(slide, level, P, overlap, mask, tissue_threshold, columns=s)) for s in strips
        ]
        n_run = sum(len(t) for t in todo)  # patches across strip borders count once per strip
        n_tissue = len({(p.y, p.x) for t in todo for p in t})
        if n_run == 0:
            warnings.warn(
                f"{slide.path}: no tissue found; the label map is all background (class {background_class})",
                stacklevel=2,
            )
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        counts = np.zeros(1, np.int64)
        state = {"C": None}
        with DiskArray(out_path.parent / f".{out_path.name}.labels.raw", (H, W), np.uint8) as labels:
            try:
                bar = tqdm(total=n_run, desc=f"slide {slide.path.name}", disable=not progress, leave=False)
                for (sx0, sx1), patches in zip(strips, todo):
                    counts = _infer_strip(
                        slide,
                        predict_fn,
                        patches,
                        level,
                        P,
                        weight,
                        (H, W),
                        (sx0, sx1),
                        batch_size,
                        activation,
                        background_class,
                        labels,
                        counts,
                        state,
                        bar,
                    )
                bar.close()
                labels.flush()
                n_classes = max(
                    len(class_names) if class_names else 0, state["C"] or 0, len(counts), background_class + 1
                )
                counts = np.pad(counts, (0, n_classes - len(counts)))
                names = list(class_names) if class_names else [f"class_{c}" for c in range(n_classes)]
                SlideLabelWriter(out_path, (H, W), level_mpp, class_names=names).write(labels)
                if overlay_path is not None:
                    _save_overlay(Path(overlay_path), thumb, labels)
                areas = _areas_table(counts, level_mpp, names)
                if areas_path is not None:
                    _write_csv(Path(areas_path), areas)
            finally:
                labels.close()
                labels.path.unlink(missing_ok=True)
        return SlideResult(
            image=slide.path,
            label_path=out_path,
            overlay_path=Path(overlay_path) if overlay_path else None,
            areas_path=Path(areas_path) if areas_path else None,
            level=level,
            mpp=level_mpp,
            shape=(H, W),
            n_patches=n_total,
            n_tissue=n_tissue,
            n_predicted=n_run,
            areas=areas,
        )
    finally:
        if own:
            slide.close()


def _infer_strip(
    slide,
    predict_fn,
    patches,
    level,
    P,
    weight,
    shape,
    strip,
    batch_size,
    activation,
    background,
    labels,
    counts,
    state,
    bar,
) -> np.ndarray:
    """Predict one vertical strip row band by row band; finalised rows go to ``labels``."""
    H, W = shape
    sx0, sx1 = strip
    if patches:
        bx0 = min(sx0, min(p.x for p in patches))
        bx1 = max(sx1, max(p.x + P for p in patches))
    else:
        bx0, bx1 = sx0, sx1
    bw = bx1 - bx0
    acc: np.ndarray | None = None
    wsum = np.zeros((P, bw), np.float32)
    band_y0 = 0

    def finalize(y_end: int) -> None:
        """Turn rows ``[band_y0, y_end)`` into labels (in chunks of at most P rows) and shift the band."""
        while band_y0 < min(y_end, H):
            _finalize_rows(min(y_end, H, band_y0 + P) - band_y0)

    def _finalize_rows(n: int) -> None:
        nonlocal band_y0, counts
        cols = slice(sx0 - bx0, sx1 - bx0)
        if acc is None:
            lab = np.full((n, sx1 - sx0), background, np.uint8)
        else:
            lab = np.argmax(acc[:, :n, cols], axis=0).astype(np.uint8)
            lab[wsum[:n, cols] <= 0] = background
        _write_block(labels, band_y0, sx0, lab)
        binc = np.bincount(lab.ravel())
        if len(binc) > len(counts):
            counts = np.pad(counts, (0, len(binc) - len(counts)))
        counts[: len(binc)] += binc
        # shift the band up by n rows
        keep = P - n
        if keep > 0:
            if acc is not None:
                acc[:, :keep] = acc[:, n:].copy()
            wsum[:keep] = wsum[n:].copy()
        if acc is not None:
            acc[:, keep:] = 0
        wsum[keep:] = 0
        band_y0 += n

    rows: dict[int, list[Patch]] = {}
    for p in patches:
        rows.setdefault(p.y, []).append(p)
    for y in sorted(rows):
        finalize(y)  # rows above this patch row are complete
        row = rows[y]
        for i in range(0, len(row), batch_size):
            chunk = row[i : i + batch_size]
            batch = np.stack([slide.read_region(level, p.y, p.x, P, P)[..., :3] for p in chunk])
            if batch.shape[-1] == 1:
                batch = np.repeat(batch, 3, axis=-1)
            tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
            out = predict_fn(tensor)
            out = torch.as_tensor(out).float()
            if out.ndim != 4 or out.shape[0] != len(chunk):
                raise ValueError(
                    f"predict_fn must return [B, C, H, W] for B={len(chunk)}, got {tuple(out.shape)}"
                )
            if out.shape[-2:] != (P, P):
                out = torch.nn.functional.interpolate(out, size=(P, P), mode="bilinear", align_corners=False)
            if activation == "softmax":
                out = torch.softmax(out, dim=1)
            elif activation == "sigmoid":
                out = torch.sigmoid(out)
            elif activation is not None:
                raise ValueError(f"activation must be 'softmax', 'sigmoid' or None, got {activation!r}")
            out = out.numpy()
            if acc is None:
                state["C"] = out.shape[1]
                acc = np.zeros((out.shape[1], P, bw), np.float32)
            elif out.shape[1] != acc.shape[0]:
                raise ValueError(
                    f"predict_fn changed its number of classes from {acc.shape[0]} to {out.shape[1]}"
                )
            for p, o in zip(chunk, out):
                h, w = min(P, H - p.y), min(P, W - p.x)
                ry, rx = p.y - band_y0, p.x - bx0
                acc[:, ry : ry + h, rx : rx + w] += o[:, :h, :w] * weight[:h, :w]
                wsum[ry : ry + h, rx : rx + w] += weight[:h, :w]
            bar.update(len(chunk))
    finalize(H)
    return counts


def _write_block(labels: DiskArray, y0: int, x0: int, block: np.ndarray) -> None:
    """Write a ``(h, w)`` block into full-width rows of the disk array."""
    h, w = block.shape
    if x0 == 0 and w == labels.shape[1]:
        labels[y0 : y0 + h] = block
        return
    rows = labels[y0 : y0 + h]
    rows[:, x0 : x0 + w] = block
    labels[y0 : y0 + h] = rows


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
    progress: bool = True,
) -> list[dict]:
    """Run :func:`infer_slide` on each slide of a datalist; the entry point for bundle configs.

    Writes ``<stem>_label.tiff``, ``<stem>_overlay.png`` and ``<stem>_areas.csv`` per slide into
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
