"""Loading backbone.pt (torchvision ResNet key names) into encoders: FlexibleUNet, DeepLab-style, bare ResNet."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from torch import nn

from liverseg_monai.errors import InputError
from liverseg_monai.networks.weights import (
    adapt_input_conv,
    backbone_state_dict,
    load_encoder_weights,
    load_pretrained_encoder,
    read_backbone_file,
    save_backbone,
)


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    torch.manual_seed(1)
    net = torchvision.models.resnet50(weights=None)
    net.fc = nn.Identity()
    path = tmp_path_factory.mktemp("w") / "backbone.pt"
    save_backbone(net, path)
    return path, net


def test_backbone_file_has_torchvision_names_and_no_fc(resnet50_file):
    path, net = resnet50_file
    state = torch.load(path, weights_only=True)
    reference = [k for k in torchvision.models.resnet50(weights=None).state_dict() if not k.startswith("fc.")]
    assert list(state) == reference
    assert "conv1.weight" in state and "layer1.0.conv1.weight" in state
    torch.testing.assert_close(state["layer4.2.bn3.weight"], net.layer4[2].bn3.weight.detach())


def test_flexible_unet_one_channel_encoder(resnet50_file, caplog):
    from monai.networks.nets import FlexibleUNet

    path, net = resnet50_file
    unet = FlexibleUNet(in_channels=1, out_channels=2, backbone="resnet50", pretrained=False, spatial_dims=2)
    decoder_before = {k: v.clone() for k, v in unet.state_dict().items() if not k.startswith("encoder.")}
    with caplog.at_level(logging.INFO, logger="liverseg_monai.networks.weights"):
        report = load_encoder_weights(unet, path)
    assert report.prefix == "encoder."
    assert report.complete, str(report)
    assert report.adapted_keys == ["encoder.conv1.weight"]
    # 1-channel conv1 = mean of the RGB kernels
    expected = net.conv1.weight.detach().mean(dim=1, keepdim=True)
    torch.testing.assert_close(unet.encoder.conv1.weight.detach(), expected)
    torch.testing.assert_close(unet.encoder.layer3[1].conv2.weight.detach(), net.layer3[1].conv2.weight.detach())
    torch.testing.assert_close(unet.encoder.bn1.running_var, net.bn1.running_var)
    # the decoder is untouched
    for k, v in unet.state_dict().items():
        if k in decoder_before:
            torch.testing.assert_close(v, decoder_before[k])
    assert "loaded" in caplog.text


def test_deeplab_style_backbone_prefix_and_fc_ignored(tmp_path):
    """torchvision's DeepLabV3 holds the ResNet under ``backbone.``; a user's torchvision file has ``fc.*``."""
    torch.manual_seed(2)
    full = torchvision.models.resnet50(weights=None)  # includes fc.weight / fc.bias, like a downloaded .pth
    path = tmp_path / "resnet50-user.pth"
    torch.save(full.state_dict(), path)
    deeplab = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=3)
    report = load_encoder_weights(deeplab, path, prefix="auto")
    assert report.prefix == "backbone."
    assert report.ignored_keys == ["fc.bias", "fc.weight"]
    assert not report.missing_keys and not report.unexpected_keys and not report.adapted_keys
    torch.testing.assert_close(deeplab.backbone.layer2[0].downsample[0].weight.detach(),
                               full.layer2[0].downsample[0].weight.detach())


def test_explicit_prefix_reports_missing_and_unexpected(resnet50_file, caplog):
    """A ResNet-18 target: the bottleneck keys of ResNet-50 are unexpected, conv shapes mismatch."""
    path, _ = resnet50_file
    target = nn.Module()
    target.encoder = torchvision.models.resnet18(weights=None)
    with caplog.at_level(logging.WARNING, logger="liverseg_monai.networks.weights"):
        report = load_encoder_weights(target, path, prefix="encoder.")
    assert report.prefix == "encoder."
    assert "layer1.0.conv3.weight" in report.unexpected_keys  # bottleneck-only layer
    assert any(k.startswith("layer1.0.conv1.weight:") for k in report.mismatched_keys)  # 1x1 vs 3x3 kernel
    assert "encoder.fc.weight" not in report.missing_keys  # fc is never expected from a backbone
    assert not report.complete
    assert "unexpected keys" in caplog.text
    with pytest.raises(InputError, match="exactly"):
        load_encoder_weights(target, path, prefix="encoder.", strict=True)


def test_wrapped_checkpoints_are_unwrapped(tmp_path):
    """DDP ``module.`` and DINO ``backbone.`` prefixes, under a ``teacher`` entry with a head next to it."""
    torch.manual_seed(3)
    net = torchvision.models.resnet18(weights=None)
    state = {f"module.backbone.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state["module.head.last_layer.weight"] = torch.zeros(4, 8)
    path = tmp_path / "ckpt.pt"
    torch.save({"teacher": state, "epoch": torch.tensor(3)}, path)
    assert set(read_backbone_file(path)) == {k for k in net.state_dict() if not k.startswith("fc.")}
    target = torchvision.models.resnet18(weights=None)
    report = load_encoder_weights(target, path)
    assert report.prefix == "" and report.complete
    torch.testing.assert_close(target.conv1.weight, net.conv1.weight)


def test_adapt_input_conv():
    w = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1)  # [[0,1,2],[3,4,5]]
    assert adapt_input_conv(w, 1).flatten().tolist() == [1.0, 4.0]
    six = adapt_input_conv(w, 6)
    assert six.shape == (2, 6, 1, 1)
    assert six[0].flatten().tolist() == [0.0, 0.5, 1.0, 0.0, 0.5, 1.0]
    assert adapt_input_conv(w, 3) is w


def test_backbone_state_dict_prefix():
    holder = nn.Module()
    holder.backbone = torchvision.models.resnet18(weights=None)
    holder.head = nn.Linear(512, 4)
    state = backbone_state_dict(holder, "backbone.")
    assert "conv1.weight" in state and not any(k.startswith(("fc.", "head.", "backbone.")) for k in state)


def test_bad_files(tmp_path):
    target = torchvision.models.resnet18(weights=None)
    with pytest.raises(InputError, match="does not exist"):
        load_encoder_weights(target, tmp_path / "nope.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(InputError, match=r"corrupt\.pt: not a readable torch weights file"):
        load_encoder_weights(target, bad)
    other = tmp_path / "other.pt"
    torch.save({"decoder.conv.weight": torch.zeros(1), "foo": torch.ones(2)}, other)
    with pytest.raises(InputError, match="no key matches"):
        load_encoder_weights(target, other)
    empty = tmp_path / "empty.pt"
    torch.save({}, empty)
    with pytest.raises(InputError, match="no state dict"):
        load_encoder_weights(target, empty)


def test_load_pretrained_encoder_only_with_a_file(resnet50_file):
    path, net = resnet50_file
    target = torchvision.models.resnet50(weights=None)
    before = target.conv1.weight.detach().clone()
    assert load_pretrained_encoder(target, None) is None and load_pretrained_encoder(target, "") is None
    torch.testing.assert_close(target.conv1.weight.detach(), before)
    report = load_pretrained_encoder(target, path, prefix="")
    assert report.complete, str(report)
    torch.testing.assert_close(target.conv1.weight.detach(), net.conv1.weight.detach())
