"""DINO multi-crop augmentation for H&E tiles (Caron et al. 2021, with stain jitter for histology).

One tile becomes ``2`` global views and ``n_local`` local views. Each view is a random resized crop,
then flips and a 90-degree rotation (histology has no "up"), H&E stain jitter in HED colour space
(:func:`liverseg_monai.transforms.stain.hed_jitter`, Tellez et al. 2018) in place of DINO's hue jitter
and grey-scale conversion, a mild brightness / contrast / saturation jitter, Gaussian blur and
solarisation with DINO's per-view probabilities (global view 1: blur always; global view 2: blur 0.1,
solarise 0.2; local views: blur 0.5), and finally the channel normalisation the backbone expects.

Views of one size are returned together so the student sees ``[g1, g2, l1, ..., lN]``; after batching
a list of ``2 + n_local`` tensors ``(B, 3, S, S)``.

Example::

    >>> import torch
    >>> crops = MultiCrop(global_size=64, local_size=32, n_local=4)(torch.rand(3, 96, 96))
    >>> [tuple(c.shape) for c in crops][:3]
    [(3, 64, 64), (3, 64, 64), (3, 32, 32)]
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform

from liverseg_monai.transforms.stain import hed_jitter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViewSpec:
    """How one view is made.

    Args:
        size: output edge in pixels.
        scale: range of the crop's area as a fraction of the tile's area.
        blur_prob: probability of a Gaussian blur (sigma drawn in ``blur_sigma``).
        solarize_prob: probability of solarisation (values above 0.5 inverted).
    """

    size: int
    scale: tuple[float, float]
    blur_prob: float
    solarize_prob: float = 0.0


def resized_crop(img: torch.Tensor, top: int, left: int, height: int, width: int, size: int) -> torch.Tensor:
    """Crop ``(C, H, W)`` at ``(top, left)`` with ``(height, width)`` and resize to ``size x size`` (bilinear)."""
    crop = img[:, top : top + height, left : left + width]
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def adjust_colour(img: torch.Tensor, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    """Multiply brightness, blend towards the mean grey (contrast) and the per-pixel grey (saturation).

    Factors of 1 leave ``img`` (RGB in ``[0, 1]``, channel first) unchanged; output clipped to ``[0, 1]``.
    """
    img = img * brightness
    grey = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
    img = grey.mean() + contrast * (img - grey.mean())
    grey = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
    img = grey + saturation * (img - grey)
    return img.clamp(0.0, 1.0)


def solarize(img: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert values at or above ``threshold`` (images in ``[0, 1]``)."""
    return torch.where(img >= threshold, 1.0 - img, img)


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, H, W)`` with reflect padding (kernel radius ``ceil(3 sigma)``)."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, img.shape[-1] - 1, img.shape[-2] - 1)
    x = torch.arange(-radius, radius + 1, dtype=img.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[0]
    out = F.pad(img[None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return out[0]


class MultiCrop(Randomizable, Transform):
    """The DINO multi-crop of a channel-first RGB tile in ``[0, 1]``: ``2`` global + ``n_local`` local views.

    Args:
        global_size: edge of the global views (224 in DINO; 64 in the CPU learning test).
        local_size: edge of the local views (96 in DINO).
        n_local: number of local views (8 in DINO's multi-crop setting; 0 disables them).
        global_scale: area fraction range of global crops (DINO: ``(0.4, 1)``, ResNet-50 runs ``(0.14, 1)``).
        local_scale: area fraction range of local crops (DINO: ``(0.05, 0.4)``).
        ratio: aspect-ratio range of the crops (before resizing to a square).
        flip_prob: probability of each of a horizontal and a vertical flip.
        rotate90: rotate by a random multiple of 90 degrees.
        hed_sigma, hed_bias: HED stain jitter: per-stain factor in ``1 +- hed_sigma``, shift in ``+- hed_bias``.
        hed_prob: probability of the stain jitter per view.
        colour_prob: probability of the brightness / contrast / saturation jitter per view.
        brightness, contrast, saturation: maximum relative change of each (factor in ``1 +- value``).
        blur_sigma: range of the Gaussian blur sigma in pixels of a 224-px view (DINO: ``(0.1, 2.0)``);
            scaled by ``size / 224`` for other view sizes.
        mean, std: channel normalisation applied last (ImageNet statistics by default, like torchvision).
    """

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        n_local: int = 8,
        global_scale: Sequence[float] = (0.4, 1.0),
        local_scale: Sequence[float] = (0.05, 0.4),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
        rotate90: bool = True,
        hed_prob: float = 0.8,
        hed_sigma: float = 0.05,
        hed_bias: float = 0.05,
        colour_prob: float = 0.8,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.1,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        if n_local < 0 or global_size < 1 or local_size < 1:
            raise ValueError("sizes must be positive and n_local non-negative")
        gs, ls = tuple(float(v) for v in global_scale), tuple(float(v) for v in local_scale)
        self.views = [ViewSpec(global_size, gs, blur_prob=1.0), ViewSpec(global_size, gs, blur_prob=0.1, solarize_prob=0.2)]
        self.views += [ViewSpec(local_size, ls, blur_prob=0.5) for _ in range(n_local)]
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip_prob, self.rotate90 = flip_prob, rotate90
        self.hed_prob, self.hed_sigma, self.hed_bias = hed_prob, hed_sigma, hed_bias
        self.colour_prob = colour_prob
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    @property
    def n_global(self) -> int:
        return 2

    def randomize(self, data=None) -> None:  # parameters are drawn per view in __call__
        pass

    def _crop_box(self, h: int, w: int, scale: tuple[float, float]) -> tuple[int, int, int, int]:
        """torchvision's RandomResizedCrop box sampling, with ``self.R``."""
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * self.R.uniform(*scale)
            aspect = math.exp(self.R.uniform(*log_ratio))
            cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return int(self.R.randint(0, h - ch + 1)), int(self.R.randint(0, w - cw + 1)), ch, cw
        side = min(h, w)  # fallback: central square
        return (h - side) // 2, (w - side) // 2, side, side

    def view(self, img: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
        """One augmented, normalised view ``(3, spec.size, spec.size)`` of ``img``."""
        top, left, ch, cw = self._crop_box(img.shape[-2], img.shape[-1], spec.scale)
        out = resized_crop(img, top, left, ch, cw, spec.size)
        if self.R.rand() < self.flip_prob:
            out = out.flip(-1)
        if self.R.rand() < self.flip_prob:
            out = out.flip(-2)
        if self.rotate90:
            out = torch.rot90(out, int(self.R.randint(0, 4)), dims=(-2, -1))
        if self.R.rand() < self.hed_prob:
            alpha = self.R.uniform(1 - self.hed_sigma, 1 + self.hed_sigma, 3)
            beta = self.R.uniform(-self.hed_bias, self.hed_bias, 3)
            out = torch.as_tensor(hed_jitter(out.numpy(), alpha, beta, channel_axis=0))
        if self.R.rand() < self.colour_prob:
            b, c, s = (1 + self.R.uniform(-v, v) for v in (self.brightness, self.contrast, self.saturation))
            out = adjust_colour(out, b, c, s)
        if self.R.rand() < spec.blur_prob:
            sigma = self.R.uniform(*self.blur_sigma) * spec.size / 224
            out = gaussian_blur(out, max(sigma, 0.1))
        if self.R.rand() < spec.solarize_prob:
            out = solarize(out)
        return ((out - self.mean) / self.std).contiguous()

    def __call__(self, img) -> list[torch.Tensor]:
        if hasattr(img, "as_tensor"):  # MetaTensor
            img = img.as_tensor()
        img = (img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))).float()
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"MultiCrop expects a channel-first RGB tile (3, H, W), got shape {tuple(img.shape)}")
        if float(img.max()) > 1.5:  # uint8-range input
            img = img / 255.0
        return [self.view(img, spec) for spec in self.views]


class MultiCropd(Randomizable, MapTransform):
    """Dictionary version of :class:`MultiCrop`: ``d[output_key] = MultiCrop(...)(d[key])`` (list of views).

    Args:
        keys: the image key (one).
        output_key: where the list of views goes (``"crops"``); the image itself is dropped unless
            ``keep_image``, since tiles of different sizes would not batch.
        kwargs: the :class:`MultiCrop` arguments.
    """

    def __init__(self, keys: KeysCollection, output_key: str = "crops", keep_image: bool = False, **kwargs):
        MapTransform.__init__(self, keys)
        self.output_key = output_key
        self.keep_image = keep_image
        self.cropper = MultiCrop(**kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> MultiCropd:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.cropper(d[key])
            if not self.keep_image:
                del d[key]
        return d
