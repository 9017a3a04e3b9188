"""Classical steatosis segmentation with clump splitting, for label bootstrapping and as a baseline.

The method of Guo et al. ("Segmentation of overlapped steatosis in whole-slide liver histopathology
microscopy images", 2018), used by the Mask R-CNN paper (arXiv:1911.07088) to bootstrap labels:

1. grey-scale conversion and a threshold on the normalised grey level (1st-99th percentile -> [0, 1]);
2. background exclusion: bright regions larger than any clump (bare glass, tears) are not droplets;
3. white droplet candidates: the remaining bright connected components (small specks removed);
4. clumps: candidates with solidity (area / convex hull area) below ``solidity`` (0.95);
5. concave points: contour points deep inside the convex hull (local maxima of the hull distance)
   where the contour turns sharply inwards;
6. split lines: every pair of concave points whose chord stays inside the clump is scored by the
   ellipse-fit quality of the two parts (IoU of each part with its moment ellipse), their convexity
   (solidity) and the proximity of the points (short chords preferred); the best line splits the clump
   and parts that are still non-convex are split again;
7. fallback (documented): when no valid pair of concave points exists, a distance-transform watershed
   splits the clump if it yields parts that fit ellipses better than the whole.

Pure numpy functions first (:func:`segment_droplets`), then MONAI transforms
(:class:`ClumpSplitting`, :class:`ClumpSplittingd`), then the bootstrapping workflow
(:func:`bootstrap_labels` writes instance PNGs, a review montage per image and a keep/remove CSV;
:func:`apply_review` turns the edited CSV into a training dataset). Command line::

    python -m liverseg_monai.transforms.clump_splitting bootstrap IMAGES_DIR OUT_DIR
    python -m liverseg_monai.transforms.clump_splitting apply OUT_DIR/review.csv DATASET_DIR
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage as ndi
from skimage import measure, morphology, segmentation
from skimage.draw import line as draw_line

from liverseg_monai.errors import InputError
from liverseg_monai.io.atomic import atomic_path
from liverseg_monai.io.rgb import read_rgb
from liverseg_monai.io.tables import write_table

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


# ----------------------------------------------------------------------------------------------------
# 1-3. candidates
# ----------------------------------------------------------------------------------------------------
def to_rgb_hwc(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) float image in [0, 1] from (H, W, 3|4), (3, H, W) or (H, W) arrays, uint8 or float."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an RGB image (H, W, 3) or (3, H, W), got shape {img.shape}")
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    img = img[..., :3].astype(np.float64)
    if np.issubdtype(np.asarray(image).dtype, np.integer) or img.max() > 1.5:
        img = img / (65535.0 if img.max() > 255.5 else 255.0)
    return img


def normalised_grey(image: np.ndarray) -> np.ndarray:
    """Grey level (ITU-R 709 luma) stretched so its 1st..99.5th percentiles map to [0, 1]."""
    rgb = to_rgb_hwc(image)
    grey = rgb @ np.array([0.2125, 0.7154, 0.0721])
    lo, hi = np.percentile(grey, [1.0, 99.5])
    if hi - lo < 0.05:  # flat image: keep the absolute scale
        lo, hi = 0.0, 1.0
    return np.clip((grey - lo) / (hi - lo), 0.0, 1.0)


def droplet_candidates(
    image: np.ndarray,
    threshold: float = 0.8,
    min_area: int = 12,
    max_clump_area: int = 6000,
    saturation_max: float = 0.15,
    min_tissue_ring: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """White droplet candidates and the tissue mask of an H&E tile.

    Args:
        image: RGB tile (H, W, 3) or (3, H, W), uint8 or float in [0, 1].
        threshold: normalised grey level above which a pixel is white (fat or glass).
        min_area: white specks smaller than this (pixels) are ignored.
        max_clump_area: white components larger than this (pixels) are background (glass, tears);
            scale with the resolution (about 1500 µm² at 0.5 µm/px gives 6000 px).
        saturation_max: white pixels must also be unsaturated (max - min of RGB below this).
        min_tissue_ring: fraction of the 2-pixel ring around a white component (inside the tile) that
            must be tissue for it to be a droplet; white areas surrounded by white are glass.

    Returns:
        ``(candidates, tissue)``: boolean (H, W) masks; tissue includes the droplets and excludes glass.
    """
    rgb = to_rgb_hwc(image)
    grey = normalised_grey(rgb)
    saturation = rgb.max(-1) - rgb.min(-1)
    bright = (grey >= threshold) & (saturation <= saturation_max)
    white = ndi.binary_opening(bright, structure=morphology.disk(1))
    white = morphology.remove_small_objects(white, max_size=max(int(min_area) - 1, 0))
    labels = measure.label(white, connectivity=1)
    areas = np.bincount(labels.ravel())
    glass_ids = np.flatnonzero(areas > max_clump_area)
    glass_ids = glass_ids[glass_ids > 0]
    # a droplet sits in tissue: most of the ring around it (inside the tile) must be non-white
    ring = ndi.grey_dilation(labels, size=(5, 5)) * (labels == 0)
    ids = np.arange(1, labels.max() + 1)
    if len(ids):
        ring_tissue = ndi.mean(~bright, ring, ids)
        ring_tissue = np.nan_to_num(np.asarray(ring_tissue, float), nan=0.0)  # no ring: all white around
        glass_ids = np.union1d(glass_ids, ids[ring_tissue < min_tissue_ring])
    glass = np.isin(labels, glass_ids)
    glass = ndi.binary_dilation(glass, iterations=1) & (grey >= threshold * 0.9)
    candidates = white & ~glass
    return candidates, ~glass


# ----------------------------------------------------------------------------------------------------
# 4-7. clump splitting
# ----------------------------------------------------------------------------------------------------
def _outer_contour(mask: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """The longest sub-pixel contour of a binary mask, as (row, col) points.

    The mask is blurred (Gaussian, ``smooth`` pixels) before taking the 0.5 iso-line, so the contour of
    a digital disc is a smooth circle rather than a staircase.
    """
    padded = np.pad(mask.astype(float), 3)
    if smooth > 0:
        padded = ndi.gaussian_filter(padded, smooth)
    contours = measure.find_contours(padded, 0.5)
    if not contours:
        return np.zeros((0, 2))
    return max(contours, key=len)[:-1] - 3.0


def _polygon_area(poly: np.ndarray) -> float:
    y, x = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def solidity(mask: np.ndarray) -> float:
    """Area over convex hull area of the mask's sub-pixel outline (1.0 for convex shapes).

    Measured on the iso-line polygon of the pixel mask (a digital disc of radius 10 px scores about
    0.95, larger ones more); shapes below the clump threshold are only *candidates*: a split is kept
    only when it explains the shape better than one ellipse (see :func:`split_clump`).
    """
    from scipy.spatial import ConvexHull, QhullError

    contour = _outer_contour(mask, smooth=0.0)
    if len(contour) < 4:
        return 1.0 if mask.any() else 0.0
    try:
        hull = ConvexHull(contour)
    except QhullError:
        return 1.0
    return _polygon_area(contour) / max(hull.volume, 1e-9)


def ellipse_fit_iou(mask: np.ndarray) -> float:
    """IoU of a mask with the ellipse of equal second moments (1.0 for a perfect ellipse)."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 5:
        return 0.0
    pts = np.stack([ys, xs], 1).astype(np.float64)
    mean = pts.mean(0)
    cov = np.cov(pts.T) + np.eye(2) * 1e-3
    inv = np.linalg.inv(cov)
    pad = 4
    y0, x0 = max(ys.min() - pad, 0), max(xs.min() - pad, 0)
    y1, x1 = ys.max() + pad + 1, xs.max() + pad + 1
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.stack([yy - mean[0], xx - mean[1]], -1)
    maha = np.einsum("...i,ij,...j->...", d, inv, d)
    ell = maha <= 4.0  # uniform ellipse: covariance = axes^2 / 4
    sub = np.zeros_like(ell)
    sub[ys - y0, xs - x0] = True
    union = (ell | sub).sum()
    return float((ell & sub).sum() / union) if union else 0.0


def concave_points(mask: np.ndarray, min_depth: float = 1.5, max_angle_deg: float = 165.0) -> np.ndarray:
    """Concave, high-curvature points on the outer contour of a binary mask, as (row, col) rows.

    A contour point qualifies when its distance to the convex hull is a local maximum along the contour,
    at least ``max(min_depth, 0.1 * equivalent radius)``, and the contour turns inwards there by an
    angle sharper than ``max_angle_deg`` (measured over neighbours a few points away).
    """
    contour = _outer_contour(mask)
    n = len(contour)
    if n < 12:
        return np.zeros((0, 2))
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(contour)
    except QhullError:
        return np.zeros((0, 2))
    # distance of each contour point to the hull (max over facets of the signed plane distance)
    eq = hull.equations  # a*y + b*x + c <= 0 inside
    depth = np.clip((-(contour @ eq[:, :2].T + eq[:, 2])).min(axis=1), 0, None)
    depth = np.convolve(np.concatenate([depth[-2:], depth, depth[:2]]), np.ones(5) / 5, mode="valid")
    radius = np.sqrt(mask.sum() / np.pi)
    thresh = max(min_depth, 0.1 * radius)
    window = max(3, n // 16)
    k = max(2, n // 24)
    points = []
    for i in np.argsort(-depth):
        if depth[i] < thresh:
            break
        idx = (np.arange(i - window, i + window + 1)) % n
        if depth[i] < depth[idx].max():
            continue
        a, b = contour[(i - k) % n] - contour[i], contour[(i + k) % n] - contour[i]
        cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9)
        if np.degrees(np.arccos(np.clip(cos, -1, 1))) > max_angle_deg:
            continue
        if any(np.linalg.norm(contour[i] - p) < 2.0 for p in points):
            continue
        points.append(contour[i])
    return np.array(points).reshape(-1, 2)


def _split_along(mask: np.ndarray, p: np.ndarray, q: np.ndarray) -> list[np.ndarray] | None:
    """Cut ``mask`` along the chord p-q (extended 2 px at both ends); the parts, or None if invalid."""
    d = q - p
    length = np.linalg.norm(d)
    if length < 1.0:
        return None
    u = d / length
    a, b = np.round(p + u).astype(int), np.round(q - u).astype(int)
    rr, cc = draw_line(a[0], a[1], b[0], b[1])
    ok = (rr >= 0) & (rr < mask.shape[0]) & (cc >= 0) & (cc < mask.shape[1])
    if mask[rr[ok], cc[ok]].mean() < 0.85 or not ok.all():  # the chord must run inside the clump
        return None
    a, b = np.round(p - 2 * u).astype(int), np.round(q + 2 * u).astype(int)
    rr, cc = draw_line(a[0], a[1], b[0], b[1])
    ok = (rr >= 0) & (rr < mask.shape[0]) & (cc >= 0) & (cc < mask.shape[1])
    rr, cc = rr[ok], cc[ok]
    cut = mask.copy()
    cut[rr, cc] = False
    parts = measure.label(cut, connectivity=1)
    if parts.max() < 2:
        return None
    # line pixels go to the nearest part
    _, (iy, ix) = ndi.distance_transform_edt(parts == 0, return_indices=True)
    filled = np.where(mask, parts[iy, ix], 0)
    sizes = np.bincount(filled.ravel())[1:]
    order = np.argsort(-sizes)[:2] + 1
    return [filled == order[0], (filled == order[1]) | (mask & ~np.isin(filled, order))]


def _watershed_split(mask: np.ndarray, min_area: int) -> list[np.ndarray]:
    """Fallback: distance-transform watershed of a clump into parts (at least ``min_area`` each)."""
    from skimage.feature import peak_local_max

    dist = ndi.distance_transform_edt(mask)
    radius = np.sqrt(mask.sum() / np.pi)
    peaks = peak_local_max(dist, min_distance=max(2, int(radius * 0.4)), labels=mask.astype(int), exclude_border=False)
    if len(peaks) < 2:
        return [mask]
    markers = np.zeros(mask.shape, int)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    parts = segmentation.watershed(-dist, markers, mask=mask)
    out = [parts == i for i in range(1, parts.max() + 1) if (parts == i).sum() >= min_area]
    return out if len(out) >= 2 else [mask]


def split_clump(
    mask: np.ndarray,
    solidity_threshold: float = 0.95,
    min_area: int = 12,
    proximity_weight: float = 0.3,
    max_depth: int = 6,
    fallback: bool = True,
    min_gain: float = 0.02,
) -> list[tuple[np.ndarray, str]]:
    """Split one connected clump into droplet masks.

    Args:
        mask: boolean mask of one connected component (crop around it with a margin).
        solidity_threshold: components at least this convex are single droplets.
        min_area: parts smaller than this (pixels) are not accepted.
        proximity_weight: weight of the chord-length penalty (chord / equivalent diameter).
        max_depth: maximum number of recursive splits along a branch.
        fallback: use the distance-transform watershed when no concave-point split is valid.
        min_gain: a split is accepted only when the parts' mean ellipse-fit IoU exceeds the whole's by this.

    Returns:
        a list of ``(mask, method)`` with method ``"single"``, ``"split"`` or ``"watershed"``.
    """
    if max_depth <= 0 or solidity(mask) >= solidity_threshold or mask.sum() < 2 * min_area:
        return [(mask, "single")]
    points = concave_points(mask)
    diameter = 2 * np.sqrt(mask.sum() / np.pi)
    best, best_score = None, -np.inf
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            parts = _split_along(mask, points[i], points[j])
            if parts is None or min(p.sum() for p in parts) < min_area:
                continue
            fit = np.mean([ellipse_fit_iou(p) for p in parts])
            convex = np.mean([solidity(p) for p in parts])
            prox = np.linalg.norm(points[i] - points[j]) / diameter
            score = fit + convex - proximity_weight * prox
            if score > best_score:
                best, best_score = parts, score
    method = "split"
    whole_fit = ellipse_fit_iou(mask)
    if best is not None and np.mean([ellipse_fit_iou(p) for p in best]) < whole_fit + min_gain:
        best = None  # splitting does not explain the shape better than one ellipse
    if best is None:
        if not fallback:
            return [(mask, "single")]
        parts = _watershed_split(mask, min_area)
        if len(parts) < 2 or np.mean([ellipse_fit_iou(p) for p in parts]) < whole_fit + min_gain:
            return [(mask, "single")]
        best, method = parts, "watershed"
    out: list[tuple[np.ndarray, str]] = []
    for part in best:
        for sub, m in split_clump(part, solidity_threshold, min_area, proximity_weight, max_depth - 1, fallback,
                                     min_gain):
            out.append((sub, m if m != "single" else method))
    return out


def segment_droplets(
    image: np.ndarray,
    threshold: float = 0.8,
    solidity_threshold: float = 0.95,
    min_area: int = 12,
    max_clump_area: int = 6000,
    fallback: bool = True,
    return_table: bool = False,
):
    """Droplet instance labels of an H&E tile by thresholding and clump splitting.

    Args:
        image: RGB tile (H, W, 3) or (3, H, W), uint8 or float in [0, 1].
        threshold, min_area, max_clump_area: see :func:`droplet_candidates`.
        solidity_threshold: clumps are components less convex than this (default 0.95).
        fallback: allow the watershed fallback for clumps without a valid concave-point split.
        return_table: also return one dict per droplet (id, area, solidity, method, bbox).

    Returns:
        uint16 (H, W) instance labels (0 = background), and the table when ``return_table``.

    Example:
        >>> tile = np.full((64, 64, 3), 200, np.uint8); tile[20:30, 20:30] = 250
        >>> int(segment_droplets(tile).max())
        1
    """
    candidates, _ = droplet_candidates(image, threshold, min_area, max_clump_area)
    comps = measure.label(candidates, connectivity=1)
    out = np.zeros(candidates.shape, np.uint16)
    table: list[dict] = []
    next_id = 1
    for region in measure.regionprops(comps):
        r0, c0, r1, c1 = region.bbox
        pad = 3
        r0p, c0p = max(r0 - pad, 0), max(c0 - pad, 0)
        r1p, c1p = min(r1 + pad, out.shape[0]), min(c1 + pad, out.shape[1])
        crop = comps[r0p:r1p, c0p:c1p] == region.label
        for part, method in split_clump(crop, solidity_threshold, min_area, fallback=fallback):
            view = out[r0p:r1p, c0p:c1p]
            view[part & (view == 0)] = next_id
            ys, xs = np.nonzero(part)
            table.append({
                "droplet_id": next_id, "area": int(part.sum()), "solidity": round(solidity(part), 4),
                "method": method, "bbox": f"{ys.min() + r0p} {xs.min() + c0p} {ys.max() + r0p + 1} {xs.max() + c0p + 1}",
            })
            next_id += 1
    return (out, table) if return_table else out


# ----------------------------------------------------------------------------------------------------
# MONAI transforms
# ----------------------------------------------------------------------------------------------------
class ClumpSplitting(Transform):
    """Array transform: RGB image (channel-first (3, H, W) or (H, W, 3)) -> instance labels (1, H, W).

    Arguments as :func:`segment_droplets`.
    """

    def __init__(self, threshold: float = 0.8, solidity_threshold: float = 0.95, min_area: int = 12,
                 max_clump_area: int = 6000, fallback: bool = True) -> None:
        self.kwargs = dict(threshold=threshold, solidity_threshold=solidity_threshold, min_area=min_area,
                           max_clump_area=max_clump_area, fallback=fallback)

    def __call__(self, image):
        import torch

        arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if arr.ndim == 4:  # batch of one
            arr = arr[0]
        labels = segment_droplets(arr, **self.kwargs)
        return torch.as_tensor(labels.astype(np.int32))[None]


class ClumpSplittingd(MapTransform):
    """Dictionary transform: ``data[output_key] = ClumpSplitting(...)(data[key])``."""

    def __init__(self, keys: KeysCollection, output_key: str = "baseline", allow_missing_keys: bool = False,
                 **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key
        self.splitter = ClumpSplitting(**kwargs)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.splitter(d[key])
        return d


# ----------------------------------------------------------------------------------------------------
# label bootstrapping workflow
# ----------------------------------------------------------------------------------------------------
def list_images(images_dir: str | os.PathLike) -> list[Path]:
    folder = Path(images_dir)
    if not folder.is_dir():
        raise InputError(folder, "images folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise InputError(folder, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_review_montage(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, title: str = "") -> None:
    """Write a PNG: the tile beside the tile with every droplet outlined and numbered by its id."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = labels.shape
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(4.0, w / 64), max(4.0, h / 64)))
    axes[0].imshow(image)
    axes[1].imshow(segmentation.mark_boundaries(image, labels.astype(int), color=(0, 0.8, 0.2)))
    for region in measure.regionprops(labels.astype(int)):
        y, x = region.centroid
        axes[1].text(x, y, str(region.label), color="blue", fontsize=6, ha="center", va="center")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title or "droplet candidates: set keep=0 in review.csv to remove", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


REVIEW_COLUMNS = ["image", "instances", "droplet_id", "area", "solidity", "method", "bbox", "keep"]


def bootstrap_labels(images_dir: str | os.PathLike, out_dir: str | os.PathLike, montage: bool = True,
                     **kwargs) -> Path:
    """Bootstrap droplet labels for unlabeled tiles by clump splitting, for expert review.

    Writes ``out_dir/instances/<stem>.png`` (uint16 ids), ``out_dir/review/<stem>.png`` (montage: tile
    and numbered outlines) and ``out_dir/review.csv`` (one row per droplet with ``keep=1``). Edit the
    ``keep`` column (0 or ``remove`` drops a droplet), then call :func:`apply_review`.

    Args:
        images_dir: folder of RGB tiles (PNG, JPEG or TIFF).
        out_dir: output folder.
        montage: write the review montages.
        **kwargs: passed to :func:`segment_droplets`.

    Returns:
        the path of ``review.csv``.
    """
    files = list_images(images_dir)
    images = [read_rgb(f) for f in files]  # read everything first: a bad file leaves no output behind
    out = Path(out_dir)
    rows = []
    for f, img in zip(files, images):
        labels, table = segment_droplets(img, return_table=True, **kwargs)
        rel = f"instances/{f.stem}.png"
        _write_png(out / rel, labels)
        if montage:
            save_review_montage(out / "review" / f"{f.stem}.png", img, labels, title=f.name)
        for row in table:
            rows.append({"image": str(f.resolve()), "instances": rel, **row, "keep": 1})
    return write_table(out / "review.csv", rows, REVIEW_COLUMNS)


def _keep(value: str, path: Path, line: int) -> bool:
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "keep", "y"):
        return True
    if v in ("0", "false", "no", "remove", "n", "drop"):
        return False
    raise InputError(path, f"line {line}: keep must be 1/0 or keep/remove, got {value!r}")


def apply_review(review_csv: str | os.PathLike, dataset_dir: str | os.PathLike, validation_fraction: float = 0.2,
                 mpp: float | None = None) -> Path:
    """Turn a reviewed ``review.csv`` into a training dataset folder.

    Droplets with ``keep`` = 0/remove are erased, the rest renumbered 1..N; images are copied to
    ``dataset_dir/images``, labels written to ``dataset_dir/instances`` and ``dataset.json`` lists
    them (the last ``validation_fraction`` of the images as validation).

    Returns:
        the path of the written ``dataset.json``.
    """
    from liverseg_monai.data.datalist import write_datalist

    review_csv = Path(review_csv)
    if not review_csv.is_file():
        raise InputError(review_csv, "review CSV does not exist")
    with open(review_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"image", "instances", "droplet_id", "keep"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(review_csv, f"missing columns {sorted(missing)} (expected {REVIEW_COLUMNS})")
        rows = list(reader)
    per_image: dict[tuple[str, str], set[int]] = {}
    for line, row in enumerate(rows, start=2):
        key = (row["image"], row["instances"])
        per_image.setdefault(key, set())
        try:
            did = int(row["droplet_id"])
        except ValueError:
            raise InputError(review_csv, f"line {line}: droplet_id must be an integer, got {row['droplet_id']!r}") from None
        if not _keep(row["keep"], review_csv, line):
            per_image[key].add(did)
    # read and check everything before writing
    results = []
    for (image, rel), removed in per_image.items():
        lab_path = review_csv.parent / rel
        if not lab_path.is_file():
            raise InputError(lab_path, f"listed in {review_csv} but does not exist")
        from PIL import Image

        labels = np.asarray(Image.open(lab_path)).astype(np.int64)
        read_rgb(image)
        labels[np.isin(labels, list(removed))] = 0
        labels = segmentation.relabel_sequential(labels)[0].astype(np.uint16)
        results.append((Path(image), labels))
    out = Path(dataset_dir)
    items = []
    for image, labels in results:
        dest = out / "images" / image.name
        with atomic_path(dest) as tmp:
            shutil.copyfile(image, tmp)
        _write_png(out / "instances" / f"{image.stem}.png", labels)
        items.append({"image": f"images/{image.name}", "label": f"instances/{image.stem}.png"})
    n_val = int(round(len(items) * validation_fraction)) if len(items) > 1 else 0
    content: dict = {"training": items[: len(items) - n_val], "validation": items[len(items) - n_val:]}
    if mpp is not None:
        content["mpp"] = float(mpp)
    return write_datalist(out, content)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m liverseg_monai.transforms.clump_splitting",
                                     description="bootstrap steatosis droplet labels by clump splitting")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bootstrap", help="segment unlabeled tiles; write instances, montages, review.csv")
    b.add_argument("images_dir")
    b.add_argument("out_dir")
    b.add_argument("--threshold", type=float, default=0.8)
    b.add_argument("--solidity", type=float, default=0.95)
    b.add_argument("--min-area", type=int, default=12)
    b.add_argument("--max-clump-area", type=int, default=6000)
    a = sub.add_parser("apply", help="apply an edited review.csv: write a dataset folder")
    a.add_argument("review_csv")
    a.add_argument("dataset_dir")
    a.add_argument("--validation-fraction", type=float, default=0.2)
    a.add_argument("--mpp", type=float, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "bootstrap":
            path = bootstrap_labels(args.images_dir, args.out_dir, threshold=args.threshold,
                                    solidity_threshold=args.solidity, min_area=args.min_area,
                                    max_clump_area=args.max_clump_area)
        else:
            path = apply_review(args.review_csv, args.dataset_dir, args.validation_fraction, args.mpp)
    except InputError as err:
        print(f"error: {err}")
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
