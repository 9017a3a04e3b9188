"""Mask R-CNN with a ResNet-FPN backbone for steatosis droplet instance segmentation.

Papers: Guo et al., "Liver Steatosis Segmentation with Deep Learning Methods"
(arXiv:1911.07088), which applies Mask R-CNN (He et al., ICCV 2017) to overlapped fat droplets.

The detector is torchvision's :class:`~torchvision.models.detection.MaskRCNN` composed from parts: a
ResNet (18/34/50/101) feature pyramid backbone, a region-proposal network and box/mask heads, two classes
(background, droplet), randomly initialised (no downloaded weights). Images are *not* resized inside the
model (the droplet scale in pixels is what the network learns), they are only normalised and padded.

:class:`MaskRCNNInstanceNet` wraps the detector so that it takes one tensor and returns one tensor, as
MONAI bundles, inferers and TorchScript export expect::

    net = MaskRCNNInstanceNet(depth=18)
    out = net(torch.rand(2, 3, 256, 256))   # [2, 2, 256, 256]
    labels, scores = out[:, 0], out[:, 1]    # instance ids (0 = background) and each pixel's instance score

Training passes targets (torchvision format, one dict per image with boxes, labels, masks):
``net(images, targets)`` (in train mode) returns the detector's losses as a vector in ``LOSS_NAMES``
order, so the call goes through ``DistributedDataParallel`` like any forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

LOSS_NAMES = ["loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"]
RESNETS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101}


class NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform without the resize: normalise and pad to a multiple of 32 only.

    Droplet sizes in pixels carry the physical scale (µm per pixel), so tiles of any size are processed
    at their native resolution, in training and in inference alike.
    """

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels)


def resnet_fpn_backbone(
    depth: int = 50, norm: str = "batch", trainable_layers: int = 5, fpn_channels: int = 256
) -> BackboneWithFPN:
    """A randomly initialised ResNet-FPN backbone (``fpn_channels`` per pyramid level, P2-P5 + pool).

    Args:
        depth: ResNet depth, one of 18, 34, 50, 101.
        fpn_channels: feature channels of every pyramid level (torchvision's default is 256).
        norm: ``"batch"`` (trainable BatchNorm, the right choice from scratch), ``"group"`` (GroupNorm,
            for batch size 1) or ``"frozen"`` (torchvision's FrozenBatchNorm, only with loaded weights).
        trainable_layers: ResNet stages left trainable (5 = all).
    """
    if depth not in RESNETS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNETS)}, got {depth}")
    if norm == "batch":
        norm_layer = nn.BatchNorm2d
    elif norm == "group":
        norm_layer = _group_norm
    elif norm == "frozen":
        from torchvision.ops.misc import FrozenBatchNorm2d

        norm_layer = FrozenBatchNorm2d
    else:
        raise ValueError(f"norm must be 'batch', 'group' or 'frozen', got {norm!r}")
    body = RESNETS[depth](weights=None, norm_layer=norm_layer)
    fpn = _resnet_fpn_extractor(body, trainable_layers)
    if fpn_channels == fpn.out_channels:
        return fpn
    stage_channels = [body.inplanes // 8 * 2 ** i for i in range(4)]  # C2..C5 of this ResNet
    return BackboneWithFPN(
        body, {f"layer{i + 1}": str(i) for i in range(4)}, stage_channels, fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def maskrcnn_resnet_fpn(
    depth: int = 50,
    num_classes: int = 2,
    norm: str = "batch",
    fpn_channels: int = 256,
    representation_size: int = 1024,
    mask_head_channels: Sequence[int] = (256, 256, 256, 256),
    anchor_sizes: Sequence[int] = (8, 16, 32, 64, 128),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    image_mean: Sequence[float] = (0.485, 0.456, 0.406),
    image_std: Sequence[float] = (0.229, 0.224, 0.225),
    rpn_batch_size_per_image: int = 256,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_test: int = 1000,
    box_batch_size_per_image: int = 512,
    box_detections_per_img: int = 200,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.5,
) -> MaskRCNN:
    """torchvision Mask R-CNN with a ResNet-FPN backbone, built from parts, randomly initialised.

    Args:
        depth: ResNet depth (18, 34, 50, 101).
        num_classes: classes including background (2: background, droplet).
        norm: backbone normalisation, see :func:`resnet_fpn_backbone`.
        fpn_channels: channels of the feature pyramid (256 in the paper's Mask R-CNN; fewer is faster).
        representation_size: width of the box head's two fully connected layers (1024 by default).
        mask_head_channels: channels of the mask head's 3x3 convolutions (four of 256 by default).
        anchor_sizes: one anchor size in pixels per pyramid level (P2..P6); droplets span about
            5-60 µm, so 8-128 px at 0.5 µm/px.
        aspect_ratios: anchor aspect ratios (elliptical droplets).
        image_mean, image_std: per-channel normalisation of RGB inputs in [0, 1].
        rpn_batch_size_per_image, box_batch_size_per_image: anchors / proposals sampled per image for
            the losses (smaller is faster on CPU).
        rpn_*_nms_top_n_*: proposals kept before / after the RPN's NMS.
        box_detections_per_img: the most droplets returned per image.
        box_score_thresh, box_nms_thresh: detection score threshold and box NMS IoU in the ROI heads.
    """
    backbone = resnet_fpn_backbone(depth, norm, fpn_channels=fpn_channels)
    roi_size = 7
    box_head = TwoMLPHead(fpn_channels * roi_size**2, representation_size)
    box_predictor = FastRCNNPredictor(representation_size, num_classes)
    mask_head = MaskRCNNHeads(fpn_channels, list(mask_head_channels), 1)
    mask_predictor = MaskRCNNPredictor(mask_head_channels[-1], mask_head_channels[-1], num_classes)
    anchors = AnchorGenerator(
        sizes=tuple((int(s),) for s in anchor_sizes),
        aspect_ratios=(tuple(float(a) for a in aspect_ratios),) * len(anchor_sizes),
    )
    model = MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_head=box_head,
        box_predictor=box_predictor,
        mask_head=mask_head,
        mask_predictor=mask_predictor,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        box_batch_size_per_image=box_batch_size_per_image,
        box_detections_per_img=box_detections_per_img,
        box_score_thresh=box_score_thresh,
        box_nms_thresh=box_nms_thresh,
    )
    model.transform = NoResizeTransform(
        min_size=1, max_size=1 << 30, image_mean=list(image_mean), image_std=list(image_std)
    )
    return model


def detections_to_maps(
    detections: list[dict[str, Tensor]],
    height: int,
    width: int,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
) -> Tensor:
    """Paint detections into ``[B, 2, H, W]``: channel 0 instance ids, channel 1 each pixel's score.

    Instances with ``score >= score_threshold`` are numbered 1, 2, ... by decreasing score; where masks
    overlap the higher-scoring instance wins (it is painted last).
    """
    out = torch.zeros((len(detections), 2, height, width), dtype=torch.float32)
    for b in range(len(detections)):
        det = detections[b]
        scores = det["scores"]
        masks = det["masks"]
        keep = torch.nonzero(scores >= score_threshold).flatten()
        if keep.numel() == 0:
            continue
        order = keep[torch.argsort(scores[keep], descending=True)]
        for rank in range(order.numel() - 1, -1, -1):  # lowest score first, best painted last
            i = int(order[rank])
            on = masks[i, 0] > mask_threshold
            out[b, 0][on] = float(rank + 1)
            out[b, 1][on] = scores[i].to(torch.float32)
    return out


class MaskRCNNInstanceNet(nn.Module):
    """Mask R-CNN droplet segmenter with a single-tensor interface.

    Args:
        depth: ResNet depth of the FPN backbone (18, 34, 50 default, 101).
        num_classes: classes including background.
        score_threshold: detections below this score are not painted into the output.
        mask_threshold: mask probability above which a pixel belongs to an instance.
        **detector_args: passed on to :func:`maskrcnn_resnet_fpn` (anchors, sampling sizes, norm...).

    Input: ``[B, 3, H, W]`` float RGB in [0, 1] (any H, W; padded internally to a multiple of 32), and in
    training ``targets`` (see the module docstring), which makes the output the loss vector.
    Output: ``[B, 2, H, W]`` float: channel 0 instance ids (0 background, 1.. by decreasing score),
    channel 1 the score of the instance covering each pixel (0 on background).
    """

    def __init__(
        self,
        depth: int = 50,
        num_classes: int = 2,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        **detector_args,
    ) -> None:
        super().__init__()
        self.detector = maskrcnn_resnet_fpn(depth=depth, num_classes=num_classes, **detector_args)
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Run the detector in inference mode: per image a dict of boxes, labels, scores, masks."""
        batch = [images[i] for i in range(images.shape[0])]
        if torch.jit.is_scripting():
            _, detections = self.detector(batch)
        else:
            detections = self.detector(batch)
        return detections

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> Tensor:
        if targets is not None:  # training: the detector's losses, in LOSS_NAMES order
            batch = [images[i] for i in range(images.shape[0])]
            if torch.jit.is_scripting():
                losses, _ = self.detector(batch, targets)
            else:
                losses = self.detector(batch, targets)
            return torch.stack([  # LOSS_NAMES, spelled out for TorchScript
                losses["loss_classifier"], losses["loss_box_reg"], losses["loss_mask"],
                losses["loss_objectness"], losses["loss_rpn_box_reg"],
            ])
        detections = self.detect(images)
        return detections_to_maps(
            detections, images.shape[-2], images.shape[-1], self.score_threshold, self.mask_threshold
        )
