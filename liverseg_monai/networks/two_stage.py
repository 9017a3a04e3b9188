"""Two-stage (cascade) liver-then-tumour segmentation as one network, composed of four named parts.

The data flow, one part per step, each passed in by the bundle config (``configs/inference.json``):

1. ``liver_stage`` (:class:`CascadeStage` around the liver network) sees the whole volume on a fixed
   coarse grid and segments the liver; ``liver_cleanup`` (largest component, hole filling) cleans it.
2. ``crop`` (:class:`LiverBoxCrop`) takes the liver's bounding box plus a margin at the fine resolution.
3. ``tumor_stage`` (:class:`CascadeStage` around the tumour network) segments tumour (optionally portal
   vein and aorta) in that box.
4. ``paste`` (:class:`PasteBack`) writes its classes into the liver map.

The result is one label map on the input grid::

    0 background, 1 liver, 2 tumour mass, 3 portal vein, 4 abdominal aorta (3 and 4 with vessels)

Each part is what training does to its network's input with MONAI transforms (``ScaleIntensityRanged``
to the stage's HU window, ``Resized`` to the stage's ROI, ``CropForegroundd`` on the liver with the
same margin, ``MapLabelValued`` for the labels), and the config feeds both from the same keys
(``liver#hu_window``, ``tumor#roi_size``, ``tumor#crop_margin``...). Here they are written in torch
because the cascade must be one ``nn.Module``: ``torch.jit.script`` exports it (MONAI's transforms are
not scriptable), MONAI Label's single-network bundle inferer runs it, and ``network_def`` holds both
stages so export and verification see them. ``tests/networks/test_two_stage.py`` checks each part
against the MONAI transform training uses.

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


class LiverBoxCrop(nn.Module):
    """The crop between the stages: the stage-1 mask's bounding box grown by a margin, clipped to the volume.

    The box MONAI's ``CropForeground(margin=margin, allow_smaller=True)`` crops (training's
    ``CropForegroundd`` on the liver label, fed the same ``tumor#crop_margin``).

    Args:
        margin: voxels added on each side, one value or one per axis.

    Shapes:
        boolean mask ``(X, Y, Z)`` -> ``[x0, x1, y0, y1, z0, z1]`` (ends exclusive); ``[]`` for an empty mask.
    """

    def __init__(self, margin: int | Sequence[int] = 4):
        super().__init__()
        margins = [int(margin)] * 3 if isinstance(margin, int | float) else [int(m) for m in margin]
        if len(margins) != 3:
            raise ValueError(f"margin needs one value or three (one per axis), got {margin}")
        self.margin: List[int] = margins  # noqa: UP006

    def forward(self, mask: torch.Tensor) -> List[int]:  # noqa: UP006
        return mask_bounds(mask, pads=self.margin)


class PasteBack(nn.Module):
    """The paste-back after stage 2: its classes become labels inside the box of the label map.

    Stage-2 class ``k > 0`` becomes label ``k + 1`` (training's ``MapLabelValued`` the other way round:
    2 tumour, 3 portal vein, 4 aorta); class 0 keeps the stage-1 label.

    Args:
        tumor_in_liver: keep tumour (class 1) voxels only inside the stage-1 liver mask.

    Shapes:
        ``labels`` ``(X, Y, Z)`` float32, ``liver`` ``(X, Y, Z)`` bool, ``classes`` ``(x, y, z)`` int64 on the
        box, ``box`` from :class:`LiverBoxCrop` -> ``labels`` with the box replaced.
    """

    def __init__(self, tumor_in_liver: bool = True):
        super().__init__()
        self.tumor_in_liver = bool(tumor_in_liver)

    def forward(self, labels: torch.Tensor, liver: torch.Tensor, classes: torch.Tensor,
                box: List[int]) -> torch.Tensor:  # noqa: UP006
        x0, x1, y0, y1, z0, z1 = box[0], box[1], box[2], box[3], box[4], box[5]
        keep = classes > 0
        if self.tumor_in_liver:
            keep = keep & ((classes != 1) | liver[x0:x1, y0:y1, z0:z1])
        out = labels.clone()
        region = out[x0:x1, y0:y1, z0:z1]
        out[x0:x1, y0:y1, z0:z1] = torch.where(keep, (classes + 1).to(torch.float32), region)
        return out


class TwoStageSegmenter(nn.Module):
    """Liver (stage 1, global view), crop, tumour (stage 2, local view inside the liver's box), paste-back.

    Args:
        liver_stage: :class:`CascadeStage` whose classes are 0 background, 1 liver.
        tumor_stage: :class:`CascadeStage` whose classes are 0 background, 1 tumour (2 portal vein,
            3 aorta with vessels).
        crop: :class:`LiverBoxCrop` (or a module with its signature); ``None`` builds one from ``margin``.
        paste: :class:`PasteBack`; ``None`` builds one from ``tumor_in_liver``.
        liver_cleanup: module on the ``(X, Y, Z)`` boolean liver mask (for example
            :class:`liverseg_monai.networks.blocks.mask_cleanup.MaskCleanup`); ``None`` keeps it as is.
        margin: the crop's margin when ``crop`` is not given.
        tumor_in_liver: the paste-back's rule when ``paste`` is not given.

    Shapes:
        input ``(B, 1, X, Y, Z)`` in HU on the fine grid -> label map ``(B, 1, X, Y, Z)`` (float32); a
        MONAI ``MetaTensor`` input gives a ``MetaTensor`` with its metadata (for ``Invertd``).
    """

    __jit_unused_properties__ = ["liver_net", "tumor_net", "liver_size", "tumor_size", "liver_window",
                                 "tumor_window", "margin"]

    def __init__(self, liver_stage: CascadeStage, tumor_stage: CascadeStage, crop: nn.Module | None = None,
                 paste: nn.Module | None = None, liver_cleanup: nn.Module | None = None,
                 margin: int | Sequence[int] = 4, tumor_in_liver: bool = True):
        super().__init__()
        self.liver_stage, self.tumor_stage = liver_stage, tumor_stage
        self.crop = crop if crop is not None else LiverBoxCrop(margin)
        self.paste = paste if paste is not None else PasteBack(tumor_in_liver)
        self.liver_cleanup = liver_cleanup if liver_cleanup is not None else nn.Identity()

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

    @property
    def liver_window(self) -> tuple[float, float]:
        return self.liver_stage.lo, self.liver_stage.hi

    @property
    def tumor_window(self) -> tuple[float, float]:
        return self.tumor_stage.lo, self.tumor_stage.hi

    @property
    def margin(self) -> list[int]:
        return self.crop.margin

    def segment(self, image: torch.Tensor) -> torch.Tensor:
        """One case: ``(1, 1, X, Y, Z)`` HU -> label map ``(X, Y, Z)`` float32."""
        liver = self.liver_cleanup(self.liver_stage(image)[0] > 0)
        labels = liver.to(torch.float32)
        box = self.crop(liver)
        if len(box) == 0:
            if not torch.jit.is_scripting():
                self._warn_empty()
            return labels
        classes = self.tumor_stage(image[:, :, box[0]:box[1], box[2]:box[3], box[4]:box[5]])[0]
        return self.paste(labels, liver, classes, box)

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
