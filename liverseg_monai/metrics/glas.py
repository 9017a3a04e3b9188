"""Object-level scores of the GlaS challenge (Sirinukunwattana et al., Medical Image Analysis 2017).

Glands are objects: a ground-truth instance map ``G`` (0 background, 1..N glands) and a segmented
instance map ``S`` (connected components of a predicted gland mask, :func:`label_objects`).

- **Object F1** (detection): a segmented object is a true positive when it covers at least 50% of the
  area of the ground-truth object it overlaps most; each ground-truth object is matched at most once
  (by the segmented object with the largest overlap). ``FP = |S| - TP``, ``FN = |G| - TP``,
  ``F1 = 2 TP / (2 TP + FP + FN)``.
- **Object Dice**: ``1/2 [ sum_i g_i Dice(G_i, S*(G_i)) + sum_j s_j Dice(G*(S_j), S_j) ]`` with
  ``g_i = |G_i| / sum |G|``, ``s_j = |S_j| / sum |S|``; ``S*(G_i)`` is the segmented object that
  overlaps ``G_i`` most (none: Dice 0), and ``G*(S_j)`` likewise.

Dataset figures: F1 from TP/FP/FN summed over images; object Dice as the mean over images.
Conventions for empty maps: both empty -> F1 = object Dice = 1; one empty -> 0.

Example::

    >>> g = np.zeros((4, 8), int); g[:, :4] = 1
    >>> s = np.zeros((4, 8), int); s[:, :2] = 1
    >>> object_f1(s, g)["f1"], round(object_dice(s, g), 3)
    (1.0, 0.667)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage


def label_objects(mask: np.ndarray, min_size: int = 0, connectivity: int = 1) -> np.ndarray:
    """Connected components of a binary mask as an instance map (1..N), dropping objects under ``min_size`` pixels.

    ``connectivity`` 1 = 4-neighbours, 2 = 8-neighbours (2D).
    """
    mask = np.asarray(mask) > 0
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    labels, n = ndimage.label(mask, structure=structure)
    if min_size > 0 and n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < min_size
        small[0] = False
        labels[small[labels]] = 0
        labels, _ = ndimage.label(labels > 0, structure=structure)
    return labels.astype(np.int32)


def _relabel(instances: np.ndarray) -> np.ndarray:
    values, inverse = np.unique(np.asarray(instances), return_inverse=True)
    inverse = inverse.reshape(np.shape(instances))
    return inverse if values[0] == 0 else inverse + 1


def overlap_matrix(seg: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(overlap, seg_sizes, gt_sizes)``: ``overlap[j, i]`` = pixels of segmented object ``j+1`` in ground truth ``i+1``."""
    seg, gt = _relabel(seg), _relabel(gt)
    if seg.shape != gt.shape:
        raise ValueError(f"segmentation {seg.shape} and ground truth {gt.shape} differ in shape")
    ns, ng = int(seg.max()), int(gt.max())
    joint = np.bincount(seg.ravel() * (ng + 1) + gt.ravel(), minlength=(ns + 1) * (ng + 1)).reshape(ns + 1, ng + 1)
    return joint[1:, 1:], joint[1:, :].sum(1), joint[:, 1:].sum(0)


def object_f1(seg: np.ndarray, gt: np.ndarray, min_coverage: float = 0.5) -> dict:
    """GlaS detection counts and F1 of one image; ``seg`` and ``gt`` are instance maps.

    Returns:
        ``{"tp", "fp", "fn", "precision", "recall", "f1"}``.
    """
    overlap, seg_sizes, gt_sizes = overlap_matrix(seg, gt)
    ns, ng = len(seg_sizes), len(gt_sizes)
    tp = 0
    if ns and ng:
        best_gt = overlap.argmax(1)  # the ground-truth object each segmented object overlaps most
        best_seg = overlap.argmax(0)  # the segmented object each ground-truth object overlaps most
        for j in range(ns):
            i = best_gt[j]
            if overlap[j, i] > 0 and best_seg[i] == j and overlap[j, i] >= min_coverage * gt_sizes[i]:
                tp += 1
    return counts_to_f1(tp, ns - tp, ng - tp)


def counts_to_f1(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall and F1 from detection counts (1.0 when there is nothing to find and nothing found)."""
    if tp + fp + fn == 0:
        return {"tp": 0, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn), "precision": precision, "recall": recall,
            "f1": 2 * tp / (2 * tp + fp + fn)}


def object_dice(seg: np.ndarray, gt: np.ndarray) -> float:
    """GlaS object-level Dice of one image (instance maps)."""
    overlap, seg_sizes, gt_sizes = overlap_matrix(seg, gt)
    ns, ng = len(seg_sizes), len(gt_sizes)
    if ns == 0 and ng == 0:
        return 1.0
    if ns == 0 or ng == 0:
        return 0.0
    best_seg = overlap.argmax(0)
    best_gt = overlap.argmax(1)
    gt_term = 0.0
    for i in range(ng):
        j = best_seg[i]
        inter = overlap[j, i]
        dice = 2 * inter / (gt_sizes[i] + seg_sizes[j]) if inter > 0 else 0.0
        gt_term += gt_sizes[i] / gt_sizes.sum() * dice
    seg_term = 0.0
    for j in range(ns):
        i = best_gt[j]
        inter = overlap[j, i]
        dice = 2 * inter / (gt_sizes[i] + seg_sizes[j]) if inter > 0 else 0.0
        seg_term += seg_sizes[j] / seg_sizes.sum() * dice
    return float(0.5 * (gt_term + seg_term))


def glas_scores(seg: np.ndarray, gt: np.ndarray, min_coverage: float = 0.5) -> dict:
    """Object F1 counts and object Dice of one image."""
    return {**object_f1(seg, gt, min_coverage), "object_dice": object_dice(seg, gt)}


def summarise_glas(rows: Sequence[dict]) -> dict:
    """Dataset figures from per-image :func:`glas_scores`: F1 from summed counts, mean object Dice."""
    tp, fp, fn = (int(sum(r[k] for r in rows)) for k in ("tp", "fp", "fn"))
    out = counts_to_f1(tp, fp, fn)
    out = {f"object_{k}" if k in ("precision", "recall", "f1") else k: v for k, v in out.items()}
    out["object_dice"] = float(np.mean([r["object_dice"] for r in rows])) if rows else None
    out["n_cases"] = len(rows)
    return out


class GlasObjectReport:
    """Ignite handler writing the GlaS object scores of an evaluation: ``object_per_case.csv``, ``object_summary.json``.

    Every iteration takes the predicted and reference maps of each case (``pred``/``label`` of
    ``engine.state.output``, one-hot or class indices, channel first), makes instance maps of class
    ``object_class`` (connected components; predicted objects under ``min_size`` pixels dropped) and
    scores them with :func:`glas_scores`. When the dataset item carries a reference instance map file
    under ``instance_key`` (the GlaS annotation, as written by :mod:`liverseg_monai.data.prepare.glas`;
    relative paths are taken from ``dataset_dir``), it replaces the components of the reference mask,
    so touching glands count as separate objects.

    Args:
        output_dir: destination of the two files.
        object_class: the class whose objects are scored (1 = gland for GlaS).
        min_size: smallest predicted object kept, in pixels.
        instance_key: dataset item key of the reference instance map file.
        dataset_dir: base folder of relative instance paths.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        object_class: int = 1,
        min_size: int = 0,
        instance_key: str = "instance",
        dataset_dir: str | os.PathLike | None = None,
    ):
        self.output_dir = Path(output_dir)
        self.object_class = int(object_class)
        self.min_size = int(min_size)
        self.instance_key = instance_key
        self.dataset_dir = Path(dataset_dir) if dataset_dir is not None else None
        self.rows: list[dict] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine=None) -> None:
        self.rows = []

    @staticmethod
    def _class_map(x) -> np.ndarray:
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        return (x.argmax(0) if x.shape[0] > 1 else x[0]).astype(np.int64)

    def _reference(self, item: dict, batch_item) -> np.ndarray:
        path = batch_item.get(self.instance_key) if isinstance(batch_item, dict) else None
        if isinstance(path, str | os.PathLike):
            from liverseg_monai.data.readers_pathology import read_label_map

            full = Path(path) if Path(path).is_absolute() or self.dataset_dir is None else self.dataset_dir / path
            return read_label_map(full)
        return label_objects(self._class_map(item["label"]) == self.object_class)

    def _update(self, engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list | tuple) else [engine.state.output]
        batch = engine.state.batch if isinstance(engine.state.batch, list | tuple) else [None] * len(outputs)
        for item, batch_item in zip(outputs, batch):
            seg = label_objects(self._class_map(item["pred"]) == self.object_class, self.min_size)
            gt = self._reference(item, batch_item)
            if gt.shape != seg.shape:
                from liverseg_monai.errors import InputError

                raise InputError(batch_item.get(self.instance_key) if isinstance(batch_item, dict) else None,
                                 f"instance map of shape {gt.shape} does not match the prediction {seg.shape}")
            meta = getattr(item["pred"], "meta", {}) or {}
            name = os.path.basename(str(meta.get("filename_or_obj", f"case_{len(self.rows):04d}"))).split(".")[0]
            self.rows.append({"case": name, **glas_scores(seg, gt)})

    def _write(self, engine=None) -> dict:
        from liverseg_monai.io.atomic import atomic_write_text
        from liverseg_monai.io.tables import write_table

        self.output_dir.mkdir(parents=True, exist_ok=True)
        fields = ["case", "tp", "fp", "fn", "precision", "recall", "f1", "object_dice"]
        summary = {"object_class": self.object_class, **summarise_glas(self.rows)}
        write_table(self.output_dir / "object_per_case.csv", self.rows, fields, extra="ignore")
        atomic_write_text(self.output_dir / "object_summary.json", json.dumps(summary, indent=2))
        return summary
