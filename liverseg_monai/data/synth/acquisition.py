"""Slide acquisition for the realistic synthetic H&E: staining sites, focus blur and JPEG compression.

Each element imitates one real source of variation between scanned liver sections:

- :func:`site_stain` -- a laboratory ("site"): its own haematoxylin and eosin optical-density vectors
  around the Ruifrok & Johnston colour-deconvolution matrix (``skimage.color.rgb_from_hed``), eosin
  mixed towards the pinker shades of other eosin formulations, its own stain concentrations (staining
  time, dye batch) and the white balance of its scanner;
- :func:`vary_stain` -- section-to-section variation within one site (thickness, slide batch);
- :class:`Acquisition` -- the scan of one field of view: out-of-focus regions (a Gaussian point
  spread, tissue folds and uneven sections leave parts of a scan blurred) and the JPEG compression of
  scanner files and exported tiles (8x8 block and ringing artefacts, chroma subsampling).

Example:
    >>> import numpy as np
    >>> stain = site_stain(np.random.default_rng(0))
    >>> record = stain_record(stain)
    >>> sorted(record)[:3]
    ['b_vector', 'background', 'e_scale']
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.color import rgb_from_hed

from liverseg_monai.data.synth.histo import B_VECTOR, E_VECTOR, Stain

# Ruifrok & Johnston (2001) optical-density vectors, as in skimage.color (rows H, E, DAB)
RUIFROK_H = rgb_from_hed[0] / np.linalg.norm(rgb_from_hed[0])
RUIFROK_E = rgb_from_hed[1] / np.linalg.norm(rgb_from_hed[1])


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.abs(v)
    return v / np.linalg.norm(v)


def site_stain(rng: np.random.Generator, strength: float = 1.0) -> Stain:
    """The H&E stain of one laboratory: vectors, concentration scales and scanner white point.

    Args:
        rng: random generator (one draw per site).
        strength: spread between sites (1: between-lab variation as seen in multi-centre cohorts
            such as CAMELYON; 0: exactly Ruifrok's haematoxylin and a fixed eosin).

    Returns:
        a :class:`~liverseg_monai.data.synth.histo.Stain` whose ``h_vector`` / ``e_vector`` are the
        site's unit optical-density vectors and ``h_scale`` / ``e_scale`` its concentration scaling.
    """
    j = float(strength)
    # haematoxylin: Ruifrok's vector, rotated (bluer or redder haemalum, differentiation, bluing)
    h = _unit(RUIFROK_H + rng.normal(0, 0.08 * j, 3))
    # eosin: between Ruifrok's magenta and a pinker eosin/phloxine shade, then perturbed
    t = rng.uniform(0.2, 1.0) if j > 0 else 0.5
    e = _unit((1 - t) * RUIFROK_E + t * E_VECTOR + rng.normal(0, 0.05 * j, 3))
    return Stain(
        h_vector=h,
        e_vector=e,
        b_vector=_unit(B_VECTOR + rng.normal(0, 0.03 * j, 3)),
        h_scale=float(np.exp(rng.normal(0, 0.28 * j))),
        e_scale=float(np.exp(rng.normal(0, 0.28 * j))),
        background=np.clip(245 + rng.normal(0, 4 * j) + rng.normal(0, 3 * j, 3), 215, 255),
        noise=float(rng.uniform(1.0, 3.5)),
        blur=float(rng.uniform(0.45, 0.8)),
    )


def vary_stain(stain: Stain, rng: np.random.Generator, strength: float = 1.0) -> Stain:
    """The stain of one section of a site: small changes of vectors and amounts around the site's."""
    j = float(strength)
    return Stain(
        h_vector=_unit(stain.h_vector + rng.normal(0, 0.015 * j, 3)),
        e_vector=_unit(stain.e_vector + rng.normal(0, 0.015 * j, 3)),
        b_vector=stain.b_vector.copy(),
        h_scale=stain.h_scale * float(np.exp(rng.normal(0, 0.06 * j))),
        e_scale=stain.e_scale * float(np.exp(rng.normal(0, 0.06 * j))),
        background=np.clip(stain.background + rng.normal(0, 1.0 * j, 3), 200, 255),
        noise=stain.noise,
        blur=stain.blur,
    )


def stain_record(stain: Stain) -> dict:
    """JSON-ready description of a stain (stain matrix rows and scales) for dataset metadata."""
    return {
        "h_vector": [round(float(v), 6) for v in stain.h_vector],
        "e_vector": [round(float(v), 6) for v in stain.e_vector],
        "b_vector": [round(float(v), 6) for v in stain.b_vector],
        "h_scale": round(float(stain.h_scale), 6),
        "e_scale": round(float(stain.e_scale), 6),
        "background": [round(float(v), 3) for v in stain.background],
    }


def focus_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Defocus: a Gaussian point spread of ``sigma`` pixels on the intensities (uint8 in and out)."""
    if sigma <= 0:
        return rgb
    out = ndimage.gaussian_filter(rgb.astype(np.float32), sigma=(sigma, sigma, 0), mode="reflect")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode with Pillow's JPEG at ``quality`` (4:2:0 chroma, like scanner exports)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


@dataclass
class Acquisition:
    """How one tile was scanned: focus blur ``sigma`` in pixels (0: in focus) and JPEG ``quality``
    (0: stored losslessly)."""

    focus_sigma: float = 0.0
    jpeg_quality: int = 0

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        scale: float = 1.0,
        blur_probability: float = 0.25,
        jpeg_probability: float = 0.5,
    ) -> Acquisition:
        """Some tiles out of focus (sigma 0.8-2 microns), some JPEG-compressed at quality 60-90."""
        sigma = float(rng.uniform(0.8, 2.0) * scale) if rng.random() < blur_probability else 0.0
        quality = int(rng.integers(60, 91)) if rng.random() < jpeg_probability else 0
        return cls(round(sigma, 4), quality)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """The scanned tile: blurred, then compressed, as a scanner would."""
        out = focus_blur(rgb, self.focus_sigma)
        return jpeg_roundtrip(out, self.jpeg_quality) if self.jpeg_quality else out

    def record(self) -> dict:
        return {"focus_sigma": self.focus_sigma, "jpeg_quality": self.jpeg_quality}
