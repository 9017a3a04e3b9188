"""Per-case measures of the two-stage liver / tumour cascade: structures as label sets, tumour burden.

Label maps follow the cascade's convention (0 background, 1 liver, 2 tumour, 3 portal vein, 4 aorta);
:func:`cascade_case_metrics` is the ``metric_fn`` and :class:`AblationMetrics` the ``extra`` callable of
:class:`liverseg_monai.engines.handlers.CaseMetricsSaver` in the tumour bundle's ``evaluate.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from liverseg_monai.io.meta import affine_of
from liverseg_monai.metrics.ct import case_metrics
from liverseg_monai.metrics.lesions import lesion_dice_by_size

STRUCTURES = {"liver": (1, 2), "tumor": (2,), "portal_vein": (3,), "aorta": (4,)}


def tumor_burden(labels, liver_labels: Sequence[int] = (1, 2), tumor_labels: Sequence[int] = (2,)) -> float:
    """Tumour volume as a percentage of the liver volume (tumour included); NaN for an empty liver."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    liver = int(np.isin(arr, liver_labels).sum())
    return float(100.0 * np.isin(arr, tumor_labels).sum() / liver) if liver else float("nan")


def cascade_case_metrics(pred, label, spacing: Sequence[float], class_names: dict, hd95: bool = True) -> dict[str, float]:
    """The paper's per-structure measures for one case plus the tumour burden.

    Structures are label sets (:data:`STRUCTURES`): ``liver`` is labels 1 and 2 (the liver with its
    tumours, as liver Dice is usually reported), ``tumor`` label 2, ``portal_vein`` 3, ``aorta`` 4; the
    values of ``class_names`` pick which are measured. Per structure: Dice, IoU, precision, sensitivity
    (``recall``), accuracy, HD95 in mm and volumes (:func:`liverseg_monai.metrics.ct.case_metrics`).
    Plus ``tumor_burden_pct`` / ``ref_tumor_burden_pct`` (tumour % of liver) and their absolute difference,
    and, when the tumour is measured, the lesion-wise Dice by lesion size
    (:func:`liverseg_monai.metrics.lesions.lesion_dice_by_size`: ``tumor_lesion_dice_lt10mm``, ...).
    """
    p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    g = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    out: dict[str, float] = {}
    for name in class_names.values():
        values = STRUCTURES[name]
        out.update(case_metrics(np.isin(p, values), np.isin(g, values), spacing, {1: name}, hd95=hd95))
    out["tumor_burden_pct"] = tumor_burden(p)
    out["ref_tumor_burden_pct"] = tumor_burden(g)
    out["tumor_burden_abs_error"] = abs(out["tumor_burden_pct"] - out["ref_tumor_burden_pct"])
    if "tumor" in class_names.values():
        tumor = STRUCTURES["tumor"]
        out.update(lesion_dice_by_size(np.isin(p, tumor), np.isin(g, tumor), spacing))
    return out


class AblationMetrics:
    """``extra`` callable for :class:`liverseg_monai.engines.handlers.CaseMetricsSaver`: the same
    measures on another prediction of the case (for example ``pred_no_ac``, before active-contour
    refinement), with ``suffix`` appended to every column name."""

    def __init__(self, class_names: dict, pred_key: str = "pred_no_ac", label_key: str = "label",
                 suffix: str = "_no_ac", hd95: bool = True):
        self.class_names, self.pred_key, self.label_key = dict(class_names), pred_key, label_key
        self.suffix, self.hd95 = suffix, hd95

    def __call__(self, item: dict) -> dict[str, float]:
        if self.pred_key not in item:
            return {}
        affine = affine_of(item[self.pred_key])
        spacing = np.linalg.norm(affine[:3, :3], axis=0).tolist() if affine is not None else [1.0, 1.0, 1.0]
        values = cascade_case_metrics(item[self.pred_key], item[self.label_key], spacing, self.class_names, self.hd95)
        return {f"{k}{self.suffix}": v for k, v in values.items()}
