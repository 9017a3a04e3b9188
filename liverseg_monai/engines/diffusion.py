"""The self-supervised stages of PathSegDiff as MONAI ``SupervisedTrainer`` iterations, and the ablation.

Stage 1 trains an ``AutoencoderKL`` on unlabelled tiles (L1 reconstruction + KL), stage 2 a latent
``DiffusionModelUNet`` (noise prediction through MONAI's ``LatentDiffusionInferer`` with a
``DDPMScheduler``) conditioned by cross-attention on a frozen self-supervised encoder. The loss of
each stage is a plain function (:func:`autoencoder_loss`, :func:`diffusion_loss`); the classes
:class:`AutoencoderStep` and :class:`LatentDiffusionStep` wrap them as ``iteration_update`` callables
so bundle configs keep MONAI's trainer, handlers, checkpoints and progress bar.

The feature ablation (the same head on diffusion features and on a random extractor) runs the bundle's
own stages: :mod:`tools.bench.pathsegdiff` (tooling, outside the library).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL
from monai.utils import CommonKeys

from liverseg_monai.networks.pathsegdiff import ConditionedLatentDiffusion, PathSegDiffFeatureExtractor
from liverseg_monai.networks.weights import load_module_weights  # noqa: F401 (configs call it from here too)


def load_stage_weights(
    extractor: PathSegDiffFeatureExtractor,
    autoencoder_path: str | os.PathLike,
    diffusion_path: str | os.PathLike,
) -> PathSegDiffFeatureExtractor:
    """Load the autoencoder and diffusion stage weights into a feature extractor (which stays frozen)."""
    load_module_weights(extractor.autoencoder, autoencoder_path, "train_autoencoder.json")
    load_module_weights(extractor.diffusion, diffusion_path, "train_diffusion.json")
    extractor.freeze()
    return extractor


def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL divergence of ``N(z_mu, z_sigma^2)`` from ``N(0, 1)``, summed over latent elements, batch mean."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1)
    return kl.flatten(1).sum(1).mean()


def autoencoder_loss(
    autoencoder: AutoencoderKL,
    images: torch.Tensor,
    kl_weight: float = 1e-6,
    recon_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.l1_loss,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-1 loss ``recon_loss(reconstruction, images) + kl_weight * KL``; returns ``(loss, reconstruction)``."""
    reconstruction, z_mu, z_sigma = autoencoder(images)
    return recon_loss(reconstruction.float(), images.float()) + kl_weight * kl_loss(z_mu, z_sigma), reconstruction


@torch.no_grad()
def measure_scale_factor(autoencoder: AutoencoderKL, images: torch.Tensor) -> float:
    """Rombach et al.'s latent scale: ``1 / std`` of the autoencoder latents of ``images``."""
    std = float(autoencoder.encode_stage_2_inputs(images).flatten().std())
    return 1.0 / std if std > 0 else 1.0


def diffusion_loss(
    diffusion: ConditionedLatentDiffusion,
    autoencoder: AutoencoderKL,
    inferer,
    images: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-2 loss: ``loss_fn`` (MSE) between the UNet's noise prediction and the noise added to the latent.

    ``inferer`` is a ``monai.inferers.LatentDiffusionInferer``; its ``scheduler`` draws the noising. The
    first call measures and stores ``diffusion.scale_factor`` when it is still 0 (unset; in distributed
    training the mean of the ranks' measurements); the inferer uses the stored value. The prediction
    goes through ``diffusion``'s own ``forward`` (image -> condition -> UNet), so ``diffusion`` may be
    wrapped in ``DistributedDataParallel``. Returns ``(loss, noise_prediction)``.
    """
    from liverseg_monai.engines.distributed import mean_over_ranks, unwrap

    model = unwrap(diffusion)
    autoencoder.eval()
    if float(model.scale_factor) <= 0:
        model.scale_factor.fill_(mean_over_ranks(measure_scale_factor(autoencoder, images)))
    inferer.scale_factor = float(model.scale_factor)
    with torch.no_grad():
        latent_shape = autoencoder.encode(images[:1])[0].shape[1:]
    noise = torch.randn((images.shape[0], *latent_shape), device=images.device, dtype=images.dtype)
    timesteps = torch.randint(0, inferer.scheduler.num_train_timesteps, (images.shape[0],), device=images.device)

    def denoiser(x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return diffusion(x, timesteps, images)  # the condition comes from the images inside forward

    prediction = inferer(
        inputs=images, autoencoder_model=autoencoder, diffusion_model=denoiser, noise=noise,
        timesteps=timesteps, condition=None, mode="crossattn",
    )
    return loss_fn(prediction.float(), noise.float()), prediction


def _images(engine, batchdata) -> torch.Tensor:
    if batchdata is None:
        raise ValueError("Must provide batch data for current iteration.")
    images, _ = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[:2]
    return images


class AutoencoderStep:
    """``iteration_update`` of a ``SupervisedTrainer`` training an ``AutoencoderKL`` (stage 1).

    The trainer's ``network`` is the autoencoder and its ``loss_function`` the reconstruction loss (for
    example ``torch.nn.L1Loss()``); the KL term is added with weight ``kl_weight``. The engine output is
    ``[{"image", "pred" (the reconstruction), "loss"}]`` (batch tensors in a one-item list, read by
    ``from_engine(["loss"], first=True)`` in StatsHandler / MLflow handlers).
    """

    def __init__(self, kl_weight: float = 1e-6) -> None:
        self.kl_weight = kl_weight

    def __call__(self, engine, batchdata) -> dict:
        images = _images(engine, batchdata)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        loss, reconstruction = autoencoder_loss(engine.network, images, self.kl_weight, engine.loss_function)
        loss.backward()
        engine.optimizer.step()
        # a one-item list, like a decollated MONAI output, so from_engine(["loss"], first=True) handlers work
        engine.state.output = [{CommonKeys.IMAGE: images, CommonKeys.PRED: reconstruction.detach(), CommonKeys.LOSS: loss.detach()}]
        return engine.state.output


class LatentDiffusionStep:
    """``iteration_update`` of a ``SupervisedTrainer`` training the conditioned latent UNet (stage 2).

    The trainer's ``network`` is a :class:`~liverseg_monai.networks.pathsegdiff.ConditionedLatentDiffusion`
    its ``inferer`` a ``LatentDiffusionInferer`` and its ``loss_function`` the noise-prediction loss
    (``torch.nn.MSELoss()``); ``autoencoder`` is the frozen stage-1 model.
    """

    def __init__(self, autoencoder: AutoencoderKL) -> None:
        self.autoencoder = autoencoder
        for p in autoencoder.parameters():
            p.requires_grad_(False)

    def __call__(self, engine, batchdata) -> dict:
        images = _images(engine, batchdata)
        self.autoencoder.to(images.device)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        loss, prediction = diffusion_loss(engine.network, self.autoencoder, engine.inferer, images, engine.loss_function)
        loss.backward()
        engine.optimizer.step()
        engine.state.output = [{CommonKeys.IMAGE: images, CommonKeys.PRED: prediction.detach(), CommonKeys.LOSS: loss.detach()}]
        return engine.state.output




def tiny_pathsegdiff_parts(
    latent_channels: int = 4,
    ae_channels: Sequence[int] = (16, 32),
    unet_channels: Sequence[int] = (32, 64),
    context_dim: int = 64,
    backbone: str = "resnet18",
    norm_num_groups: int = 8,
) -> tuple[AutoencoderKL, ConditionedLatentDiffusion]:
    """A small autoencoder and conditioned UNet (randomly initialised) for CPU-sized experiments."""
    import torchvision
    from monai.networks.nets import DiffusionModelUNet

    from liverseg_monai.networks.pathsegdiff import SSLConditionEncoder

    autoencoder = AutoencoderKL(
        spatial_dims=2, in_channels=3, out_channels=3, channels=tuple(ae_channels), latent_channels=latent_channels,
        num_res_blocks=1, attention_levels=(False,) * len(ae_channels), norm_num_groups=norm_num_groups,
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
    )
    unet = DiffusionModelUNet(
        spatial_dims=2, in_channels=latent_channels, out_channels=latent_channels, channels=tuple(unet_channels),
        attention_levels=(False,) * (len(unet_channels) - 1) + (True,), num_res_blocks=1,
        norm_num_groups=norm_num_groups, num_head_channels=unet_channels[-1] // 2, with_conditioning=True,
        cross_attention_dim=context_dim,
    )
    encoder = SSLConditionEncoder(getattr(torchvision.models, backbone)(weights=None), context_dim)
    return autoencoder, ConditionedLatentDiffusion(unet, encoder)
