import pytest
import torch
from torch import nn

from liverseg_monai.networks.blocks.aspp import ASPP, AtrousConvBranch
from liverseg_monai.networks.blocks.deformable_aspp import DeformableASPP, DeformableConvBranch


@pytest.mark.parametrize("modulated", [False, True])
def test_branch_starts_as_the_dilated_convolution(modulated):
    """Zero-initialised offsets: the deformable branch equals a standard dilated conv with its weights."""
    torch.manual_seed(0)
    branch = DeformableConvBranch(8, 6, rate=2, modulated=modulated).eval()
    conv = nn.Conv2d(8, 6, 3, padding=2, dilation=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(branch.conv.weight * (0.5 if modulated else 1.0))  # DCNv2 mask starts at 0.5
    x = torch.randn(2, 8, 9, 11)
    expected = branch.act(branch.norm(conv(x)))
    torch.testing.assert_close(branch(x), expected, rtol=1e-4, atol=1e-5)
    assert branch.conv.dilation == (2, 2)
    assert torch.count_nonzero(branch.offset.weight) == 0


def test_offsets_change_the_output_and_learn():
    torch.manual_seed(0)
    branch = DeformableConvBranch(4, 4, rate=1).eval()
    x = torch.randn(1, 4, 8, 8)
    before = branch(x)
    with torch.no_grad():
        branch.offset.bias.fill_(0.7)
    assert not torch.allclose(branch(x), before)
    branch.train()
    with torch.no_grad():
        branch.offset.bias.zero_()
    branch(torch.randn(2, 4, 8, 8)).square().mean().backward()
    assert branch.offset.weight.grad is not None and branch.offset.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("modulated", [False, True])
def test_deformable_aspp_shapes_and_structure(modulated):
    aspp = DeformableASPP(16, 8, rates=(1, 2, 3), modulated=modulated)
    assert len(aspp.branches) == 5  # 1x1 + 3 atrous + image pooling
    assert all(isinstance(b, DeformableConvBranch) for b in aspp.branches[1:4])
    assert [b.conv.dilation[0] for b in aspp.branches[1:4]] == [1, 2, 3]
    assert aspp.branches[1].offset.out_channels == (27 if modulated else 18)
    assert aspp(torch.randn(1, 16, 5, 7)).shape == (1, 8, 5, 7)  # batch of 1 trains (no BN after pooling)


def test_standard_aspp_uses_atrous_convs():
    aspp = ASPP(16, 8, rates=(6, 12))
    assert all(isinstance(b, AtrousConvBranch) for b in aspp.branches[1:3])
    assert aspp.branches[2][0].dilation == (12, 12)
    assert aspp(torch.randn(2, 16, 4, 4)).shape == (2, 8, 4, 4)


def test_deformable_aspp_scripts():
    aspp = DeformableASPP(8, 4, rates=(1, 2), modulated=True).eval()
    x = torch.randn(1, 8, 6, 6)
    scripted = torch.jit.script(aspp)
    torch.testing.assert_close(scripted(x), aspp(x))
