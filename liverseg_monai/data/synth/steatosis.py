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
) -> list[tuple[float, float, float, float, float]]:
    """Droplet ellipses (cy, cx, a, b, theta): isolated ones and clumps of touching/overlapping ones."""
    occupied = blocked.copy()
    yy, xx = np.mgrid[0:size, 0:size]
    droplets: list[tuple[float, float, float, float, float]] = []

    def draw_radius() -> float:
        return float(np.exp(rng.uniform(np.log(radius[0]), np.log(radius[1]))))

    def ellipse(cy, cx, r) -> tuple[float, float, float, float, float]:
        ratio = rng.uniform(0.72, 1.0)
        return (cy, cx, r, r * ratio, rng.uniform(0, np.pi))

    def footprint(group, margin: float) -> np.ndarray:
        fp = np.zeros((size, size), bool)
        for cy, cx, a, _, _ in group:
            fp |= np.hypot(yy - cy, xx - cx) <= a + margin
        return fp

    def place(group) -> bool:
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
            group = [ellipse(cy, cx, r0)]
            for _ in range(k - 1):
                base = group[int(rng.integers(len(group)))]
                r = draw_radius()
                angle = rng.uniform(0, 2 * np.pi)
                dist = (base[3] + r * 0.85) * rng.uniform(0.72, 0.98)  # overlapping to just touching
                group.append(ellipse(base[0] + dist * np.sin(angle), base[1] + dist * np.cos(angle), r))
            if place(group):
                break
    for _ in range(n_single):
        for _attempt in range(40):
            r = draw_radius()
            cy, cx = rng.uniform(0, size, 2)
            if place([ellipse(cy, cx, r)]):
                break
    return droplets


def render_droplets(droplets, size: int) -> np.ndarray:
    """Instance ids (uint16) of droplet ellipses; overlaps go to the nearest normalised centre."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    best = np.full((size, size), np.inf)
    label = np.zeros((size, size), np.uint16)
    for i, (cy, cx, a, b, theta) in enumerate(droplets, start=1):
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        win = (d <= 1.0) & (d < best)
        best[win] = d[win]
        label[win] = i
    # renumber: droplets entirely outside the tile or fully covered disappear
    ids = np.unique(label[label > 0])
    lut = np.zeros(len(droplets) + 1, np.uint16)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[label]


def make_steatosis_tile(
    rng: np.random.Generator,
    size: int = 256,
    radius: tuple[float, float] = (5.0, 16.0),
    n_single: tuple[int, int] = (6, 12),
    n_clumps: tuple[int, int] = (4, 7),
    clump_size: tuple[int, int] = (2, 4),
    glass_probability: float = 0.35,
    background: str = "builtin",
    density: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 tile (H, W, 3) and its uint16 instance label image (H, W).

    Args:
        rng: the random generator (the tile is a function of its state).
        size: tile side in pixels.
        radius: droplet radius range in pixels (log-uniform).
        n_single: range of isolated droplets; n_clumps: range of clumps; clump_size: droplets per clump.
        glass_probability: chance of a bare-glass region entering the tile.
        density: multiplies the number of droplets and clumps (they scale with the tile area too).
        background: ``"builtin"`` texture, or ``"histo"`` for
            :func:`liverseg_monai.data.synth.histo.make_histo_tile` when that module is installed.
    """
    scale = size / 256.0 * np.sqrt(density)
    if background == "histo":
        from liverseg_monai.data.synth.histo import make_histo_tile

        rgb = np.asarray(make_histo_tile(rng, size), np.float64)[..., :3]
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
    fat = label > 0
    # a thin darker membrane around the outside of each droplet or clump
    rim = ndi.binary_dilation(fat, iterations=1) & ~fat
    rgb[rim] = rgb[rim] * 0.88
    fat_tone = FAT[None, :] - 6.0 * np.abs(rng.standard_normal((int(fat.sum()), 1)))
    rgb[fat] = fat_tone
    rgb[glass] = GLASS[None, :] - 4.0 * np.abs(rng.standard_normal((int(glass.sum()), 1)))
    rgb = ndi.gaussian_filter(rgb, sigma=(0.6, 0.6, 0)) + rng.normal(0, 3.0, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), label


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
    for i in range(int(n)):
        rng = np.random.default_rng(seed * 1000 + i)
        rgb, label = make_steatosis_tile(
            rng, size, radius=tuple(radius), glass_probability=glass_probability, background=background,
            density=density,
        )
        name = f"steatosis_{i:03d}.png"
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
        content[parts[i]].append({"image": f"images/{name}", "label": f"instances/{name}"})
    atomic_write_text(out / "annotations.json", json.dumps(coco))
    content["mpp"] = float(mpp)
    content["annotations"] = "annotations.json"
    content["description"] = "synthetic H&E steatosis tiles with instance labels (uint16 PNG, 0 = background)"
    return write_datalist(out, content)
