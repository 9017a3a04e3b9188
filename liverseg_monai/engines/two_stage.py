"""Two-stage (cascade) liver-then-tumour inference: two networks and a crop between them.

Stage 1 sees the whole volume, resized to a fixed coarse grid, and segments the liver; its own
post-processing (for example the largest connected component) cleans the mask. Stage 2 sees the
liver's bounding box plus a margin at the fine resolution, resized to its own fixed grid, and
segments tumour (optionally portal vein and aorta). The result is one label map on the fine grid::

    0 background, 1 liver, 2 tumour mass, 3 portal vein, 4 abdominal aorta (3 and 4 with vessels)

:class:`TwoStageSegmenter` composes the parts (torchvision's ``GeneralizedRCNN`` style); each network
is an ordinary segmentation network (logits out), each stage has its own intensity window and grid.
:class:`PrepareBatchWithPrior` hands the clinical weak-supervision targets to the training loss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.engines.utils import PrepareBatch
from monai.utils import CommonKeys
from torch import nn

from liverseg_monai.transforms.crop import bounding_box, paste_box
from liverseg_monai.transforms.discrete import channel_argmax

logger = logging.getLogger(__name__)


def window(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Hounsfield units to [0, 1] with clipping (as ``ScaleIntensityRanged(a_min=lo, a_max=hi, clip=True)``)."""
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def resize(x: torch.Tensor, size: Sequence[int], mode: str = "trilinear") -> torch.Tensor:
    """Resize ``(B, C, *spatial)`` to ``size`` (as MONAI ``Resized`` with ``mode``, no anti-aliasing)."""
    size = [int(s) for s in size]
    if list(x.shape[2:]) == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class TwoStageSegmenter(nn.Module):
    """Liver (stage 1, global view) then tumour (stage 2, local view inside the liver's box).

    Args:
        liver_net: stage-1 network, ``(B, 1, *liver_size)`` -> logits ``(B, 2, *liver_size)``
            (background, liver).
        tumor_net: stage-2 network, ``(B, 1, *tumor_size)`` -> logits ``(B, K, *tumor_size)`` with
            ``K = 2`` (background, tumour) or ``K = 4`` (background, tumour, portal vein, aorta).
        liver_size: the fixed grid the whole volume is resized to for stage 1 (voxels).
        tumor_size: the fixed grid the liver box is resized to for stage 2 (voxels).
        liver_window: HU window ``(lo, hi)`` mapped to [0, 1] for stage 1.
        tumor_window: HU window for stage 2.
        margin: voxels of the input grid added around the liver's bounding box (one or per axis).
        liver_postprocessing: callable on the ``(1, X, Y, Z)`` binary liver mask (for example
            ``KeepLargestConnectedComponent`` and ``FillHoles``); ``None`` keeps it as is.
        tumor_in_liver: keep tumour voxels only inside the stage-1 liver mask.

    Shapes:
        input ``(B, 1, X, Y, Z)`` in HU on the fine grid -> label map ``(B, 1, X, Y, Z)`` (float).
    """

    def __init__(
        self,
        liver_net: nn.Module,
        tumor_net: nn.Module,
        liver_size: Sequence[int],
        tumor_size: Sequence[int],
        liver_window: Sequence[float] = (-200.0, 300.0),
        tumor_window: Sequence[float] = (-100.0, 250.0),
        margin: int | Sequence[int] = 4,
        liver_postprocessing: Callable[[torch.Tensor], torch.Tensor] | None = None,
        tumor_in_liver: bool = True,
    ):
        super().__init__()
        self.liver_net, self.tumor_net = liver_net, tumor_net
        self.liver_size, self.tumor_size = list(liver_size), list(tumor_size)
        self.liver_window, self.tumor_window = tuple(liver_window), tuple(tumor_window)
        self.margin = margin
        self.liver_postprocessing = liver_postprocessing
        self.tumor_in_liver = tumor_in_liver

    def segment_liver(self, image: torch.Tensor) -> torch.Tensor:
        """Stage 1: ``(1, 1, X, Y, Z)`` HU -> boolean liver mask ``(X, Y, Z)``."""
        x = resize(window(image, *self.liver_window), self.liver_size)
        prob = torch.softmax(self.liver_net(x).float(), dim=1)
        prob = resize(prob, image.shape[2:])
        liver = channel_argmax(prob, dim=1, dtype=torch.int64)[0]  # (1, X, Y, Z)
        if self.liver_postprocessing is not None:
            liver = torch.as_tensor(self.liver_postprocessing(liver))
        return liver[0].as_subclass(torch.Tensor) > 0

    def segment_tumor(self, image: torch.Tensor, liver: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, ...]] | None:
        """Stage 2: class indices (0 background, 1 tumour, 2 portal vein, 3 aorta) inside the liver box."""
        box = bounding_box(liver, self.margin)
        if box is None:
            return None
        crop = image[(Ellipsis, *box)]
        x = resize(window(crop, *self.tumor_window), self.tumor_size)
        prob = torch.softmax(self.tumor_net(x).float(), dim=1)
        prob = resize(prob, crop.shape[2:])
        return channel_argmax(prob, dim=1, keepdim=False, dtype=torch.int64)[0], box

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(image[:, :1], dtype=torch.float32)  # keeps a MetaTensor's metadata for Invertd
        for b in range(image.shape[0]):
            img = image[b : b + 1].as_subclass(torch.Tensor).float()
            liver = self.segment_liver(img)
            labels = torch.zeros(img.shape[2:], dtype=torch.float32, device=img.device)
            labels[liver] = 1
            result = self.segment_tumor(img, liver)
            if result is None:
                logger.warning("stage 1 found no liver; the label map is empty")
            else:
                classes, box = result
                stage2 = torch.zeros_like(classes, dtype=torch.float32)
                stage2[classes == 1] = 2  # tumour
                stage2[classes == 2] = 3  # portal vein
                stage2[classes == 3] = 4  # aorta
                keep = classes > 0
                if self.tumor_in_liver:
                    keep &= (classes != 1) | liver[box]
                paste_box(labels, stage2, box, where=keep)
            out[b, 0] = labels
        return out


class PrepareBatchWithPrior(PrepareBatch):
    """``prepare_batch`` for a ``SupervisedTrainer`` whose loss needs more than the label.

    Returns ``(image, target)`` where ``target`` is a dict with ``label`` and each of ``extra_keys``
    found in the batch (missing ones are left out), moved to the device as float tensors. Used with
    :class:`liverseg_monai.losses.vae.SegVAELoss` for the clinical weak-supervision term.
    """

    def __init__(self, extra_keys: Sequence[str] = ("liver", "tumor_fraction_prior", "tumor_fraction_std")):
        self.extra_keys = tuple(extra_keys)

    def __call__(self, batchdata: dict, device=None, non_blocking: bool = False, **kwargs):
        image = batchdata[CommonKeys.IMAGE].to(device=device, non_blocking=non_blocking, **kwargs)
        target = {"label": batchdata[CommonKeys.LABEL].to(device=device, non_blocking=non_blocking, **kwargs)}
        for key in self.extra_keys:
            if key in batchdata:
                value = torch.as_tensor(batchdata[key])
                target[key] = value.to(device=device, dtype=torch.float32, non_blocking=non_blocking)
        return image, target


STRUCTURES = {"liver": (1, 2), "tumor": (2,), "portal_vein": (3,), "aorta": (4,)}


def tumor_burden(labels, liver_labels: Sequence[int] = (1, 2), tumor_labels: Sequence[int] = (2,)) -> float:
    """Tumour volume as a percentage of the liver volume (tumour included); NaN for an empty liver."""
    import numpy as np

    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    liver = int(np.isin(arr, liver_labels).sum())
    return float(100.0 * np.isin(arr, tumor_labels).sum() / liver) if liver else float("nan")


def cascade_case_metrics(pred, label, spacing: Sequence[float], class_names: dict, hd95: bool = True) -> dict[str, float]:
    """The paper's per-structure measures for one case plus the tumour burden.

    Structures are label sets (:data:`STRUCTURES`): ``liver`` is labels 1 and 2 (the liver with its
    tumours, as liver Dice is usually reported), ``tumor`` label 2, ``portal_vein`` 3, ``aorta`` 4; the
    values of ``class_names`` pick which are measured. Per structure: Dice, IoU, precision, sensitivity
    (``recall``), accuracy, HD95 in mm and volumes (:func:`liverseg_monai.metrics.ct.case_metrics`).
    Plus ``tumor_burden_pct`` / ``ref_tumor_burden_pct`` (tumour % of liver) and their absolute difference.
    """
    import numpy as np

    from liverseg_monai.metrics.ct import case_metrics

    p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    g = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    out: dict[str, float] = {}
    for name in class_names.values():
        values = STRUCTURES[name]
        out.update(case_metrics(np.isin(p, values), np.isin(g, values), spacing, {1: name}, hd95=hd95))
    out["tumor_burden_pct"] = tumor_burden(p)
    out["ref_tumor_burden_pct"] = tumor_burden(g)
    out["tumor_burden_abs_error"] = abs(out["tumor_burden_pct"] - out["ref_tumor_burden_pct"])
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
        from liverseg_monai.io.meta import affine_of

        if self.pred_key not in item:
            return {}
        import numpy as np

        affine = affine_of(item[self.pred_key])
        spacing = np.linalg.norm(affine[:3, :3], axis=0).tolist() if affine is not None else [1.0, 1.0, 1.0]
        values = cascade_case_metrics(item[self.pred_key], item[self.label_key], spacing, self.class_names, self.hd95)
        return {f"{k}{self.suffix}": v for k, v in values.items()}


class SaveDicomSegd:
    """Write the label map as a DICOM-SEG referencing the source series, when the input was a DICOM folder.

    Args:
        keys: label maps on the grid the series was read on (after ``Invertd``).
        output_dir: files go to ``<output_dir>/<case stem>_seg.dcm`` (the series folder's name, see
            :func:`liverseg_monai.io.naming.case_stem`; written atomically). The path is recorded in
            the item under ``<key>_dicom_seg`` for :class:`SaveDicomSRd`.
        segments: segment label -> the label values it covers; by default the HCC-TACE-Seg segments
            (``Liver`` = liver with its tumours, ``Mass`` = tumour). Empty segments are left out.
        enabled: ``False`` passes everything through. NIfTI inputs are skipped (logged).

    Run it inside :class:`liverseg_monai.transforms.outputs.CaseOutputs` so that a failed DICOM-SEG
    leaves none of the case's other outputs (mask, overlay, SR) either.
    """

    def __init__(self, keys: str | Sequence[str], output_dir: str, segments: dict | None = None, enabled: bool = True):
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.output_dir, self.enabled = output_dir, enabled
        self.segments = dict(segments) if segments else {"Liver": (1, 2), "Mass": (2,)}

    def __call__(self, data: dict) -> dict:
        if not self.enabled:
            return data
        import os

        import numpy as np

        from liverseg_monai.io.dicom import write_seg_masks
        from liverseg_monai.io.meta import source_name
        from liverseg_monai.io.naming import case_output_name, case_stem

        data = dict(data)
        for key in self.keys:
            source = source_name(data[key])
            if not os.path.isdir(source):
                logger.info("%s: not a DICOM series folder; no DICOM-SEG written", source)
                continue
            pred = data[key]
            array = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            labels = array[0] if array.ndim == 4 else array
            masks = {name: np.isin(labels, values) for name, values in self.segments.items()}
            masks = {name: m for name, m in masks.items() if m.any()}
            if not masks:
                logger.warning("%s: empty prediction; no DICOM-SEG written", source)
                continue
            path = os.path.join(self.output_dir, case_output_name(source, "seg", ".dcm"))
            write_seg_masks(masks, source, path, uid_entropy=case_stem(source))
            data[f"{key}_dicom_seg"] = path
        return data


class SaveDicomSRd:
    """Write the case's clinical read-out as a DICOM SR (TID 1500) next to its DICOM-SEG.

    Runs after :class:`SaveDicomSegd`: for each key whose item holds ``<key>_dicom_seg``, the read-out
    of :func:`liverseg_monai.io.sr.ct_readout` (liver volume in mL; with ``tumor_labels`` also tumour
    count, volume in mL and burden in % of the liver) is written to ``<output_dir>/<case stem>_sr.dcm``
    by :func:`liverseg_monai.io.sr.write_ct_report`, referencing the SEG's segments and the source
    series. Cases without a DICOM-SEG (NIfTI input, empty prediction) get no SR. Spacing comes from
    the label map's affine (on the series' grid).

    Args:
        keys: the label maps (as given to :class:`SaveDicomSegd`).
        output_dir: destination folder.
        liver_labels, tumor_labels: label values of liver (tumours included) and tumour; empty
            ``tumor_labels`` for a liver-only model.
        liver_segment, tumor_segment: the SEG segment labels the groups reference.
        enabled: ``False`` passes everything through.
    """

    def __init__(self, keys: str | Sequence[str], output_dir: str, liver_labels: Sequence[int] = (1, 2),
                 tumor_labels: Sequence[int] = (2,), liver_segment: str = "Liver", tumor_segment: str = "Mass",
                 enabled: bool = True):
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.output_dir, self.enabled = output_dir, enabled
        self.liver_labels, self.tumor_labels = tuple(liver_labels), tuple(tumor_labels)
        self.liver_segment, self.tumor_segment = liver_segment, tumor_segment

    def __call__(self, data: dict) -> dict:
        if not self.enabled:
            return data
        import os

        import numpy as np

        from liverseg_monai.io.meta import affine_of, source_name
        from liverseg_monai.io.naming import case_output_name, case_stem
        from liverseg_monai.io.sr import ct_readout, write_ct_report

        for key in self.keys:
            seg_path = data.get(f"{key}_dicom_seg")
            if seg_path is None:
                continue
            pred, source = data[key], source_name(data[key])
            affine = affine_of(pred)
            if affine is None:
                raise ValueError(f"{source}: the label map has no affine; cannot measure volumes for the SR")
            array = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            spacing = np.linalg.norm(affine[:3, :3], axis=0)
            readout = ct_readout(np.rint(array).astype(np.int64), spacing, self.liver_labels, self.tumor_labels)
            out = os.path.join(self.output_dir, case_output_name(source, "sr", ".dcm"))
            write_ct_report(readout, source, seg_path, out, liver_segment=self.liver_segment,
                            tumor_segment=self.tumor_segment, uid_entropy=case_stem(source))
        return data
