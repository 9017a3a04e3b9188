"""Abdominal CT phantoms: the anatomy shared by the ``lits`` and ``hcc`` synthetic datasets.

The phantom is defined in patient coordinates (millimetres, RAS: +x left, +y anterior, +z superior)
and sampled at the voxel centres given by an affine, so the same anatomy lands in the same physical
place whatever the voxel orientation (RAS, LPS, oblique) or spacing. Values are Hounsfield units of
the kind a contrast-enhanced portal-venous CT shows: air -1000, fat about -100, muscle about 50,
liver about 60 with brighter portal vessels, spleen 50, kidneys 160, aorta 180, spine 300-700,
hypo-dense (about 20) or hyper-dense (about 110) tumours with blurred margins, and scanner noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

# field of view of a default phantom, in mm (x, y, z)
FOV_MM = (400.0, 400.0, 240.0)

ORIENTATIONS = {
    # voxel axis directions in RAS world coordinates
    "RAS": np.diag([1.0, 1.0, 1.0]),
    "LPS": np.diag([-1.0, -1.0, 1.0]),
    "LAS": np.diag([-1.0, 1.0, 1.0]),
    "RPI": np.diag([1.0, -1.0, -1.0]),
}


def phantom_affine(shape, spacing, orientation: str | np.ndarray = "RAS", rotation_deg: float = 0.0) -> np.ndarray:
    """A 4x4 voxel-to-RAS affine that centres a volume of ``shape`` voxels on the world origin.

    Args:
        shape: voxel counts (i, j, k).
        spacing: voxel size in mm along (i, j, k).
        orientation: one of :data:`ORIENTATIONS` (axis codes of the voxel axes) or a 3x3 direction matrix.
        rotation_deg: an extra rotation about the superior axis, for oblique volumes.
    """
    direction = ORIENTATIONS[orientation] if isinstance(orientation, str) else np.asarray(orientation, float)
    if rotation_deg:
        t = np.deg2rad(rotation_deg)
        rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        direction = rot @ direction
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing, float)[None, :]
    centre_vox = (np.asarray(shape, float) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre_vox
    return affine


@dataclass
class Phantom:
    """A sampled phantom: the CT in HU and a boolean mask per structure, all of the sampled shape."""

    ct: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    tumors: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # realism "full": acquisition and lesion records (phantoms.json)

    def lits_label(self) -> np.ndarray:
        """LiTS labels: 0 background, 1 liver (vessels inside it included), 2 tumour."""
        lab = np.zeros(self.ct.shape, np.uint8)
        lab[self.masks["liver"]] = 1
        lab[self.masks["tumor"]] = 2
        return lab


def _ellipsoid(p, centre, axes):
    return sum(((p[i] - centre[i]) / axes[i]) ** 2 for i in range(3))


def _tube(p, start, end, radius):
    """Squared normalised distance to a segment: < 1 inside a tube of ``radius`` mm."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    d = end - start
    t = sum((p[i] - start[i]) * d[i] for i in range(3)) / float(d @ d)
    t = np.clip(t, 0, 1)
    return sum((p[i] - (start[i] + t * d[i])) ** 2 for i in range(3)) / radius**2


def make_ct_phantom(
    shape,
    affine: np.ndarray,
    rng: np.random.Generator,
    n_tumors: tuple[int, int] = (1, 3),
    tumor_radius_mm: tuple[float, float] = (12.0, 30.0),
    noise_hu: float = 12.0,
) -> Phantom:
    """Sample one random abdominal phantom on the voxel grid ``shape`` with ``affine``.

    Args:
        shape: voxel counts (i, j, k).
        affine: voxel-to-RAS affine (see :func:`phantom_affine`).
        rng: the random generator; the same seed gives the same phantom.
        n_tumors: inclusive range of tumour count.
        tumor_radius_mm: range of tumour radii in mm.
        noise_hu: standard deviation of the Gaussian scanner noise, in HU.

    Returns:
        a :class:`Phantom` with int16 HU and masks ``body, liver, tumor, portal_vein, aorta, spleen``.
    """
    shape = tuple(int(s) for s in shape)
    ijk = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    a = affine.astype(np.float32)
    p = [a[r, 0] * ijk[0] + a[r, 1] * ijk[1] + a[r, 2] * ijk[2] + a[r, 3] for r in range(3)]
    del ijk
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731

    hu = np.full(shape, -1000.0, np.float32)
    masks: dict[str, np.ndarray] = {}

    # body: elliptic cylinder with a fat layer and a muscle wall
    bx, by = u(150, 175), u(110, 130)
    body_r = (p[0] / bx) ** 2 + (p[1] / by) ** 2
    masks["body"] = body_r < 1
    hu[masks["body"]] = -100 + rng.normal(0, 5)
    muscle = ((p[0] / (bx - 15)) ** 2 + (p[1] / (by - 15)) ** 2) < 1
    hu[muscle] = 50
    inner = ((p[0] / (bx - 25)) ** 2 + (p[1] / (by - 25)) ** 2) < 1
    hu[inner] = -60  # visceral fat
    # bowel-like soft tissue blobs
    for _ in range(6):
        c = (u(-60, 80), u(-10, 70), u(-100, 60))
        blob = _ellipsoid(p, c, (u(15, 30), u(15, 30), u(20, 40))) < 1
        hu[blob & inner] = u(20, 40)

    # spine and aorta, posterior midline
    spine = (p[0] ** 2 + (p[1] + by * 0.62) ** 2) < u(16, 22) ** 2
    hu[spine & masks["body"]] = 350
    cortex = spine & ~ndimage.binary_erosion(spine, iterations=1)
    hu[cortex & masks["body"]] = 700
    ax, ay = u(10, 25), -by * 0.62 + u(30, 38)
    masks["aorta"] = (((p[0] - ax) ** 2 + (p[1] - ay) ** 2) < u(9, 13) ** 2) & masks["body"]
    hu[masks["aorta"]] = 180

    # kidneys and spleen
    for side in (-1, 1):
        kid = _ellipsoid(p, (side * u(60, 75), -by * 0.45, u(-70, -40)), (u(22, 28), u(18, 24), u(45, 55))) < 1
        hu[kid & inner] = 160
    masks["spleen"] = (_ellipsoid(p, (u(85, 100), -by * 0.2, u(10, 40)), (u(25, 35), u(35, 45), u(40, 55))) < 1) & inner
    hu[masks["spleen"]] = 50

    # liver: a deformed, tapered ellipsoid in the right upper abdomen
    lc = np.array([-u(45, 65), u(0, 20), u(0, 30)])
    la = np.array([u(70, 90), u(60, 75), u(65, 85)])
    taper = 1.0 - 0.35 * np.clip((p[0] - lc[0]) / la[0], 0, None)  # thinner towards the patient's left
    wobble = 0.12 * np.sin(p[0] / u(25, 40) + u(0, 6)) * np.cos(p[2] / u(25, 40) + u(0, 6))
    liver_r = ((p[0] - lc[0]) / la[0]) ** 2 + ((p[1] - lc[1]) / (la[1] * taper)) ** 2 + ((p[2] - lc[2]) / (la[2] * taper)) ** 2
    masks["liver"] = (liver_r + wobble < 1) & inner
    hu[masks["liver"]] = u(55, 70)

    # portal vein entering at the hilum and branching
    hilum = lc + np.array([la[0] * 0.35, -la[1] * 0.2, -la[2] * 0.1])
    pv = _tube(p, hilum + np.array([30, -10, -40]), hilum, u(6, 8)) < 1
    for _ in range(3):
        tip = lc + np.array([u(-0.6, 0.2) * la[0], u(-0.5, 0.5) * la[1], u(-0.5, 0.6) * la[2]])
        pv |= _tube(p, hilum, tip, u(3, 5)) < 1
    masks["portal_vein"] = pv & (masks["liver"] | (_tube(p, hilum + np.array([30, -10, -40]), hilum, 8) < 1)) & inner
    hu[masks["portal_vein"]] = u(150, 180)

    # tumours: inside the liver, hypo- or hyper-dense, blurred margins (label = the core ellipsoid)
    tumor = np.zeros(shape, bool)
    blend = np.zeros(shape, np.float32)
    tumors = []
    for _ in range(int(rng.integers(n_tumors[0], n_tumors[1] + 1))):
        r = u(*tumor_radius_mm)
        c = lc + np.array([u(-0.45, 0.2) * la[0], u(-0.35, 0.35) * la[1], u(-0.35, 0.35) * la[2]])
        axes = np.array([r * u(0.8, 1.2), r * u(0.8, 1.2), r * u(0.8, 1.2)])
        d = np.sqrt(_ellipsoid(p, c, axes))
        core = (d < 1) & masks["liver"]
        tumor_hu = u(10, 30) if rng.random() < 0.7 else u(100, 120)
        w = 1.0 / (1.0 + np.exp((d - 1.0) / 0.12))  # soft edge about 12 % of the radius
        w = np.where(masks["liver"], w, 0)
        hu = hu + w * (tumor_hu - hu) * (w > blend)
        blend = np.maximum(blend, w)
        tumor |= core
        tumors.append({"centre_mm": c.tolist(), "axes_mm": axes.tolist(), "hu": tumor_hu})
    masks["tumor"] = tumor

    hu += rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    ct = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    return Phantom(ct=ct, masks=masks, tumors=tumors)
