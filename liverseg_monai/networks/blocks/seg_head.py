"""A small fully convolutional segmentation head for frozen dense features."""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.blocks import Convolution
from torch import nn


class ConvSegmentationHead(nn.Sequential):
    """Per-pixel classifier: ``len(hidden_channels)`` conv-norm-act layers, then a 1x1 convolution.

    The head of PathSegDiff (Danisetty et al., DGM4MICCAI 2025) and of other "frozen features + light
    decoder" methods: it keeps the feature map's resolution and maps ``[B, in_channels, H, W]`` to
    class logits ``[B, out_channels, H, W]``.

    Args:
        in_channels: channels of the feature map.
        out_channels: number of classes (logits, no activation).
        hidden_channels: output channels of each hidden layer; ``()`` gives a linear (1x1) probe.
        kernel_size: kernel of the hidden convolutions (odd; "same" padding).
        norm: MONAI norm name for the hidden layers (``"batch"``, ``("group", {"num_groups": 8})``, ...).
        act: MONAI activation name for the hidden layers.
        dropout: dropout rate after each hidden layer.
        spatial_dims: 2 for tiles.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: Sequence[int] = (128, 64),
        kernel_size: int = 3,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        dropout: float = 0.0,
        spatial_dims: int = 2,
    ) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        for hidden in hidden_channels:
            layers.append(
                Convolution(
                    spatial_dims, channels, hidden, kernel_size=kernel_size, act=act, norm=norm,
                    dropout=dropout or None,
                )
            )
            channels = hidden
        layers.append(Convolution(spatial_dims, channels, out_channels, kernel_size=1, conv_only=True))
        super().__init__(*layers)
        self.in_channels = in_channels
        self.out_channels = out_channels
