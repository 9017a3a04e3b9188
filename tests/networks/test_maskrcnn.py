import pytest
import torch

from liverseg_monai.engines.maskrcnn import instances_to_target
from liverseg_monai.networks.maskrcnn import (
    LOSS_NAMES,
    MaskRCNNInstanceNet,
    detections_to_maps,
    maskrcnn_resnet_fpn,
    resnet_fpn_backbone,
)

SMALL = dict(depth=18, fpn_channels=32, representation_size=64, mask_head_channels=(16,),
             rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=50)


def _target(h=64, w=80):
    lab = torch.zeros(1, h, w)
    lab[0, 10:25, 10:30] = 1
    lab[0, 40:60, 50:70] = 2
    return lab


@pytest.mark.parametrize("depth", [18, 34])
def test_backbone_depths(depth):
    fpn = resnet_fpn_backbone(depth, fpn_channels=64)
    feats = fpn(torch.rand(1, 3, 64, 64))
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    assert feats["0"].shape == (1, 64, 16, 16)


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        resnet_fpn_backbone(20)
    with pytest.raises(ValueError, match="norm"):
        resnet_fpn_backbone(18, norm="layer")


def test_default_is_resnet50_two_classes():
    model = maskrcnn_resnet_fpn()
    assert model.backbone.body.layer4[0].conv3.out_channels == 2048  # ResNet-50 bottleneck
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2


def test_inference_shape_and_training_losses():
    torch.manual_seed(0)
    net = MaskRCNNInstanceNet(score_threshold=0.0, **SMALL).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 80))  # not a multiple of 32: padded inside, cropped back
    assert out.shape == (2, 2, 64, 80) and out.dtype == torch.float32
    assert float(out[:, 1].max()) <= 1.0
    net.train()
    target = instances_to_target(_target())
    assert target["boxes"].tolist() == [[10, 10, 30, 25], [50, 40, 70, 60]]
    losses = net(torch.rand(1, 3, 64, 80), [target])
    assert losses.shape == (len(LOSS_NAMES),) and torch.isfinite(losses).all()
    losses.sum().backward()
    assert net.detector.backbone.body.conv1.weight.grad is not None


def test_empty_target_is_allowed():
    net = MaskRCNNInstanceNet(**SMALL).train()
    target = instances_to_target(torch.zeros(1, 64, 64))
    assert target["boxes"].shape == (0, 4)
    assert torch.isfinite(net(torch.rand(1, 3, 64, 64), [target])).all()


def test_paint_order_and_threshold():
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, 0, :4] = 1.0
    masks[1, 0, 2:6] = 1.0  # overlaps 0 on rows 2-3
    masks[2, 0, 6:] = 1.0
    det = [{"scores": torch.tensor([0.6, 0.9, 0.2]), "masks": masks}]
    out = detections_to_maps(det, 8, 8, score_threshold=0.5)
    assert out[0, 0, 3, 0] == 1  # the 0.9 detection (rank 1) wins the overlap
    assert out[0, 0, 0, 0] == 2 and out[0, 0, 7, 0] == 0  # the 0.2 detection is below threshold
    assert out[0, 1, 0, 0] == pytest.approx(0.6)


def test_torchscript_matches_eager():
    torch.manual_seed(0)
    net = MaskRCNNInstanceNet(score_threshold=0.0, **SMALL).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
