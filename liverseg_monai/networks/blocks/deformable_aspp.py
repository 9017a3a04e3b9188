"""Deformable ASPP: every atrous branch of ASPP is a deformable convolution with learned offsets.

The liver H&E segmentation model this package reproduces replaces the atrous convolutions of
DeepLabV3+'s ASPP with deformable ones, so each rate samples a learned, input-dependent neighbourhood.

- Deformable convolution: Dai et al., "Deformable Convolutional Networks", ICCV 2017 (DCNv1).
- Modulated deformable convolution: Zhu et al., "Deformable ConvNets v2: More Deformable, Better
  Results", CVPR 2019 (DCNv2, a learned per-sample mask).

Implemented with :class:`torchvision.ops.DeformConv2d` (TorchScript op ``torchvision::deform_conv2d``;
import ``torchvision`` before ``torch.jit.load`` of an exported model, see
:func:`liverseg_monai.networks.export.load_torchscript`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn
from torchvision.ops import DeformConv2d

from liverseg_monai.networks.blocks.aspp import ASPP


class DeformableConvBranch(nn.Module):
    """3x3 deformable atrous convolution -> BatchNorm -> ReLU.

    A plain 3x3 convolution with the same dilation predicts the sampling offsets (``2 * 9`` channels)
    and, with ``modulated=True``, the DCNv2 mask logits (``9`` channels, passed through a sigmoid).
    That predictor is zero-initialised, so at the start the branch is exactly a dilated convolution
    (offsets 0; the modulated mask starts at 0.5 everywhere, as in DCNv2) and learns to deform.

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of the output.
        rate: atrous rate, used as the dilation of the deformable convolution and of the offset predictor.
        modulated: DCNv2 (offsets and a mask) instead of DCNv1 (offsets only).

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, rate: int, modulated: bool = False):
        super().__init__()
        k = 3
        self.modulated = modulated
        self.n_offsets = 2 * k * k
        n_pred = self.n_offsets + (k * k if modulated else 0)
        self.offset = nn.Conv2d(in_channels, n_pred, k, padding=rate, dilation=rate, bias=True)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(in_channels, out_channels, k, padding=rate, dilation=rate, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = self.offset(x)
        if self.modulated:
            offset = pred[:, : self.n_offsets]
            mask = torch.sigmoid(pred[:, self.n_offsets :])
            y = self.conv(x, offset, mask)
        else:
            y = self.conv(x, pred)
        return self.act(self.norm(y))


class DeformableASPP(ASPP):
    """ASPP whose atrous branches are :class:`DeformableConvBranch` (the image-pooling and 1x1
    branches and the projection are those of :class:`~liverseg_monai.networks.blocks.aspp.ASPP`).

    Args:
        in_channels: channels of the encoder output (2048 for ResNet-50, 512 for ResNet-18/34).
        out_channels: channels of every branch and of the output (256 in DeepLabV3+).
        rates: atrous rates = dilations of the deformable convolutions; (6, 12, 18) at output stride 16.
        dropout: dropout probability after the projection.
        modulated: DCNv2 modulated deformable convolutions (learned mask) instead of DCNv1.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.

    Example::

        >>> aspp = DeformableASPP(512, 64, rates=(6, 12, 18), modulated=True)
        >>> aspp(torch.randn(2, 512, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        dropout: float = 0.1,
        modulated: bool = False,
    ):
        super().__init__(in_channels, out_channels, rates, dropout, branch=partial(DeformableConvBranch, modulated=modulated))
        self.modulated = modulated
