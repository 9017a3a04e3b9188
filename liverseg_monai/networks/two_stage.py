"""Two-stage (cascade) liver-then-tumour segmentation as one network: two stages and a crop between them.

Stage 1 (:class:`CascadeStage` around the liver network) sees the whole volume on a fixed coarse grid
and segments the liver; a clean-up module (largest component, hole filling) cleans the mask. The crop
takes the liver's bounding box plus a margin at the fine resolution; stage 2 (:class:`CascadeStage`
around the tumour network) segments tumour (optionally portal vein and aorta) in it; the paste-back
writes its classes into the liver map. The result is one label map on the input grid::

    0 background, 1 liver, 2 tumour mass, 3 portal vein, 4 abdominal aorta (3 and 4 with vessels)

Each stage is what training feeds its network (``ScaleIntensityRanged`` to the stage's HU window,
``Resized`` to the stage's ROI, and for stage 2 ``CropForegroundd`` on the liver with the same margin),
written in torch so that the whole cascade is one ``nn.Module``: ``torch.jit.script`` exports it, and
MONAI Label's single-network bundle inferer runs it. ``tests/networks/test_two_stage.py`` checks the
pieces against those MONAI transforms.

Composition in the style of torchvision's ``GeneralizedRCNN``: the parts are passed in and each can be
swapped without touching the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import List  # noqa: UP035 (TorchScript needs typing.List)

import torch
import torch.nn.functional as F
from torch import nn

from liverseg_monai.networks.blocks.mask_cleanup import mask_bounds

logger = logging.getLogger(__name__)


def window(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Hounsfield units to [0, 1] with clipping (as ``ScaleIntensityRanged(a_min=lo, a_max=hi, clip=True)``)."""
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def resize(x: torch.Tensor, size: List[int], mode: str = "trilinear") -> torch.Tensor:  # noqa: UP006
    """Resize ``(B, C, *spatial)`` to ``size`` (as MONAI ``Resized`` with ``mode``, no anti-aliasing)."""
    size = [int(s) for s in size]
    if list(x.shape[2:]) == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class CascadeStage(nn.Module):
    """One stage of the cascade: window -> resize to the ROI -> network -> softmax -> resize back -> classes.

    Args:
        net: segmentation network, ``(B, 1, *roi_size)`` -> logits ``(B, K, *roi_size)``.
        hu_window: HU window ``(lo, hi)`` mapped to [0, 1] with clipping (the training
            ``ScaleIntensityRanged``).
        roi_size: the fixed grid the input is resized to (the training ``Resized``), voxels.

    Shapes:
        ``(B, 1, X, Y, Z)`` in HU -> class indices ``(B, X, Y, Z)`` (int64) on the input grid.
    """

    def __init__(self, net: nn.Module, hu_window: Sequence[float], roi_size: Sequence[int]):
        super().__init__()
        self.net = net
        self.lo, self.hi = float(hu_window[0]), float(hu_window[1])
        self.roi_size: List[int] = [int(s) for s in roi_size]  # noqa: UP006

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = resize(window(image, self.lo, self.hi), self.roi_size)
        prob = torch.softmax(self.net(x).float(), dim=1)
        prob = resize(prob, [int(s) for s in image.shape[2:]])
        return torch.max(prob, dim=1)[1]  # argmax, first index on ties


class OneStageSegmenter(nn.Module):
    """One network for liver and tumour at once: the baseline the tumour paper's cascade is argued against.

    Args:
        stage: :class:`CascadeStage` whose classes are 0 background, 1 liver, 2 tumour (the liver
            stage's network trained with three classes, ``configs/baseline_one_network.json``).

    Shapes:
        as :class:`TwoStageSegmenter`: ``(B, 1, X, Y, Z)`` HU -> label map ``(B, 1, X, Y, Z)`` (float32),
        the class index is the label.
    """

    def __init__(self, stage: CascadeStage):
        super().__init__()
        self.stage = stage

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(image[:, :1], dtype=torch.float32)  # keeps a MetaTensor's metadata for Invertd
        plain = image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else image
        out[:, 0] = self.stage(plain.float()).to(torch.float32)
        return out


class TwoStageSegmenter(nn.Module):
    """Liver (stage 1, global view) then tumour (stage 2, local view inside the liver's box).

    Args:
        liver_stage: :class:`CascadeStage` whose classes are 0 background, 1 liver.
        tumor_stage: :class:`CascadeStage` whose classes are 0 background, 1 tumour (2 portal vein,
            3 aorta with vessels).
        margin: voxels of the input grid added around the liver's bounding box, one per axis (the
            training ``CropForegroundd`` margin).
        liver_cleanup: module on the ``(X, Y, Z)`` boolean liver mask (for example
            ``nn.Sequential(KeepLargestComponent(), FillHoles())`` of
            :mod:`liverseg_monai.networks.blocks.mask_cleanup`); ``None`` keeps it as is.
        tumor_in_liver: keep tumour voxels only inside the stage-1 liver mask.

    Shapes:
        input ``(B, 1, X, Y, Z)`` in HU on the fine grid -> label map ``(B, 1, X, Y, Z)`` (float32); a
        MONAI ``MetaTensor`` input gives a ``MetaTensor`` with its metadata (for ``Invertd``).
    """

    __jit_unused_properties__ = ["liver_net", "tumor_net", "liver_size", "tumor_size"]

    def __init__(self, liver_stage: CascadeStage, tumor_stage: CascadeStage, margin: int | Sequence[int] = 4,
                 liver_cleanup: nn.Module | None = None, tumor_in_liver: bool = True):
        super().__init__()
        self.liver_stage, self.tumor_stage = liver_stage, tumor_stage
        margins = [int(margin)] * 3 if isinstance(margin, int | float) else [int(m) for m in margin]
        if len(margins) != 3:
            raise ValueError(f"margin needs one value or three (one per axis), got {margin}")
        self.margin: List[int] = margins  # noqa: UP006
        self.liver_cleanup = liver_cleanup if liver_cleanup is not None else nn.Identity()
        self.tumor_in_liver = bool(tumor_in_liver)

    # the stage networks and sizes under their earlier names (benchmarks time the networks alone)
    @property
    def liver_net(self) -> nn.Module:
        return self.liver_stage.net

    @property
    def tumor_net(self) -> nn.Module:
        return self.tumor_stage.net

    @property
    def liver_size(self) -> list[int]:
        return self.liver_stage.roi_size

    @property
    def tumor_size(self) -> list[int]:
        return self.tumor_stage.roi_size

    def segment(self, image: torch.Tensor) -> torch.Tensor:
        """One case: ``(1, 1, X, Y, Z)`` HU -> label map ``(X, Y, Z)`` float32."""
        liver = self.liver_cleanup(self.liver_stage(image)[0] > 0)
        labels = liver.to(torch.float32)
        box = mask_bounds(liver)
        if len(box) == 0:
            if not torch.jit.is_scripting():
                self._warn_empty()
            return labels
        m = self.margin
        x0, x1 = max(box[0] - m[0], 0), min(box[1] + m[0], liver.shape[0])
        y0, y1 = max(box[2] - m[1], 0), min(box[3] + m[1], liver.shape[1])
        z0, z1 = max(box[4] - m[2], 0), min(box[5] + m[2], liver.shape[2])
        classes = self.tumor_stage(image[:, :, x0:x1, y0:y1, z0:z1])[0]
        keep = classes > 0
        if self.tumor_in_liver:
            keep = keep & ((classes != 1) | liver[x0:x1, y0:y1, z0:z1])
        region = labels[x0:x1, y0:y1, z0:z1]
        # stage-2 class k > 0 is label k + 1: 2 tumour, 3 portal vein, 4 aorta
        labels[x0:x1, y0:y1, z0:z1] = torch.where(keep, (classes + 1).to(torch.float32), region)
        return labels

    @torch.jit.unused
    def _warn_empty(self) -> None:
        logger.warning("stage 1 found no liver; the label map is empty")

    @torch.jit.unused
    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        return x.as_subclass(torch.Tensor)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(image[:, :1], dtype=torch.float32)  # keeps a MetaTensor's metadata for Invertd
        for b in range(image.shape[0]):
            img = image[b:b + 1]
            if not torch.jit.is_scripting():
                img = self._plain(img)
            out[b, 0] = self.segment(img.float())
        return out
