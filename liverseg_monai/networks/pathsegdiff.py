"""PathSegDiff: latent-diffusion features for histopathology segmentation.

Danisetty, Graikos, Yellapragada, Samaras, "PathSegDiff: Pathology Segmentation using Diffusion
Model Representations", DGM4MICCAI 2025 (arXiv:2504.06950). A pathology latent diffusion model
(an autoencoder plus a denoising UNet conditioned by cross-attention on the embedding of a
self-supervised encoder) is trained on unlabelled H&E tiles; an image is then encoded, noised to a
fixed timestep and passed once through the UNet; the UNet decoder activations at several resolutions
are upsampled, concatenated and fed to a small fully convolutional head.

The parts compose (torchvision detection style): :class:`SSLConditionEncoder` (frozen backbone +
trainable projection), :class:`ConditionedLatentDiffusion` (the UNet, the condition encoder and the
latent scale factor: what the diffusion stage trains), :class:`PathSegDiffFeatureExtractor` (frozen
autoencoder + diffusion model -> dense features) and :class:`PathSegDiffSegmenter` (extractor + head,
the inference module: image ``[B, 3, H, W]`` in [0, 1] -> logits ``[B, C, H, W]``).
:class:`SSLFeatureExtractor` (frozen self-supervised ResNet -> dense features) is the paper's baseline
extractor: the same head on the guiding encoder's own features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from monai.networks.schedulers import DDPMScheduler
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Frozen(nn.Module):
    """A module whose parameters never train and which stays in eval mode (BatchNorm statistics fixed)."""

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> _Frozen:  # noqa: ARG002 - engines call train(); frozen stays eval
        return super().train(False)


class SSLConditionEncoder(nn.Module):
    """The self-supervised guide: a frozen image encoder, then a trainable linear projection.

    ``[B, 3, H, W]`` (RGB in [0, 1]) -> cross-attention context ``[B, 1, context_dim]``.

    Args:
        backbone: an image encoder returning ``[B, embed_dim]``; a torchvision ResNet (for example the
            DINO backbone of ``bundles/pathology_dino_pretraining``) has its ``fc`` replaced by the
            identity, giving the global-average-pooled embedding. Its weights are frozen and it stays
            in eval mode.
        context_dim: the ``cross_attention_dim`` of the diffusion UNet.
        embed_dim: the backbone's embedding size; read from ``backbone.fc.in_features`` when omitted.
        mean, std: per-channel input normalisation the backbone was trained with.
    """

    def __init__(
        self,
        backbone: nn.Module,
        context_dim: int,
        embed_dim: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        fc = getattr(backbone, "fc", None)
        if isinstance(fc, nn.Linear):
            embed_dim = embed_dim or fc.in_features
            backbone.fc = nn.Identity()
        if embed_dim is None:
            raise ValueError("embed_dim is needed for a backbone without a linear `fc`")
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.backbone = backbone.eval()
        self.projection = nn.Linear(embed_dim, context_dim)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> SSLConditionEncoder:
        super().train(mode)
        self.backbone.train(False)  # frozen: BatchNorm statistics stay those of the SSL stage
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.backbone((x - self.mean) / self.std)
        return self.projection(embedding.flatten(1)).unsqueeze(1)


class ConditionedLatentDiffusion(nn.Module):
    """What the diffusion stage trains: the denoising UNet, its condition encoder and the latent scale.

    Args:
        unet: a ``DiffusionModelUNet`` with ``with_conditioning=True`` and ``cross_attention_dim`` equal
            to the condition encoder's ``context_dim``.
        condition_encoder: image -> context ``[B, 1, cross_attention_dim]`` (:class:`SSLConditionEncoder`).

    The buffer ``scale_factor`` (saved with the weights) is the latent scaling of Rombach et al.
    (1 / standard deviation of the autoencoder latents); 0 means "not measured yet" and the first
    training iteration sets it (:func:`liverseg_monai.engines.diffusion.diffusion_loss`).
    """

    def __init__(self, unet: DiffusionModelUNet, condition_encoder: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.condition_encoder = condition_encoder
        self.register_buffer("scale_factor", torch.zeros(()))

    def forward(self, noisy_latent: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Noise prediction for ``noisy_latent`` at ``timesteps`` guided by ``image``'s embedding."""
        return self.unet(noisy_latent, timesteps, context=self.condition_encoder(image))


def unet_decoder_features(
    unet: DiffusionModelUNet, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Outputs of every decoder (up) block of a MONAI ``DiffusionModelUNet``, coarsest first.

    The forward pass of ``DiffusionModelUNet.forward`` (MONAI 1.6) without class labels, ControlNet
    residuals and the output convolution, so ``unet.out(features[-1])`` equals ``unet(x, ...)``. For
    ``channels = (c0, ..., cK)`` block ``i`` has ``channels[K - i]`` channels at
    ``1 / 2**max(K - 1 - i, 0)`` of the input resolution (each block but the last ends by upsampling).
    """
    emb = unet.time_embed(get_timestep_embedding(timesteps, unet.block_out_channels[0]).to(dtype=x.dtype))
    h = unet.conv_in(x)
    skips: list[torch.Tensor] = [h]
    for block in unet.down_blocks:
        h, res = block(hidden_states=h, temb=emb, context=context)
        skips.extend(res)
    h = unet.middle_block(hidden_states=h, temb=emb, context=context)
    features = []
    for block in unet.up_blocks:
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        h = block(hidden_states=h, res_hidden_states_list=res, temb=emb, context=context)
        features.append(h)
    return features


def aligned_upsample(features: torch.Tensor, size: tuple[int, int], stride: int, offset: float) -> torch.Tensor:
    """Bilinear upsampling of a strided feature map onto the pixel grid of the image it was computed from.

    Feature pixel ``i`` of a map at ``stride`` is centred on image pixel ``stride * i + offset``. ``F.interpolate``
    (``align_corners=False``) assumes ``offset = (stride - 1) / 2``, which is not where MONAI's
    ``AutoencoderKL`` puts its latents (asymmetric padding: ``offset = stride - 1`` for the autoencoder's
    stride); the difference (1.5 px at stride 4) differs between UNet levels, so concatenated levels disagree
    along every edge. This samples each output pixel ``j`` at feature coordinate ``(j - offset) / stride``
    with ``grid_sample`` (border values repeated beyond the first and last feature pixel).

    Args:
        features: ``[B, C, h, w]``.
        size: output ``(H, W)`` in image pixels.
        stride: image pixels per feature pixel.
        offset: image coordinate of the centre of feature pixel 0.

    Returns:
        ``[B, C, H, W]``.
    """
    (height, width), (h, w) = size, features.shape[-2:]
    ys = (torch.arange(height, device=features.device, dtype=features.dtype) - offset) / stride
    xs = (torch.arange(width, device=features.device, dtype=features.dtype) - offset) / stride
    # grid_sample (align_corners=False) reads normalised coordinate -1 at the left edge of pixel 0
    gy, gx = torch.meshgrid((2 * ys + 1) / h - 1, (2 * xs + 1) / w - 1, indexing="ij")
    grid = torch.stack((gx, gy), dim=-1).unsqueeze(0).expand(features.shape[0], -1, -1, -1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)


class PathSegDiffFeatureExtractor(_Frozen):
    """Frozen latent-diffusion features: ``[B, 3, H, W]`` in [0, 1] -> ``[B, out_channels, H, W]``.

    The image is encoded to the autoencoder's latent mean, scaled, noised to ``timestep`` with the DDPM
    forward process ``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps`` (a fixed noise pattern, so the
    features are deterministic), passed once through the conditioned UNet; the outputs of the decoder
    blocks in ``levels`` are upsampled bilinearly onto the image's pixel grid (:func:`aligned_upsample`) and concatenated. Inputs whose size
    is not a multiple of :attr:`size_divisor` are edge-padded and the features cropped back.

    Args:
        autoencoder: the first stage (``AutoencoderKL``).
        diffusion: the trained :class:`ConditionedLatentDiffusion`.
        timestep: the diffusion timestep the latent is noised to (the paper studies this choice; small
            timesteps keep the image content).
        levels: indices of UNet decoder blocks to use (0 = coarsest); default all.
        scheduler: gives the noise schedule (``alphas_cumprod``); a 1000-step linear DDPM by default.
        noise_seed: seed of the fixed noise pattern.
        scale_factor: latent scaling; default the diffusion model's ``scale_factor`` buffer (1 if unset).
    """

    def __init__(
        self,
        autoencoder: AutoencoderKL,
        diffusion: ConditionedLatentDiffusion,
        timestep: int = 50,
        levels: Sequence[int] | None = None,
        scheduler: DDPMScheduler | None = None,
        noise_seed: int = 0,
        scale_factor: float | None = None,
    ) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.diffusion = diffusion
        unet = diffusion.unet
        n_up = len(unet.up_blocks)
        self.levels = tuple(range(n_up)) if levels is None else tuple(int(i) for i in levels)
        if not self.levels or any(not 0 <= i < n_up for i in self.levels):
            raise ValueError(f"levels must be indices of the {n_up} UNet decoder blocks, got {levels}")
        scheduler = scheduler or DDPMScheduler(num_train_timesteps=1000)
        if not 0 <= timestep < scheduler.num_train_timesteps:
            raise ValueError(f"timestep must be in [0, {scheduler.num_train_timesteps}), got {timestep}")
        self.timestep = int(timestep)
        abar = float(scheduler.alphas_cumprod[self.timestep])
        self.signal_coef, self.noise_coef = math.sqrt(abar), math.sqrt(1.0 - abar)
        self.fixed_scale = scale_factor
        reversed_channels = list(reversed(unet.block_out_channels))
        self.out_channels = sum(reversed_channels[i] for i in self.levels)
        n_ae_down = len(autoencoder.encoder.channels) - 1
        n_unet_down = len(unet.block_out_channels) - 1
        self.latent_stride = 2**n_ae_down
        self.size_divisor = 2 ** (n_ae_down + n_unet_down)
        # decoder block i is at 1 / 2**max(K - 1 - i, 0) of the latent resolution (K = n_unet_down)
        self.level_strides = tuple(self.latent_stride * 2 ** max(n_unet_down - 1 - i, 0) for i in range(n_up))
        # AutoencoderKL downsamples by an asymmetric (0, 1) pad and a stride-2 valid 3x3 convolution, so latent
        # pixel p covers input pixels [2p, 2p + 2]: after n such steps its centre is at 2**n p + 2**n - 1.
        # The UNet's own downsampling (stride-2 3x3, padding 1) keeps centres on 2 p: no further offset.
        self.latent_offset = float(self.latent_stride - 1)
        latent_channels = autoencoder.quant_conv_mu.out_channels
        generator = torch.Generator().manual_seed(noise_seed)
        self.register_buffer("noise", torch.randn(1, latent_channels, 32, 32, generator=generator), persistent=False)
        self.freeze()

    def _noise_like(self, z: torch.Tensor) -> torch.Tensor:
        h, w = z.shape[-2:]
        reps = (1, 1, -(-h // self.noise.shape[-2]), -(-w // self.noise.shape[-1]))
        return self.noise.repeat(reps)[..., :h, :w].expand_as(z).to(z.dtype)

    def latent_scale(self) -> torch.Tensor:
        """The latent scaling used: ``scale_factor`` if given, else the diffusion model's (1 while unset)."""
        if self.fixed_scale is not None:
            return torch.tensor(float(self.fixed_scale))
        scale = self.diffusion.scale_factor
        return torch.where(scale > 0, scale, torch.ones_like(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.size_divisor, -width % self.size_divisor
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")  # unconditional: a trace generalises over sizes
        z0 = self.autoencoder.encode(padded)[0] * self.latent_scale().to(padded)
        zt = self.signal_coef * z0 + self.noise_coef * self._noise_like(z0)
        timesteps = torch.full((x.shape[0],), self.timestep, dtype=torch.long, device=x.device)
        context = self.diffusion.condition_encoder(x)
        blocks = unet_decoder_features(self.diffusion.unet, zt, timesteps, context)
        size = tuple(padded.shape[-2:])
        upsampled = [
            aligned_upsample(blocks[i], size, self.level_strides[i], self.latent_offset) for i in self.levels
        ]
        return torch.cat(upsampled, dim=1)[..., :height, :width]


class SSLFeatureExtractor(_Frozen):
    """Frozen dense features of a self-supervised ResNet: ``[B, 3, H, W]`` in [0, 1] -> ``[B, out_channels, H, W]``.

    The baseline the PathSegDiff paper compares the diffusion features with: the same head on the
    features of the self-supervised encoder alone (for example the DINO backbone of
    ``bundles/pathology_dino_pretraining``). The image is normalised as the encoder was trained, the
    outputs of the ResNet stages in ``layers`` are taken with torchvision's ``create_feature_extractor``,
    upsampled onto the image's pixel grid (:func:`aligned_upsample`) and concatenated. Inputs whose size
    is not a multiple of :attr:`size_divisor` are edge-padded and the features cropped back, as in
    :class:`PathSegDiffFeatureExtractor`.

    A torchvision ResNet's stride-2 convolutions and max-pool pad symmetrically (kernel ``k``, padding
    ``k // 2``), so pixel ``i`` of a stage at stride ``s`` is centred on image pixel ``s * i``: offset 0,
    where ``F.interpolate`` would assume ``(s - 1) / 2``.

    Args:
        backbone: a torchvision ResNet (``conv1`` ... ``layer4``); its weights are frozen.
        layers: the stages to use (``"layer1"`` stride 4 ... ``"layer4"`` stride 32).
        mean, std: per-channel input normalisation the backbone was trained with.
    """

    STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}

    def __init__(
        self,
        backbone: nn.Module,
        layers: Sequence[str] = ("layer1", "layer2"),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.layers = tuple(str(name) for name in layers)
        unknown = [name for name in self.layers if name not in self.STRIDES]
        if not self.layers or unknown:
            raise ValueError(f"layers must be ResNet stages among {sorted(self.STRIDES)}, got {list(layers)}")
        self.features = create_feature_extractor(backbone, return_nodes={name: name for name in self.layers})
        self.level_strides = tuple(self.STRIDES[name] for name in self.layers)
        self.size_divisor = max(self.level_strides)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.freeze()
        with torch.no_grad():
            probe = self.features(torch.zeros(1, 3, self.size_divisor, self.size_divisor))
        self.out_channels = sum(int(probe[name].shape[1]) for name in self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.size_divisor, -width % self.size_divisor
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        stages = self.features((padded - self.mean) / self.std)
        size = tuple(padded.shape[-2:])  # not int(): a trace keeps the sizes symbolic
        upsampled = [
            aligned_upsample(stages[name], size, stride, 0.0) for name, stride in zip(self.layers, self.level_strides)
        ]
        return torch.cat(upsampled, dim=1)[..., :height, :width]


class PathSegDiffSegmenter(nn.Module):
    """The inference module: a frozen feature extractor and a trainable head.

    ``[B, 3, H, W]`` RGB in [0, 1] -> class logits ``[B, num_classes, H, W]``.

    Args:
        extractor: dense features ``[B, F, H, W]`` with an ``out_channels`` attribute (F), for example
            :class:`PathSegDiffFeatureExtractor`.
        head: ``[B, F, H, W]`` -> ``[B, num_classes, H, W]``, for example
            :class:`liverseg_monai.networks.blocks.seg_head.ConvSegmentationHead`.
    """

    def __init__(self, extractor: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.extractor(x))

    def __prepare_scriptable__(self) -> PathSegDiffSegmenter:
        """What ``torch.jit.script`` compiles: this segmenter with its extractor traced.

        MONAI's ``DiffusionModelUNet`` cannot be scripted, so ``monai.bundle ckpt_export`` (and the
        model-zoo checker, which calls it without ``use_trace``) would fail. The extractor is traced on a
        ``[1, 3, 2 * size_divisor, 2 * size_divisor]`` input instead (its shapes are traced, not frozen:
        the trace runs at any size, tested) and the head is scripted as usual. The module itself is not
        changed.
        """
        extractor = self.extractor
        divisor = int(getattr(extractor, "size_divisor", 16))
        param = next(extractor.parameters())
        example = torch.rand(1, 3, 2 * divisor, 2 * divisor, device=param.device, dtype=param.dtype)
        with torch.no_grad():
            traced = torch.jit.trace(extractor.eval(), example, check_trace=False)
        return PathSegDiffSegmenter(traced, self.head)  # torch.jit.script prepares the top module once
