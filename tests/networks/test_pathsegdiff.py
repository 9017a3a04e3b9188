"""PathSegDiff network parts: decoder features, frozen extractor, condition encoder, segmenter, tracing."""

import pytest
import torch
import torchvision
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler

from liverseg_monai.networks.blocks.seg_head import ConvSegmentationHead
from liverseg_monai.networks.pathsegdiff import (
    ConditionedLatentDiffusion,
    PathSegDiffFeatureExtractor,
    PathSegDiffSegmenter,
    SSLConditionEncoder,
    SSLFeatureExtractor,
    unet_decoder_features,
)


def parts(seed=0, unet_channels=(16, 32), context_dim=32):
    torch.manual_seed(seed)
    ae = AutoencoderKL(spatial_dims=2, in_channels=3, out_channels=3, channels=(8, 16), latent_channels=4,
                       num_res_blocks=1, attention_levels=(False, False), norm_num_groups=8,
                       with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    unet = DiffusionModelUNet(spatial_dims=2, in_channels=4, out_channels=4, channels=unet_channels,
                              attention_levels=(False,) + (True,) * (len(unet_channels) - 1), num_res_blocks=1,
                              norm_num_groups=8, num_head_channels=16, with_conditioning=True,
                              cross_attention_dim=context_dim)
    cond = SSLConditionEncoder(torchvision.models.resnet18(weights=None), context_dim)
    return ae, ConditionedLatentDiffusion(unet, cond)


def test_decoder_features_reproduce_the_unet_forward():
    _, ldm = parts(unet_channels=(16, 32, 32))
    ldm.eval()
    z, t = torch.randn(2, 4, 16, 16), torch.tensor([3, 700])
    ctx = torch.randn(2, 1, 32)
    feats = unet_decoder_features(ldm.unet, z, t, ctx)
    assert [f.shape[1:] for f in feats] == [(32, 8, 8), (32, 16, 16), (16, 16, 16)]
    with torch.no_grad():
        torch.testing.assert_close(ldm.unet.out(feats[-1]), ldm.unet(z, t, context=ctx))


@pytest.mark.parametrize("size", [(32, 32), (36, 44)])
def test_extractor_shape_determinism_and_freezing(size):
    ae, ldm = parts()
    ex = PathSegDiffFeatureExtractor(ae, ldm, timestep=50)
    assert ex.out_channels == 32 + 16 and ex.size_divisor == 4
    x = torch.rand(2, 3, *size)
    f1, f2 = ex(x), ex(x)
    assert f1.shape == (2, 48, *size)
    torch.testing.assert_close(f1, f2)  # fixed noise pattern: deterministic features
    assert not any(p.requires_grad for p in ex.parameters())
    ex.train()
    assert not ex.training and not ldm.condition_encoder.backbone.training
    # a batch item's features do not depend on the other items
    torch.testing.assert_close(ex(x[:1]), f1[:1], rtol=1e-4, atol=1e-5)


def test_levels_timestep_and_conditioning_change_the_features():
    ae, ldm = parts()
    x = torch.rand(1, 3, 32, 32)
    coarse = PathSegDiffFeatureExtractor(ae, ldm, levels=[0])
    assert coarse.out_channels == 32 and coarse(x).shape == (1, 32, 32, 32)
    with pytest.raises(ValueError, match="levels"):
        PathSegDiffFeatureExtractor(ae, ldm, levels=[2])
    with pytest.raises(ValueError, match="timestep"):
        PathSegDiffFeatureExtractor(ae, ldm, timestep=1000)
    a = PathSegDiffFeatureExtractor(ae, ldm, timestep=10)(x)
    b = PathSegDiffFeatureExtractor(ae, ldm, timestep=900)(x)
    assert not torch.allclose(a, b)
    # the self-supervised embedding reaches the features through cross-attention (whose output
    # projection MONAI initialises to zero, so give it weights first)
    with torch.no_grad():
        for name, p in ldm.unet.named_parameters():
            if "proj_out" in name:
                p.normal_(0, 0.2)
    a = PathSegDiffFeatureExtractor(ae, ldm, timestep=10)(x)
    with torch.no_grad():
        ldm.condition_encoder.projection.weight.mul_(5.0)
    c = PathSegDiffFeatureExtractor(ae, ldm, timestep=10)(x)
    assert not torch.allclose(a, c)


def test_noising_follows_the_ddpm_schedule():
    ae, ldm = parts()
    sched = DDPMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195)
    ex = PathSegDiffFeatureExtractor(ae, ldm, timestep=300, scheduler=sched)
    abar = float(sched.alphas_cumprod[300])
    assert ex.signal_coef == pytest.approx(abar**0.5) and ex.noise_coef == pytest.approx((1 - abar) ** 0.5)
    z0 = torch.randn(1, 4, 8, 8)
    noise = ex._noise_like(z0)
    expected = sched.add_noise(z0, noise, torch.tensor([300]))
    torch.testing.assert_close(ex.signal_coef * z0 + ex.noise_coef * noise, expected, rtol=1e-5, atol=1e-5)
    # larger latents tile the fixed pattern instead of failing
    assert ex._noise_like(torch.zeros(2, 4, 70, 40)).shape == (2, 4, 70, 40)


def test_scale_factor_buffer_is_used_and_saved():
    ae, ldm = parts()
    ex = PathSegDiffFeatureExtractor(ae, ldm)
    assert float(ex.latent_scale()) == 1.0  # unset (0) -> 1
    ldm.scale_factor.fill_(0.5)
    assert float(ex.latent_scale()) == 0.5
    assert "scale_factor" in ldm.state_dict()
    assert float(PathSegDiffFeatureExtractor(ae, ldm, scale_factor=2.0).latent_scale()) == 2.0


def test_condition_encoder_freezes_the_backbone_only():
    enc = SSLConditionEncoder(torchvision.models.resnet18(weights=None), context_dim=24)
    ctx = enc(torch.rand(3, 3, 32, 32))
    assert ctx.shape == (3, 1, 24)
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    assert all(p.requires_grad for p in enc.projection.parameters())
    enc.train()
    assert enc.training and not enc.backbone.training  # BatchNorm statistics stay fixed


def test_segmenter_trains_the_head_only():
    ae, ldm = parts()
    ex = PathSegDiffFeatureExtractor(ae, ldm)
    net = PathSegDiffSegmenter(ex, ConvSegmentationHead(ex.out_channels, 5, (16,)))
    net.train()
    y = net(torch.rand(2, 3, 32, 32))
    assert y.shape == (2, 5, 32, 32)
    y.mean().backward()
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    assert all(p.grad is not None for n, p in net.named_parameters() if n.startswith("head."))


def test_traced_segmenter_matches_eager(tmp_path):
    ae, ldm = parts()
    ex = PathSegDiffFeatureExtractor(ae, ldm)
    net = PathSegDiffSegmenter(ex, ConvSegmentationHead(ex.out_channels, 3, (8,))).eval()
    x = torch.rand(1, 3, 32, 32)
    traced = torch.jit.trace(net, x, check_trace=False)
    traced.save(str(tmp_path / "m.ts"))
    loaded = torch.jit.load(str(tmp_path / "m.ts"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=1e-4, atol=1e-4)


def test_linear_probe_head():
    head = ConvSegmentationHead(12, 4, hidden_channels=())
    assert head(torch.rand(1, 12, 8, 8)).shape == (1, 4, 8, 8)
    assert sum(p.numel() for p in head.parameters()) == 12 * 4 + 4


@pytest.mark.parametrize("n_down", [1, 2])
def test_aligned_upsample_puts_an_autoencoder_edge_back_in_place(n_down):
    """A step edge through MONAI's AutoencoderKL downsampling (asymmetric pad + stride-2 3x3, uniform
    weights so the blur is symmetric about the edge) comes back at the edge, within a quarter pixel;
    ``F.interpolate`` (what the extractor used before) puts it (2**n - 1) / 2 pixels off, which shifted
    each UNet level by a different amount and left a band of wrong labels along every class border."""
    from monai.networks.nets.autoencoderkl import AEKLDownsample

    from liverseg_monai.networks.pathsegdiff import aligned_upsample

    down = AEKLDownsample(spatial_dims=2, in_channels=1)
    with torch.no_grad():
        down.conv.conv.weight.fill_(1.0 / 9)
        down.conv.conv.bias.zero_()
    x = torch.zeros(1, 1, 64, 64)
    x[..., 29:] = 1.0  # the edge lies between columns 28 and 29: at x = 28.5
    f = x
    with torch.no_grad():
        for _ in range(n_down):
            f = down(f)
    stride = 2**n_down

    def crossing(row: torch.Tensor) -> float:
        j = int(torch.nonzero(row >= 0.5)[0])
        return j - 1 + float((0.5 - row[j - 1]) / (row[j] - row[j - 1]))

    aligned = aligned_upsample(f, (64, 64), stride, stride - 1)[0, 0, 32]
    plain = torch.nn.functional.interpolate(f, size=(64, 64), mode="bilinear", align_corners=False)[0, 0, 32]
    assert abs(crossing(aligned) - 28.5) <= 0.25
    assert crossing(plain) == pytest.approx(28.5 - (stride - 1) / 2, abs=0.25)


def test_extractor_offsets_follow_the_architecture():
    ae, ldm = parts(unet_channels=(16, 32, 32))
    ex = PathSegDiffFeatureExtractor(ae, ldm)
    assert ex.latent_stride == 2 and ex.latent_offset == 1.0
    assert ex.level_strides == (4, 2, 2)  # decoder block i at 1 / 2**max(K - 1 - i, 0) of the latent grid


def test_traced_segmenter_runs_at_other_sizes(tmp_path):
    ae, ldm = parts()
    ex = PathSegDiffFeatureExtractor(ae, ldm)
    net = PathSegDiffSegmenter(ex, ConvSegmentationHead(ex.out_channels, 3, (8,))).eval()
    traced = torch.jit.trace(net, torch.rand(1, 3, 32, 32), check_trace=False)
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), net(x), rtol=1e-4, atol=1e-4)


def test_segmenter_scripts_through_a_traced_extractor(tmp_path):
    """``torch.jit.script`` (what ``monai.bundle ckpt_export`` and model-zoo's checker call) works: the
    extractor is traced, the head scripted; the result equals eager at the trace size and at others."""
    ae, ldm = parts()
    ex = PathSegDiffFeatureExtractor(ae, ldm)
    net = PathSegDiffSegmenter(ex, ConvSegmentationHead(ex.out_channels, 3, (8,))).eval()
    scripted = torch.jit.script(net)
    scripted.save(str(tmp_path / "m.ts"))
    loaded = torch.jit.load(str(tmp_path / "m.ts"))
    for shape in ((1, 3, 32, 32), (2, 3, 36, 44)):  # 36 x 44: not a multiple of the size divisor
        x = torch.rand(*shape)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x), rtol=1e-4, atol=1e-4)
    assert isinstance(net.extractor, PathSegDiffFeatureExtractor)  # scripting left the module as it was


@pytest.mark.parametrize("size", [(64, 64), (50, 70)])
def test_ssl_feature_extractor_samples_each_stage_at_its_pixel_centres(size):
    """Pixel ``s * i`` of the output is stage pixel ``i`` exactly (ResNet centres: offset 0), at any size."""
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    backbone = torchvision.models.resnet18(weights=None)
    ex = SSLFeatureExtractor(backbone, layers=("layer1", "layer2"))
    assert ex.out_channels == 64 + 128 and ex.size_divisor == 8 and ex.level_strides == (4, 8)
    x = torch.rand(2, 3, *size)
    out = ex(x)
    assert out.shape == (2, 192, *size)
    pad_h, pad_w = -size[0] % 8, -size[1] % 8
    padded = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    reference = create_feature_extractor(backbone.eval(), {"layer1": "a", "layer2": "b"})(
        (padded - ex.mean) / ex.std)
    torch.testing.assert_close(out[:, :64, ::4, ::4], reference["a"][..., : -(-size[0] // 4), : -(-size[1] // 4)],
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[:, 64:, ::8, ::8], reference["b"][..., : -(-size[0] // 8), : -(-size[1] // 8)],
                               rtol=1e-4, atol=1e-5)
    # frozen: no gradients, eval mode kept (BatchNorm statistics fixed) when an engine calls train()
    assert not any(p.requires_grad for p in ex.parameters())
    ex.train()
    assert not ex.training and not ex.features.training


def test_ssl_feature_extractor_loads_a_backbone_file_and_scripts_in_the_segmenter(tmp_path):
    from liverseg_monai.networks.weights import load_pretrained_encoder

    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "backbone.pt")
    net = PathSegDiffSegmenter(SSLFeatureExtractor(torchvision.models.resnet18(weights=None), layers=("layer1",)),
                               ConvSegmentationHead(64, 3, hidden_channels=(8,)))
    report = load_pretrained_encoder(net, tmp_path / "backbone.pt")
    assert report.prefix == "extractor.features." and "extractor.features.layer1.0.conv1.weight" in report.loaded_keys
    torch.testing.assert_close(net.extractor.features.conv1.weight, source.conv1.weight)
    with pytest.raises(ValueError, match="ResNet stages"):
        SSLFeatureExtractor(torchvision.models.resnet18(weights=None), layers=("fc",))
    net.eval()
    x = torch.rand(1, 3, 40, 24)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-5)
