"""The self-supervised stages as MONAI trainer iterations, and stage-weight loading."""

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.inferers import LatentDiffusionInferer
from monai.networks.schedulers import DDPMScheduler

from liverseg_monai.engines.diffusion import (
    AutoencoderStep,
    LatentDiffusionStep,
    kl_loss,
    load_stage_weights,
    measure_scale_factor,
    tiny_pathsegdiff_parts,
)
from liverseg_monai.networks.pathsegdiff import PathSegDiffFeatureExtractor

SIZES = {"ae_channels": (8, 16), "unet_channels": (16, 32), "context_dim": 16}


def smooth_tiles(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def test_kl_loss():
    assert float(kl_loss(torch.zeros(2, 4, 3, 3), torch.ones(2, 4, 3, 3))) == pytest.approx(0.0, abs=1e-6)
    # KL(N(1, 1) || N(0, 1)) = 0.5 per element, summed over 36 elements
    assert float(kl_loss(torch.ones(2, 4, 3, 3), torch.ones(2, 4, 3, 3))) == pytest.approx(18.0)


def test_autoencoder_step_trains_in_a_supervised_trainer():
    torch.manual_seed(0)
    ae, _ = tiny_pathsegdiff_parts(**SIZES)
    data = [{"image": smooth_tiles()}] * 4
    losses = []
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=6, train_data_loader=data, network=ae,
        optimizer=torch.optim.Adam(ae.parameters(), lr=3e-3), loss_function=torch.nn.L1Loss(),
        iteration_update=AutoencoderStep(kl_weight=1e-6),
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    assert set(trainer.state.output[0]) == {"image", "pred", "loss"}
    assert trainer.state.output[0]["pred"].shape == (4, 3, 16, 16)
    assert losses[-1] < 0.6 * losses[0]


def test_latent_diffusion_step_trains_the_unet_and_projection_only():
    torch.manual_seed(0)
    ae, ldm = tiny_pathsegdiff_parts(**SIZES)
    images = smooth_tiles()
    before = {k: v.clone() for k, v in ldm.state_dict().items()}
    ae_before = {k: v.clone() for k, v in ae.state_dict().items()}
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=2, train_data_loader=[{"image": images}] * 2, network=ldm,
        optimizer=torch.optim.Adam([p for p in ldm.parameters() if p.requires_grad], lr=1e-3),
        loss_function=torch.nn.MSELoss(), inferer=LatentDiffusionInferer(DDPMScheduler(num_train_timesteps=1000)),
        iteration_update=LatentDiffusionStep(ae),
    )
    trainer.run()
    assert torch.isfinite(trainer.state.output[0]["loss"])
    assert float(ldm.scale_factor) == pytest.approx(measure_scale_factor(ae, images), rel=0.2)
    after = ldm.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert any(k.startswith("unet.") for k in changed)
    assert any(k.startswith("condition_encoder.projection.") for k in changed)
    assert not any(k.startswith("condition_encoder.backbone.") for k in changed)  # frozen SSL encoder
    assert all(torch.equal(ae.state_dict()[k], v) for k, v in ae_before.items())  # frozen first stage


def test_stage_weights_round_trip(tmp_path):
    torch.manual_seed(1)
    ae, ldm = tiny_pathsegdiff_parts(**SIZES)
    ldm.scale_factor.fill_(0.7)
    torch.save(ae.state_dict(), tmp_path / "autoencoder.pt")
    torch.save(ldm.state_dict(), tmp_path / "diffusion.pt")
    x = torch.rand(1, 3, 16, 16)
    expected = PathSegDiffFeatureExtractor(ae, ldm)(x)
    torch.manual_seed(2)
    fresh = PathSegDiffFeatureExtractor(*tiny_pathsegdiff_parts(**SIZES))
    assert not torch.allclose(fresh(x), expected)
    load_stage_weights(fresh, tmp_path / "autoencoder.pt", tmp_path / "diffusion.pt")
    torch.testing.assert_close(fresh(x), expected)
    assert not any(p.requires_grad for p in fresh.parameters())
