"""Tiled instance inference: overlapping tiles, instances merged across tile borders, droplet outputs.

A network that maps ``[B, 3, h, w]`` to ``[B, 2, h, w]`` (instance ids, per-pixel instance score; see
:class:`liverseg_monai.networks.maskrcnn.MaskRCNNInstanceNet`) is run on overlapping tiles. Merging
rules, so that no droplet is duplicated and none is cut:

1. an instance touching an *inner* tile edge (within ``border_margin`` pixels; an edge on the image
   border does not count) is "cut": another tile, which overlaps this one by ``overlap`` pixels, sees
   it whole when the droplet is smaller than the overlap;
2. whole instances are kept greedily by score; one that overlaps a kept instance with mask IoU above
   ``iou_threshold`` (or covers more than ``containment`` of the smaller one) is a duplicate and dropped;
3. cut instances are used only where no whole instance explains them: overlapping cut pieces of the
   same droplet (larger than the overlap) are joined, then kept unless they duplicate a kept instance.

The merged instances are painted (lowest score first) into one ``[2, H, W]`` map.

:func:`save_droplet_outputs` writes a case's instance label TIFF, per-droplet CSV (regionprops: area in
µm², perimeter, eccentricity, score), steatosis fraction of tissue and overlay PNG;
:func:`infer_slide_instances` does the same for a whole slide, patch by patch: the tissue tiles are read
by MONAI's ``PatchWSIDataset`` ahead of the network (:class:`~liverseg_monai.inferers.slide.TissuePatchSplitter`,
as the semantic slide inference does). The merging above stays ours: MONAI's mergers (``AvgMerger``,
``ZarrAvgMerger``) average per-pixel values, which would fuse or split droplet ids across tile borders;
instances need the cut/duplicate rules. Memory holds the droplets' mask crops, not the level.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.inferers import Inferer
from monai.transforms import MapTransform

from liverseg_monai.errors import InputError
from liverseg_monai.io.atomic import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class Instance:
    """One droplet in image coordinates: bounding box ``(y0, x0, y1, x1)``, mask crop, score, cut flag."""

    box: tuple[int, int, int, int]
    mask: np.ndarray
    score: float
    cut: bool = False

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets covering ``[0, length)`` with stride ``tile - overlap``; the last tile is flush."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def instances_from_maps(
    labels: np.ndarray,
    scores: np.ndarray | None = None,
    offset: tuple[int, int] = (0, 0),
    inner_edges: tuple[bool, bool, bool, bool] = (False, False, False, False),
    border_margin: int = 2,
) -> list[Instance]:
    """Instances of one tile's id map, in image coordinates.

    Args:
        labels: (h, w) instance ids of the tile.
        scores: (h, w) per-pixel instance score (1.0 when omitted).
        offset: the tile's top-left ``(y, x)`` in the image.
        inner_edges: whether the tile's top, bottom, left, right edges lie inside the image.
        border_margin: an instance within this many pixels of an inner edge is marked cut.
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels).astype(np.int64)
    h, w = labels.shape
    out = []
    slices = ndi.find_objects(labels)
    for i, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        mask = labels[sl] == i
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        score = float(scores[sl][mask].max()) if scores is not None else 1.0
        cut = (
            (inner_edges[0] and y0 < border_margin) or (inner_edges[1] and y1 > h - border_margin)
            or (inner_edges[2] and x0 < border_margin) or (inner_edges[3] and x1 > w - border_margin)
        )
        out.append(Instance((y0 + offset[0], x0 + offset[1], y1 + offset[0], x1 + offset[1]), mask, score, bool(cut)))
    return out


def _overlap(a: Instance, b: Instance) -> tuple[int, int]:
    """(intersection, union) of two instances' masks."""
    y0, x0 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
    y1, x1 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if y1 <= y0 or x1 <= x0:
        return 0, a.area + b.area
    ma = a.mask[y0 - a.box[0] : y1 - a.box[0], x0 - a.box[1] : x1 - a.box[1]]
    mb = b.mask[y0 - b.box[0] : y1 - b.box[0], x0 - b.box[1] : x1 - b.box[1]]
    inter = int((ma & mb).sum())
    return inter, a.area + b.area - inter


def _union(a: Instance, b: Instance) -> Instance:
    y0, x0 = min(a.box[0], b.box[0]), min(a.box[1], b.box[1])
    y1, x1 = max(a.box[2], b.box[2]), max(a.box[3], b.box[3])
    m = np.zeros((y1 - y0, x1 - x0), bool)
    for inst in (a, b):
        m[inst.box[0] - y0 : inst.box[2] - y0, inst.box[1] - x0 : inst.box[3] - x0] |= inst.mask
    return Instance((y0, x0, y1, x1), m, max(a.score, b.score), True)


class BoxIndex:
    """Spatial hash of instance boxes on a grid of ``cell`` pixels: which instances may touch a box.

    Keeps merging and painting linear in the number of droplets (a slide holds tens of thousands).
    """

    def __init__(self, cell: int = 128) -> None:
        self.cell = max(1, int(cell))
        self._cells: dict[tuple[int, int], list[int]] = {}

    def _keys(self, box: tuple[int, int, int, int]):
        c = self.cell
        for i in range(box[0] // c, (max(box[2], box[0] + 1) - 1) // c + 1):
            for j in range(box[1] // c, (max(box[3], box[1] + 1) - 1) // c + 1):
                yield i, j

    def add(self, index: int, box: tuple[int, int, int, int]) -> None:
        for k in self._keys(box):
            self._cells.setdefault(k, []).append(index)

    def remove(self, index: int, box: tuple[int, int, int, int]) -> None:
        for k in self._keys(box):
            self._cells[k].remove(index)

    def query(self, box: tuple[int, int, int, int]) -> set[int]:
        """Indices of the instances whose box shares a grid cell with ``box``."""
        out: set[int] = set()
        for k in self._keys(box):
            out.update(self._cells.get(k, ()))
        return out


def merge_instances(instances: Sequence[Instance], iou_threshold: float = 0.5, containment: float = 0.7) -> list[Instance]:
    """Merge instances gathered from overlapping tiles (rules in the module docstring)."""
    kept: list[Instance] = []
    index = BoxIndex()

    def duplicate(c: Instance) -> bool:
        for i in index.query(c.box):
            inter, union = _overlap(c, kept[i])
            if inter and (inter / union > iou_threshold or inter / min(c.area, kept[i].area) > containment):
                return True
        return False

    def keep(c: Instance) -> None:
        index.add(len(kept), c.box)
        kept.append(c)

    for c in sorted((i for i in instances if not i.cut), key=lambda i: -i.score):
        if not duplicate(c):
            keep(c)
    # cut pieces: join overlapping pieces of one droplet, then keep what no whole instance explains
    pieces = [i for i in instances if i.cut]
    joined: list[Instance] = []
    pieces_index = BoxIndex()
    for p in sorted(pieces, key=lambda i: -i.score):
        for j in sorted(pieces_index.query(p.box)):
            q = joined[j]
            inter, _ = _overlap(p, q)
            if inter and inter / min(p.area, q.area) > 0.3:
                pieces_index.remove(j, q.box)
                joined[j] = _union(q, p)
                pieces_index.add(j, joined[j].box)
                break
        else:
            pieces_index.add(len(joined), p.box)
            joined.append(p)
    for c in joined:
        if not duplicate(c):
            keep(c)
    return kept


def paint_instances(instances: Sequence[Instance], shape: tuple[int, int]) -> np.ndarray:
    """``[2, H, W]`` float32: ids 1..N by decreasing score (best painted last) and each pixel's score."""
    out = np.zeros((2, *shape), np.float32)
    order = sorted(range(len(instances)), key=lambda i: -instances[i].score)
    for rank in range(len(order) - 1, -1, -1):
        inst = instances[order[rank]]
        y0, x0, y1, x1 = inst.box
        view_id = out[0, y0:y1, x0:x1]
        view_sc = out[1, y0:y1, x0:x1]
        view_id[inst.mask] = rank + 1
        view_sc[inst.mask] = inst.score
    return out


class TiledInstanceInferer(Inferer):
    """Run an instance network on overlapping tiles and merge instances across tile borders.

    Args:
        roi_size: tile edge in pixels (an int or ``(h, w)``); images smaller than a tile run whole.
        overlap: pixels shared by neighbouring tiles; make it larger than the largest droplet.
        border_margin: instances this close to an inner tile edge count as cut.
        iou_threshold: mask IoU above which two instances from different tiles are duplicates.
        containment: intersection over the smaller instance above which they are duplicates too.
        sw_batch_size: tiles per network call.

    ``inferer(inputs, network)``: ``inputs`` ``[B, 3, H, W]`` -> ``[B, 2, H, W]`` (ids, scores).
    """

    def __init__(
        self,
        roi_size: int | Sequence[int] = 512,
        overlap: int = 128,
        border_margin: int = 2,
        iou_threshold: float = 0.5,
        containment: float = 0.7,
        sw_batch_size: int = 1,
    ) -> None:
        super().__init__()
        self.roi_size = (int(roi_size), int(roi_size)) if np.isscalar(roi_size) else tuple(int(r) for r in roi_size)
        self.overlap = int(overlap)
        if self.overlap >= min(self.roi_size):
            raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({self.roi_size})")
        self.border_margin = int(border_margin)
        self.iou_threshold = float(iou_threshold)
        self.containment = float(containment)
        self.sw_batch_size = max(1, int(sw_batch_size))

    def tiles(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """``(y, x, h, w)`` of every tile of an image."""
        th, tw = min(self.roi_size[0], height), min(self.roi_size[1], width)
        return [(y, x, th, tw) for y in tile_starts(height, th, self.overlap) for x in tile_starts(width, tw, self.overlap)]

    def instances(self, image: torch.Tensor, network: Callable, *args, **kwargs) -> list[Instance]:
        """Merged instances of one image ``[3, H, W]``."""
        H, W = image.shape[-2:]
        tiles = self.tiles(H, W)
        found: list[Instance] = []
        for start in range(0, len(tiles), self.sw_batch_size):
            group = tiles[start : start + self.sw_batch_size]
            batch = torch.stack([image[:, y : y + h, x : x + w] for y, x, h, w in group])
            with torch.no_grad():
                out = network(batch, *args, **kwargs)
            out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
            for (y, x, h, w), o in zip(group, out):
                inner = (y > 0, y + h < H, x > 0, x + w < W)
                found += instances_from_maps(o[0], o[1] if o.shape[0] > 1 else None, (y, x), inner, self.border_margin)
        return merge_instances(found, self.iou_threshold, self.containment)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs) -> torch.Tensor:
        if hasattr(inputs, "as_tensor"):  # MetaTensor: the detector wants plain tensors
            inputs = inputs.as_tensor()
        outs = []
        for b in range(inputs.shape[0]):
            merged = self.instances(inputs[b], network, *args, **kwargs)
            outs.append(torch.from_numpy(paint_instances(merged, tuple(inputs.shape[-2:]))))
        return torch.stack(outs).to(inputs.device)


# ---------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------
def dataset_mpp(dataset_dir: str | os.PathLike, default: float = 0.5) -> float:
    """Microns per pixel recorded in ``dataset_dir/dataset.json`` (``"mpp"``), else ``default``."""
    path = Path(dataset_dir) / "dataset.json"
    try:
        value = json.loads(path.read_text()).get("mpp", default)
    except (OSError, json.JSONDecodeError, AttributeError):
        return float(default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(path, f"'mpp' must be a number (microns per pixel), got {value!r}") from None
    if not 0.01 <= value <= 100:
        raise InputError(path, f"'mpp' = {value} is not a plausible microscope resolution (0.01-100 µm/px)")
    return value


def write_label_tiff(path: str | os.PathLike, labels: np.ndarray, mpp: float) -> None:
    """An instance label TIFF (uint16 when ids fit, else uint32) with its resolution in pixels per cm."""
    import tifffile

    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) < 65536 else np.uint32
    res = 1e4 / mpp  # pixels per cm
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib", resolution=(res, res),
                         resolutionunit="CENTIMETER", metadata={"mpp": mpp, "content": "droplet instances"})


def save_instance_overlay(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray,
                          reference: np.ndarray | None = None) -> None:
    """PNG of the tile with droplet outlines (green), beside the reference outlines (blue) if given."""
    from PIL import Image
    from skimage.segmentation import mark_boundaries

    from liverseg_monai.transforms.clump_splitting import to_rgb_hwc

    rgb = to_rgb_hwc(image)
    panels = [mark_boundaries(rgb, np.asarray(labels).astype(np.int64), color=(0, 0.85, 0.1))]
    if reference is not None:
        panels.append(mark_boundaries(rgb, np.asarray(reference).astype(np.int64), color=(0.1, 0.3, 1.0)))
    canvas = np.concatenate([np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=1) for p in panels], 1)
    with atomic_path(path) as tmp:
        Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8)).save(tmp, format="PNG")


def steatosis_summary(labels: np.ndarray, tissue: np.ndarray, mpp: float) -> dict:
    """Droplet count, droplet and tissue areas (µm²) and the steatosis area fraction of tissue."""
    fat = np.asarray(labels) > 0
    tissue = np.asarray(tissue, bool) | fat
    droplet_area = float(fat.sum()) * mpp * mpp
    tissue_area = float(tissue.sum()) * mpp * mpp
    ids = np.unique(np.asarray(labels)[fat])
    return {
        "n_droplets": int(len(ids)),
        "droplet_area_um2": droplet_area,
        "tissue_area_um2": tissue_area,
        "steatosis_fraction": droplet_area / tissue_area if tissue_area else 0.0,
        "mean_droplet_area_um2": droplet_area / len(ids) if len(ids) else 0.0,
    }


def save_droplet_outputs(out_dir: str | os.PathLike, name: str, image: np.ndarray, pred: np.ndarray, mpp: float,
                         reference: np.ndarray | None = None) -> dict:
    """Write ``<name>_instances.tif``, ``<name>_droplets.csv`` and ``<name>_overlay.png``; return the summary.

    Args:
        out_dir: output folder.
        name: case stem.
        image: RGB tile (H, W, 3) or (3, H, W).
        pred: ``[2, H, W]`` (ids, scores) or ``[H, W]`` ids.
        mpp: microns per pixel.
        reference: optional reference ids drawn beside the prediction in the overlay.
    """
    from liverseg_monai.io.tables import write_table
    from liverseg_monai.metrics.instance import scores_from_map
    from liverseg_monai.transforms.clump_splitting import droplet_candidates
    from liverseg_monai.transforms.droplet_filter import droplet_table

    pred = np.asarray(pred)
    labels = np.rint(pred[0] if pred.ndim == 3 else pred).astype(np.int64)
    scores = scores_from_map(labels, pred[1] if pred.ndim == 3 and pred.shape[0] > 1 else None)
    out = Path(out_dir)
    write_label_tiff(out / f"{name}_instances.tif", labels, mpp)
    rows = droplet_table(labels, scores, mpp)
    columns = ["droplet_id", "centroid_y", "centroid_x", "area_px", "area_um2", "perimeter_um", "eccentricity",
               "elongation", "score"]
    if rows:
        write_table(out / f"{name}_droplets.csv", rows)
    else:  # header only
        write_table(out / f"{name}_droplets.csv", [], columns, lineterminator="\n")
    save_instance_overlay(out / f"{name}_overlay.png", image, labels, reference)
    _, tissue = droplet_candidates(image)
    return {"case": name, **steatosis_summary(labels, tissue, mpp)}


class SaveDropletOutputsd(MapTransform):
    """Postprocessing transform: write each case's droplet outputs and keep a run summary table.

    Writes per case (see :func:`save_droplet_outputs`) and rewrites ``output_dir/steatosis.csv`` (one
    row per case: droplets, areas, steatosis fraction of tissue) after each case.

    Args:
        keys: the prediction key (``[2, H, W]``).
        image_key: the RGB image (its ``filename_or_obj`` metadata names the case).
        output_dir: output folder.
        mpp: microns per pixel.
        reference_key: optional reference label key drawn in the overlay.
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image", output_dir: str | os.PathLike = ".",
                 mpp: float = 0.5, reference_key: str | None = None, summary_name: str = "steatosis.csv") -> None:
        super().__init__(keys)
        self.image_key = image_key
        self.output_dir = Path(output_dir)
        self.mpp = float(mpp)
        self.reference_key = reference_key
        self.summary_name = summary_name
        self.rows: list[dict] = []

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from liverseg_monai.io.tables import write_table

        d = dict(data)
        image = d[self.image_key]
        meta = getattr(image, "meta", {}) or {}
        name = Path(str(meta.get("filename_or_obj", f"case_{len(self.rows):03d}"))).name.split(".")[0]
        ref = None
        if self.reference_key and self.reference_key in d:
            ref = _numpy(d[self.reference_key])[0]
        for key in self.key_iterator(d):
            row = save_droplet_outputs(self.output_dir, name, _numpy(image), _numpy(d[key]), self.mpp, ref)
            self.rows = [r for r in self.rows if r["case"] != name] + [row]
            write_table(self.output_dir / self.summary_name, self.rows)
        return d


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ---------------------------------------------------------------------------------------------------
# whole slides
# ---------------------------------------------------------------------------------------------------
DROPLET_COLUMNS = ["droplet_id", "centroid_y", "centroid_x", "area_px", "area_um2", "perimeter_um", "eccentricity",
                   "elongation", "score"]


def _measure(inst: Instance) -> dict:
    """regionprops of one instance (padded so its outline is measured whole), centroid in image pixels."""
    from skimage import measure

    region = measure.regionprops(np.pad(inst.mask, 1).astype(np.uint8))[0]
    minor = region.axis_minor_length
    return {
        "centroid_y": round(float(region.centroid[0]) - 1 + inst.box[0], 2),
        "centroid_x": round(float(region.centroid[1]) - 1 + inst.box[1], 2),
        "area_px": int(region.area),
        "perimeter_px": float(region.perimeter),
        "eccentricity": float(region.eccentricity),
        "elongation": float(region.axis_major_length / minor) if minor > 0 else float("inf"),
    }


def _thumbnail_overlay(path: Path, thumb: np.ndarray, tissue: np.ndarray, fat: np.ndarray) -> None:
    """The slide thumbnail with droplets filled green and the tissue outline blue."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    rgb = np.asarray(thumb[..., :3], np.float32).copy()
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, -1)
    rgb[fat] = 0.4 * rgb[fat] + 0.6 * np.array([0, 200, 40], np.float32)
    rgb[find_boundaries(tissue, mode="inner")] = (30, 80, 255)
    with atomic_path(path) as tmp:
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(tmp, format="PNG")


def infer_slide_instances(
    slide_path: str | os.PathLike,
    network: Callable,
    out_dir: str | os.PathLike,
    level: int = 0,
    tile: int = 512,
    overlap: int = 128,
    mpp: float | None = None,
    target_mpp: float | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    border_margin: int = 2,
    iou_threshold: float = 0.5,
    containment: float = 0.7,
    tissue_threshold: float = 0.05,
    thumbnail_size: int = 1024,
    droplet_filter: Mapping | None = None,
    num_workers: int = 0,
    model: Mapping | None = None,
) -> dict:
    """Droplet instances of a whole slide, tile by tile on its tissue; writes the droplet outputs.

    The slide is read region by region (:func:`liverseg_monai.io.slide.open_slide`; level 0 is never
    loaded whole). Tissue is detected on a thumbnail (:func:`~liverseg_monai.io.slide.tissue_mask`)
    and only tiles with at least ``tissue_threshold`` tissue are run. Instances from overlapping tiles
    are merged (:func:`merge_instances`: no duplicates, no cut droplets); memory holds the droplets'
    mask crops, not the level. The droplet filter (:func:`~liverseg_monai.transforms.droplet_filter.
    keep_droplets`) compares every droplet with the slide's mean droplet, as inference.json does per tile.

    Writes into ``out_dir`` (each file atomically; all five appear only when the slide succeeded):

    - ``<stem>_instances.tif``: pyramidal tiled TIFF of droplet ids (uint16, or uint32 beyond 65534
      droplets) with the level's shape and microns per pixel; ids 1..N by decreasing score;
    - ``<stem>_droplets.csv``: one row per droplet (:data:`DROPLET_COLUMNS`; centroid in level pixels,
      area in µm², perimeter in µm, eccentricity, elongation, score), header only when none;
    - ``<stem>_overlay.png``: the thumbnail with droplets in green and the tissue outline in blue;
    - ``<stem>_summary.json``: the returned summary;
    - ``<stem>_report.json``: the read-out (steatosis % of tissue, droplet count, areas in mm², the mpp
      and ``model``; :func:`liverseg_monai.io.readout.steatosis_report`).

    Args:
        slide_path: the slide (TIFF-based formats with tifffile, others with openslide-python).
        network: ``[B, 3, h, w]`` RGB in [0, 1] -> ``[B, 2, h, w]`` (ids, scores), e.g.
            :class:`~liverseg_monai.networks.maskrcnn.MaskRCNNInstanceNet`.
        out_dir: output folder.
        level: pyramid level to segment; ignored when ``target_mpp`` is given (the closest level).
        tile, overlap: tile edge and overlap in level pixels; make the overlap exceed the largest droplet.
        mpp: microns per pixel at level 0 when the file lacks it (or to override it).
        device: where the tiles go.
        batch_size: tiles per network call.
        border_margin, iou_threshold, containment: merging rules, see :class:`TiledInstanceInferer`.
        tissue_threshold: minimal tissue fraction of a tile to run it (0 runs every tile).
        thumbnail_size: longer side of the thumbnail used for tissue detection and the overlay.
        num_workers: reader processes (0: tiles are read ahead in one background thread).
        droplet_filter: keyword arguments of ``keep_droplets`` (``size_range``, ``perimeter_range``,
            ``eccentricity_range``, ``reference``) plus ``eccentricity_measure`` and ``keep_border``;
            None keeps every droplet.
        model: the model named in the report (``{"bundle", "name", "version"}``).

    Returns:
        the summary: ``slide``, ``level``, ``shape`` (level ``[H, W]``), ``mpp`` (of the level),
        ``n_tiles``, ``n_tissue_tiles``, ``n_droplets``, ``n_filtered`` (removed by the filter),
        ``droplet_area_um2``, ``tissue_area_um2``, ``steatosis_fraction`` (droplet area / tissue area,
        in [0, 1]; ``None`` when the slide shows no tissue) and ``warning`` (or ``None``).

    Raises:
        InputError: naming the file, when it is not a slide, is truncated or corrupt (also when a
            broken tile is met mid-slide), or lacks the microns per pixel; nothing is written then.

    A slide without tissue is not an error: it gives an all-zero label TIFF, a header-only table, a
    summary with ``steatosis_fraction`` ``None`` and a warning (``UserWarning`` and ``"warning"``).
    """
    import shutil
    import tempfile
    import warnings

    from liverseg_monai.inferers.slide import TissuePatchSplitter, iter_patches, patch_starts, slide_stem
    from liverseg_monai.io.readout import REPORT_SUFFIX, steatosis_report, write_report
    from liverseg_monai.io.slide import SlideLabelWriter, open_slide, tissue_mask, wsi_reader
    from liverseg_monai.transforms.droplet_filter import keep_droplets

    tile, overlap = int(tile), int(overlap)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap ({overlap}) must be in [0, tile={tile})")
    if hasattr(network, "eval"):
        network.eval()
    filter_args = dict(droplet_filter or {})
    measure_shape = filter_args.pop("eccentricity_measure", "elongation")
    keep_border = filter_args.pop("keep_border", True)
    out = Path(out_dir)
    stem = slide_stem(slide_path)
    warning = None
    with open_slide(slide_path, mpp=mpp) as slide:
        if target_mpp:
            level = slide.level_for_mpp(float(target_mpp))
        if not 0 <= level < len(slide.levels):
            raise InputError(slide.path, f"level {level} does not exist (the slide has {len(slide.levels)} levels)")
        lev_mpp = slide.level_mpp(level)
        H, W = slide.levels[level].shape
        thumb = slide.thumbnail(thumbnail_size)
        tissue = tissue_mask(thumb)
        stride = tile - overlap
        n_tiles = len(patch_starts(H, tile, stride)) * len(patch_starts(W, tile, stride))
        patches = list(iter_patches(slide, level, tile, overlap / tile, tissue, tissue_threshold)) if tissue.any() else []
        if not patches:
            warning = f"{slide.path}: no tissue found; no droplets, steatosis fraction undefined"
            warnings.warn(warning, stacklevel=2)
        size = (min(tile, H), min(tile, W))  # the last tile of a row/column is flush with the border
        splitter = TissuePatchSplitter([(p.y, p.x) for p in patches], level, size, (H, W),
                                       slide.levels[level].downsample, wsi_reader(slide_mpp=slide.mpp),
                                       batch_size, num_workers)
        found: list[Instance] = []

        def run(batch: list[tuple[torch.Tensor, tuple[int, int]]]) -> None:
            with torch.no_grad():
                o = _numpy(network(torch.cat([t for t, _ in batch]).to(device)))
            for ((y, x), oi) in zip((loc for _, loc in batch), o):
                inner = (y > 0, y + size[0] < H, x > 0, x + size[1] < W)
                found.extend(instances_from_maps(oi[0], oi[1] if oi.shape[0] > 1 else None, (y, x), inner,
                                                 border_margin))

        batch: list[tuple[torch.Tensor, tuple[int, int]]] = []
        for item in splitter(slide.path) if patches else ():
            batch.append(item)
            if len(batch) == batch_size:
                run(batch)
                batch = []
        if batch:
            run(batch)
    merged = merge_instances(found, iou_threshold, containment)
    found.clear()

    # droplet filter against the slide's mean droplet, then ids by decreasing score
    feats = [_measure(inst) for inst in merged]
    keep = np.ones(len(merged), bool)
    if droplet_filter is not None and merged:
        border = np.array([b[0] == 0 or b[1] == 0 or b[2] == H or b[3] == W for b in (i.box for i in merged)])
        shape_key = "elongation" if measure_shape == "elongation" else "eccentricity"
        keep = keep_droplets([f["area_px"] for f in feats], [f["perimeter_px"] for f in feats],
                             [f[shape_key] for f in feats], border if keep_border else None, **filter_args)
    order = sorted(np.flatnonzero(keep), key=lambda i: -merged[i].score)
    ranked = [merged[i] for i in order]
    rows = []
    for rank, i in enumerate(order, start=1):
        f = feats[i]
        rows.append({"droplet_id": rank, "centroid_y": f["centroid_y"], "centroid_x": f["centroid_x"],
                     "area_px": f["area_px"], "area_um2": f["area_px"] * lev_mpp**2,
                     "perimeter_um": f["perimeter_px"] * lev_mpp, "eccentricity": f["eccentricity"],
                     "elongation": f["elongation"], "score": float(ranked[rank - 1].score)})

    # droplets on the thumbnail: the overlay, and fat outside the detected tissue counts as tissue
    th, tw = tissue.shape
    fat_small = np.zeros((th, tw), bool)
    fat_outside = 0
    for inst in ranked:
        ys, xs = np.nonzero(inst.mask)
        ty = np.minimum(((ys + inst.box[0]) * th) // H, th - 1)
        tx = np.minimum(((xs + inst.box[1]) * tw) // W, tw - 1)
        fat_small[ty, tx] = True
        fat_outside += int((~tissue[ty, tx]).sum())
    fat_px = sum(r["area_px"] for r in rows)
    tissue_px = float(tissue.mean()) * H * W + fat_outside
    summary = {
        "slide": str(slide_path), "level": int(level), "shape": [int(H), int(W)], "mpp": lev_mpp,
        "n_tiles": n_tiles, "n_tissue_tiles": len(patches), "n_droplets": len(rows),
        "n_filtered": int((~keep).sum()), "droplet_area_um2": fat_px * lev_mpp**2,
        "tissue_area_um2": tissue_px * lev_mpp**2,
        "steatosis_fraction": min(1.0, fat_px / tissue_px) if tissue_px > 0 else None,
        "warning": warning,
    }

    index = BoxIndex()
    for i, inst in enumerate(ranked):
        index.add(i, inst.box)
    dtype = np.uint16 if len(ranked) < 65535 else np.uint32

    def read(y: int, x: int, h: int, w: int) -> np.ndarray:
        block = np.zeros((h, w), dtype)
        for i in sorted(index.query((y, x, y + h, x + w)), reverse=True):  # best (id 1) painted last
            y0, x0, y1, x1 = ranked[i].box
            sy0, sx0, sy1, sx1 = max(y0, y), max(x0, x), min(y1, y + h), min(x1, x + w)
            if sy1 <= sy0 or sx1 <= sx0:
                continue
            m = ranked[i].mask[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
            block[sy0 - y : sy1 - y, sx0 - x : sx1 - x][m] = i + 1
        return block

    # stage all outputs, then move them in: a failure leaves none of them
    from liverseg_monai.io.tables import write_table

    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".partial", dir=out))
    try:
        SlideLabelWriter(stage / f"{stem}_instances.tif", (H, W), lev_mpp, dtype=dtype).write(read)
        if rows:
            write_table(stage / f"{stem}_droplets.csv", rows)
        else:
            write_table(stage / f"{stem}_droplets.csv", [], DROPLET_COLUMNS, lineterminator="\n")
        _thumbnail_overlay(stage / f"{stem}_overlay.png", thumb, tissue, fat_small)
        atomic_write_text(stage / f"{stem}_summary.json", json.dumps(summary, indent=2))
        write_report(stage / f"{stem}{REPORT_SUFFIX}", steatosis_report(slide_path, summary, model))
        for name in (f"{stem}_instances.tif", f"{stem}_droplets.csv", f"{stem}_overlay.png", f"{stem}_summary.json",
                     f"{stem}{REPORT_SUFFIX}"):
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return summary


def run_slide_instances(
    network: Callable,
    slides: Sequence[Mapping | str | os.PathLike],
    output_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    **kwargs,
) -> list[dict]:
    """Run :func:`infer_slide_instances` on each slide of a datalist; the entry point of inference_slide.json.

    Every slide is opened (header, pyramid, microns per pixel) before any is segmented, so a bad file
    in the list stops the run before anything is written. Writes each slide's outputs and
    ``output_dir/slides.csv`` (one summary row per slide).

    Args:
        network: the instance network (see :func:`infer_slide_instances`).
        slides: datalist items (``{"image": path}``, e.g. from ``load_datalist``) or paths.
        output_dir: output folder.
        checkpoint: a state dict file (``models/model.pt``) loaded into ``network`` first, if given.
        device: where the tiles go.
        **kwargs: passed on to :func:`infer_slide_instances` (``level``, ``target_mpp``, ``mpp``,
            ``tile``, ``overlap``, ``batch_size``, ``tissue_threshold``, ``droplet_filter``, ...).

    Returns:
        the per-slide summaries.
    """
    from liverseg_monai.io.readout import bundle_identity
    from liverseg_monai.io.slide import open_slide
    from liverseg_monai.io.tables import write_table
    from liverseg_monai.networks.weights import load_module_weights

    if checkpoint is not None:
        load_module_weights(network, checkpoint, "train.json")
    paths = [item["image"] if isinstance(item, Mapping) else item for item in slides]
    for path in paths:  # fail fast on files that are not slides or lack the mpp
        with open_slide(path, mpp=kwargs.get("mpp")):
            pass
    model = kwargs.pop("model", None) or bundle_identity(checkpoint)
    results = [infer_slide_instances(path, network, output_dir, device=device, model=model, **kwargs) for path in paths]
    write_table(Path(output_dir) / "slides.csv", [{k: v for k, v in r.items() if k != "shape"} for r in results])
    return results
