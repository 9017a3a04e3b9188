"""The DeepLabV3+ decoder: fuse upsampled ASPP context with low-level encoder features.

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation",
ECCV 2018 (arXiv:1802.02611).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DeepLabV3PlusDecoder(nn.Module):
    """Low-level projection (1x1 conv to ``low_level_out`` channels), bilinear upsampling of the context
    to the low-level size, concatenation, two 3x3 convs and a 1x1 classifier.

    Args:
        low_level_channels: channels of the low-level features (ResNet ``layer1``: 256 for ResNet-50,
            64 for ResNet-18/34), at 1/4 of the input resolution.
        context_channels: channels of the ASPP output.
        out_channels: number of classes (logit channels).
        low_level_out: channels the low-level features are reduced to (48 in the paper).
        hidden_channels: channels of the two fusion convolutions (256 in the paper).

    Shapes: ``low_level (B, low_level_channels, H/4, W/4)`` and ``context (B, context_channels, h, w)``
    -> logits ``(B, out_channels, H/4, W/4)``.
    """

    def __init__(
        self,
        low_level_channels: int,
        context_channels: int,
        out_channels: int,
        low_level_out: int = 48,
        hidden_channels: int = 256,
    ):
        super().__init__()
        self.reduce = _conv_bn_relu(low_level_channels, low_level_out, 1)
        self.fuse = nn.Sequential(
            _conv_bn_relu(low_level_out + context_channels, hidden_channels, 3),
            _conv_bn_relu(hidden_channels, hidden_channels, 3),
        )
        self.classifier = nn.Conv2d(hidden_channels, out_channels, 1)

    def forward(self, low_level: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        low = self.reduce(low_level)
        context = F.interpolate(context, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([low, context], dim=1)))
