"""Lesion-wise Dice by lesion size: how well each reference lesion is segmented, grouped by its diameter.

A case-level tumour Dice is dominated by the largest lesions; a refinement that helps small lesions and
hurts large ones (or the reverse) is invisible in it. Here every reference lesion (a 26-connected
component of the reference tumour mask) is scored on its own and grouped by its equivalent-sphere
diameter ``(6 V / pi) ** (1/3)`` in millimetres, with the size bins of the LiTS benchmark paper
(Bilic et al., Medical Image Analysis 2023: lesions under 10 mm, 10-20 mm and over 20 mm).

MONAI's metrics compare whole masks and have no per-component matching, and scikit-image has no
segmentation score, so the matching is written here; the components come from ``scipy.ndimage.label``
and the Dice itself from MONAI's ``compute_dice``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice
from scipy import ndimage

#: (column suffix, lower bound in mm inclusive, upper bound in mm exclusive)
SIZE_BINS: tuple[tuple[str, float, float], ...] = (("lt10mm", 0.0, 10.0), ("10to20mm", 10.0, 20.0),
                                                   ("ge20mm", 20.0, float("inf")))


def _mask(x) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr
    return arr.astype(bool)


def lesion_dice(pred, label, spacing: Sequence[float], margin_mm: float = 10.0) -> list[tuple[float, float]]:
    """``[(diameter_mm, dice)]``, one pair per reference lesion.

    Each reference lesion ``L`` is compared with the predicted tumour inside ``L``'s bounding box grown
    by ``margin_mm`` on every side, less the voxels of other reference lesions (a neighbouring lesion
    found correctly is not a false positive of this one): ``dice(L, pred & box & ~(ref - L))``.

    Args:
        pred: predicted tumour mask ``(X, Y, Z)`` or ``(1, X, Y, Z)`` (any non-zero voxel is tumour).
        label: reference tumour mask on the same grid.
        spacing: voxel size in mm along (X, Y, Z).
        margin_mm: how far around the lesion a predicted voxel still counts for it.

    Example:
        >>> ref = np.zeros((20, 20, 20), bool); ref[2:6, 2:6, 2:6] = True; ref[10:18, 10:18, 10:18] = True
        >>> [(round(d, 1), round(s, 2)) for d, s in lesion_dice(ref, ref, (2.0, 2.0, 2.0))]
        [(9.9, 1.0), (19.9, 1.0)]
    """
    p, g = _mask(pred), _mask(label)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and reference {g.shape} differ in shape")
    spacing = np.asarray(spacing, dtype=float)
    components, _ = ndimage.label(g, structure=np.ones((3, 3, 3), bool))
    grow = np.ceil(margin_mm / spacing).astype(int)
    out = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        box = tuple(slice(max(s.start - m, 0), min(s.stop + m, size)) for s, m, size in zip(box, grow, g.shape))
        lesion = components[box] == index
        others = (components[box] != 0) & ~lesion
        found = p[box] & ~others
        dice = float(compute_dice(torch.as_tensor(found)[None, None].float(), torch.as_tensor(lesion)[None, None].float(),
                                  include_background=True, ignore_empty=False))
        diameter = float((6.0 * lesion.sum() * spacing.prod() / np.pi) ** (1.0 / 3.0))
        out.append((diameter, dice))
    return out


def lesion_dice_by_size(pred, label, spacing: Sequence[float], prefix: str = "tumor",
                        bins: Sequence[tuple[str, float, float]] = SIZE_BINS, margin_mm: float = 10.0) -> dict[str, float]:
    """Mean lesion-wise Dice per size bin and the lesion counts, for one case.

    Returns ``{"<prefix>_lesion_dice_<bin>": mean Dice of the case's reference lesions in the bin (NaN
    when it has none), "<prefix>_lesions_<bin>": their number}`` for each bin of :data:`SIZE_BINS`.
    """
    scores = lesion_dice(pred, label, spacing, margin_mm)
    out: dict[str, float] = {}
    for name, low, high in bins:
        values = [dice for diameter, dice in scores if low <= diameter < high]
        out[f"{prefix}_lesion_dice_{name}"] = float(np.mean(values)) if values else float("nan")
        out[f"{prefix}_lesions_{name}"] = float(len(values))
    return out
