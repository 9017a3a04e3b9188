"""Synthetic whole-slide images: pyramidal tiled OME-TIFF H&E slides with a label slide.

Each slide is one or a few pieces of liver tissue (the procedural field of
:mod:`liverseg_monai.data.synth.histo`) on a large glass background, written tile by tile with
:func:`liverseg_monai.io.slide.write_pyramid`: nothing is held at full size, so a 20000 x 20000 slide
takes bounded memory (and time proportional to its area; glass tiles are cheap). Per slide:

- ``slide_K.tiff``: RGB, 256 x 256 JPEG tiles, levels by factors of 2 (reduced-resolution pages, or
  SubIFDs with ``layout="ome"``), resolution tags and a JSON ``ImageDescription`` (or OME-XML
  PhysicalSizeX/Y) giving the microns per pixel (``mpp``);
- ``slide_K_label.tiff``: uint8 class indices of :data:`~liverseg_monai.data.synth.histo.HISTO_CLASSES`,
  same geometry, deflate-compressed, nearest-neighbour levels;
- ``dataset.json`` with the slides under ``testing`` (``{"image": "slide_0.tiff", "label":
  "slide_0_label.tiff"}``) and the extra keys ``classes`` and ``mpp``.

Command line: ``python -m liverseg_monai synth slide --out D --width 8192 --height 6144 --mpp 0.5``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from liverseg_monai.data.datalist import write_datalist
from liverseg_monai.data.synth.histo import HISTO_CLASSES, HistoField, Stain, value_noise
from liverseg_monai.io.slide import DiskArray, SlideLabelWriter, write_pyramid


class SlideTissue:
    """Where the tissue lies on the glass: a few noisy ellipses covering part of the slide.

    A pointwise function of absolute level-0 coordinates (``tissue(y, x) -> bool``), so it can be
    evaluated tile by tile.
    """

    def __init__(self, height: int, width: int, rng: np.random.Generator, n_pieces: int | None = None):
        self.seed = int(rng.integers(0, 2**31 - 1))
        n = int(rng.integers(1, 4)) if n_pieces is None else n_pieces
        # the main piece in the middle, smaller fragments elsewhere: 20-40 % of the slide is tissue
        pieces = [
            (
                0.5 + rng.uniform(-0.05, 0.05),
                0.5 + rng.uniform(-0.05, 0.05),
                rng.uniform(0.22, 0.3),
                rng.uniform(0.22, 0.3),
            )
        ]
        for _ in range(n - 1):
            pieces.append(
                (
                    rng.uniform(0.15, 0.85),
                    rng.uniform(0.15, 0.85),
                    rng.uniform(0.06, 0.12),
                    rng.uniform(0.06, 0.12),
                )
            )
        self.pieces = [(cy * height, cx * width, ry * height, rx * width) for cy, cx, ry, rx in pieces]
        self.wobble = 0.25 * min(height, width)

    def __call__(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        c = self.wobble
        score = 0.35 * (value_noise(self.seed, y / c, x / c, 1) - 0.5) + 0.08 * (
            value_noise(self.seed, y / (0.1 * c), x / (0.1 * c), 2) - 0.5
        )
        best = np.full(np.shape(y), -np.inf)
        for cy, cx, ry, rx in self.pieces:
            best = np.maximum(best, 1.0 - np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2))
        return best + score > 0


class SlideRenderer:
    """Renders RGB tiles of one synthetic slide and records their labels in a band on disk.

    Args:
        field: the tissue field (in level-0 pixels).
        stain: the slide's stain (one per slide, like one staining run).
        seed: seed of the per-tile sensor noise.
        labels: a :class:`DiskArray` ``(H, W)`` receiving the labels as tiles are rendered, or None.
        scan_artefacts: scan each tissue tile like a slide scanner (realism ``"full"``): some tiles
            out of focus, some re-compressed by JPEG (:class:`~liverseg_monai.data.synth.acquisition.Acquisition`).
    """

    def __init__(self, field: HistoField, stain: Stain, seed: int, labels: DiskArray | None, width: int,
                 scan_artefacts: bool = False):
        self.field, self.stain, self.seed = field, stain, seed
        self.scan_artefacts = scan_artefacts
        self.labels, self.width = labels, width
        self._band: np.ndarray | None = None
        self.halo = int(np.ceil(3 * stain.blur * field.scale)) + 1

    def __call__(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        m = self.halo
        tissue_here = self.field.tissue is None or bool(
            self.field.tissue(
                *np.meshgrid(
                    np.linspace(y - m, y + h + m, 17), np.linspace(x - m, x + w + m, 17), indexing="ij"
                )
            ).any()
        )
        rng = np.random.default_rng([self.seed, y, x])
        if tissue_here:
            conc, label = self.field.render(y - m, x - m, h + 2 * m, w + 2 * m)
            rgb = self.stain.to_rgb(conc, rng, self.field.scale)[m : m + h, m : m + w]
            label = label[m : m + h, m : m + w]
            if self.scan_artefacts:
                from liverseg_monai.data.synth.acquisition import Acquisition

                scan = Acquisition.draw(np.random.default_rng([self.seed, 1, y, x]), self.field.scale,
                                        blur_probability=0.15, jpeg_probability=0.3)
                rgb = scan.apply(rgb)
        else:  # glass only: skip the field, render the blank background with the same stain
            conc = np.zeros((h, w, 3))
            conc[..., 1] = 0.012 + 0.012 * value_noise(
                self.field.seed, *np.mgrid[y : y + h, x : x + w] / (8 * self.field.scale), 11
            )
            conc[..., 0] = 0.005
            rgb = self.stain.to_rgb(conc, rng, self.field.scale, blur=0.0)
            label = np.zeros((h, w), np.uint8)
        if self.labels is not None:
            if x == 0:
                self._band = np.zeros((h, self.width), np.uint8)
            self._band[:, x : x + w] = label
            if x + w >= self.width:
                self.labels[y : y + h] = self._band
        return rgb


def synth_slide(
    out: str | os.PathLike,
    seed: int = 0,
    n: int = 1,
    width: int = 4096,
    height: int = 4096,
    mpp: float = 0.5,
    tile_size: int = 256,
    quality: int = 90,
    region_um: float = 250.0,
    layout: str = "pages",
    level_factor: int = 2,
    progress: bool = True,
    realism: str = "basic",
) -> Path:
    """Write ``n`` synthetic pyramidal H&E slides with label slides and a ``dataset.json``.

    With ``realism="full"`` the tissue is the lobular microanatomy of
    :mod:`liverseg_monai.data.synth.lobule` (central veins ``2 * region_um`` apart), each slide is
    stained by its own site (:func:`~liverseg_monai.data.synth.acquisition.site_stain`, recorded under
    the extra key ``stain_sites``, and ``site`` in each item) and scanned with some tiles out of
    focus and some re-compressed (focus blur, JPEG quality 60-90).

    Args:
        out: output folder (created).
        seed: random seed; slide ``k`` uses ``seed * 1009 + k``.
        n: number of slides (all listed under ``testing``).
        width, height: level-0 size in pixels.
        mpp: microns per pixel at level 0 (cells are drawn at their physical size, ~7 um nuclei).
        tile_size: TIFF tile edge.
        quality: JPEG quality of the RGB slide.
        region_um: size of the lobule / portal-tract regions in microns.
        layout: ``"pages"`` (generic pyramidal TIFF: OpenSlide, MONAI ``WSIReader``, cuCIM) or
            ``"ome"`` (OME-TIFF with SubIFDs: Bio-Formats, QuPath), see
            :func:`liverseg_monai.io.slide.write_pyramid`.
        level_factor: downsample between pyramid levels (2 or 4).
        progress: show progress bars.
        realism: ``"basic"`` (default, unchanged) or ``"full"``.
    """
    from liverseg_monai.data.synth.histo import REALISM

    if realism not in REALISM:
        raise ValueError(f"realism must be one of {REALISM}, got {realism!r}")
    full = realism == "full"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    width, height, mpp = int(width), int(height), float(mpp)
    items, sites = [], []
    for k in range(n):
        rng = np.random.default_rng(seed * 1009 + k)
        tissue = SlideTissue(height, width, rng)
        scale = 1.0 / mpp  # field scale 1 is about 1 um per pixel
        field = HistoField(
            seed=int(rng.integers(0, 2**31 - 1)),
            scale=scale,
            region_px=region_um / mpp,
            region_probs=(0.03, 0.64, 0.33),
            tissue=tissue,
            realism=realism,
        )
        if full:
            from liverseg_monai.data.synth.acquisition import site_stain, stain_record

            stain = site_stain(np.random.default_rng([seed, 7919, k]))
            sites.append(stain_record(stain))
        else:
            stain = Stain.jittered(rng, 0.7)
        image_rel, label_rel = f"slide_{k}.tiff", f"slide_{k}_label.tiff"
        labels = DiskArray(out / f".slide_{k}_label.raw", (height, width), np.uint8)
        try:
            render = SlideRenderer(field, stain, int(rng.integers(0, 2**31 - 1)), labels, width, scan_artefacts=full)
            write_pyramid(
                out / image_rel,
                render,
                mpp=mpp,
                shape=(height, width, 3),
                dtype=np.uint8,
                tile_size=tile_size,
                compression="jpeg",
                quality=quality,
                description={"synthetic": "liverseg_monai.data.synth.slide", "seed": seed, "index": k},
                layout=layout,
                factor=level_factor,
                progress=progress,
            )
            labels.flush()
            SlideLabelWriter(
                out / label_rel,
                (height, width),
                mpp,
                tile_size,
                class_names=HISTO_CLASSES,
                layout=layout,
                factor=level_factor,
            ).write(labels, progress=progress)
        finally:
            labels.close()
            labels.path.unlink(missing_ok=True)
        items.append({"image": image_rel, "label": label_rel, **({"site": k} if full else {})})
    content = {"training": [], "validation": [], "testing": items, "classes": list(HISTO_CLASSES), "mpp": mpp}
    if full:
        content.update(realism=realism, stain_sites=sites)
    return write_datalist(out, content)
