"""DeepLabV3+ with a ResNet encoder and a pluggable ASPP block (standard or deformable).

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation",
ECCV 2018 (arXiv:1802.02611). The liver H&E variant passes a
:class:`~liverseg_monai.networks.blocks.deformable_aspp.DeformableASPP` as ``aspp``; the vanilla
baseline passes a :class:`~liverseg_monai.networks.blocks.aspp.ASPP`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from liverseg_monai.networks.blocks.aspp import ASPP
from liverseg_monai.networks.blocks.deeplab_decoder import DeepLabV3PlusDecoder
from liverseg_monai.networks.blocks.deformable_aspp import DeformableASPP

# encoder name -> (layer1 channels, layer4 channels)
ENCODER_CHANNELS: dict[str, tuple[int, int]] = {
    "resnet10": (64, 512),  # ResNet-18 with one block per stage: for CPU tests and quick ablations
    "resnet18": (64, 512),
    "resnet34": (64, 512),
    "resnet50": (256, 2048),
    "resnet101": (256, 2048),
}
_BOTTLENECK = {"resnet50", "resnet101"}


def encoder_channels(encoder: str) -> tuple[int, int]:
    """``(low_level_channels, high_level_channels)`` of a ResNet encoder (``layer1``, ``layer4``)."""
    if encoder not in ENCODER_CHANNELS:
        raise ValueError(f"unknown encoder '{encoder}'; choose one of {', '.join(ENCODER_CHANNELS)}")
    return ENCODER_CHANNELS[encoder]


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """The paper's atrous rates for an output stride: (6, 12, 18) at 16, (12, 24, 36) at 8."""
    return {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}[int(output_stride)]


def _dilation_plan(output_stride: int) -> list[bool]:
    plans = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
    if output_stride not in plans:
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    return plans[output_stride]


def _dilate_basic_blocks(net: torchvision.models.ResNet, plan: Sequence[bool]) -> None:
    """Replace strides by dilation in ``layer2..4`` of a BasicBlock ResNet (torchvision refuses
    ``replace_stride_with_dilation`` there); same rule as torchvision uses for Bottleneck."""
    dilation = 1
    for layer, replace in zip((net.layer2, net.layer3, net.layer4), plan):
        if not replace:
            continue
        previous, dilation = dilation, dilation * 2
        for i, block in enumerate(layer):
            for name in ("conv1", "conv2"):
                conv = getattr(block, name)
                d = previous if (i == 0 and name == "conv1") else dilation
                conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
            block.stride = 1


def resnet_encoder(name: str = "resnet50", output_stride: int = 16, in_channels: int = 3) -> torchvision.models.ResNet:
    """A randomly initialised torchvision ResNet with strides replaced by dilation for ``output_stride``.

    ``fc`` and ``avgpool`` are :class:`torch.nn.Identity`, so the state-dict keys are exactly the
    torchvision ResNet keys without ``fc`` (what a DINO ``backbone.pt`` holds).
    """
    encoder_channels(name)
    plan = _dilation_plan(output_stride)
    if name in _BOTTLENECK:
        net = getattr(torchvision.models, name)(weights=None, replace_stride_with_dilation=plan)
    else:
        if name == "resnet10":
            net = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
        else:
            net = getattr(torchvision.models, name)(weights=None)
        _dilate_basic_blocks(net, plan)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    net.avgpool = nn.Identity()
    return net


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (Chen et al. 2018): ResNet encoder -> ASPP on ``layer4`` -> decoder fusing ``layer1``.

    The context block is passed in (composition): give a
    :class:`~liverseg_monai.networks.blocks.deformable_aspp.DeformableASPP` (the liver H&E model) or a
    standard :class:`~liverseg_monai.networks.blocks.aspp.ASPP` (vanilla DeepLabV3+); its
    ``in_channels`` must be the encoder's ``layer4`` channels (:func:`encoder_channels`).

    Args:
        in_channels: image channels (3 for RGB H&E).
        out_channels: number of classes; the output holds logits.
        encoder: ``resnet50`` (the paper), ``resnet101``, ``resnet34``, ``resnet18`` or ``resnet10`` (one
            BasicBlock per stage, for CPU tests); a torchvision
            ResNet held as ``self.encoder`` (keys ``encoder.conv1.weight``, ``encoder.layer1...``), so a
            DINO ``backbone.pt`` loads with
            :func:`liverseg_monai.networks.weights.load_encoder_weights` (prefix ``encoder.``).
        output_stride: 16 (paper default) or 8: ``layer4`` (and for 8 also ``layer3``) use dilation.
        aspp: the context block; ``None`` builds a ``DeformableASPP`` with ``aspp_channels`` channels
            and the rates for ``output_stride`` (:func:`aspp_rates`).
        aspp_channels: ASPP output channels when ``aspp`` is ``None``.
        decoder_channels: channels of the decoder's fusion convolutions.
        low_level_out: channels the ``layer1`` features are reduced to in the decoder.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` for any ``H, W >= 32``; the logits are
    computed at ``H/4`` and bilinearly upsampled.

    Example::

        >>> from liverseg_monai.networks.blocks.aspp import ASPP
        >>> net = DeepLabV3Plus(3, 7, encoder="resnet18", aspp=ASPP(512, 64), decoder_channels=64)
        >>> net(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 7, 64, 64])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 7,
        encoder: str = "resnet50",
        output_stride: int = 16,
        aspp: nn.Module | None = None,
        aspp_channels: int = 256,
        decoder_channels: int = 256,
        low_level_out: int = 48,
    ):
        super().__init__()
        low_ch, high_ch = encoder_channels(encoder)
        self.encoder = resnet_encoder(encoder, output_stride, in_channels)
        if aspp is None:
            aspp = DeformableASPP(high_ch, aspp_channels, aspp_rates(output_stride))
        context_ch = int(getattr(aspp, "out_channels", aspp_channels))
        aspp_in = getattr(aspp, "in_channels", high_ch)
        if aspp_in != high_ch:
            raise ValueError(f"aspp.in_channels={aspp_in} but encoder '{encoder}' gives {high_ch} channels")
        self.aspp = aspp
        self.decoder = DeepLabV3PlusDecoder(low_ch, context_ch, out_channels, low_level_out, decoder_channels)
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        e = self.encoder
        x = e.maxpool(e.relu(e.bn1(e.conv1(x))))
        low = e.layer1(x)
        high = e.layer4(e.layer3(e.layer2(low)))
        logits = self.decoder(low, self.aspp(high))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def deeplab_v3_plus(
    in_channels: int = 3,
    out_channels: int = 7,
    encoder: str = "resnet50",
    output_stride: int = 16,
    aspp: str = "deformable",
    aspp_channels: int = 256,
    decoder_channels: int = 256,
    modulated: bool = False,
) -> DeepLabV3Plus:
    """Build DeepLabV3+ with ``aspp="deformable"`` (the liver H&E model) or ``"standard"`` (vanilla).

    A convenience for code (the ablation); bundle configs compose the blocks directly.
    """
    high = encoder_channels(encoder)[1]
    rates = aspp_rates(output_stride)
    if aspp == "deformable":
        block: nn.Module = DeformableASPP(high, aspp_channels, rates, modulated=modulated)
    elif aspp == "standard":
        block = ASPP(high, aspp_channels, rates)
    else:
        raise ValueError(f"aspp must be 'deformable' or 'standard', got {aspp!r}")
    return DeepLabV3Plus(in_channels, out_channels, encoder, output_stride, block, aspp_channels, decoder_channels)
