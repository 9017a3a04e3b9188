from types import SimpleNamespace

import pytest
import torch

from liverseg_monai.engines.maskrcnn import TrainingPhases, instances_to_target, warmup_step_lr
from liverseg_monai.networks.maskrcnn import MaskRCNNInstanceNet


def test_targets_drop_tiny_instances():
    lab = torch.zeros(1, 16, 16)
    lab[0, 2:6, 2:6] = 3
    lab[0, 10, 10] = 7  # one pixel, e.g. cut by a crop
    t = instances_to_target(lab, min_pixels=4)
    assert t["boxes"].tolist() == [[2, 2, 6, 6]] and t["masks"].shape == (1, 16, 16)
    assert t["labels"].tolist() == [1]


def test_two_phases_freeze_then_train_all():
    net = MaskRCNNInstanceNet(depth=18, fpn_channels=16, representation_size=16, mask_head_channels=(8,))
    phases = TrainingPhases(net, heads_epochs=2)
    body = net.detector.backbone.body.conv1.weight
    fpn = next(net.detector.backbone.fpn.parameters())
    for epoch, trainable in [(1, False), (2, False), (3, True)]:
        phases(SimpleNamespace(state=SimpleNamespace(epoch=epoch)))
        assert body.requires_grad is trainable and fpn.requires_grad


def test_warmup_then_step_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.02)
    sched = warmup_step_lr(opt, warmup_iters=10, step_iters=100, gamma=0.1)
    lrs = []
    for _ in range(210):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.0002)
    assert lrs[10] == pytest.approx(0.02) and lrs[99] == pytest.approx(0.02)
    assert lrs[100] == pytest.approx(0.002) and lrs[200] == pytest.approx(0.0002)
