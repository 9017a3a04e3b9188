"""Synthetic H&E liver histology: RGB tiles with a 7-class tissue label map.

The tissue is a procedural "shader": every pixel's class and stain amounts are computed from hashes of
its absolute coordinates, so a field can be rendered tile by tile (for a gigapixel slide, see
:mod:`liverseg_monai.data.synth.slide`) with no seams and no full-size array, or as one small tile.

Layout: a warped Voronoi partition into glass, parenchyma and portal-tract regions; inflammatory
clusters, fat vacuoles (only in steatotic parenchyma), vessels and bile ducts (only in portal tracts)
are placed on jittered grids on top. Rendering: hematoxylin, eosin and blood concentrations per pixel,
turned into RGB by Beer-Lambert with per-tile jittered stain vectors, then a slight optical blur and
sensor noise. Classes share colours (glass, lumens and vacuoles are all white; parenchyma and stroma
are both pink; isolated dark lymphocytes appear in every tissue), so a segmentation model needs texture
and context, not a per-class colour.

Example:
    >>> import numpy as np
    >>> rgb, label = make_histo_tile(np.random.default_rng(0), 128)
    >>> rgb.shape, rgb.dtype, label.shape, int(label.max()) <= 6
    ((128, 128, 3), dtype('uint8'), (128, 128), True)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from liverseg_monai.data.datalist import write_datalist
from liverseg_monai.data.synth import split_names
from liverseg_monai.io.atomic import atomic_path

if TYPE_CHECKING:
    from liverseg_monai.data.synth.acquisition import Acquisition

HISTO_CLASSES: tuple[str, ...] = (
    "background",  # 0 glass
    "parenchyma",  # 1 hepatocyte plates
    "portal_tract",  # 2 fibrous stroma
    "vessel",  # 3 lumen with wall and red blood cells
    "bile_duct",  # 4 ring of cuboidal nuclei around a small lumen
    "inflammation",  # 5 dense small dark nuclei
    "steatosis",  # 6 fat vacuoles
)
BACKGROUND, PARENCHYMA, PORTAL, VESSEL, DUCT, INFLAMMATION, STEATOSIS = range(7)
# "basic": the shader of this module (the default, unchanged outputs); "full": realistic microanatomy
# (:mod:`liverseg_monai.data.synth.lobule`), stain sites and scan artefacts
# (:mod:`liverseg_monai.data.synth.acquisition`)
REALISM: tuple[str, ...] = ("basic", "full")

# optical-density vectors (R, G, B): hematoxylin (Ruifrok & Johnston), eosin (between Ruifrok's and
# typical Macenko estimates, pinker than magenta) and a blood (red cell) vector
H_VECTOR = np.array([0.650, 0.704, 0.286])
E_VECTOR = np.array([0.100, 0.850, 0.480])
B_VECTOR = np.array([0.040, 0.800, 0.640])


# ---------------------------------------------------------------------------------------- hashing
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_K = [np.uint64(k) for k in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)]


def _u64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.int64).view(np.uint64)


def hash_uniform(seed: int, iy, ix, salt: int) -> np.ndarray:
    """Deterministic uniform [0, 1) values for integer lattice points (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        x = (
            _u64(iy) * _K[0]
            + _u64(ix) * _K[1]
            + np.uint64(seed & 0xFFFFFFFF) * _K[2]
            + np.uint64(salt) * _K[3]
        )
        x = x ^ (x >> np.uint64(30))
        x = x * _M1
        x = x ^ (x >> np.uint64(27))
        x = x * _M2
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def lattice_uniform(seed: int, iy: np.ndarray, ix: np.ndarray, salt: int) -> np.ndarray:
    """:func:`hash_uniform` at many points of a small lattice window: hash the window once, then index."""
    iy, ix = np.asarray(iy), np.asarray(ix)
    if iy.size < 64:
        return hash_uniform(seed, iy, ix, salt)
    y0, x0 = int(iy.min()), int(ix.min())
    ny, nx = int(iy.max()) - y0 + 1, int(ix.max()) - x0 + 1
    if ny * nx > iy.size // 2:
        return hash_uniform(seed, iy, ix, salt)
    table = hash_uniform(seed, np.arange(y0, y0 + ny)[:, None], np.arange(x0, x0 + nx)[None, :], salt)
    return table[iy - y0, ix - x0]


def value_noise(seed: int, y: np.ndarray, x: np.ndarray, salt: int) -> np.ndarray:
    """Smooth value noise in [0, 1] with unit lattice spacing (scale the coordinates to set the size)."""
    fy, fx = np.floor(y), np.floor(x)
    ty, tx = y - fy, x - fx
    ty = ty * ty * (3 - 2 * ty)
    tx = tx * tx * (3 - 2 * tx)
    iy, ix = fy.astype(np.int64), fx.astype(np.int64)
    if iy.size >= 64:
        y0, x0 = int(iy.min()), int(ix.min())
        ny, nx = int(iy.max()) - y0 + 2, int(ix.max()) - x0 + 2
        if ny * nx <= iy.size // 2:
            t = hash_uniform(seed, np.arange(y0, y0 + ny)[:, None], np.arange(x0, x0 + nx)[None, :], salt)
            a, b = iy - y0, ix - x0
            v00, v01, v10, v11 = t[a, b], t[a, b + 1], t[a + 1, b], t[a + 1, b + 1]
            top = v00 + (v01 - v00) * tx
            bottom = v10 + (v11 - v10) * tx
            return top + (bottom - top) * ty
    v00 = hash_uniform(seed, iy, ix, salt)
    v01 = hash_uniform(seed, iy, ix + 1, salt)
    v10 = hash_uniform(seed, iy + 1, ix, salt)
    v11 = hash_uniform(seed, iy + 1, ix + 1, salt)
    top = v00 + (v01 - v00) * tx
    bottom = v10 + (v11 - v10) * tx
    return top + (bottom - top) * ty


# ------------------------------------------------------------------------------------ the field
@dataclass
class HistoField:
    """A procedural liver-tissue field in absolute pixel coordinates.

    Args:
        seed: hash seed; the same seed renders the same tissue anywhere.
        scale: size multiplier of cellular structures (1.0: hepatocyte nuclei ~6 px across, about
            1 micron per pixel; use ``1 / mpp`` for a slide of ``mpp`` microns per pixel).
        region_px: spacing of the Voronoi regions (lobule / portal tract / glass) in pixels.
        region_probs: probabilities of glass, parenchyma and portal tract per region.
        steatotic_prob: probability that a parenchyma region is steatotic (has fat vacuoles).
        tissue: optional ``f(y, x) -> bool`` mask; pixels outside are glass (slides use it).
        realism: ``"basic"`` (this module's shader) or ``"full"`` (hepatic lobules with hepatocytes,
            sinusoids, central veins, portal triads, interface inflammation and macro- and
            microvesicular steatosis: :func:`liverseg_monai.data.synth.lobule.render_lobules`).
        lobule_px: central-vein spacing for ``"full"`` (default ``2 * region_px``); regions then only
            decide glass, and ``steatotic_prob`` applies per lobule.
        inflammation_prob: for ``"full"``, the share of portal tracts with an interface infiltrate.
    """

    seed: int = 0
    scale: float = 1.0
    region_px: float = 60.0
    region_probs: tuple[float, float, float] = (0.12, 0.58, 0.30)
    steatotic_prob: float = 0.45
    tissue: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    realism: str = "basic"
    lobule_px: float | None = None
    inflammation_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.realism not in REALISM:
            raise ValueError(f"realism must be one of {REALISM}, got {self.realism!r}")

    # ---- regions
    def regions(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Region class (0 glass, 1 parenchyma, 2 portal), region cell y and x index at points."""
        s, R = self.seed, self.region_px
        amp = 0.35 * R
        wy = y + amp * (value_noise(s, y / (0.5 * R), x / (0.5 * R), 1) - 0.5)
        wx = x + amp * (value_noise(s, y / (0.5 * R), x / (0.5 * R), 2) - 0.5)
        cy, cx = np.floor(wy / R).astype(np.int64), np.floor(wx / R).astype(np.int64)
        best = np.full(np.shape(y), np.inf)
        by, bx = cy.copy(), cx.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                gy, gx = cy + dy, cx + dx
                sy = (gy + 0.1 + 0.8 * lattice_uniform(s, gy, gx, 3)) * R
                sx = (gx + 0.1 + 0.8 * lattice_uniform(s, gy, gx, 4)) * R
                d = (wy - sy) ** 2 + (wx - sx) ** 2
                closer = d < best
                best = np.where(closer, d, best)
                by = np.where(closer, gy, by)
                bx = np.where(closer, gx, bx)
        u = lattice_uniform(s, by, bx, 5)
        p0, p1, _ = np.asarray(self.region_probs, float) / np.sum(self.region_probs)
        cls = np.where(u < p0, BACKGROUND, np.where(u < p0 + p1, PARENCHYMA, PORTAL)).astype(np.uint8)
        if self.tissue is not None:
            cls = np.where(self.tissue(y, x), cls, BACKGROUND).astype(np.uint8)
        return cls, by, bx

    def _grid_objects(self, y, x, spacing: float, rmax: float, salt: int, region: bool = False):
        """Per pixel: the jittered object centre of its grid cell and two uniforms (and the region
        class at the centre when ``region``); objects of radius <= ``rmax`` stay inside their cell.

        Cell parameters are computed once per cell of the window, then indexed per pixel.
        """
        s = self.seed
        gy, gx = np.floor(y / spacing).astype(np.int64), np.floor(x / spacing).astype(np.int64)
        y0, x0 = int(gy.min()), int(gx.min())
        cy, cx = np.meshgrid(
            np.arange(y0, int(gy.max()) + 1), np.arange(x0, int(gx.max()) + 1), indexing="ij"
        )
        m = min(rmax / spacing, 0.5)
        oy = (cy + m + (1 - 2 * m) * hash_uniform(s, cy, cx, salt)) * spacing
        ox = (cx + m + (1 - 2 * m) * hash_uniform(s, cy, cx, salt + 1)) * spacing
        u, v = hash_uniform(s, cy, cx, salt + 2), hash_uniform(s, cy, cx, salt + 3)
        w = hash_uniform(s, cy, cx, salt + 4)
        a, b = gy - y0, gx - x0
        out = [oy[a, b], ox[a, b], u[a, b], v[a, b], w[a, b]]
        if region:
            out.append(self.regions(oy, ox)[0][a, b])
        return out

    def _nuclei(self, y, x, spacing, prob, r_range, salt, elong=1.0, angle=None):
        """Soft nucleus mask in [0, 1]: at most one (elliptic) nucleus per jittered grid cell."""
        if angle is not None:  # grid in coordinates rotated along ``angle`` (fibre direction)
            c, sn = np.cos(angle), np.sin(angle)
            y, x = -sn * x + c * y, c * x + sn * y
        oy, ox, u, v, _ = self._grid_objects(y, x * (1.0 / elong), spacing, r_range[1], salt)
        ox = ox * elong
        r = r_range[0] + (r_range[1] - r_range[0]) * v
        d = np.sqrt((y - oy) ** 2 + ((x - ox) / elong) ** 2) / r
        present = u < prob
        return np.where(present, np.clip(1.5 - 1.5 * d, 0, 1) ** 0.7, 0.0)

    # ---- everything
    def render(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Concentrations (h, w, 3: hematoxylin, eosin, blood) and class labels (h, w) of a window."""
        if self.realism == "full":
            from liverseg_monai.data.synth.lobule import render_lobules

            return render_lobules(self, y0, x0, h, w)
        s, k = self.seed, self.scale
        y, x = np.meshgrid(
            np.arange(y0, y0 + h, dtype=np.float64), np.arange(x0, x0 + w, dtype=np.float64), indexing="ij"
        )
        region, ry, rx = self.regions(y, x)
        angle = np.pi * lattice_uniform(s, ry, rx, 6)
        fat_density = np.where(
            lattice_uniform(s, ry, rx, 7) < self.steatotic_prob,
            0.35 + 0.6 * lattice_uniform(s, ry, rx, 8),
            0.0,
        )
        label = region.copy()
        tissue = region > 0
        # region-local coordinates: rotated patterns (plates, fibres) stay in a small coordinate range
        ly, lx = y - ry * self.region_px, x - rx * self.region_px

        fine = value_noise(s, y / (1.5 * k), x / (1.5 * k), 10)
        hema = np.full((h, w), 0.005)
        eos = 0.012 + 0.012 * value_noise(s, y / (8 * k), x / (8 * k), 11)
        blood = np.zeros((h, w))

        # parenchyma: pink granular hepatocyte plates separated by pale sinusoids, round nuclei
        par = region == PARENCHYMA
        c, sn = np.cos(angle), np.sin(angle)
        phase = (c * lx + sn * ly) / (13 * k) + 1.2 * value_noise(s, y / (25 * k), x / (25 * k), 12)
        sinusoid = (phase - np.floor(phase)) < 0.13
        eos = np.where(par, np.where(sinusoid, 0.06, 0.24 + 0.10 * fine), eos)
        hema = np.where(par, 0.03, hema)
        nuc_par = self._nuclei(y, x, 11 * k, 0.7, (2.4 * k, 3.2 * k), 20)
        nuc_par = np.where(sinusoid, 0.0, nuc_par)

        # portal tract: pale fibrous stroma with elongated nuclei along the fibres
        por = region == PORTAL
        cr, sr = np.cos(angle), np.sin(angle)
        u_al, v_ac = cr * lx + sr * ly, -sr * lx + cr * ly
        streak = value_noise(s, v_ac / (2.5 * k), u_al / (22 * k), 13)
        eos = np.where(por, 0.08 + 0.22 * streak**1.5, eos)
        hema = np.where(por, 0.015, hema)
        nuc_por = self._nuclei(ly, lx, 9 * k, 0.4, (0.9 * k, 1.3 * k), 24, elong=3.2, angle=angle)

        # sparse lymphocytes everywhere in tissue (so one dark nucleus does not mean inflammation)
        nuc_lym = self._nuclei(y, x, 22 * k, 0.12, (1.5 * k, 2.0 * k), 28)

        nuclei_h = np.where(par, 1.0 * nuc_par, 0.0) + np.where(por, 0.9 * nuc_por, 0.0)
        nuclei_h = np.maximum(nuclei_h, np.where(tissue, 1.4 * nuc_lym, 0.0))

        # fat vacuoles in steatotic parenchyma: white discs with a thin pink rim
        sp = 17 * k
        oy, ox, u, v, _ = self._grid_objects(y, x, sp, 7 * k, 30)
        r = (2.5 + 4.5 * v) * k
        d = np.sqrt((y - oy) ** 2 + (x - ox) ** 2)
        vac = par & (u < fat_density) & (d < r)
        rim = par & (u < fat_density) & (d >= r) & (d < r + 1.2 * k)
        eos = np.where(vac, 0.02, np.where(rim, 0.45, eos))
        nuclei_h = np.where(vac | rim, 0.0, nuclei_h)
        hema = np.where(vac, 0.005, hema)
        label = np.where(vac, STEATOSIS, label)

        # inflammation: irregular blobs packed with small dark nuclei
        sp = 64 * k
        oy, ox, u, v, _, centre_region = self._grid_objects(y, x, sp, 24 * k, 40, region=True)
        p_inf = np.where(centre_region == PORTAL, 0.55, np.where(centre_region == PARENCHYMA, 0.2, 0.0))
        r = (8 + 10 * v) * k * (0.75 + 0.5 * value_noise(s, y / (6 * k), x / (6 * k), 44))
        blob = tissue & (u < p_inf) & (np.hypot(y - oy, x - ox) < r)
        nuc_inf = self._nuclei(y, x, 4.6 * k, 0.85, (1.4 * k, 1.9 * k), 45)
        eos = np.where(blob, 0.14 + 0.05 * fine, eos)
        hema = np.where(blob, 0.08, hema)
        nuclei_h = np.where(blob, 1.6 * nuc_inf, nuclei_h)
        label = np.where(blob, INFLAMMATION, label)

        # vessels: central veins in parenchyma, portal veins / arteries in portal tracts
        sp = 64 * k
        oy, ox, u, v, w_ecc, centre_region = self._grid_objects(y, x, sp, 24 * k, 50, region=True)
        p_ves = np.where(centre_region == PORTAL, 0.55, np.where(centre_region == PARENCHYMA, 0.3, 0.0))
        rv = (6 + 16 * v) * k
        ecc = 0.7 + 0.3 * w_ecc
        dv = np.hypot((y - oy) / ecc, x - ox)
        ves = (u < p_ves) & (dv < rv)
        wall = ves & (dv >= rv - 2.0 * k)
        lumen = ves & ~wall
        rbc_nuc = self._nuclei(y, x, 5.0 * k, 0.3, (1.5 * k, 1.9 * k), 56)
        eos = np.where(wall, 0.38, np.where(lumen, 0.03, eos))
        blood = np.where(lumen, 1.1 * rbc_nuc, blood)
        hema = np.where(ves, 0.01, hema)
        wall_nuc = self._nuclei(y, x, 8 * k, 0.3, (0.8 * k, 1.1 * k), 58, elong=2.5)
        nuclei_h = np.where(wall, 0.9 * wall_nuc, np.where(lumen, 0.0, nuclei_h))
        label = np.where(ves, VESSEL, label)

        # bile ducts: in portal tracts, a ring of cuboidal nuclei around a small lumen
        sp = 40 * k
        oy, ox, u, v, w_lumen, centre_region = self._grid_objects(y, x, sp, 11 * k, 60, region=True)
        centre_vessel = self._vessel_at(oy, ox)
        p_duct = np.where((centre_region == PORTAL) & ~centre_vessel, 0.5, 0.0)
        ro = (6.0 + 3.5 * v) * k
        rl = ro * (0.3 + 0.15 * w_lumen)
        dd = np.hypot(y - oy, x - ox)
        duct = (u < p_duct) & (dd < ro)
        duct_lumen = duct & (dd < rl)
        rm = 0.5 * (ro + rl)
        n_nuc = np.maximum(np.round(2 * np.pi * rm / (3.2 * k)), 5)
        theta = np.arctan2(y - oy, x - ox)
        kth = np.round(theta / (2 * np.pi) * n_nuc) * (2 * np.pi) / n_nuc
        dn = np.hypot(y - (oy + rm * np.sin(kth)), x - (ox + rm * np.cos(kth))) / (1.3 * k)
        ring_nuc = np.clip(1.5 - 1.5 * dn, 0, 1) ** 0.7
        eos = np.where(duct_lumen, 0.02, np.where(duct, 0.22, eos))
        hema = np.where(duct, 0.05, hema)
        nuclei_h = np.where(duct_lumen, 0.0, np.where(duct, 1.1 * ring_nuc, nuclei_h))
        blood = np.where(duct, 0.0, blood)
        label = np.where(duct, DUCT, label)

        chromatin = 0.7 + 0.6 * fine
        hema = hema + nuclei_h * chromatin
        eos = eos * (0.9 + 0.2 * value_noise(s, y / (3 * k), x / (3 * k), 70))
        conc = np.stack([np.where(tissue, hema, 0.005), eos, np.where(tissue, blood, 0.0)], axis=-1)
        return conc, label.astype(np.uint8)

    def _vessel_at(self, y, x) -> np.ndarray:
        """Whether points fall inside (or next to) a vessel; keeps bile ducts out of vessels."""
        k = self.scale
        oy, ox, u, v, w_ecc, centre_region = self._grid_objects(y, x, 64 * k, 24 * k, 50, region=True)
        p_ves = np.where(centre_region == PORTAL, 0.55, np.where(centre_region == PARENCHYMA, 0.3, 0.0))
        rv = (6 + 16 * v) * k + 6 * k
        return (u < p_ves) & (np.hypot((y - oy) / (0.7 + 0.3 * w_ecc), x - ox) < rv)


# ----------------------------------------------------------------------------------- the stains
@dataclass
class Stain:
    """Beer-Lambert H&E rendering: OD = sum(concentration * vector); RGB = background * 10**-OD."""

    h_vector: np.ndarray = field(default_factory=lambda: H_VECTOR.copy())
    e_vector: np.ndarray = field(default_factory=lambda: E_VECTOR.copy())
    b_vector: np.ndarray = field(default_factory=lambda: B_VECTOR.copy())
    h_scale: float = 1.0
    e_scale: float = 1.0
    background: np.ndarray = field(default_factory=lambda: np.array([244.0, 242.0, 246.0]))
    noise: float = 2.5
    blur: float = 0.6

    @classmethod
    def jittered(cls, rng: np.random.Generator, strength: float = 1.0) -> Stain:
        """A stain with perturbed vectors, amounts, background tint and noise (HED jitter)."""

        def unit(v):
            v = np.abs(v)
            return v / np.linalg.norm(v)

        j = strength
        return cls(
            h_vector=unit(H_VECTOR + rng.normal(0, 0.06 * j, 3)),
            e_vector=unit(E_VECTOR + rng.normal(0, 0.05 * j, 3)),
            b_vector=unit(B_VECTOR + rng.normal(0, 0.04 * j, 3)),
            h_scale=float(np.exp(rng.normal(0, 0.18 * j))),
            e_scale=float(np.exp(rng.normal(0, 0.2 * j))),
            background=np.clip(246 + rng.normal(0, 4 * j) + rng.normal(0, 2.5 * j, 3), 215, 255),
            noise=float(rng.uniform(1.0, 4.0)),
            blur=float(rng.uniform(0.4, 0.9)),
        )

    def to_rgb(
        self, conc: np.ndarray, rng: np.random.Generator, scale: float = 1.0, blur: float | None = None
    ) -> np.ndarray:
        """uint8 RGB from (H, W, 3) hematoxylin/eosin/blood concentrations (``blur`` overrides the optics)."""
        blur = self.blur if blur is None else blur
        if blur > 0:
            conc = ndimage.gaussian_filter(conc, sigma=(blur * scale, blur * scale, 0), mode="nearest")
        od = (
            (self.h_scale * conc[..., :1]) * self.h_vector
            + (self.e_scale * conc[..., 1:2]) * self.e_vector
            + conc[..., 2:3] * self.b_vector
        )
        rgb = self.background * np.power(10.0, -od)
        if self.noise > 0:
            rgb = rgb + rng.normal(0, self.noise, rgb.shape)
        return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- tiles
def make_histo_tile(
    rng: np.random.Generator,
    size: int | tuple[int, int] = 128,
    scale: float | None = None,
    stain_jitter: float = 1.0,
    realism: str = "basic",
    stain: Stain | None = None,
    acquisition: Acquisition | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic H&E tile and its label map.

    Args:
        rng: the random generator (layout, stain and noise are drawn from it).
        size: tile size ``S`` or ``(H, W)`` in pixels.
        scale: cell size multiplier (default: drawn in [0.8, 1.25], ~1 micron per pixel).
        stain_jitter: strength of the per-tile stain variation (0: the reference H&E stain).
        realism: ``"basic"`` (the default, unchanged) or ``"full"``: hepatic lobules drawn from their
            microanatomy (:mod:`liverseg_monai.data.synth.lobule`), the stain of a site with a small
            per-section variation, and the scan's focus blur and JPEG compression
            (:mod:`liverseg_monai.data.synth.acquisition`).
        stain: ``"full"`` only: the site's stain (default: a new site drawn from ``rng``).
        acquisition: ``"full"`` only: blur and JPEG of this tile (default: drawn from ``rng``).

    Returns:
        ``(rgb, label)``: uint8 ``(H, W, 3)`` and uint8 ``(H, W)`` class indices of :data:`HISTO_CLASSES`.
    """
    h, w = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
    k = float(rng.uniform(0.8, 1.25)) if scale is None else float(scale)
    if realism == "full":
        from liverseg_monai.data.synth.acquisition import Acquisition, site_stain, vary_stain

        # lobules at about half their real size (central vein to central vein ~240-340 um)
        fld = HistoField(
            seed=int(rng.integers(0, 2**31 - 1)),
            scale=k,
            region_px=float(max(h, w) * rng.uniform(0.5, 1.0)),
            region_probs=(0.08, 0.62, 0.30),
            realism="full",
            lobule_px=float(k * rng.uniform(240, 340)),
        )
        y0, x0 = (int(v) for v in rng.integers(-(10**6), 10**6, size=2))
        conc, label = fld.render(y0, x0, h, w)
        site = site_stain(rng, stain_jitter) if stain is None else stain
        rgb = vary_stain(site, rng, stain_jitter).to_rgb(conc, rng, k)
        scan = Acquisition.draw(rng, k) if acquisition is None else acquisition
        return scan.apply(rgb), label
    if realism != "basic":
        raise ValueError(f"realism must be one of {REALISM}, got {realism!r}")
    fld = HistoField(
        seed=int(rng.integers(0, 2**31 - 1)),
        scale=k,
        region_px=float(max(h, w) * rng.uniform(0.3, 0.55)),
        region_probs=(0.1, 0.58, 0.32),
    )
    y0, x0 = (int(v) for v in rng.integers(-(10**6), 10**6, size=2))
    conc, label = fld.render(y0, x0, h, w)
    rgb = Stain.jittered(rng, stain_jitter).to_rgb(conc, rng, k)
    return rgb, label


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 grey or RGB PNG atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")


def synth_histo(
    out: str | os.PathLike,
    seed: int = 0,
    n: int = 24,
    size: int = 128,
    scale: float | None = None,
    stain_jitter: float = 1.0,
    realism: str = "basic",
    sites: int = 3,
) -> Path:
    """Write ``n`` H&E tiles with label maps and a ``dataset.json``.

    Layout: ``images/tile_XXXX.png`` (RGB), ``labels/tile_XXXX.png`` (uint8 class indices of
    :data:`HISTO_CLASSES`). Split 60/20/20 into training (with folds), validation and testing; testing
    items carry their labels too so evaluation can use them. ``dataset.json`` has an extra key
    ``classes`` with the class names. With ``realism="full"`` each item also has ``site`` (its
    staining site), and ``dataset.json`` the extra keys ``stain_sites`` (per site: the H, E and blood
    optical-density vectors and concentration scales, see
    :func:`liverseg_monai.data.synth.acquisition.stain_record`) and ``acquisition`` (per image: focus
    blur sigma and JPEG quality, 0 when none).

    Args:
        out: output folder (created).
        seed: random seed; tile ``i`` uses ``seed * 100003 + i`` (the same tile whatever ``n``).
        n: number of tiles.
        size: tile edge in pixels.
        scale: cell size multiplier (``None``: varies per tile).
        stain_jitter: per-tile stain variation strength (``"full"``: between-site spread).
        realism: ``"basic"`` (default) or ``"full"`` (see :func:`make_histo_tile`).
        sites: ``"full"`` only: number of staining sites; tile ``i`` comes from site ``i % sites``.
    """
    if realism not in REALISM:
        raise ValueError(f"realism must be one of {REALISM}, got {realism!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = split_names(n)
    content: dict = {"training": [], "validation": [], "testing": []}
    full = realism == "full"
    if full:
        from liverseg_monai.data.synth.acquisition import Acquisition, site_stain, stain_record

        site_stains = [site_stain(np.random.default_rng([seed, 7919, j]), stain_jitter) for j in range(sites)]
        acquisitions: dict[str, dict] = {}
    for i in range(n):
        rng = np.random.default_rng(seed * 100003 + i)
        image_rel, label_rel = f"images/tile_{i:04d}.png", f"labels/tile_{i:04d}.png"
        item: dict = {"image": image_rel, "label": label_rel}
        if full:
            k = float(rng.uniform(0.8, 1.25)) if scale is None else float(scale)
            scan = Acquisition.draw(rng, k)
            rgb, label = make_histo_tile(
                rng, size, scale=k, stain_jitter=stain_jitter, realism="full",
                stain=site_stains[i % sites], acquisition=scan,
            )
            item["site"] = i % sites
            acquisitions[image_rel] = scan.record()
        else:
            rgb, label = make_histo_tile(rng, size, scale=scale, stain_jitter=stain_jitter)
        save_png(out / image_rel, rgb)
        save_png(out / label_rel, label)
        if parts[i] == "training":
            item["fold"] = len(content["training"]) % 5
        content[parts[i]].append(item)
    content["classes"] = list(HISTO_CLASSES)
    if full:
        content["realism"] = realism
        content["stain_sites"] = [stain_record(st) for st in site_stains]
        content["acquisition"] = acquisitions
    return write_datalist(out, content)
