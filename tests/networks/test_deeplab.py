import pytest
import torch

from liverseg_monai.networks.blocks.aspp import ASPP
from liverseg_monai.networks.blocks.deformable_aspp import DeformableASPP
from liverseg_monai.networks.deeplab import (
    DeepLabV3Plus,
    aspp_rates,
    deeplab_v3_plus,
    encoder_channels,
    resnet_encoder,
)


def _feature_sizes(encoder, x):
    x = encoder.maxpool(encoder.relu(encoder.bn1(encoder.conv1(x))))
    low = encoder.layer1(x)
    high = encoder.layer4(encoder.layer3(encoder.layer2(low)))
    return low.shape, high.shape


@pytest.mark.parametrize("name", ["resnet10", "resnet18", "resnet50"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_encoder_output_stride(name, output_stride):
    enc = resnet_encoder(name, output_stride).eval()
    low, high = _feature_sizes(enc, torch.randn(1, 3, 64, 64))
    lo_ch, hi_ch = encoder_channels(name)
    assert low == (1, lo_ch, 16, 16)
    assert high == (1, hi_ch, 64 // output_stride, 64 // output_stride)


def test_encoder_keys_are_torchvision_resnet_keys():
    import torchvision

    net = DeepLabV3Plus(3, 7, encoder="resnet50", aspp=ASPP(2048, 16), decoder_channels=16)
    ours = {k[len("encoder."):] for k in net.state_dict() if k.startswith("encoder.")}
    reference = {k for k in torchvision.models.resnet50().state_dict() if not k.startswith("fc.")}
    assert ours == reference


@pytest.mark.parametrize("aspp_kind", ["deformable", "standard"])
def test_forward_any_size_and_backward(aspp_kind):
    torch.manual_seed(0)
    net = deeplab_v3_plus(3, 5, encoder="resnet10", aspp=aspp_kind, aspp_channels=16, decoder_channels=16)
    x = torch.randn(2, 3, 72, 40)
    y = net(x)
    assert y.shape == (2, 5, 72, 40)
    y.mean().backward()
    assert net.encoder.conv1.weight.grad is not None
    assert isinstance(net.aspp, DeformableASPP if aspp_kind == "deformable" else ASPP)


def test_passed_in_block_is_used_and_checked():
    block = ASPP(512, 24, rates=aspp_rates(8))
    net = DeepLabV3Plus(3, 3, encoder="resnet18", output_stride=8, aspp=block, decoder_channels=16)
    assert net.aspp is block and net.decoder.fuse[0][0].in_channels == 48 + 24
    with pytest.raises(ValueError, match="in_channels"):
        DeepLabV3Plus(3, 3, encoder="resnet50", aspp=ASPP(512, 8))
    with pytest.raises(ValueError, match="output_stride"):
        resnet_encoder("resnet18", 4)
    with pytest.raises(ValueError, match="unknown encoder"):
        encoder_channels("vgg16")


def test_default_block_is_deformable_and_other_input_channels():
    net = DeepLabV3Plus(1, 2, encoder="resnet10", aspp_channels=8, decoder_channels=8)
    assert isinstance(net.aspp, DeformableASPP) and net.aspp.rates == (6, 12, 18)
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_torchscript_script_matches_eager():
    torch.manual_seed(0)
    net = deeplab_v3_plus(3, 4, encoder="resnet10", aspp_channels=8, decoder_channels=8, modulated=True).eval()
    x = torch.randn(1, 3, 48, 48)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-5)


def test_dino_backbone_file_loads_into_the_encoder(tmp_path):
    """A backbone.pt with torchvision ResNet keys (no fc), as the DINO bundle writes, fills the encoder."""
    import torchvision

    from liverseg_monai.networks.weights import load_encoder_weights

    torch.manual_seed(1)
    resnet = torchvision.models.resnet18()
    torch.save({k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}, tmp_path / "backbone.pt")
    net = DeepLabV3Plus(3, 7, encoder="resnet18", output_stride=8, aspp=ASPP(512, 8), decoder_channels=8)
    report = load_encoder_weights(net, tmp_path / "backbone.pt", prefix="encoder.")
    assert report.complete, str(report)
    torch.testing.assert_close(net.encoder.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    assert net.encoder.layer4[1].conv2.dilation == (4, 4)  # dilation is structure, not weights
