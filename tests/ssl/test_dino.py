"""DINO parts against hand-computed values: loss, centring, sharpening, EMA, schedules, freezing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from liverseg_monai.ssl.dino import (
    DINOHead,
    DINOIteration,
    DINOLoss,
    MultiCropWrapper,
    clip_gradients,
    cosine_schedule,
    ema_update,
    make_teacher,
    param_groups,
    resnet_backbone,
)

LN3 = math.log(3.0)


def _xent(q, p):
    return -sum(qi * math.log(pi) for qi, pi in zip(q, p))


def _entropy(q):
    return -sum(qi * math.log(qi) for qi in q)


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_loss_by_hand_unit_temperatures():
    """K=2, batch 1, two global crops, temperatures 1: softmax([ln 3, 0]) = [3/4, 1/4]."""
    loss_fn = DINOLoss(out_dim=2, teacher_temp=1.0, warmup_teacher_temp=1.0, student_temp=1.0)
    teacher = torch.tensor([[0.0, 0.0], [LN3, 0.0]], dtype=torch.float64)
    student = torch.tensor([[0.0, 0.0], [LN3, 0.0]], dtype=torch.float64)
    q1, q2 = [0.5, 0.5], [0.75, 0.25]
    p1, p2 = [0.5, 0.5], [0.75, 0.25]
    # pairs (teacher view 1, student view 2) and (teacher view 2, student view 1); never a view with itself
    expected = (_xent(q1, p2) + _xent(q2, p1)) / 2
    loss = loss_fn(student, teacher.float().double(), epoch=0)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # collapse monitors: mean teacher entropy, and KL = cross-entropy - entropy over the same pairs
    stats = loss_fn.last_stats
    assert stats["teacher_entropy"] == pytest.approx((_entropy(q1) + _entropy(q2)) / 2, abs=1e-6)
    kl = ((_xent(q1, p2) - _entropy(q1)) + (_xent(q2, p1) - _entropy(q2))) / 2
    assert stats["teacher_student_kl"] == pytest.approx(kl, abs=1e-6)


def test_centre_update_and_centred_teacher():
    """c <- 0.9 c + 0.1 mean(T); the next call subtracts c before the softmax."""
    loss_fn = DINOLoss(out_dim=2, teacher_temp=1.0, warmup_teacher_temp=1.0, student_temp=1.0, center_momentum=0.9)
    teacher = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
    student = torch.zeros(2, 2)
    loss_fn(student, teacher)
    c = [0.1 * LN3 / 2, 0.0]
    assert loss_fn.center.flatten().tolist() == pytest.approx(c, abs=1e-7)
    loss = loss_fn(student, teacher)
    q1 = _softmax([0.0 - c[0], 0.0])
    q2 = _softmax([LN3 - c[0], 0.0])
    expected = (_xent(q1, [0.5, 0.5]) + _xent(q2, [0.5, 0.5])) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    c2 = [0.9 * c[0] + 0.1 * LN3 / 2, 0.0]
    assert loss_fn.center.flatten().tolist() == pytest.approx(c2, abs=1e-7)


def test_sharpening_and_student_temperature_with_local_crop():
    """Teacher temperature 0.5 turns [ln 3, 0] into softmax([2 ln 3, 0]) = [9/10, 1/10]; a third (local)
    student view is compared with both teacher views; student temperature 0.5 likewise."""
    loss_fn = DINOLoss(out_dim=2, teacher_temp=0.5, warmup_teacher_temp=0.5, student_temp=0.5)
    teacher = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0], [LN3 / 2, 0.0]])  # views g1, g2, local
    q1, q2 = [0.9, 0.1], [0.5, 0.5]
    s1 = s2 = [0.5, 0.5]
    s3 = [0.75, 0.25]  # softmax([ln 3 / 2 / 0.5, 0])
    expected = (_xent(q1, s2) + _xent(q1, s3) + _xent(q2, s1) + _xent(q2, s3)) / 4
    assert loss_fn(student, teacher).item() == pytest.approx(expected, abs=1e-6)


def test_teacher_temperature_warmup():
    loss_fn = DINOLoss(out_dim=4, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=4)
    assert loss_fn.teacher_temperature(0) == pytest.approx(0.04)
    assert loss_fn.teacher_temperature(3) == pytest.approx(0.07)
    assert loss_fn.teacher_temperature(1.5) == pytest.approx(0.055)
    assert loss_fn.teacher_temperature(10) == pytest.approx(0.07)


def test_loss_rejects_mismatched_outputs():
    with pytest.raises(ValueError, match="global crops"):
        DINOLoss(out_dim=2)(torch.zeros(3, 2), torch.zeros(1, 2))


def test_ema_update_exact():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    m = 0.9
    ema_update(teacher, student, m)
    s_params = dict(student.named_parameters())
    for name, p in teacher.named_parameters():
        expected = m * before[name] + (1 - m) * s_params[name].detach()
        torch.testing.assert_close(p.detach(), expected, rtol=1e-14, atol=1e-15)
        assert not p.requires_grad
    torch.testing.assert_close(teacher.state_dict()["1.running_mean"], before["1.running_mean"])
    ema_update(teacher, student, 1.0)  # momentum 1 leaves the teacher unchanged
    ema_update(teacher, student, 0.0)  # momentum 0 copies the student
    for name, p in teacher.named_parameters():
        torch.testing.assert_close(p.detach(), s_params[name].detach(), rtol=0, atol=0)


def test_cosine_schedule_endpoints():
    assert cosine_schedule(0, 100, base=1.0, final=0.1) == pytest.approx(1.0)
    assert cosine_schedule(99, 100, base=1.0, final=0.1) == pytest.approx(0.1)
    assert cosine_schedule(150, 100, base=1.0, final=0.1) == pytest.approx(0.1)
    # warm-up: linear from warmup_start to base, then the half cosine; its midpoint is the mean
    assert cosine_schedule(0, 101, 1.0, 0.0, warmup_steps=10, warmup_start=0.2) == pytest.approx(0.2)
    assert cosine_schedule(5, 101, 1.0, 0.0, warmup_steps=10, warmup_start=0.2) == pytest.approx(0.6)
    assert cosine_schedule(10, 101, 1.0, 0.0, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_schedule(55, 101, 1.0, 0.0, warmup_steps=10) == pytest.approx(0.5)
    assert cosine_schedule(100, 101, 1.0, 0.0, warmup_steps=10) == pytest.approx(0.0)


def test_iteration_schedules():
    it = DINOIteration(teacher=nn.Identity(), lr=0.01, min_lr=1e-5, warmup_epochs=2, weight_decay=0.04,
                       weight_decay_end=0.4, momentum_teacher=0.996)
    start, warm, end = it.schedules(0, 10, 5), it.schedules(20, 10, 5), it.schedules(49, 10, 5)
    assert start["lr"] == 0.0 and warm["lr"] == pytest.approx(0.01) and end["lr"] == pytest.approx(1e-5)
    assert start["weight_decay"] == pytest.approx(0.04) and end["weight_decay"] == pytest.approx(0.4)
    assert start["momentum"] == pytest.approx(0.996) and end["momentum"] == pytest.approx(1.0)


def test_head_shapes_and_normalised_last_layer():
    head = DINOHead(in_dim=16, out_dim=10, hidden_dim=8, bottleneck_dim=4)
    x = torch.randn(5, 16)
    assert head(x).shape == (5, 10)
    w = head.last_layer.weight.detach()
    torch.testing.assert_close(w.norm(dim=1), torch.ones(10), rtol=1e-5, atol=1e-5)
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert "last_layer.parametrizations.weight.original0" not in trainable  # the gain is fixed
    # logits are cosine similarities between the L2-normalised bottleneck and unit prototypes
    assert head(x).abs().max() <= 1.0 + 1e-5


def _tiny_student(out_dim=8):
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return MultiCropWrapper(backbone, DINOHead(4, out_dim, hidden_dim=8, bottleneck_dim=4))


def test_multicrop_wrapper_groups_by_size():
    torch.manual_seed(0)
    model = _tiny_student().eval()
    crops = [torch.randn(2, 3, 12, 12), torch.randn(2, 3, 12, 12), torch.randn(2, 3, 6, 6)]
    out = model(crops)
    assert out.shape == (6, 8)
    separate = torch.cat([model.head(model.backbone(c)) for c in crops])
    torch.testing.assert_close(out, separate)


def test_param_groups_exclude_bias_and_norm_from_weight_decay():
    model = _tiny_student()
    reg, no_reg = param_groups(model)
    assert no_reg["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in reg["params"]) and all(p.ndim == 1 for p in no_reg["params"])
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(reg["params"]) + len(no_reg["params"]) == n_trainable


def test_clip_gradients_per_parameter():
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([30.0, 40.0, 0.0, 0.0])  # norm 50
    q = nn.Parameter(torch.zeros(2))
    q.grad = torch.tensor([0.3, 0.4])  # norm 0.5 stays
    model = nn.Module()
    model.p, model.q = p, q
    clip_gradients(model, 5.0)
    assert p.grad.norm().item() == pytest.approx(5.0, rel=1e-5)
    assert q.grad.tolist() == pytest.approx([0.3, 0.4])


def _engine(student, teacher, epoch, iteration, epoch_length=2, max_epochs=3):
    loss = DINOLoss(out_dim=8, n_global_crops=2)
    opt = torch.optim.AdamW(param_groups(student), lr=0.1)
    state = SimpleNamespace(epoch=epoch, iteration=iteration, epoch_length=epoch_length, max_epochs=max_epochs,
                            device=torch.device("cpu"))
    return SimpleNamespace(network=student, optimizer=opt, loss_function=loss, state=state, amp=False)


def test_iteration_freezes_last_layer_in_first_epoch_and_updates_teacher():
    torch.manual_seed(0)
    student = _tiny_student()
    teacher = make_teacher(student)
    step = DINOIteration(teacher, lr=0.1, warmup_epochs=0, freeze_last_layer=1, momentum_teacher=0.5)
    batch = {"crops": [torch.randn(4, 3, 12, 12), torch.randn(4, 3, 12, 12), torch.randn(4, 3, 6, 6)]}
    last = student.head.last_layer.parametrizations.weight.original1.detach().clone()
    conv = student.backbone[0].weight.detach().clone()
    t_conv = teacher.backbone[0].weight.detach().clone()
    (out,) = step(_engine(student, teacher, epoch=1, iteration=1), batch)
    for key in ("loss", "lr", "weight_decay", "momentum", "teacher_entropy", "teacher_student_kl", "teacher_temp"):
        assert key in out
    torch.testing.assert_close(student.head.last_layer.parametrizations.weight.original1.detach(), last)
    assert not torch.equal(student.backbone[0].weight.detach(), conv)
    # teacher = m * old teacher + (1 - m) * new student, m = 0.5 at step 0
    expected = 0.5 * t_conv + 0.5 * student.backbone[0].weight.detach()
    torch.testing.assert_close(teacher.backbone[0].weight.detach(), expected)
    step(_engine(student, teacher, epoch=2, iteration=3), batch)
    assert not torch.equal(student.head.last_layer.parametrizations.weight.original1.detach(), last)


def test_resnet_backbone_embeddings():
    net = resnet_backbone("resnet18")
    assert net.embed_dim == 512
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert "fc.weight" not in net.state_dict() and "layer1.0.conv1.weight" in net.state_dict()
    with pytest.raises(ValueError, match="unknown ResNet"):
        resnet_backbone("vit_b_16")


def test_sinkhorn_knopp_balances_prototypes_and_matches_a_hand_computation():
    from liverseg_monai.ssl.dino import sinkhorn_knopp

    scores = torch.tensor([[0.2, 0.1, -0.3], [0.0, 0.4, 0.1], [0.3, -0.2, 0.2], [-0.1, 0.0, 0.5]])
    tau = 0.1
    # by hand: Q = exp(S / tau)^T normalised to total 1, then 3 x (rows -> 1/K, columns -> 1/B), times B
    q = np.exp(scores.numpy().astype(np.float64) / tau).T
    q /= q.sum()
    for _ in range(3):
        q /= q.sum(axis=1, keepdims=True) * 3
        q /= q.sum(axis=0, keepdims=True) * 4
    expected = (q * 4).T
    out = sinkhorn_knopp(scores, tau, 3)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.sum(1).numpy(), 1.0, atol=1e-6)  # each sample a distribution
    # with enough iterations every prototype receives B / K of the batch's mass
    assert float((sinkhorn_knopp(scores, tau, 50).sum(0) - 4 / 3).abs().max()) < 1e-3


def test_dino_loss_sinkhorn_centering_runs_and_rejects_unknown_modes():
    from liverseg_monai.ssl.dino import DINOLoss

    torch.manual_seed(0)
    loss = DINOLoss(16, centering="sinkhorn")
    value = loss(torch.randn(8, 16), torch.randn(4, 16))
    assert torch.isfinite(value) and value > 0
    assert "teacher_entropy" in loss.last_stats
    with pytest.raises(ValueError, match="centering"):
        DINOLoss(16, centering="median")
