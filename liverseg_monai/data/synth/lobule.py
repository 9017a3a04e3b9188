"""Realistic liver microanatomy for the synthetic H&E (the ``realism="full"`` preset of the histology).

Like the basic shader of :mod:`liverseg_monai.data.synth.histo`, every pixel is a function of its
absolute coordinates (hashed jittered lattices, Worley/Voronoi cells, value noise), so a field renders
tile by tile without seams. What each element imitates (scale 1: about 1 micron per pixel):

- lobules: central veins on a domain-warped jittered lattice (spacing ``lobule_px``), portal tracts at
  the lattice corners; lobules are drawn at about half their real size so a tile holds more structure;
- hepatocytes: a jittered Voronoi tessellation (~21 um polygonal cells) with eosinophilic granular
  cytoplasm, thin darker cell borders, one round vesicular nucleus (12 % two) with a chromatin rim,
  speckled chromatin and a nucleolus;
- hepatic plates and sinusoids: cell borders running radially to the nearest central vein open into
  narrow pale sinusoids (wider near the vein), so one-cell-thick plates radiate towards it; flat
  endothelial and plumper Kupffer nuclei and a few red cells lie in the sinusoids;
- central veins: a round lumen with a thin eosinophilic wall and flat endothelial nuclei;
- portal tracts: pale pink fibrous stroma with wavy collagen bundles and spindle fibroblast nuclei,
  holding a portal vein (large thin-walled lumen with red cells), a hepatic artery (small lumen, thick
  muscular wall with circumferential spindle nuclei) and a bile duct (cuboidal cells with dark round
  basal nuclei around a small lumen);
- inflammation: dense clusters of small round dark lymphocyte nuclei at the portal-parenchymal
  interface (interface hepatitis) and small lobular foci; single lymphocytes in sinusoids and stroma;
- macrovesicular steatosis (zone 3 predominant, per lobule): one large clear round vacuole per
  hepatocyte pushing the nucleus to the rim, where it is compressed into a crescent;
- microvesicular steatosis: foamy cytoplasm full of tiny vacuoles around a central nucleus.

Labels (:data:`~liverseg_monai.data.synth.histo.HISTO_CLASSES`): hepatocytes and sinusoids are
parenchyma; the portal stroma is portal_tract; central vein, portal vein and hepatic artery (lumen and
wall) are vessel; the bile duct (epithelium and lumen) is bile_duct; lymphocyte clusters are
inflammation; macrovesicular vacuoles and the foamy cytoplasm of microvesicular cells are steatosis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from liverseg_monai.data.synth.histo import (
    BACKGROUND,
    DUCT,
    INFLAMMATION,
    PARENCHYMA,
    PORTAL,
    STEATOSIS,
    VESSEL,
    hash_uniform,
    value_noise,
)

if TYPE_CHECKING:
    from liverseg_monai.data.synth.histo import HistoField

TAU = 2 * np.pi


def worley(
    seed: int,
    y: np.ndarray,
    x: np.ndarray,
    spacing: float,
    jitter: float,
    salt: int,
    offset: float = 0.0,
    second: bool = True,
) -> dict[str, np.ndarray]:
    """Voronoi cells of a jittered lattice (one seed per lattice cell, 3x3 neighbourhood search).

    Returns per point the nearest seed (``y1``, ``x1``, lattice index ``cy1``, ``cx1``, squared
    distance ``d1``) and, with ``second``, the second nearest (``y2``, ``x2``, ``cy2``, ``cx2``, ``d2``).
    Seeds are hashed once on the window's lattice (``origin``, ``shape``), so per-cell attributes are
    cheap: see :func:`cell_uniform`.
    """
    gy = np.floor(y / spacing - offset).astype(np.int64)
    gx = np.floor(x / spacing - offset).astype(np.int64)
    oy, ox = int(gy.min()) - 1, int(gx.min()) - 1
    ty = np.arange(oy, int(gy.max()) + 2)[:, None]
    tx = np.arange(ox, int(gx.max()) + 2)[None, :]
    table_y = (ty + offset + 0.5 + jitter * (hash_uniform(seed, ty, tx, salt) - 0.5)) * spacing
    table_x = (tx + offset + 0.5 + jitter * (hash_uniform(seed, ty, tx, salt + 1) - 0.5)) * spacing
    a0, b0 = gy - oy, gx - ox
    dist = np.empty((9, *np.shape(y)))
    for i, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        dist[i] = (y - table_y[a0 + dy, b0 + dx]) ** 2 + (x - table_x[a0 + dy, b0 + dx]) ** 2
    r: dict = {}
    for n in ("1", "2") if second else ("1",):
        i = dist.argmin(axis=0)
        r["d" + n] = np.take_along_axis(dist, i[None], axis=0)[0]
        a, b = a0 + i // 3 - 1, b0 + i % 3 - 1
        r["a" + n], r["b" + n] = a, b
        r["y" + n], r["x" + n] = table_y[a, b], table_x[a, b]
        r["cy" + n], r["cx" + n] = a + oy, b + ox
        if second and n == "1":
            np.put_along_axis(dist, i[None], np.inf, axis=0)
    r["origin"], r["shape"] = (oy, ox), table_y.shape
    return r


def cell_uniform(seed: int, cells: dict[str, np.ndarray], salt: int, which: str = "1") -> np.ndarray:
    """A uniform [0, 1) attribute per Voronoi cell of :func:`worley` (nearest, or ``which="2"``),
    equal to ``hash_uniform(seed, cy, cx, salt)`` of the cell's lattice index."""
    (oy, ox), (ny, nx) = cells["origin"], cells["shape"]
    table = hash_uniform(seed, np.arange(oy, oy + ny)[:, None], np.arange(ox, ox + nx)[None, :], salt)
    return table[cells["a" + which], cells["b" + which]]


def packed_nuclei(seed: int, y: np.ndarray, x: np.ndarray, spacing: float, r_range: tuple[float, float],
                  prob: float, salt: int) -> np.ndarray:
    """Randomly packed round nuclei (one per Voronoi cell of a fully jittered lattice, cut by the
    cell border where crowded, as in a dense infiltrate): coverage in [0, 1]."""
    cells = worley(seed, y, x, spacing, 1.0, salt, second=False)
    r = r_range[0] + (r_range[1] - r_range[0]) * cell_uniform(seed, cells, salt + 2)
    present = cell_uniform(seed, cells, salt + 3) < prob
    return np.where(present, soft_disc(np.sqrt(cells["d1"]) / r, 0.2), 0.0)


def soft_disc(d: np.ndarray, edge: float = 0.12) -> np.ndarray:
    """Coverage in [0, 1] of a shape given its normalised radius ``d`` (1 at the border), edge width
    ``edge`` (a nuclear membrane is sharp at this resolution)."""
    return np.clip((1.0 - d) / edge, 0.0, 1.0)


def ring_nuclei(
    y: np.ndarray,
    x: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    r_mid: np.ndarray,
    spacing: float,
    radial: float,
    tangential: float,
    prob: float,
    seed: int,
    key: np.ndarray,
    salt: int,
) -> np.ndarray:
    """Nuclei on a circle around ``(cy, cx)`` of radius ``r_mid``, one per arc of ``spacing``.

    Semi-axes ``radial`` and ``tangential`` (cuboidal epithelium: equal; endothelium and smooth
    muscle: flattened along the circle). ``key`` (an integer per structure) seeds which slots hold a
    nucleus (probability ``prob``).
    """
    theta = np.arctan2(y - cy, x - cx)
    n = np.maximum(np.round(TAU * r_mid / spacing), 5)
    slot = np.round(theta / TAU * n)
    a = slot * TAU / n
    present = hash_uniform(seed, key, slot.astype(np.int64), salt) < prob
    dy, dx = y - (cy + r_mid * np.sin(a)), x - (cx + r_mid * np.cos(a))
    rad = dy * np.sin(a) + dx * np.cos(a)
    tan = -dy * np.cos(a) + dx * np.sin(a)
    return np.where(present, soft_disc(np.hypot(rad / radial, tan / tangential), 0.25), 0.0)


def render_lobules(
    fld: HistoField, y0: int, x0: int, h: int, w: int, parts: bool = False
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Concentrations (h, w, 3: haematoxylin, eosin, blood) and class labels of a window.

    Args:
        fld: the field (seed, ``scale``, ``lobule_px``, ``region_px``/``region_probs`` for glass,
            ``steatotic_prob`` per lobule, ``inflammation_prob`` per portal tract, ``tissue`` mask).
        y0, x0, h, w: the window in absolute pixels.
        parts: also return the hepatocyte layout: ``cell`` (cell id, -1 elsewhere), ``nucleus``,
            ``macro`` (cell holds a macrovesicular vacuole), ``vacuole``, ``sinusoid`` (bool maps).
    """
    s, k = fld.seed, fld.scale
    L = float(fld.lobule_px) if fld.lobule_px else 2.0 * fld.region_px
    y, x = np.meshgrid(
        np.arange(y0, y0 + h, dtype=np.float64), np.arange(x0, x0 + w, dtype=np.float64), indexing="ij"
    )
    region, _, _ = fld.regions(y, x)
    tissue = region != BACKGROUND
    fine = value_noise(s, y / (1.5 * k), x / (1.5 * k), 10)

    # ---- lobules: central veins on a warped lattice, portal tracts at its corners
    rot = TAU * hash_uniform(s, 0, 0, 99)

    def lobule_coords(yy, xx):
        wy = yy + 0.2 * L * (value_noise(s, yy / L, xx / L, 97) - 0.5)
        wx = xx + 0.2 * L * (value_noise(s, yy / L, xx / L, 98) - 0.5)
        return np.cos(rot) * wy - np.sin(rot) * wx, np.sin(rot) * wy + np.cos(rot) * wx

    ly, lx = lobule_coords(y, x)
    cv = worley(s, ly, lx, L, 0.3, 100, second=False)
    dcv = np.sqrt(cv["d1"])
    rcv = k * (10 + 12 * cell_uniform(s, cv, 102))
    rho_y, rho_x = (ly - cv["y1"]) / np.maximum(dcv, 1e-6), (lx - cv["x1"]) / np.maximum(dcv, 1e-6)
    # the radial direction in image coordinates (lobule coordinates are rotated by ``rot``)
    rho_y, rho_x = np.cos(rot) * rho_y + np.sin(rot) * rho_x, -np.sin(rot) * rho_y + np.cos(rot) * rho_x

    # ---- hepatocytes: Voronoi cells; radial borders open into sinusoids
    c = 21.0 * k
    hc = worley(s, y, x, c, 0.6, 120)
    ny, nx = hc["y2"] - hc["y1"], hc["x2"] - hc["x1"]
    nn = np.maximum(np.hypot(ny, nx), 1e-6)
    edge = (hc["d2"] - hc["d1"]) / (2 * nn)  # distance to the border with the second-nearest cell
    ny, nx = ny / nn, nx / nn
    id1 = hc["cy1"] * 1_000_003 + hc["cx1"]
    id2 = hc["cy2"] * 1_000_003 + hc["cx2"]
    lo, hi = np.minimum(id1, id2), np.maximum(id1, id2)
    pair_u = hash_uniform(s, lo, hi, 121)
    pair_v = hash_uniform(s, lo, hi, 122)
    radial = np.abs(ny * rho_y + nx * rho_x) < 0.7
    half = k * (1.6 + 1.6 * value_noise(s, y / (12 * k), x / (12 * k), 123))
    half = half * (1 + 1.2 * np.exp(-np.maximum(dcv - rcv, 0) / (25 * k)))
    sinusoid = tissue & radial & (pair_u < 0.9) & (edge < half)

    cell_u = cell_uniform(s, hc, 124)
    gran = value_noise(s, y / (0.9 * k), x / (0.9 * k), 125)
    eos = 0.23 + 0.07 * cell_u + 0.10 * (gran - 0.5) + 0.05 * (fine - 0.5)
    eos = np.where(edge < 0.6 * k, eos + 0.10, eos)  # cell membranes
    hema = 0.03 + 0.02 * gran  # cytoplasmic basophilia (rough ER)

    # steatosis per lobule (zone 3 first), decided at the cell seed so a cell is all or nothing
    sy_, sx_ = lobule_coords(hc["y1"], hc["x1"])
    cv_seed = worley(s, sy_, sx_, L, 0.3, 100, second=False)
    rcv_seed = k * (10 + 12 * cell_uniform(s, cv_seed, 102))
    steatotic = cell_uniform(s, cv_seed, 130) < fld.steatotic_prob
    density = np.where(steatotic, 0.3 + 0.6 * cell_uniform(s, cv_seed, 131), 0.0)
    zone3 = np.clip(1 - (np.sqrt(cv_seed["d1"]) - rcv_seed) / (0.6 * L), 0, 1)
    p_macro = density * (0.45 + 0.55 * zone3)
    fat_u = cell_uniform(s, hc, 132)
    macro = tissue & (fat_u < p_macro)
    micro = tissue & ~macro & (fat_u < p_macro + 0.25 * density)

    # nuclei: one (or two) round vesicular nuclei per cell
    rn = k * (3.1 + 0.9 * cell_uniform(s, hc, 127))
    phi = TAU * cell_uniform(s, hc, 128)
    binuc = cell_uniform(s, hc, 129) < 0.12
    off = np.where(binuc, 0.95 * rn, 0.0)
    rr = np.where(binuc, 0.8 * rn, rn)
    d_n1 = np.hypot(y - hc["y1"] - off * np.sin(phi), x - hc["x1"] - off * np.cos(phi)) / rr
    d_n2 = np.hypot(y - hc["y1"] + off * np.sin(phi), x - hc["x1"] + off * np.cos(phi)) / rr
    d_n = np.where(binuc, np.minimum(d_n1, d_n2), d_n1)
    # macrovesicular vacuole off the centre, the nucleus pushed to the opposite rim as a crescent
    vphi = TAU * cell_uniform(s, hc, 133)
    rv = c * (0.30 + 0.08 * cell_uniform(s, hc, 134))
    vy, vx = hc["y1"] + 0.1 * c * np.sin(vphi), hc["x1"] + 0.1 * c * np.cos(vphi)
    dv = np.hypot(y - vy, x - vx)
    vacuole = macro & (dv < rv) & ~sinusoid & (edge > 0.5 * k)
    cy_n, cx_n = vy - (rv + 0.15 * rn) * np.sin(vphi), vx - (rv + 0.15 * rn) * np.cos(vphi)
    rad = (y - cy_n) * np.sin(vphi) + (x - cx_n) * np.cos(vphi)
    tan = -(y - cy_n) * np.cos(vphi) + (x - cx_n) * np.sin(vphi)
    d_cres = np.hypot(rad / (0.7 * rn), tan / (1.3 * rn))
    d_n = np.where(macro, np.where(dv < rv, np.inf, d_cres), d_n)
    alpha = np.where(sinusoid | ~tissue, 0.0, soft_disc(d_n))
    speckle = np.clip((gran - 0.4) * 2.5, 0, 1)
    nphi = TAU * cell_uniform(s, hc, 142)
    d_nucleolus = np.hypot(
        y - hc["y1"] - 0.35 * rn * np.sin(nphi) - off * np.sin(phi),
        x - hc["x1"] - 0.35 * rn * np.cos(nphi) - off * np.cos(phi),
    ) / (0.22 * rn)
    chromatin = 0.35 + 0.3 * speckle + 0.35 * ((d_n > 0.75) & (d_n < 1)) + 0.7 * (d_nucleolus < 1)
    chromatin = np.where(macro, 0.95 + 0.15 * speckle, chromatin)  # compressed, hyperchromatic
    # microvesicular fat: tiny vacuoles in foamy cytoplasm around the central nucleus
    micro_vac = micro & (packed_nuclei(s, y, x, 2.8 * k, (0.7 * k, 1.2 * k), 0.85, 140) > 0.5) & (d_n > 1.25)
    micro_vac &= (edge > 0.8 * k) & ~sinusoid
    eos = np.where(micro, eos * 0.75, eos)
    eos = np.where(vacuole | micro_vac, 0.03, eos)
    hema = np.where(vacuole | micro_vac, 0.006, hema)
    eos = eos * (1 - 0.5 * alpha)
    hema = hema + alpha * chromatin

    # sinusoids: clear channels with flat endothelial / plump Kupffer nuclei, a few red cells
    my, mx = 0.5 * (hc["y1"] + hc["y2"]), 0.5 * (hc["x1"] + hc["x2"])
    along = -(y - my) * nx + (x - mx) * ny
    across = (y - my) * ny + (x - mx) * nx
    kupffer = (pair_v >= 0.3) & (pair_v < 0.4)
    d_endo = np.hypot(along / np.where(kupffer, 2.6 * k, 3.4 * k), across / np.where(kupffer, 1.5 * k, 0.8 * k))
    endo = np.where(pair_v < 0.4, soft_disc(d_endo, 0.3), 0.0)
    lymph = np.where((pair_v >= 0.4) & (pair_v < 0.45), soft_disc(np.hypot(along, across) / (2.2 * k), 0.2), 0)
    rbc = np.where(
        hash_uniform(s, lo, hi, 126) < 0.2,
        soft_disc(np.hypot(along - 5 * k, across) / np.minimum(half + 0.5 * k, 3.5 * k), 0.3),
        0.0,
    )
    eos = np.where(sinusoid, 0.035 + 0.02 * fine, eos)
    hema = np.where(sinusoid, 0.008 + 0.9 * endo + 1.4 * lymph, hema)
    blood = np.where(sinusoid, 0.9 * rbc * (1 - endo), 0.0)
    label = np.where(tissue, PARENCHYMA, BACKGROUND).astype(np.uint8)
    label = np.where(vacuole | (micro & ~sinusoid & (alpha < 0.5)), STEATOSIS, label)

    # ---- central veins: round lumen, thin wall, flat endothelium
    dcv_w = dcv * (1 + 0.15 * (value_noise(s, y / (9 * k), x / (9 * k), 103) - 0.5))
    cv_key = cv["cy1"] * 1_000_003 + cv["cx1"]
    cv_lumen = tissue & (dcv_w < rcv)
    cv_wall = tissue & ~cv_lumen & (dcv_w < rcv + 2.0 * k)
    cv_nuc = ring_nuclei(ly, lx, cv["y1"], cv["x1"], rcv + 0.6 * k, 14 * k, 0.7 * k, 3.5 * k, 0.7, s, cv_key, 104)
    cv_rbc = fld._nuclei(y, x, 7.5 * k, 0.3, (3.0 * k, 3.6 * k), 105)
    eos = np.where(cv_wall, 0.36, np.where(cv_lumen, 0.02, eos))
    hema = np.where(cv_wall | cv_lumen, 0.01 + 0.9 * cv_nuc, hema)
    blood = np.where(cv_wall, 0.0, np.where(cv_lumen, 0.9 * cv_rbc, blood))
    label = np.where(cv_lumen | cv_wall, VESSEL, label)

    # ---- portal tracts: fibrous stroma with portal vein, hepatic artery and bile duct
    pt = worley(s, ly, lx, L, 0.3, 110, offset=0.5, second=False)
    pt_key = pt["cy1"] * 1_000_003 + pt["cx1"]
    pt_u = [cell_uniform(s, pt, 112 + i) for i in range(8)]
    R = k * (35 + 35 * pt_u[1])
    ry_, rx_ = ly - pt["y1"], lx - pt["x1"]
    dpt = np.hypot(ry_, rx_) * (1 + 0.3 * (value_noise(s, y / (14 * k), x / (14 * k), 111) - 0.5))
    portal = tissue & (pt_u[0] < 0.85) & (dpt < R)
    a0, ang = TAU * pt_u[2], np.pi * pt_u[3]
    ca, sa = np.cos(ang), np.sin(ang)
    u_al, v_ac = ca * rx_ + sa * ry_, -sa * rx_ + ca * ry_
    wavy = v_ac + 1.6 * k * np.sin(u_al / (9 * k) + TAU * pt_u[4])
    collagen = value_noise(s, wavy / (2.2 * k), u_al / (20 * k), 150)
    spindle = fld._nuclei(ry_, rx_, 10 * k, 0.35, (0.9 * k, 1.3 * k), 151, elong=3.5, angle=ang)
    eos = np.where(portal, 0.10 + 0.24 * collagen**1.6 + 0.04 * (fine - 0.5), eos)
    hema = np.where(portal, 0.015 + 0.9 * spindle, hema)
    blood = np.where(portal, 0.0, blood)
    label = np.where(portal, PORTAL, label)

    def at(dist, angle):
        return pt["y1"] + dist * np.sin(angle), pt["x1"] + dist * np.cos(angle)

    # portal vein: the largest, thin-walled lumen, often with red cells
    vy_, vx_ = at(0.3 * R, a0)
    ratio, vang = 0.65 + 0.35 * pt_u[5], np.pi * pt_u[6]
    dy, dx = ly - vy_, lx - vx_
    dpv = np.hypot((np.cos(vang) * dx + np.sin(vang) * dy), (-np.sin(vang) * dx + np.cos(vang) * dy) / ratio)
    rpv = 0.32 * R
    pv_lumen, pv_wall = portal & (dpv < rpv), portal & (dpv >= rpv) & (dpv < rpv + 1.5 * k)
    pv_rbc = fld._nuclei(y, x, 7.5 * k, 0.35, (3.0 * k, 3.6 * k), 152)
    pv_nuc = ring_nuclei(ly, lx, vy_, vx_, rpv + 0.5 * k, 14 * k, 0.7 * k, 3.5 * k, 0.6, s, pt_key, 153)
    # hepatic artery: small lumen, thick muscular wall with circumferential spindle nuclei
    ay, ax = at(0.55 * R, a0 + 2.2)
    rla = R * (0.06 + 0.04 * pt_u[7])
    roa = 2.1 * rla + 1.5 * k
    dha = np.hypot(ly - ay, lx - ax)
    ha_lumen, ha_wall = portal & (dha < rla), portal & (dha >= rla) & (dha < roa)
    ha_nuc = np.maximum(
        ring_nuclei(ly, lx, ay, ax, rla + 0.33 * (roa - rla), 6 * k, 0.7 * k, 2.8 * k, 0.7, s, pt_key, 154),
        ring_nuclei(ly, lx, ay, ax, rla + 0.72 * (roa - rla), 6 * k, 0.7 * k, 2.8 * k, 0.7, s, pt_key, 155),
    )
    # bile duct: cuboidal epithelium with dark round basal nuclei around a small lumen
    by, bx = at(0.55 * R, a0 - 2.2)
    ro = np.maximum(R * (0.13 + 0.07 * cell_uniform(s, pt, 120)), 7 * k)
    rl = 0.32 * ro
    dbd = np.hypot(ly - by, lx - bx)
    duct, duct_lumen = portal & (dbd < ro), portal & (dbd < rl)
    duct_nuc = ring_nuclei(ly, lx, by, bx, rl + 0.6 * (ro - rl), 3.6 * k, 1.6 * k, 1.6 * k, 1.0, s, pt_key, 156)

    # ---- inflammation: lymphocyte clusters at the interface, small lobular foci
    iy, ix = at(0.9 * R, TAU * cell_uniform(s, pt, 161))
    Ri = R * (0.35 + 0.3 * cell_uniform(s, pt, 162))
    wob = 0.75 + 0.5 * value_noise(s, y / (6 * k), x / (6 * k), 163)
    interface = (pt_u[0] < 0.85) & (cell_uniform(s, pt, 160) < fld.inflammation_prob)
    blob = interface & (np.hypot(ly - iy, lx - ix) < Ri * wob)
    fy, fx, fu, fv, _ = fld._grid_objects(y, x, 80 * k, 18 * k, 164)
    blob |= (fu < 0.5 * fld.inflammation_prob) & (np.hypot(y - fy, x - fx) < k * (8 + 8 * fv) * wob) & ~portal
    blob &= tissue & ~cv_lumen & ~cv_wall
    lympho = packed_nuclei(s, y, x, 6.0 * k, (2.2 * k, 2.8 * k), 0.85, 165)
    eos = np.where(blob, 0.13 + 0.05 * fine, eos)
    hema = np.where(blob, 0.05 + 1.5 * lympho * (0.85 + 0.3 * fine), hema)
    blood = np.where(blob, 0.0, blood)
    label = np.where(blob, INFLAMMATION, label)

    # vessels and duct are drawn over the infiltrate
    eos = np.where(pv_wall, 0.34, np.where(pv_lumen, 0.02, eos))
    hema = np.where(pv_wall | pv_lumen, 0.01 + 0.9 * pv_nuc, hema)
    blood = np.where(pv_lumen, 0.9 * pv_rbc, np.where(pv_wall, 0.0, blood))
    eos = np.where(ha_wall, 0.40 + 0.06 * (fine - 0.5), np.where(ha_lumen, 0.02, eos))
    hema = np.where(ha_wall, 0.03 + 0.9 * ha_nuc, np.where(ha_lumen, 0.006, hema))
    blood = np.where(ha_wall | ha_lumen, 0.0, blood)
    eos = np.where(duct_lumen, 0.02, np.where(duct, 0.20 + 0.04 * (fine - 0.5), eos))
    hema = np.where(duct_lumen, 0.006, np.where(duct, 0.05 + 1.15 * duct_nuc * (0.85 + 0.3 * fine), hema))
    blood = np.where(duct, 0.0, blood)
    label = np.where(pv_lumen | pv_wall | ha_lumen | ha_wall, VESSEL, label)
    label = np.where(duct, DUCT, label)

    # section thickness varies slowly; glass outside the tissue
    eos = eos * (0.92 + 0.16 * value_noise(s, y / (40 * k), x / (40 * k), 170))
    glass_e = 0.012 + 0.012 * value_noise(s, y / (8 * k), x / (8 * k), 11)
    conc = np.stack(
        [np.where(tissue, hema, 0.005), np.where(tissue, eos, glass_e), np.where(tissue, blood, 0.0)], axis=-1
    )
    label = np.where(tissue, label, BACKGROUND).astype(np.uint8)
    if not parts:
        return conc, label
    hepatocyte = tissue & ~sinusoid & (label == PARENCHYMA) | (label == STEATOSIS)
    layout = {
        "cell": np.where(hepatocyte, id1, -1),
        "nucleus": hepatocyte & (alpha > 0.5),
        "macro": macro & hepatocyte,
        "vacuole": vacuole,
        "sinusoid": sinusoid,
    }
    return conc, label, layout
