"""The self-supervised stages of PathSegDiff as MONAI ``SupervisedTrainer`` iterations, and the ablation.

Stage 1 trains an ``AutoencoderKL`` on unlabelled tiles (L1 reconstruction + KL), stage 2 a latent
``DiffusionModelUNet`` (noise prediction through MONAI's ``LatentDiffusionInferer`` with a
``DDPMScheduler``) conditioned by cross-attention on a frozen self-supervised encoder. The loss of
each stage is a plain function (:func:`autoencoder_loss`, :func:`diffusion_loss`); the classes
:class:`AutoencoderStep` and :class:`LatentDiffusionStep` wrap them as ``iteration_update`` callables
so bundle configs keep MONAI's trainer, handlers, checkpoints and progress bar.

:func:`run_feature_ablation` compares the same head on diffusion features and on a randomly
initialised encoder with equal labels (``python -m liverseg_monai.engines.diffusion --out DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL
from monai.utils import CommonKeys
from torch import nn

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


# ---------------------------------------------------------------------------------------------------
# Ablation: diffusion features vs a randomly initialised encoder, same head, same labels
# ---------------------------------------------------------------------------------------------------


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


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _augment(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    k = int(rng.integers(4))
    images = torch.rot90(images, k, dims=(-2, -1))
    return images.flip(-1) if rng.random() < 0.5 else images


def train_self_supervised(
    autoencoder: AutoencoderKL,
    diffusion: ConditionedLatentDiffusion,
    images: torch.Tensor,
    ae_epochs: int,
    ldm_epochs: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Both self-supervised stages in a plain loop (the ablation's budget); returns the loss curves."""
    from monai.inferers import LatentDiffusionInferer
    from monai.networks.schedulers import DDPMScheduler

    rng = np.random.default_rng(seed)
    curves: dict[str, list[float]] = {"autoencoder": [], "diffusion": []}
    opt = torch.optim.Adam(autoencoder.parameters(), lr=lr)
    for epoch in range(ae_epochs):
        autoencoder.train()
        losses = []
        for idx in _batches(len(images), batch_size, rng):
            opt.zero_grad(set_to_none=True)
            loss, _ = autoencoder_loss(autoencoder, _augment(images[idx], rng))
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        curves["autoencoder"].append(float(np.mean(losses)))
        log(f"autoencoder epoch {epoch + 1}/{ae_epochs} loss {curves['autoencoder'][-1]:.4f}")
    for p in autoencoder.parameters():
        p.requires_grad_(False)
    inferer = LatentDiffusionInferer(DDPMScheduler(num_train_timesteps=1000))
    params = [p for p in diffusion.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    for epoch in range(ldm_epochs):
        diffusion.train()
        losses = []
        for idx in _batches(len(images), batch_size, rng):
            opt.zero_grad(set_to_none=True)
            loss, _ = diffusion_loss(diffusion, autoencoder, inferer, _augment(images[idx], rng))
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        curves["diffusion"].append(float(np.mean(losses)))
        log(f"diffusion epoch {epoch + 1}/{ldm_epochs} loss {curves['diffusion'][-1]:.4f}")
    return curves


@torch.no_grad()
def extract_features(extractor: nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Run a frozen extractor over ``images`` in batches (features stay on the CPU)."""
    extractor.eval()
    return torch.cat([extractor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def fit_head(
    head: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
) -> list[float]:
    """Train a segmentation head on precomputed frozen features with Dice + cross-entropy."""
    from monai.losses import DiceCELoss

    rng = np.random.default_rng(seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    curve = []
    for _ in range(epochs):
        head.train()
        losses = []
        for idx in _batches(len(features), batch_size, rng):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(head(features[idx]), labels[idx])
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        curve.append(float(np.mean(losses)))
    return curve


@torch.no_grad()
def score_head(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict:
    """Dataset-level pixel accuracy, mean Dice and mIoU (confusion matrix over all pixels)."""
    from liverseg_monai.metrics.segmentation import confusion_matrix, segmentation_summary

    head.eval()
    pred = torch.cat([head(features[i : i + 16]).argmax(1) for i in range(0, len(features), 16)])
    cm = confusion_matrix(pred.numpy(), labels[:, 0].numpy(), num_classes=len(class_names))
    summary = segmentation_summary(cm, class_names)
    return {k: summary[k] for k in ("pixel_accuracy", "mean_dice", "mean_iou")} | {"per_class": summary["per_class"]}


def histo_tiles(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` synthetic H&E tiles ``[n, 3, size, size]`` in [0, 1], labels ``[n, 1, size, size]`` and class names."""
    from liverseg_monai.data.synth.histo import HISTO_CLASSES, make_histo_tile

    rgb, lab = zip(*(make_histo_tile(np.random.default_rng(seed * 100003 + i), size) for i in range(n)))
    images = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.from_numpy(np.stack(lab)).long()[:, None]
    return images, labels, list(HISTO_CLASSES)


def run_feature_ablation(
    out: str | os.PathLike | None = None,
    seed: int = 0,
    n_unlabelled: int = 96,
    n_labelled: int = 16,
    n_test: int = 16,
    size: int = 48,
    ae_epochs: int = 10,
    ldm_epochs: int = 10,
    head_epochs: int = 30,
    head_lr: float = 1e-3,
    timestep: int = 50,
    hidden_channels: Sequence[int] = (32,),
    log: Callable[[str], None] = print,
) -> dict:
    """The same head on diffusion features vs on a randomly initialised encoder, with equal labels.

    Synthetic H&E tiles (:func:`liverseg_monai.data.synth.histo.make_histo_tile`): ``n_unlabelled``
    tiles train the autoencoder and the conditioned latent UNet (:func:`train_self_supervised`),
    ``n_labelled`` labelled tiles train a :class:`~liverseg_monai.networks.blocks.seg_head.ConvSegmentationHead`
    on the frozen features (``fit_head``), ``n_test`` further tiles score it. The baseline builds the
    identical extractor with the initial (random) weights, seeded identically, and trains an identical
    head with the same labels, epochs and seed. The self-supervised encoder of the conditioning is a
    randomly initialised ResNet-18 in both arms (no DINO weights are used here).

    Returns (and writes to ``out/ablation.json`` when ``out`` is given) ``{"diffusion": scores,
    "random_encoder": scores, "budget": {...}, "curves": {...}}`` with pixel accuracy, mean Dice, mIoU.
    """
    from liverseg_monai.networks.blocks.seg_head import ConvSegmentationHead
    from liverseg_monai.networks.pathsegdiff import PathSegDiffFeatureExtractor

    start = time.time()
    unlabelled, _, _ = histo_tiles(n_unlabelled, size, seed + 1)
    train_x, train_y, classes = histo_tiles(n_labelled, size, seed + 2)
    test_x, test_y, _ = histo_tiles(n_test, size, seed + 3)

    torch.manual_seed(seed)
    ae, ldm = tiny_pathsegdiff_parts()
    torch.manual_seed(seed)
    ae_random, ldm_random = tiny_pathsegdiff_parts()
    curves = train_self_supervised(ae, ldm, unlabelled, ae_epochs, ldm_epochs, seed=seed, log=log)
    self_supervised_s = time.time() - start

    results: dict = {}
    for arm, (a, d) in {"diffusion": (ae, ldm), "random_encoder": (ae_random, ldm_random)}.items():
        extractor = PathSegDiffFeatureExtractor(a, d, timestep=timestep)
        feats_train, feats_test = extract_features(extractor, train_x), extract_features(extractor, test_x)
        torch.manual_seed(seed)
        head = ConvSegmentationHead(extractor.out_channels, len(classes), hidden_channels)
        curves[f"head_{arm}"] = fit_head(head, feats_train, train_y, head_epochs, lr=head_lr, seed=seed)
        results[arm] = score_head(head, feats_test, test_y, classes)
        log(f"{arm}: pixel accuracy {results[arm]['pixel_accuracy']:.3f} mean Dice {results[arm]['mean_dice']:.3f} "
            f"mIoU {results[arm]['mean_iou']:.3f}")
    results["budget"] = {
        "seed": seed, "tile_size": size, "n_unlabelled": n_unlabelled, "n_labelled": n_labelled, "n_test": n_test,
        "autoencoder_epochs": ae_epochs, "diffusion_epochs": ldm_epochs, "head_epochs": head_epochs, "head_lr": head_lr,
        "timestep": timestep, "head_hidden_channels": list(hidden_channels),
        "self_supervised_seconds": round(self_supervised_s, 1), "total_seconds": round(time.time() - start, 1),
        "threads": torch.get_num_threads(),
    }
    results["curves"] = curves
    if out is not None:
        from liverseg_monai.io.atomic import atomic_write_text

        atomic_write_text(Path(out) / "ablation.json", json.dumps(results, indent=2))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="PathSegDiff ablation: diffusion features vs random encoder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    for name, default in (("n_unlabelled", 96), ("n_labelled", 16), ("n_test", 16), ("size", 48),
                          ("ae_epochs", 10), ("ldm_epochs", 10), ("head_epochs", 30), ("timestep", 50)):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=default)
    parser.add_argument("--head-lr", dest="head_lr", type=float, default=1e-3)
    args = vars(parser.parse_args(argv))
    results = run_feature_ablation(**args)
    print(json.dumps({k: results[k] for k in ("diffusion", "random_encoder", "budget")}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
