import pytest
import torch
from monai.networks.nets import SegResNetVAE

from liverseg_monai.networks.segresnetvae import SegResNetVAESeg, WithVAELoss

SIZE = (16, 16, 16)


def small(**kw) -> SegResNetVAESeg:
    torch.manual_seed(0)
    return SegResNetVAESeg(SIZE, init_filters=8, vae_nz=16, **kw)


@pytest.mark.parametrize("training", [True, False])
def test_forward_returns_the_segmentation_alone(training):
    net = small(out_channels=3).train(training)
    y = net(torch.randn(2, 1, *SIZE))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, *SIZE)


def test_forward_accepts_other_sizes_at_inference():
    net = small().eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 24, 32, 8)).shape == (1, 2, 24, 32, 8)


def test_training_view_returns_vae_loss_and_trains_the_vae_branch():
    net = small()
    seg, vae_loss = WithVAELoss(net).train()(torch.randn(2, 1, *SIZE))
    assert seg.shape == (2, 2, *SIZE) and vae_loss.ndim == 0 and float(vae_loss.detach()) > 0
    vae_loss.backward()
    assert net.vae_fc1.weight.grad is not None and net.vae_fc1.weight.grad.abs().sum() > 0
    assert net.convInit.conv.weight.grad.abs().sum() > 0  # the encoder is regularised too


def test_segmentation_of_both_views_agrees():
    net = small().eval()
    x = torch.randn(1, 1, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.forward_with_vae_loss(x)[0])


def test_vae_branch_rejects_other_sizes():
    with pytest.raises(ValueError, match="VAE branch"):
        small().forward_with_vae_loss(torch.randn(1, 1, 16, 16, 32))


def test_input_image_size_must_fit_the_levels():
    with pytest.raises(ValueError, match="multiples of 16"):
        SegResNetVAESeg((24, 24, 24))


def test_state_dict_is_monai_segresnetvae():
    net = small(out_channels=2)
    ref = SegResNetVAE(input_image_size=SIZE, init_filters=8, vae_nz=16, out_channels=2)
    ref.load_state_dict(net.state_dict())  # strict: same names and shapes
    ref.eval(), net.eval()
    x = torch.randn(1, 1, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(ref(x)[0], net(x))


def test_torchscript_matches_eager():
    net = small().eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-4)
