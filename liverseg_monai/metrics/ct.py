"""Per-case segmentation measures of the CT papers' tables, on the original voxel grid.

Built on MONAI's metric functions (``compute_dice``, ``compute_iou``, ``get_confusion_matrix``,
``compute_hausdorff_distance``); this module only fixes the definitions and units:

- ``dice``, ``iou``: per class, 1.0 when prediction and reference are both empty;
- ``precision``, ``recall`` (= sensitivity), ``accuracy`` (pixel accuracy of the binary class map);
- ``hd95``: 95th-percentile symmetric Hausdorff distance in millimetres (NaN when either side is empty);
- ``volume_ml`` / ``ref_volume_ml``: predicted / reference class volume in millilitres.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou, get_confusion_matrix
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric


def _as_labels(x) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x))
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    return x.long()


def case_metrics(
    pred,
    label,
    spacing: Sequence[float],
    class_names: Mapping[int, str],
    hd95: bool = True,
) -> dict[str, float]:
    """Measures for one case.

    Args:
        pred: predicted label map, ``(X, Y, Z)`` or ``(1, X, Y, Z)``, integer classes.
        label: reference label map on the same grid.
        spacing: voxel size in mm along (X, Y, Z).
        class_names: ``{class value: name}`` of the classes to measure (background excluded by the caller).
        hd95: compute the 95th-percentile Hausdorff distance (the slowest measure).

    Returns:
        ``{"<name>_dice": ..., "<name>_iou": ..., "<name>_precision", "<name>_recall", "<name>_accuracy",
        "<name>_hd95", "<name>_volume_ml", "<name>_ref_volume_ml"}``.

    Example:
        >>> p = np.zeros((4, 4, 4), int); p[1:3, 1:3, 1:3] = 1
        >>> round(case_metrics(p, p, (1, 1, 1), {1: "liver"})["liver_dice"], 3)
        1.0
    """
    p, g = _as_labels(pred), _as_labels(label)
    if p.shape != g.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and reference {tuple(g.shape)} differ in shape")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out: dict[str, float] = {}
    for value, name in class_names.items():
        pc = (p == value)[None, None].float()
        gc = (g == value)[None, None].float()
        out[f"{name}_dice"] = float(compute_dice(pc, gc, include_background=True, ignore_empty=False))
        out[f"{name}_iou"] = float(compute_iou(pc, gc, include_background=True, ignore_empty=False))
        cm = get_confusion_matrix(pc, gc, include_background=True)
        for metric, key in (("precision", "precision"), ("sensitivity", "recall"), ("accuracy", "accuracy")):
            out[f"{name}_{key}"] = float(compute_confusion_matrix_metric(metric, cm))
        if hd95:
            if pc.sum() > 0 and gc.sum() > 0:
                out[f"{name}_hd95"] = float(
                    compute_hausdorff_distance(pc, gc, include_background=True, percentile=95, spacing=list(spacing))
                )
            else:
                out[f"{name}_hd95"] = float("nan")
        out[f"{name}_volume_ml"] = float(pc.sum()) * voxel_ml
        out[f"{name}_ref_volume_ml"] = float(gc.sum()) * voxel_ml
    return out


def summarise(rows: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``{metric: {mean, std, median, min, max, n}}`` over cases, ignoring NaN."""
    keys = [k for k in rows[0] if k != "case" and isinstance(rows[0][k], int | float)] if rows else []
    summary = {}
    for k in keys:
        v = np.array([r[k] for r in rows], dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            summary[k] = {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
            continue
        summary[k] = {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
                      "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}
    return summary
