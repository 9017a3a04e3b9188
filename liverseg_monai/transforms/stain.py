"""H&E stain augmentation in HED colour space (Tellez et al. 2018).

Tellez et al., "Whole-slide mitosis detection in H&E breast histology using PHH3 as a reference to
train distilled stain-invariant convolutional networks", IEEE TMI 2018: the RGB tile is unmixed into
haematoxylin, eosin and DAB optical densities (Ruifrok & Johnston colour deconvolution), each channel
is scaled by ``alpha ~ U(1 - sigma, 1 + sigma)`` and shifted by ``beta ~ U(-bias, bias)``, and the
result is mixed back to RGB. MONAI has stain normalisation (``monai.apps.pathology``) but no such
jitter, hence this module: a pure numpy function, then MONAI array and dictionary transforms.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils.type_conversion import convert_to_dst_type

# Ruifrok & Johnston stain optical-density vectors (rows: haematoxylin, eosin, DAB), as in skimage
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
_LOG_ADJUST = np.log(1e-6)  # skimage.color.rgb2hed scaling: stain units comparable with its output


def hed_jitter(
    image: np.ndarray,
    alpha: Sequence[float] = (1.0, 1.0, 1.0),
    beta: Sequence[float] = (0.0, 0.0, 0.0),
    channel_axis: int = 0,
) -> np.ndarray:
    """Scale and shift the H, E and DAB stain concentrations of an RGB image.

    Args:
        image: RGB image with values in ``[0, 1]``, channels on ``channel_axis``.
        alpha: multiplicative factor per stain (H, E, DAB); 1 leaves it unchanged.
        beta: additive shift per stain, in optical-density units (typically within +-0.05).
        channel_axis: axis holding the 3 colour channels (0 for MONAI channel-first tiles).

    Returns:
        float32 RGB image in ``[0, 1]`` of the input's shape; with ``alpha=1, beta=0`` it equals the
        input (pixels darker than 1e-6 are raised to it).

    Example::

        >>> tile = np.full((3, 4, 4), 0.7, np.float32)
        >>> np.allclose(hed_jitter(tile), tile, atol=1e-3)
        True
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim < 3 or image.shape[channel_axis] != 3:
        raise ValueError(f"expected an RGB image with 3 channels on axis {channel_axis}, got shape {image.shape}")
    rgb = np.moveaxis(np.clip(image, 1e-6, 1.0), channel_axis, -1)
    # colour deconvolution without clipping negative concentrations, so alpha=1, beta=0 is the identity
    hed = (np.log(rgb) / _LOG_ADJUST) @ HED_FROM_RGB
    hed = hed * np.asarray(alpha, np.float64) + np.asarray(beta, np.float64)
    out = np.exp((hed @ RGB_FROM_HED) * _LOG_ADJUST)
    return np.moveaxis(np.clip(out, 0.0, 1.0), -1, channel_axis).astype(np.float32)


class RandHEDJitter(RandomizableTransform):
    """Random HED stain jitter of a channel-first RGB image in ``[0, 1]`` (``(3, H, W)``).

    Args:
        prob: probability of jittering.
        sigma: ``alpha`` per stain drawn from ``U(1 - sigma, 1 + sigma)`` (0.05 in Tellez et al.'s
            "light" setting, up to 0.2 for strong).
        bias: ``beta`` per stain drawn from ``U(-bias, bias)``.
    """

    backend = [torch.Tensor.__name__, np.ndarray.__name__]

    def __init__(self, prob: float = 0.5, sigma: float = 0.05, bias: float = 0.05):
        RandomizableTransform.__init__(self, prob)
        if sigma < 0 or bias < 0:
            raise ValueError("sigma and bias must be non-negative")
        self.sigma = sigma
        self.bias = bias
        self.alpha = np.ones(3)
        self.beta = np.zeros(3)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.alpha = self.R.uniform(1 - self.sigma, 1 + self.sigma, 3)
            self.beta = self.R.uniform(-self.bias, self.bias, 3)

    def __call__(self, img, randomize: bool = True):
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        out = hed_jitter(arr, self.alpha, self.beta, channel_axis=0)
        return convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


class RandHEDJitterd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandHEDJitter`; the same stain factors for every key."""

    backend = RandHEDJitter.backend

    def __init__(
        self, keys: KeysCollection, prob: float = 0.5, sigma: float = 0.05, bias: float = 0.05,
        allow_missing_keys: bool = False,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.jitter = RandHEDJitter(prob=1.0, sigma=sigma, bias=bias)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandHEDJitterd:
        super().set_random_state(seed, state)
        self.jitter.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        self.jitter.randomize()
        for key in self.key_iterator(d):
            d[key] = self.jitter(d[key], randomize=False)
        return d
