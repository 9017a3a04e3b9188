"""Multi-class segmentation metrics from confusion matrices: per-class IoU and Dice, mIoU.

Dataset-level figures (the tables of segmentation papers) are computed from the confusion matrix
summed over all pixels of all cases, not as the mean of per-case scores; per-case scores come from
each case's own confusion matrix. The pure numpy functions come first; :class:`ConfusionMatrixMetric`
is a MONAI :class:`~monai.metrics.CumulativeIterationMetric` (usable with
:class:`monai.handlers.IgniteMetricHandler` as a validation key metric), and
:class:`SegmentationReport` an ignite handler writing the CSV/JSON report of an evaluation run.

Example::

    >>> cm = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), num_classes=3)
    >>> iou_from_confusion(cm).round(2).tolist()
    [1.0, 0.5, 0.5]
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric

from liverseg_monai.io.atomic import atomic_write_text
from liverseg_monai.io.tables import table_text, write_table


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Pixel confusion matrix of two label maps of the same shape (class indices).

    Args:
        pred: predicted class indices, any shape.
        target: reference class indices, same shape as ``pred``.
        num_classes: number of classes ``C``; indices outside ``[0, C)`` in ``target`` are ignored,
            in ``pred`` they raise.
        ignore_index: a reference value whose pixels are left out (for example unlabelled = 255).

    Returns:
        ``(C, C)`` int64 array, rows = reference class, columns = predicted class.
    """
    pred = np.asarray(pred).astype(np.int64).ravel()
    target = np.asarray(target).astype(np.int64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in size: {pred.size} vs {target.size}")
    keep = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        keep &= target != ignore_index
    pred, target = pred[keep], target[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted class indices must lie in [0, {num_classes})")
    return np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class intersection over union ``TP / (TP + FP + FN)``; NaN for a class absent from both maps."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def dice_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class Dice ``2 TP / (2 TP + FP + FN)``; NaN for a class absent from both maps."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """Mean of the per-class IoU over the classes present in the reference or the prediction."""
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou)) if np.any(np.isfinite(iou)) else float("nan")


def _finite(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 6)


def segmentation_summary(cm: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """JSON-ready summary of a confusion matrix.

    Returns:
        ``{"mean_iou", "mean_dice", "pixel_accuracy", "per_class": {name: {"iou", "dice",
        "reference_pixels", "predicted_pixels"}}, "class_names", "confusion_matrix"}``; scores of
        classes absent from both maps are ``null`` and left out of the means.
    """
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    iou, dice = iou_from_confusion(cm), dice_from_confusion(cm)
    total = cm.sum()
    return {
        "mean_iou": _finite(np.nanmean(iou)) if np.any(np.isfinite(iou)) else None,
        "mean_dice": _finite(np.nanmean(dice)) if np.any(np.isfinite(dice)) else None,
        "pixel_accuracy": _finite(np.trace(cm) / total) if total else None,
        "per_class": {
            name: {
                "iou": _finite(iou[i]),
                "dice": _finite(dice[i]),
                "reference_pixels": int(cm[i].sum()),
                "predicted_pixels": int(cm[:, i].sum()),
            }
            for i, name in enumerate(names)
        },
        "class_names": names,
        "confusion_matrix": cm.tolist(),
    }


def confusion_matrix_csv(cm: np.ndarray, class_names: Sequence[str]) -> str:
    """CSV text of a confusion matrix: header ``reference\\predicted,<names>``, one row per reference class."""
    rows = [[name, *row] for name, row in zip(class_names, np.asarray(cm).tolist())]
    return table_text(rows, ["reference\\predicted", *class_names])


def _as_index(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, C, ...)`` one-hot/probabilities or ``(B, 1, ...)`` indices -> ``(B, N)`` int64 indices."""
    if x.ndim < 3:
        raise ValueError(f"expected a batch-first, channel-first tensor, got shape {tuple(x.shape)}")
    if x.shape[1] == 1:
        idx = x[:, 0].round().long()
    elif x.shape[1] == num_classes:
        idx = x.argmax(dim=1)
    else:
        raise ValueError(f"expected 1 or {num_classes} channels, got {x.shape[1]}")
    return idx.reshape(idx.shape[0], -1)


class ConfusionMatrixMetric(CumulativeIterationMetric):
    """Per-case ``C x C`` confusion matrices, aggregated to a dataset-level score.

    Args:
        num_classes: number of classes ``C`` (background included).
        reduction: what :meth:`aggregate` returns: ``"mean_iou"`` (default, a scalar tensor, usable as a
            ``key_metric``), ``"mean_dice"`` or ``"confusion"`` (the summed ``(C, C)`` matrix).
        ignore_index: reference value whose pixels are ignored.

    Inputs (``y_pred``, ``y``): batch-first tensors ``(B, C, H, W)`` (one-hot or probabilities; argmax
    is taken) or ``(B, 1, H, W)`` class indices, or lists of channel-first tensors.
    """

    def __init__(self, num_classes: int, reduction: str = "mean_iou", ignore_index: int | None = None):
        super().__init__()
        if reduction not in ("mean_iou", "mean_dice", "confusion"):
            raise ValueError(f"reduction must be mean_iou, mean_dice or confusion, got {reduction!r}")
        self.num_classes = num_classes
        self.reduction = reduction
        self.ignore_index = ignore_index

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("ConfusionMatrixMetric needs the reference y")
        c = self.num_classes
        pred, ref = _as_index(y_pred, c), _as_index(y, c)
        keep = (ref >= 0) & (ref < c)
        if self.ignore_index is not None:
            keep &= ref != self.ignore_index
        out = torch.zeros(pred.shape[0], c * c, dtype=torch.float64, device=pred.device)
        for b in range(pred.shape[0]):
            codes = ref[b][keep[b]] * c + pred[b][keep[b]].clamp(0, c - 1)
            out[b] = torch.bincount(codes, minlength=c * c).to(torch.float64)
        return out.reshape(-1, c, c)

    def confusion(self) -> np.ndarray:
        """The ``(C, C)`` confusion matrix summed over every case seen since the last reset."""
        data = self.get_buffer()
        if data is None or (isinstance(data, torch.Tensor) and data.numel() == 0):
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        return data.sum(0).cpu().numpy().astype(np.int64)

    def per_case(self) -> np.ndarray:
        """``(N, C, C)`` confusion matrices, one per case, in the order seen."""
        data = self.get_buffer()
        if data is None:
            return np.zeros((0, self.num_classes, self.num_classes), dtype=np.int64)
        return data.cpu().numpy().astype(np.int64)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        cm = self.confusion()
        if self.reduction == "confusion":
            return torch.as_tensor(cm)
        scores = iou_from_confusion(cm) if self.reduction == "mean_iou" else dice_from_confusion(cm)
        value = float(np.nanmean(scores)) if np.any(np.isfinite(scores)) else float("nan")
        return torch.tensor(value)


def _case_name(item) -> str:
    meta = getattr(item, "meta", None) or {}
    name = meta.get("filename_or_obj", "")
    if isinstance(name, list | tuple):
        name = name[0] if name else ""
    return os.path.basename(str(name)).split(".")[0] if name else ""


class SegmentationReport:
    """Ignite handler writing ``per_case.csv``, ``confusion_matrix.csv`` and ``summary.json``.

    Attach to a MONAI evaluator whose postprocessing leaves ``pred`` and ``label`` as one-hot or
    index maps; every iteration adds each case's confusion matrix, and at the end of the run the files
    are written (atomically) to ``output_dir``:

    - ``per_case.csv``: one row per case: ``case``, ``mean_iou``, ``mean_dice``, then ``iou_<class>``
      and ``dice_<class>`` for every class (empty where the class is absent from both maps);
    - ``confusion_matrix.csv``: the dataset confusion matrix (rows reference, columns prediction);
    - ``summary.json``: :func:`segmentation_summary` of the dataset matrix plus ``n_cases``.

    Args:
        output_dir: folder for the three files.
        class_names: names of the ``C`` classes, index order.
        output_transform: maps ``engine.state.output`` to ``(preds, labels)`` lists of
            channel-first tensors (default: ``from_engine(["pred", "label"])``).
        ignore_index: reference value to ignore.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        output_transform: Callable | None = None,
        ignore_index: int | None = None,
    ):
        from monai.handlers import from_engine

        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.output_transform = output_transform or from_engine(["pred", "label"])
        self.metric = ConfusionMatrixMetric(len(self.class_names), "confusion", ignore_index)
        self.names: list[str] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine=None) -> None:
        self.metric.reset()
        self.names = []

    def _update(self, engine) -> None:
        preds, labels = self.output_transform(engine.state.output)
        preds = [p for p in preds]
        labels = [y for y in labels]
        self.metric(y_pred=preds, y=labels)
        for k, p in enumerate(preds):
            self.names.append(_case_name(p) or _case_name(labels[k]) or f"case_{len(self.names):04d}")

    def _write(self, engine=None) -> dict:
        return write_segmentation_report(self.output_dir, self.metric.per_case(), self.class_names, self.names)


def write_segmentation_report(
    output_dir: str | os.PathLike,
    per_case: np.ndarray,
    class_names: Sequence[str],
    case_names: Sequence[str] | None = None,
) -> dict:
    """Write ``per_case.csv``, ``confusion_matrix.csv`` and ``summary.json`` from per-case matrices.

    Args:
        output_dir: destination folder (created).
        per_case: ``(N, C, C)`` confusion matrices.
        class_names: the ``C`` class names.
        case_names: ``N`` case names (default ``case_0000``...).

    Returns:
        the summary dict written to ``summary.json``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_case = np.asarray(per_case, dtype=np.int64).reshape(-1, len(class_names), len(class_names))
    names = list(case_names) if case_names is not None else [f"case_{i:04d}" for i in range(len(per_case))]
    columns = ["case", "mean_iou", "mean_dice", *[f"iou_{c}" for c in class_names], *[f"dice_{c}" for c in class_names]]
    rows = []
    for name, cm in zip(names, per_case):
        iou, dice = iou_from_confusion(cm), dice_from_confusion(cm)
        cells = [_finite(v) for v in (*iou, *dice)]
        rows.append([name, _finite(np.nanmean(iou)) if np.any(np.isfinite(iou)) else "",
                     _finite(np.nanmean(dice)) if np.any(np.isfinite(dice)) else "",
                     *["" if v is None else v for v in cells]])
    total = per_case.sum(0) if len(per_case) else np.zeros((len(class_names),) * 2, dtype=np.int64)
    summary = {"n_cases": len(per_case), **segmentation_summary(total, class_names)}
    write_table(out / "per_case.csv", rows, columns)
    atomic_write_text(out / "confusion_matrix.csv", confusion_matrix_csv(total, class_names))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
