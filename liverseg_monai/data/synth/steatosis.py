"""Synthetic steatosis tiles: H&E-looking liver parenchyma with white fat droplets and per-droplet masks.

Each tile shows pink/purple tissue (eosin texture, haematoxylin nuclei), sometimes a patch of bright
glass, and round or elliptical white droplets of varied size, isolated or in clumps where droplets
touch or overlap without a visible boundary (the hard case of Guo et al., arXiv:1911.07088). Layout::

    out/images/steatosis_000.png        RGB uint8
    out/instances/steatosis_000.png     uint16 instance ids (0 = background, 1..N droplets)
    out/annotations.json                COCO: images, annotations (uncompressed RLE, bbox, area), categories
    out/dataset.json                    training/validation/testing items {"image", "label"} and "mpp"

Overlapping droplets share their overlap by nearest (normalised) centre, so every pixel belongs to at
most one droplet, as in an instance label image.

``realism="full"`` (default ``"basic"``, this module's original look, unchanged) draws what a real
steatotic biopsy shows (Guo et al.'s droplets on the microanatomy of
:mod:`liverseg_monai.data.synth.lobule`):

- background: hepatocyte plates, sinusoids, central veins, portal tracts and infiltrates at their
  physical size (``1 / mpp`` pixels per micron), no fat of their own; droplets lie only in parenchyma;
- clumps of 2-6 droplets: some overlap (the union is one clump with no membrane inside, the instance
  labels split the overlap by nearest normalised centre as above), others only touch, separated by a
  1-2 px gap that the membrane fills;
- membranes: a thin (1-2 px) eosinophilic rim of compressed cytoplasm around every droplet and clump,
  in the gaps between touching droplets too;
- displaced nuclei: large droplets push their hepatocyte's nucleus to the rim, where it lies as a
  dark crescent hugging the droplet;
- staining and scanning: the stain of a site (recorded as ``stain_sites`` / item ``site``), focus
  blur and JPEG compression on some tiles (:mod:`liverseg_monai.data.synth.acquisition`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from liverseg_monai.data.datalist import write_datalist
from liverseg_monai.data.synth import split_names
from liverseg_monai.io.atomic import atomic_path, atomic_write_text

EOSIN = np.array([232.0, 158.0, 190.0])
HAEMATOXYLIN = np.array([92.0, 58.0, 138.0])
GLASS = np.array([246.0, 245.0, 247.0])
FAT = np.array([250.0, 248.0, 250.0])


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a binary mask (column-major run lengths, starting with a 0-run)."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat.astype(np.int8), [0]])))
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    counts = runs[:-1] if len(change) % 2 == 0 else runs
    if flat.size and counts.sum() != flat.size:
        counts = np.append(counts, flat.size - counts.sum())
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Inverse of :func:`mask_to_rle`."""
    h, w = rle["size"]
    flat = np.zeros(h * w, bool)
    pos, value = 0, False
    for c in rle["counts"]:
        if value:
            flat[pos : pos + c] = True
        pos += c
        value = not value
    return flat.reshape((h, w), order="F")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-8)


def make_parenchyma(rng: np.random.Generator, size: int) -> np.ndarray:
    """A float RGB (H, W, 3) H&E-like tissue texture: eosin cytoplasm, darker cords, purple nuclei."""
    shape = (size, size)
    tone = 1.0 + 0.06 * _smooth_noise(rng, shape, 6) + 0.03 * _smooth_noise(rng, shape, 1.5)
    rgb = EOSIN[None, None, :] * tone[..., None]
    # sinusoids: faint lighter streaks
    streak = _smooth_noise(rng, shape, 3)
    rgb += 18.0 * np.clip(np.abs(streak) < 0.15, 0, 1)[..., None] * (255 - EOSIN) / 255.0
    # nuclei
    yy, xx = np.mgrid[0:size, 0:size]
    nuclei = np.zeros(shape)
    for _ in range(int(size * size / 450)):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(1.6, 3.2)
        nuclei = np.maximum(nuclei, np.clip(r + 0.5 - np.hypot(yy - cy, xx - cx), 0, 1))
    rgb = rgb * (1 - nuclei[..., None]) + HAEMATOXYLIN[None, None, :] * nuclei[..., None]
    return rgb


def _glass_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A region of bare glass entering from one side with a wavy edge (about 10-25 % of the tile)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    side = rng.integers(4)
    coord = [yy, size - 1 - yy, xx, size - 1 - xx][side]
    along = [xx, xx, yy, yy][side]
    depth = size * rng.uniform(0.1, 0.25)
    edge = depth + size * 0.04 * np.sin(along / size * rng.uniform(4, 9) + rng.uniform(0, 6))
    return coord < edge


def _sample_droplets(
    rng: np.random.Generator,
    size: int,
    blocked: np.ndarray,
    radius: tuple[float, float],
    n_single: int,
    n_clumps: int,
    clump_size: tuple[int, int],
    contained: bool = False,
    membranes: bool = False,
) -> list[tuple[float, float, float, float, float]]:
    """Droplet ellipses (cy, cx, a, b, theta): isolated ones and clumps of touching/overlapping ones.

    With ``contained`` every droplet lies inside the square (slides sample cell by cell this way, so
    droplets of neighbouring cells never collide). With ``membranes`` (realism ``"full"``) droplets are
    rounder and a clump member either overlaps its neighbour (centres 55-90 % of the summed radii
    apart) or touches it across a 1-2.5 px gap left for the membrane between them.
    """
    occupied = blocked.copy()
    yy, xx = np.mgrid[0:size, 0:size]
    droplets: list[tuple[float, float, float, float, float]] = []

    def draw_radius() -> float:
        return float(np.exp(rng.uniform(np.log(radius[0]), np.log(radius[1]))))

    def ellipse(cy, cx, r) -> tuple[float, float, float, float, float]:
        ratio = rng.uniform(0.72, 1.0)
        return (cy, cx, r, r * ratio, rng.uniform(0, np.pi))

    def round_ellipse(cy, cx, r) -> tuple[float, float, float, float, float]:
        return (cy, cx, r, r * rng.uniform(0.85, 1.0), rng.uniform(0, np.pi))

    def radius_towards(e, angle: float) -> float:
        """Distance from an ellipse's centre to its border in direction ``angle``."""
        _, _, a, b, theta = e
        return a * b / np.hypot(b * np.cos(angle - theta), a * np.sin(angle - theta))

    def footprint(group, margin: float) -> np.ndarray:
        fp = np.zeros((size, size), bool)
        for cy, cx, a, _, _ in group:
            fp |= np.hypot(yy - cy, xx - cx) <= a + margin
        return fp

    def place(group) -> bool:
        if contained and any(min(cy, cx) - a < 2 or max(cy, cx) + a > size - 2 for cy, cx, a, _, _ in group):
            return False
        fp = footprint(group, 3.0)
        if (fp & occupied).any():
            return False
        occupied[fp] = True
        droplets.extend(group)
        return True

    for _ in range(n_clumps):
        for _attempt in range(40):
            k = int(rng.integers(clump_size[0], clump_size[1] + 1))
            r0 = draw_radius()
            cy, cx = rng.uniform(-r0 * 0.3, size + r0 * 0.3, 2)
            group = [ellipse(cy, cx, r0) if not membranes else round_ellipse(cy, cx, r0)]
            for _ in range(k - 1):
                base = group[int(rng.integers(len(group)))]
                r = draw_radius()
                angle = rng.uniform(0, 2 * np.pi)
                if membranes:
                    new = round_ellipse(0.0, 0.0, r)
                    reach = radius_towards(base, angle) + radius_towards(new, angle + np.pi)
                    dist = reach + rng.uniform(1.0, 2.5) if rng.random() < 0.5 else reach * rng.uniform(0.55, 0.9)
                    group.append((base[0] + dist * np.sin(angle), base[1] + dist * np.cos(angle), *new[2:]))
                    continue
                dist = (base[3] + r * 0.85) * rng.uniform(0.72, 0.98)  # overlapping to just touching
                group.append(ellipse(base[0] + dist * np.sin(angle), base[1] + dist * np.cos(angle), r))
            if place(group):
                break
    for _ in range(n_single):
        for _attempt in range(40):
            r = draw_radius()
            cy, cx = rng.uniform(0, size, 2)
            if place([ellipse(cy, cx, r) if not membranes else round_ellipse(cy, cx, r)]):
                break
    return droplets


def render_droplets(droplets, size: int | tuple[int, int], offset: tuple[int, int] = (0, 0),
                    relabel: bool = True) -> np.ndarray:
    """Instance ids of droplet ellipses; overlaps go to the nearest normalised centre.

    Args:
        droplets: ``(cy, cx, a, b, theta)`` ellipses; droplet ``i`` (0-based) gets id ``i + 1``.
        size: window side, or ``(h, w)``.
        offset: the window's top-left ``(y, x)`` in the droplets' coordinates.
        relabel: renumber the visible droplets 1..N (uint16); otherwise keep ids ``i + 1`` (uint32),
            so that windows of one slide agree.
    """
    h, w = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
    yy, xx = np.mgrid[offset[0] : offset[0] + h, offset[1] : offset[1] + w].astype(float)
    best = np.full((h, w), np.inf)
    label = np.zeros((h, w), np.uint32)
    for i, (cy, cx, a, b, theta) in enumerate(droplets, start=1):
        if cy + a < offset[0] or cy - a > offset[0] + h or cx + a < offset[1] or cx - a > offset[1] + w:
            continue
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        win = (d <= 1.0) & (d < best)
        best[win] = d[win]
        label[win] = i
    if not relabel:
        return label
    # renumber: droplets entirely outside the tile or fully covered disappear
    ids = np.unique(label[label > 0])
    lut = np.zeros(len(droplets) + 1, np.uint16)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[label]


def paint_droplets(rgb: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint droplets (``label > 0``) white with a thin darker membrane onto float RGB tissue, in place."""
    fat = label > 0
    rim = ndi.binary_dilation(fat, iterations=1) & ~fat
    rgb[rim] = rgb[rim] * 0.88
    rgb[fat] = FAT[None, :] - 6.0 * np.abs(rng.standard_normal((int(fat.sum()), 1)))
    return rgb


def paint_droplets_conc(
    conc: np.ndarray,
    label: np.ndarray,
    droplets,
    offset: tuple[int, int],
    seed: int,
    nucleus_px: float,
    membrane_px: int = 1,
) -> np.ndarray:
    """Paint droplets into haematoxylin/eosin/blood concentrations (realism ``"full"``), in place.

    Fat (``label > 0``) is clear; a ``membrane_px`` rim of compressed eosinophilic cytoplasm surrounds
    every droplet and clump and fills the gaps between touching droplets (none inside an overlap);
    about half the droplets larger than a nucleus carry their hepatocyte's nucleus as a dark crescent
    on the rim (decided by a hash of the droplet, so every window of a slide agrees).

    Args:
        conc: ``(h, w, 3)`` concentrations of the window (see
            :meth:`liverseg_monai.data.synth.histo.HistoField.render`).
        label: droplet ids of the window (0: none).
        droplets: the ``(cy, cx, a, b, theta)`` ellipses that may reach the window.
        offset: the window's top-left ``(y, x)`` in the droplets' coordinates.
        seed: seed of the crescent decisions.
        nucleus_px: hepatocyte nucleus radius in pixels.
        membrane_px: membrane thickness in pixels.
    """
    from liverseg_monai.data.synth.histo import hash_uniform

    fat = label > 0
    rim = ndi.binary_dilation(fat, iterations=membrane_px) & ~fat
    h, w = label.shape
    yy, xx = np.mgrid[offset[0] : offset[0] + h, offset[1] : offset[1] + w].astype(float)
    crescent = np.zeros((h, w))
    rn = float(nucleus_px)
    for cy, cx, a, b, _ in droplets:
        if a < 1.2 * rn or cy + a + 3 * rn < offset[0] or cy - a - 3 * rn > offset[0] + h:
            continue
        if cx + a + 3 * rn < offset[1] or cx - a - 3 * rn > offset[1] + w:
            continue
        key_y, key_x = int(round(cy * 64)), int(round(cx * 64))
        if hash_uniform(seed, key_y, key_x, 1) >= 0.5:
            continue
        phi = 2 * np.pi * float(hash_uniform(seed, key_y, key_x, 2))
        r0 = 0.5 * (a + b) + 0.25 * rn
        ny, nx = cy + r0 * np.sin(phi), cx + r0 * np.cos(phi)
        rad = (yy - ny) * np.sin(phi) + (xx - nx) * np.cos(phi)
        tan = -(yy - ny) * np.cos(phi) + (xx - nx) * np.sin(phi)
        crescent = np.maximum(crescent, np.clip((1 - np.hypot(rad / (0.55 * rn), tan / (1.4 * rn))) / 0.2, 0, 1))
    crescent[fat] = 0
    conc[..., 0] = np.where(crescent > 0, np.maximum(conc[..., 0], 1.05 * crescent), conc[..., 0])
    conc[rim] = (0.03, 0.40, 0.0)
    conc[fat] = (0.004, 0.01, 0.0)
    return conc


def make_steatosis_tile(
    rng: np.random.Generator,
    size: int = 256,
    radius: tuple[float, float] = (5.0, 16.0),
    n_single: tuple[int, int] = (6, 12),
    n_clumps: tuple[int, int] = (4, 7),
    clump_size: tuple[int, int] | None = None,
    glass_probability: float = 0.35,
    background: str = "builtin",
    density: float = 1.0,
    realism: str = "basic",
    mpp: float = 0.5,
    stain=None,
    acquisition=None,
) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 tile (H, W, 3) and its uint16 instance label image (H, W).

    Args:
        rng: the random generator (the tile is a function of its state).
        size: tile side in pixels.
        radius: droplet radius range in pixels (log-uniform).
        n_single: range of isolated droplets; n_clumps: range of clumps; clump_size: droplets per clump
            (default 2-4, 2-6 with ``realism="full"``).
        glass_probability: chance of a bare-glass region entering the tile.
        density: multiplies the number of droplets and clumps (they scale with the tile area too).
        background: ``"builtin"`` texture, or ``"histo"`` for
            :func:`liverseg_monai.data.synth.histo.make_histo_tile` (basic realism only).
        realism: ``"basic"`` (default, unchanged) or ``"full"`` (see the module docstring).
        mpp: ``"full"`` only: microns per pixel of the tissue (cell sizes).
        stain: ``"full"`` only: the site's :class:`~liverseg_monai.data.synth.histo.Stain` (default:
            drawn from ``rng``).
        acquisition: ``"full"`` only: the tile's
            :class:`~liverseg_monai.data.synth.acquisition.Acquisition` (default: drawn from ``rng``).
    """
    if realism == "full":
        return _make_realistic_steatosis_tile(
            rng, size, radius, n_single, n_clumps, clump_size or (2, 6), glass_probability, density, mpp, stain,
            acquisition,
        )
    if realism != "basic":
        raise ValueError(f"realism must be 'basic' or 'full', got {realism!r}")
    clump_size = clump_size or (2, 4)
    scale = size / 256.0 * np.sqrt(density)
    if background == "histo":
        from liverseg_monai.data.synth.histo import make_histo_tile

        rgb = np.asarray(make_histo_tile(rng, size)[0], np.float64)[..., :3]
    else:
        rgb = make_parenchyma(rng, size)
    glass = _glass_mask(rng, size) if rng.random() < glass_probability else np.zeros((size, size), bool)
    droplets = _sample_droplets(
        rng, size, glass, radius,
        n_single=int(rng.integers(n_single[0], n_single[1] + 1) * scale**2),
        n_clumps=int(max(1, rng.integers(n_clumps[0], n_clumps[1] + 1) * scale**2)),
        clump_size=clump_size,
    )
    label = render_droplets(droplets, size)
    paint_droplets(rgb, label, rng)  # white droplets, a thin darker membrane around each droplet or clump
    rgb[glass] = GLASS[None, :] - 4.0 * np.abs(rng.standard_normal((int(glass.sum()), 1)))
    rgb = ndi.gaussian_filter(rgb, sigma=(0.6, 0.6, 0)) + rng.normal(0, 3.0, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), label


def _make_realistic_steatosis_tile(
    rng, size, radius, n_single, n_clumps, clump_size, glass_probability, density, mpp, stain, acquisition
) -> tuple[np.ndarray, np.ndarray]:
    from liverseg_monai.data.synth.acquisition import Acquisition, site_stain, vary_stain
    from liverseg_monai.data.synth.histo import PARENCHYMA, HistoField

    k = 1.0 / float(mpp)
    fld = HistoField(
        seed=int(rng.integers(0, 2**31 - 1)), scale=k, region_px=float(size), region_probs=(0.0, 1.0, 0.0),
        steatotic_prob=0.0, realism="full", lobule_px=float(k * rng.uniform(240, 340)),
    )
    y0, x0 = (int(v) for v in rng.integers(-(10**6), 10**6, size=2))
    conc, tissue_label = fld.render(y0, x0, size, size)
    glass = _glass_mask(rng, size) if rng.random() < glass_probability else np.zeros((size, size), bool)
    scale = size / 256.0 * np.sqrt(density)
    droplets = _sample_droplets(
        rng, size, glass | (tissue_label != PARENCHYMA), radius,
        n_single=int(rng.integers(n_single[0], n_single[1] + 1) * scale**2),
        n_clumps=int(max(1, rng.integers(n_clumps[0], n_clumps[1] + 1) * scale**2)),
        clump_size=clump_size, membranes=True,
    )
    label = render_droplets(droplets, size)
    paint_droplets_conc(conc, label, droplets, (0, 0), fld.seed, nucleus_px=3.5 * k,
                        membrane_px=int(rng.integers(1, 3)))
    conc[glass] = (0.005, 0.015, 0.0)
    site = site_stain(rng) if stain is None else stain
    rgb = vary_stain(site, rng).to_rgb(conc, rng, 1.0)
    scan = Acquisition.draw(rng) if acquisition is None else acquisition
    return scan.apply(rgb), label


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def synth_steatosis(
    out: str | os.PathLike,
    seed: int = 0,
    n: int = 12,
    size: int = 256,
    mpp: float = 0.5,
    radius: tuple[float, float] = (5.0, 16.0),
    glass_probability: float = 0.35,
    background: str = "builtin",
    density: float = 1.0,
    slides: int = 0,
    slide_size: tuple[int, int] = (768, 1024),
    realism: str = "basic",
    sites: int = 3,
) -> Path:
    """Write ``n`` synthetic steatosis tiles with instance masks and COCO annotations under ``out``.

    Args:
        out: output folder (created).
        seed: random seed; tile ``i`` uses ``seed * 1000 + i`` (deterministic per seed).
        n: number of tiles, split 60/20/20 into training/validation/testing.
        size: tile side in pixels.
        mpp: microns per pixel recorded in dataset.json (droplet areas in µm² use it).
        radius: droplet radius range in pixels.
        glass_probability: chance that a tile shows a region of bare glass.
        background: tissue texture, ``"builtin"`` or ``"histo"`` (see :func:`make_steatosis_tile`).
        density: droplet density multiplier (1 gives about 25 droplets per 256x256 tile).
        slides: also write this many whole slides of ``slide_size`` (height, width) pixels, listed
            under ``"slides"`` (see :func:`synth_steatosis_slides`; whole-slide inference tests).
        realism: ``"basic"`` (default, unchanged) or ``"full"`` (see the module docstring); ``"full"``
            adds ``site`` to each item and the extra keys ``stain_sites`` (stain matrix and scales per
            site) and ``acquisition`` (focus blur and JPEG quality per image) to ``dataset.json``.
        sites: ``"full"`` only: number of staining sites; tile ``i`` comes from site ``i % sites``.

    Returns:
        the path of ``out/dataset.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = int(size)
    parts = split_names(int(n))
    content: dict = {"training": [], "validation": [], "testing": []}
    coco: dict = {
        "info": {"description": "liverseg-monai synthetic steatosis", "seed": int(seed)},
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "droplet", "supercategory": "steatosis"}],
    }
    ann_id = 1
    full = realism == "full"
    if full:
        from liverseg_monai.data.synth.acquisition import Acquisition, site_stain, stain_record

        site_stains = [site_stain(np.random.default_rng([seed, 7919, j])) for j in range(sites)]
        acquisitions: dict[str, dict] = {}
    elif realism != "basic":
        raise ValueError(f"realism must be 'basic' or 'full', got {realism!r}")
    for i in range(int(n)):
        rng = np.random.default_rng(seed * 1000 + i)
        name = f"steatosis_{i:03d}.png"
        if full:
            scan = Acquisition.draw(rng)
            rgb, label = make_steatosis_tile(
                rng, size, radius=tuple(radius), glass_probability=glass_probability, density=density,
                realism="full", mpp=mpp, stain=site_stains[i % sites], acquisition=scan,
            )
            acquisitions[f"images/{name}"] = scan.record()
        else:
            rgb, label = make_steatosis_tile(
                rng, size, radius=tuple(radius), glass_probability=glass_probability, background=background,
                density=density,
            )
        _write_png(out / "images" / name, rgb)
        _write_png(out / "instances" / name, label)
        coco["images"].append({"id": i + 1, "file_name": f"images/{name}", "width": size, "height": size})
        for obj in range(1, int(label.max()) + 1):
            m = label == obj
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            x0, y0 = int(xs.min()), int(ys.min())
            coco["annotations"].append({
                "id": ann_id, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                "segmentation": mask_to_rle(m), "area": int(m.sum()),
                "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
            })
            ann_id += 1
        item = {"image": f"images/{name}", "label": f"instances/{name}"}
        if full:
            item["site"] = i % sites
        content[parts[i]].append(item)
    atomic_write_text(out / "annotations.json", json.dumps(coco))
    content["mpp"] = float(mpp)
    content["annotations"] = "annotations.json"
    content["description"] = "synthetic H&E steatosis tiles with instance labels (uint16 PNG, 0 = background)"
    if full:
        content.update(realism=realism, stain_sites=[stain_record(st) for st in site_stains],
                       acquisition=acquisitions)
    path = write_datalist(out, content)
    if slides:
        path = synth_steatosis_slides(out, seed, int(slides), tuple(slide_size), mpp, tuple(radius), density,
                                      section="slides", realism=realism)
    return path


# ------------------------------------------------------------------------------------------ slides
class SteatosisSlide:
    """A synthetic steatotic slide: procedural H&E tissue on glass with fat droplets, rendered by tile.

    Droplets are sampled once per ``cell x cell`` square of tissue (isolated droplets and clumps, as
    in the tiles, each square from its own seed, droplets kept inside their square), so the droplet
    list is small and any window renders the same pixels and ids whatever the tiling.

    Args:
        height, width: level-0 size in pixels.
        seed: the slide's seed.
        mpp: microns per pixel (the tissue's cells are drawn at their physical size).
        radius: droplet radius range in pixels; density: droplet density multiplier (see
            :func:`make_steatosis_tile`); clump_size: droplets per clump.
        cell: side of the sampling squares in pixels.
        realism: ``"basic"`` (default, unchanged) or ``"full"``: lobular parenchyma stained by a site,
            droplets only in parenchyma, touching with membranes or overlapping in clumps of 2-6,
            crescent nuclei (see the module docstring).
    """

    def __init__(self, height: int, width: int, seed: int = 0, mpp: float = 0.5,
                 radius: tuple[float, float] = (5.0, 16.0), density: float = 1.0,
                 clump_size: tuple[int, int] | None = None, cell: int = 256, realism: str = "basic"):
        from liverseg_monai.data.synth.histo import HistoField, Stain
        from liverseg_monai.data.synth.slide import SlideRenderer, SlideTissue

        self.height, self.width, self.cell, self.seed = int(height), int(width), int(cell), int(seed)
        self.realism, self.mpp = realism, float(mpp)
        full = realism == "full"
        clump_size = clump_size or ((2, 6) if full else (2, 4))
        rng = np.random.default_rng(seed)
        self.field = HistoField(seed=int(rng.integers(0, 2**31 - 1)), scale=1.0 / mpp, region_px=250.0 / mpp,
                                region_probs=(0.03, 0.64, 0.33), steatotic_prob=0.0,
                                tissue=SlideTissue(self.height, self.width, rng), realism=realism)
        stain = Stain.jittered(rng, 0.7)
        if full:
            from liverseg_monai.data.synth.acquisition import site_stain

            stain = site_stain(np.random.default_rng([self.seed, 7919]))
        self.stain = stain
        self.background = SlideRenderer(self.field, stain, int(rng.integers(0, 2**31 - 1)), None, self.width)
        self.droplets: list[tuple[float, float, float, float, float]] = []
        self._cells: dict[tuple[int, int], list[int]] = {}
        c = self.cell
        scale = c / 256.0 * np.sqrt(density)
        for cy in range(-(-self.height // c)):
            for cx in range(-(-self.width // c)):
                crng = np.random.default_rng([self.seed, cy, cx])
                yy, xx = np.mgrid[cy * c : (cy + 1) * c, cx * c : (cx + 1) * c].astype(float)
                region, _, _ = self.field.regions(yy, xx)
                blocked = (region == 0) | (yy >= self.height) | (xx >= self.width)
                if blocked.mean() > 0.9:
                    continue
                if full:  # droplets only in hepatocytes: not in portal tracts, vessels, infiltrates
                    blocked |= self.field.render(cy * c, cx * c, c, c)[1] != 1
                found = _sample_droplets(crng, c, blocked, tuple(radius),
                                         n_single=int(crng.integers(6, 13) * scale**2),
                                         n_clumps=int(max(1, crng.integers(4, 8) * scale**2)),
                                         clump_size=tuple(clump_size), contained=True, membranes=full)
                first = len(self.droplets)
                self.droplets += [(y + cy * c, x + cx * c, a, b, t) for y, x, a, b, t in found]
                self._cells[(cy, cx)] = list(range(first, len(self.droplets)))

    def window_droplets(self, y: int, x: int, h: int, w: int) -> tuple[list, np.ndarray]:
        """The droplets of the cells a window touches and their global ids (index + 1)."""
        c = self.cell
        idx = [i for cy in range(max(0, y // c), (y + h - 1) // c + 1)
               for cx in range(max(0, x // c), (x + w - 1) // c + 1) for i in self._cells.get((cy, cx), [])]
        return [self.droplets[i] for i in idx], np.asarray(idx, np.int64) + 1

    def labels(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Droplet ids (uint32, global, 0 = none) of a window."""
        drops, ids = self.window_droplets(y, x, h, w)
        local = render_droplets(drops, (h, w), (y, x), relabel=False)
        return np.concatenate([[0], ids]).astype(np.uint32)[local]

    def rgb(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """uint8 RGB of a window: the tissue with the droplets painted in, blurred and noisy like a scan."""
        m = 3  # halo for the membrane and the blur
        if self.realism == "full":
            conc, _ = self.field.render(y - m, x - m, h + 2 * m, w + 2 * m)
            label = self.labels(y - m, x - m, h + 2 * m, w + 2 * m)
            drops, _ = self.window_droplets(y - m, x - m, h + 2 * m, w + 2 * m)
            paint_droplets_conc(conc, label, drops, (y - m, x - m), self.seed, nucleus_px=3.5 / self.mpp)
            rng = np.random.default_rng([self.seed, 7, y, x])
            return self.stain.to_rgb(conc, rng, 1.0)[m : m + h, m : m + w]
        rgb = np.pad(self.background(y, x, h, w).astype(np.float64), ((m, m), (m, m), (0, 0)), mode="reflect")
        label = self.labels(y - m, x - m, h + 2 * m, w + 2 * m)
        rng = np.random.default_rng([self.seed, 7, y, x])
        paint_droplets(rgb, label, rng)
        rgb = ndi.gaussian_filter(rgb, sigma=(0.6, 0.6, 0))[m : m + h, m : m + w] + rng.normal(0, 2.0, (h, w, 3))
        return np.clip(rgb, 0, 255).astype(np.uint8)


def write_steatosis_slide(path_image: str | os.PathLike, path_label: str | os.PathLike, slide: SteatosisSlide,
                          mpp: float = 0.5, tile_size: int = 256, compression: str = "jpeg",
                          progress: bool = False) -> None:
    """Write a :class:`SteatosisSlide` as a pyramidal RGB TIFF and its droplet instance label TIFF.

    Both are streamed tile by tile (:func:`liverseg_monai.io.slide.write_pyramid`), so memory stays
    bounded whatever the slide size. The label TIFF holds uint32 droplet ids (nearest-neighbour levels).
    """
    from liverseg_monai.io.slide import SlideLabelWriter, write_pyramid

    shape = (slide.height, slide.width)
    write_pyramid(path_image, slide.rgb, mpp=mpp, shape=(*shape, 3), dtype=np.uint8, tile_size=tile_size,
                  compression=compression, description={"synthetic": "liverseg_monai.data.synth.steatosis",
                                                        "seed": slide.seed}, progress=progress)
    SlideLabelWriter(path_label, shape, mpp, tile_size, dtype=np.uint32).write(slide.labels, progress=progress)


def synth_steatosis_slides(
    out: str | os.PathLike,
    seed: int = 0,
    n: int = 1,
    size: tuple[int, int] = (2048, 3072),
    mpp: float = 0.5,
    radius: tuple[float, float] = (5.0, 16.0),
    density: float = 1.0,
    compression: str = "jpeg",
    section: str = "testing",
    progress: bool = False,
    realism: str = "basic",
) -> Path:
    """Write ``n`` synthetic steatotic whole slides and list them in ``out/dataset.json``.

    Files: ``slides/steatosis_slide_K.tiff`` (pyramidal RGB, JPEG tiles unless ``compression="zlib"``,
    mpp in the resolution tags and description) and ``slides/steatosis_slide_K_instances.tiff``
    (uint32 droplet ids, the reference). Items ``{"image", "label"}`` go under ``section`` of an
    existing ``dataset.json`` (added to it) or of a new one with ``"mpp"``.

    Args:
        out: dataset folder.
        seed: slide ``k`` uses seed ``seed * 1009 + k``.
        n: number of slides.
        size: level-0 ``(height, width)``.
        mpp: microns per pixel at level 0.
        radius, density: droplet size range (pixels) and density multiplier.
        compression: ``"jpeg"`` (like scanners) or ``"zlib"`` (lossless).
        section: the dataset.json list the slides go to (``testing``; ``slides`` beside a tile dataset).
        progress: show progress bars.
        realism: ``"basic"`` (default, unchanged) or ``"full"`` (see :class:`SteatosisSlide`).
    """
    out = Path(out)
    datalist = out / "dataset.json"
    content = json.loads(datalist.read_text()) if datalist.is_file() else {"training": [], "validation": [],
                                                                           "testing": [], "mpp": float(mpp)}
    items = []
    for k in range(int(n)):
        slide = SteatosisSlide(size[0], size[1], seed * 1009 + k, mpp, tuple(radius), density, realism=realism)
        image, label = f"slides/steatosis_slide_{k}.tiff", f"slides/steatosis_slide_{k}_instances.tiff"
        (out / "slides").mkdir(parents=True, exist_ok=True)
        write_steatosis_slide(out / image, out / label, slide, mpp, compression=compression, progress=progress)
        items.append({"image": image, "label": label})
    content[section] = items
    return write_datalist(out, content)
