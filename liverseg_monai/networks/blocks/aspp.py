"""Atrous Spatial Pyramid Pooling (ASPP), the context module of DeepLabV3 / DeepLabV3+.

Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", arXiv:1706.05587 (2017).

The block is built from parts: a 1x1 branch, one 3x3 atrous branch per rate (made by a
``branch`` factory, so the deformable variant in :mod:`.deformable_aspp` only swaps the factory),
an image-pooling branch, and a 1x1 projection of the concatenated branches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BranchFactory = Callable[[int, int, int], nn.Module]


class AtrousConvBranch(nn.Sequential):
    """3x3 atrous (dilated) convolution -> BatchNorm -> ReLU.

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of the output.
        rate: the atrous rate (dilation); padding keeps the spatial size.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, rate: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ImagePoolingBranch(nn.Module):
    """Global average pooling -> 1x1 conv -> ReLU, broadcast back to the input size.

    No normalisation layer: a 1x1 map with batch size 1 would break BatchNorm in training.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.act(self.conv(self.pool(x)))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (Chen et al. 2017, arXiv:1706.05587).

    Branches, all applied to the same input and concatenated: a 1x1 conv, one atrous branch per rate,
    and image pooling; a 1x1 projection (BatchNorm, ReLU, dropout) maps them to ``out_channels``.

    Args:
        in_channels: channels of the encoder output (2048 for ResNet-50, 512 for ResNet-18/34).
        out_channels: channels of every branch and of the output (256 in the paper).
        rates: atrous rates of the 3x3 branches; (6, 12, 18) at output stride 16, (12, 24, 36) at 8.
        dropout: dropout probability after the projection.
        branch: factory ``(in_channels, out_channels, rate) -> nn.Module`` building each atrous branch;
            defaults to :class:`AtrousConvBranch` (standard convolution).

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.

    Example::

        >>> aspp = ASPP(512, 64, rates=(6, 12, 18))
        >>> aspp(torch.randn(2, 512, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        dropout: float = 0.1,
        branch: BranchFactory | None = None,
    ):
        super().__init__()
        make_branch = branch if branch is not None else AtrousConvBranch
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.rates = tuple(int(r) for r in rates)
        modules: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
        ]
        modules += [make_branch(in_channels, out_channels, r) for r in self.rates]
        modules.append(ImagePoolingBranch(in_channels, out_channels))
        self.branches = nn.ModuleList(modules)
        self.project = nn.Sequential(
            nn.Conv2d(len(modules) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        return self.project(torch.cat(outs, dim=1))
