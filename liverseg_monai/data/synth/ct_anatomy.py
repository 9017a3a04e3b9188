"""Realistic abdominal CT phantoms (realism ``"full"``) for the ``lits`` and ``hcc`` synthetic datasets.

The anatomy is drawn first, in patient coordinates (millimetres, RAS: +x left, +y anterior, +z
superior), as analytic signed distances with noise-perturbed boundaries; the acquisition (voxel
spacing, slice thickness, reconstruction kernel, noise) is drawn next; then the anatomy is sampled on
the voxel grid of the acquisition's affine. Each element imitates one feature of real portal-venous
abdominal CT (LiTS17, HCC-TACE-Seg):

- body: elliptic trunk with a flattened back, subcutaneous fat (-120..-85 HU) of varying thickness and
  an abdominal-wall muscle layer (45-65 HU) -- the muscle that the liver's lateral surface touches;
- spine (vertebral bodies with cortex and discs, posterior elements), ribs (oblique bands in the
  wall) and paraspinal and psoas muscles -- bone and muscle around the liver;
- diaphragm: two domes (right higher) whose muscle separates the liver from the lung bases and the
  heart; the heart (myocardium 90-130 HU, like the liver) sits on the dome above the left lobe;
- liver: smooth union of a right lobe, a left lobe crossing the midline and a caudate lobe, random
  per case in size and position, clipped by the dome, the abdominal wall and an oblique inferior
  surface; enhanced to 100-130 HU with a faint parenchymal texture;
- hepatic and portal vessels: a portal trunk entering at the hilum and branching three to four
  times, three hepatic veins draining to the IVC at the dome (tapered tubes, 140-200 HU);
- spleen (crescent, as bright as the liver), stomach (enhancing wall, gas over fluid in the
  non-dependent part), kidneys (cortex 150-220 HU, brighter than the liver, medulla, sinus fat),
  gallbladder (water density, carved out of the liver), aorta, IVC, bowel loops with gas, fluid and
  faeces -- the neighbours that share the liver's Hounsfield range and touch it, and its confounders;
- lesions (:data:`LESION_KINDS`): hypodense, arterially hyperdense, rim-enhancing, heterogeneous with
  necrosis, and lipiodol deposits (300-1500 HU, the post-TACE signature); lobulated, with blurred
  margins, 5-60 mm in diameter with a dominant lesion and small satellites;
- acquisition (:func:`draw_acquisition`): in-plane pixel 0.6-0.9 mm and slice thickness 0.7-5 mm per
  case; partial volume (a voxel-wide occupancy ramp on every boundary plus the scanner's blur);
  correlated noise (white noise through a reconstruction-kernel filter, 10-25 HU).

A volume smaller than 512 x 512 is the scan resampled to that matrix: its in-plane spacing is the
scanner's pixel times ``512 / size`` (the body stays inside the field of view), and its slice spacing
is the slice thickness or larger, so that the whole liver, the dome and the kidneys are covered.

Example:
    >>> import numpy as np
    >>> affine, ph = make_realistic_case((48, 48, 24), np.random.default_rng(0))
    >>> ph.ct.shape, sorted({les["kind"] for les in ph.meta["lesions"]})
    ((48, 48, 24), ['hyperdense', 'hypodense', 'lipiodol', 'rim'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

from liverseg_monai.data.synth.phantom import Phantom, phantom_affine

REALISM = ("basic", "full")

# lesion kinds and what they imitate
LESION_KINDS = (
    "hypodense",  # metastasis / HCC with washout: darker than the enhanced liver
    "hyperdense",  # arterially hyperdense (hypervascular) nodule, still brighter in the portal phase
    "rim",  # rim-enhancing: hypodense centre with an enhancing ring (metastasis, abscess-like)
    "necrotic",  # heterogeneous: viable tumour with water-like necrotic areas
    "lipiodol",  # post-TACE lipiodol deposits, > 300 HU
)
# how often each kind occurs (LiTS: mostly metastases and HCC; HCC-TACE-Seg: after TACE, lipiodol is common)
LITS_LESION_MIX = {"hypodense": 0.35, "hyperdense": 0.15, "rim": 0.2, "necrotic": 0.2, "lipiodol": 0.1}
HCC_LESION_MIX = {"hypodense": 0.15, "hyperdense": 0.15, "rim": 0.05, "necrotic": 0.2, "lipiodol": 0.45}
# the scanner matrix that smaller volumes are resampled from
SCANNER_MATRIX = 512


def parse_size(size) -> tuple[int, int, int]:
    """``(512, 512, 64)``, ``[64, 64, 32]`` or ``"512x512x64"`` -> a tuple of three ints."""
    if isinstance(size, str):
        size = size.lower().replace(",", "x").split("x")
    out = tuple(int(s) for s in size)
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"size must be three positive voxel counts, got {size!r}")
    return out


def check_realism(realism: str) -> bool:
    """``True`` for ``"full"``, ``False`` for ``"basic"``; anything else is an error."""
    if realism not in REALISM:
        raise ValueError(f"realism must be one of {REALISM}, got {realism!r}")
    return realism == "full"


# --------------------------------------------------------------------------------------------- shapes


class Field:
    """A smooth random field in world coordinates: a sum of random plane waves, about unit std."""

    def __init__(self, rng: np.random.Generator, wavelength: tuple[float, float], n: int = 6):
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        self.k = (d * (2 * np.pi / rng.uniform(*wavelength, size=(n, 1)))).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
        self.amp = np.float32(np.sqrt(2.0 / n))

    def __call__(self, x, y, z):
        out = np.zeros(np.broadcast(x, y, z).shape, np.float32)
        for k, ph in zip(self.k, self.phase):
            out += np.cos(k[0] * x + k[1] * y + k[2] * z + ph)
        return out * self.amp


@dataclass
class Ellipsoid:
    """An ellipsoid with an approximate signed distance in mm (Quilez's bound), optionally rotated."""

    centre: np.ndarray
    axes: np.ndarray
    rot: np.ndarray | None = None  # world -> local rotation

    def local(self, x, y, z):
        q = [x - np.float32(self.centre[0]), y - np.float32(self.centre[1]), z - np.float32(self.centre[2])]
        if self.rot is not None:
            r = self.rot.astype(np.float32)
            q = [r[i, 0] * q[0] + r[i, 1] * q[1] + r[i, 2] * q[2] for i in range(3)]
        return q

    def sd(self, x, y, z):
        q = self.local(x, y, z)
        a = self.axes.astype(np.float32)
        k0 = np.sqrt((q[0] / a[0]) ** 2 + (q[1] / a[1]) ** 2 + (q[2] / a[2]) ** 2)
        k1 = np.sqrt((q[0] / a[0] ** 2) ** 2 + (q[1] / a[1] ** 2) ** 2 + (q[2] / a[2] ** 2) ** 2)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)

    def bbox(self, pad: float = 0.0):
        r = float(np.max(self.axes)) + pad
        return self.centre - r, self.centre + r


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation of at most ``max_deg`` degrees about a random axis (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    t = np.deg2rad(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _smin(a, b, k: float):
    """Polynomial smooth minimum (smooth union of two signed distances, blend radius ``k`` mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _segment_sd(x, y, z, a, b, ra: float, rb: float):
    """Signed distance (mm) to a tapered tube from ``a`` (radius ``ra``) to ``b`` (radius ``rb``)."""
    d = (b - a).astype(np.float32)
    px, py, pz = x - np.float32(a[0]), y - np.float32(a[1]), z - np.float32(a[2])
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / np.float32(d @ d), 0, 1)
    dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
    return dist - (ra + (rb - ra) * t)


@dataclass
class Tube:
    """A tapered segment of a vessel or bowel loop."""

    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float

    def sd(self, x, y, z):
        return _segment_sd(x, y, z, self.a, self.b, self.ra, self.rb)

    def bbox(self, pad: float = 0.0):
        r = max(self.ra, self.rb) + pad
        return np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r


def _branch_tree(rng, start, direction, length, radius, depth, spread=(20.0, 45.0), shrink=(0.65, 0.8)) -> list[Tube]:
    """A bifurcating vessel tree (tapered tubes), each child turned away from its parent by ``spread`` degrees."""
    direction = direction / np.linalg.norm(direction)
    end = start + direction * length
    r_end = radius * rng.uniform(*shrink)
    tubes = [Tube(start, end, radius, r_end)]
    if depth > 0:
        ortho = np.cross(direction, rng.normal(size=3))
        ortho /= np.linalg.norm(ortho)
        for sign in (1, -1):
            t = np.deg2rad(rng.uniform(*spread))
            child = np.cos(t) * direction + sign * np.sin(t) * ortho
            tubes += _branch_tree(rng, end, child, length * rng.uniform(0.6, 0.85), r_end, depth - 1, spread, shrink)
    return tubes


# -------------------------------------------------------------------------------------------- anatomy


@dataclass
class Lesion:
    kind: str
    centre: np.ndarray
    radius: float  # mean radius in mm (diameter / 2)
    axes: np.ndarray  # relative elongation per local axis
    rot: np.ndarray
    lobes: Field  # lobulation (on the unit sphere of directions)
    lobulation: float
    texture: Field
    margin_mm: float
    hu: dict

    def sd(self, x, y, z):
        c = self.centre.astype(np.float32)
        q = [x - c[0], y - c[1], z - c[2]]
        r = self.rot.astype(np.float32)
        q = [(r[i, 0] * q[0] + r[i, 1] * q[1] + r[i, 2] * q[2]) / np.float32(self.axes[i] * self.radius) for i in range(3)]
        d = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
        inv = 1.0 / np.maximum(d, 1e-6)
        lob = self.lobes(q[0] * inv, q[1] * inv, q[2] * inv)
        return (d - (1.0 + self.lobulation * lob)) * np.float32(self.radius)

    def bbox(self, pad: float = 0.0):
        r = self.radius * float(np.max(self.axes)) * (1 + 2.5 * self.lobulation) + pad
        return self.centre - r, self.centre + r

    def record(self) -> dict:
        return {"kind": self.kind, "diameter_mm": round(2 * self.radius, 2),
                "centre_mm": [round(float(c), 2) for c in self.centre],
                "axes_mm": [round(float(self.radius * a), 2) for a in self.axes],
                "margin_mm": round(self.margin_mm, 2), "hu": {k: round(float(v), 1) for k, v in self.hu.items()}}


@dataclass
class Anatomy:
    """One patient's anatomy: shapes in world mm and their enhancement in HU (see the module docstring)."""

    body: dict
    hu: dict
    shapes: dict
    fields: dict
    vessels: dict
    bowel: list
    lesions: list = field(default_factory=list)

    # the liver without the lesions: lobes united, clipped by dome, wall and inferior plane, carved by neighbours
    def liver_sd(self, x, y, z):
        s = self.shapes
        sd = _smin(_smin(s["right_lobe"].sd(x, y, z), s["left_lobe"].sd(x, y, z), self.body["lobe_blend"]),
                   s["caudate"].sd(x, y, z), 6.0)
        sd = sd + self.body["liver_wobble"] * self.fields["liver"](x, y, z)
        sd = np.maximum(sd, z - self.dome(x, y))  # under the diaphragm (a sheet from the dome up)
        n, p0 = self.body["inferior_normal"], self.body["inferior_point"]
        sd = np.maximum(sd, n[0] * (x - p0[0]) + n[1] * (y - p0[1]) + n[2] * (z - p0[2]))
        sd = np.maximum(sd, self.cavity_sd(x, y, z))  # inside the abdominal wall
        for name in ("kidney_r", "kidney_l", "stomach", "spleen", "gallbladder", "ivc", "aorta"):
            if name in s:
                sd = np.maximum(sd, -self.organ_sd(name, x, y, z))
        sd = np.maximum(sd, -self.spine_sd(x, y, z))
        return sd

    def spine_sd(self, x, y, z):
        """The vertebral column with its paraspinal surroundings (what the liver never enters)."""
        b = self.body
        return np.sqrt(x**2 + ((y - np.float32(b["y_vb"])) * 1.15) ** 2) - np.float32(b["vb_r"] + 4.0)

    def dome(self, x, y):
        """Height (z, mm) of the diaphragm: two paraboloid domes, the right one higher."""
        b = self.body
        domes = []
        for side in ("r", "l"):
            cx, cy, top, w = b[f"dome_{side}"]
            domes.append(top - b["dome_drop"] * (((x - cx) / w) ** 2 + ((y - cy) / (0.9 * b["cby"])) ** 2))
        return np.maximum(np.maximum(domes[0], domes[1]), b["dome_floor"])

    def _ellipse_sd(self, x, y, ax, ay_ant, ay_post):
        """Approximate signed distance (mm) to the trunk's cross-section: an ellipse, flatter at the back."""
        ay = np.where(y - self.body["cy"] > 0, np.float32(ay_ant), np.float32(ay_post))
        qx, qy = x / np.float32(ax), (y - np.float32(self.body["cy"])) / ay
        k0 = np.sqrt(qx**2 + qy**2)
        k1 = np.sqrt((qx / np.float32(ax)) ** 2 + (qy / ay) ** 2)
        return k0 * (k0 - 1) / np.maximum(k1, 1e-6)

    def body_sd(self, x, y, z):
        b = self.body
        return self._ellipse_sd(x, y, b["bx"], b["by"], b["by_post"]) + b["skin_wobble"] * self.fields["skin"](x, y, z)

    def muscle_sd(self, x, y, z):
        b = self.body
        f = b["fat_sc"]
        sd = self._ellipse_sd(x, y, b["bx"] - f, b["by"] - f, b["by_post"] - f)
        return sd + b["skin_wobble"] * self.fields["skin"](x, y, z)

    def cavity_sd(self, x, y, z):
        b = self.body
        sd = self._ellipse_sd(x, y, b["cbx"], b["cby"], b["cby_post"])
        return sd + 0.5 * b["skin_wobble"] * self.fields["skin"](x, y, z)

    def organ_sd(self, name, x, y, z):
        s = self.shapes
        if name == "spleen":  # crescent: an ellipsoid minus its hilar concavity
            return np.maximum(s["spleen"].sd(x, y, z), -s["spleen_hilum"].sd(x, y, z)) + 2.0 * self.fields["organ"](x, y, z)
        if name == "heart":
            return np.maximum(s["heart"].sd(x, y, z), self.dome(x, y) + self.body["diaphragm"] - z)
        return s[name].sd(x, y, z) + (1.5 * self.fields["organ"](x, y, z) if name in ("stomach", "kidney_r", "kidney_l") else 0)

    def extent_mm(self) -> tuple[float, float, float]:
        """Half field of view (x/y, in plane) and the z range [lo, hi] the scan must cover."""
        b = self.body
        half_xy = max(b["bx"], b["by"], b["by_post"]) + abs(b["cy"]) + 12.0
        return half_xy, b["z_lo"], b["z_hi"]


def draw_anatomy(
    rng: np.random.Generator,
    lesion_mix: dict[str, float] | None = None,
    n_tumors: tuple[int, int] = (1, 6),
    diameter_mm: tuple[float, float] = (5.0, 60.0),
) -> Anatomy:
    """Draw one patient: body, organs, vessels, bowel and lesions (all in world mm, RAS).

    Args:
        rng: random generator; all draws happen in a fixed order, so a seed fixes the patient.
        lesion_mix: probability of each kind in :data:`LESION_KINDS` (default :data:`LITS_LESION_MIX`).
        n_tumors: inclusive range of the lesion count.
        diameter_mm: lesion diameters: the first (dominant) lesion is log-uniform in
            ``[max(lo, 15), hi]``, the others (satellites, small metastases) in ``[lo, max(lo, min(hi, 30))]``;
            a lesion that does not fit at any depth of a small liver is shrunk to fit.
    """
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    mix = lesion_mix or LITS_LESION_MIX
    # body and wall
    bx, by = u(135, 175), u(100, 130)
    fat_sc, muscle = u(8, 30), u(7, 13)
    by_post = by * u(0.82, 0.92)
    b = dict(bx=bx, by=by, by_post=by_post, cy=u(-8, 8), fat_sc=fat_sc, muscle=muscle, skin_wobble=u(1.5, 4.0))
    b.update(cbx=bx - fat_sc - muscle, cby=by - fat_sc - muscle, cby_post=by_post - fat_sc - muscle)
    cbx, cby = b["cbx"], b["cby"]
    y_back = b["cy"] - b["cby_post"]  # posterior inner wall
    # spine: vertebral body anterior of the posterior wall
    vb_r = u(16, 21)
    y_vb = y_back + u(48, 60)
    b.update(vb_r=vb_r, y_vb=y_vb, vert_pitch=u(30, 36), vert_phase=u(0, 36), disc=u(6, 9))

    hu = dict(
        fat=u(-120, -85), visceral_fat=u(-110, -80), muscle=u(45, 65), liver=u(100, 130), lung=u(-880, -820),
        bone=u(180, 300), cortex=u(550, 900), disc=u(70, 100), rib=u(350, 650),
        aorta=u(150, 200), ivc=u(115, 160), portal=0.0, hepatic=u(140, 185),
        kidney_cortex=u(150, 220), sinus_fat=u(-90, -40), gallbladder=u(0, 25),
        stomach_wall=u(70, 110), stomach_content=u(0, 40), bowel_wall=u(50, 90), gas=-1000.0,
        myocardium=u(90, 130), heart_blood=u(150, 220), diaphragm=u(50, 70), skin=u(20, 50),
    )
    hu["spleen"] = hu["liver"] + u(-5, 15)
    hu["portal"] = max(u(150, 200), hu["liver"] + 30)
    hu["kidney_medulla"] = hu["kidney_cortex"] - u(30, 60)

    # liver lobes (patient's right is -x)
    s = u(0.85, 1.2)
    a_r = np.array([u(60, 80), u(65, 85), u(70, 95)]) * s
    x_r = -cbx + a_r[0] - u(4, 14)  # the right lobe reaches the lateral wall
    c_r = np.array([x_r, b["cy"] + u(-15, 5), u(-15, 15)])
    a_l = np.array([u(45, 85), u(22, 38), u(25, 45)]) * s
    c_l = np.array([u(0, 35) * s, c_r[1] + u(25, 50), c_r[2] + u(15, 40)])
    ivc_c = np.array([u(-28, -16), y_vb + vb_r + u(8, 18)])
    c_c = np.array([ivc_c[0] + u(0, 12), ivc_c[1] + u(14, 24), c_r[2] + u(0, 20)])
    shapes = {
        "right_lobe": Ellipsoid(c_r, a_r, _rotation(rng, 15)),
        "left_lobe": Ellipsoid(c_l, a_l, _rotation(rng, 20)),
        "caudate": Ellipsoid(c_c, np.array([u(12, 20), u(12, 20), u(25, 35)])),
    }
    b["lobe_blend"] = u(8, 16)
    b["liver_wobble"] = u(2.0, 5.0)
    b["diaphragm"] = u(3.0, 5.0)
    # diaphragm domes: the right dome just under the right lobe's top
    top_r = c_r[2] + a_r[2] * u(0.6, 0.85)
    b["dome_r"] = (-cbx * u(0.35, 0.5), b["cy"] + u(-25, 0), top_r, cbx * u(0.55, 0.7))
    b["dome_l"] = (cbx * u(0.35, 0.5), b["cy"] + u(-25, 0), top_r - u(5, 20), cbx * u(0.55, 0.7))
    b["dome_drop"] = u(40, 70)
    b["dome_floor"] = top_r - u(70, 95)
    # inferior surface: oblique plane, lowest posterolaterally
    n = np.array([u(0.15, 0.5), u(0.3, 0.7), -1.0])
    b["inferior_normal"] = n / np.linalg.norm(n)
    b["inferior_point"] = c_r + np.array([0.0, 0.0, -a_r[2] * u(0.45, 0.75)])
    z_tip = b["inferior_point"][2] - a_r[2] * 0.5

    # neighbours, placed against the liver so that they touch it
    k_axes = np.array([u(22, 30), u(20, 26), u(45, 60)])
    shapes["kidney_r"] = Ellipsoid(np.array([-u(55, 75), y_vb + u(-5, 12), b["inferior_point"][2] + u(-10, 15)]),
                                   k_axes, _rotation(rng, 20))
    shapes["kidney_l"] = Ellipsoid(np.array([u(55, 75), y_vb + u(-5, 12), shapes["kidney_r"].centre[2] + u(10, 25)]),
                                   k_axes * u(0.9, 1.1), _rotation(rng, 20))
    sp_axes = np.array([u(20, 32), u(40, 60), u(40, 60)])
    sp_c = np.array([cbx - sp_axes[0] - u(0, 8), b["cy"] + u(-60, -25), b["dome_l"][2] - u(35, 60)])
    shapes["spleen"] = Ellipsoid(sp_c, sp_axes, _rotation(rng, 25))
    shapes["spleen_hilum"] = Ellipsoid(sp_c + np.array([-sp_axes[0] * 1.3, sp_axes[1] * 0.3, 0]), sp_axes * 0.75)
    st_axes = np.array([u(30, 48), u(25, 38), u(40, 60)])
    st_c = np.array([c_l[0] + a_l[0] * u(0.1, 0.5), c_l[1] - a_l[1] - st_axes[1] * u(0.5, 0.9), c_l[2] - u(10, 30)])
    shapes["stomach"] = Ellipsoid(st_c, st_axes, _rotation(rng, 30))
    b.update(stomach_wall=u(3, 7), stomach_gas=u(-0.2, 0.9))
    if rng.random() < 0.8:
        gb_c = np.array([u(-40, -15), c_r[1] + a_r[1] * u(0.25, 0.55), b["inferior_point"][2] + u(-5, 15)])
        shapes["gallbladder"] = Ellipsoid(gb_c, np.array([u(12, 20), u(12, 20), u(25, 45)]), _rotation(rng, 30))
    heart_axes = np.array([u(55, 70), u(45, 55), u(45, 55)])
    h_c = np.array([u(10, 30), b["cy"] + u(5, 30), top_r - u(0, 15) + heart_axes[2] * 0.7])
    shapes["heart"] = Ellipsoid(h_c, heart_axes, _rotation(rng, 20))
    b["myocardium"] = u(8, 13)
    z_top = top_r + u(25, 40)
    z_bottom = min(z_tip, shapes["kidney_r"].centre[2] - k_axes[2] * 0.3) - u(15, 30)
    shapes["ivc"] = Tube(np.array([ivc_c[0], ivc_c[1], z_bottom - 50]), np.array([ivc_c[0], ivc_c[1], top_r + 20]),
                         u(9, 12), u(10, 14))
    aorta_start = np.array([u(5, 18), y_vb + vb_r + u(6, 12), z_bottom - 50])
    aorta_r = u(9, 13)
    shapes["aorta"] = Tube(aorta_start, aorta_start + np.array([0.0, 0.0, z_top - z_bottom + 100]), aorta_r, aorta_r)
    b.update(z_lo=z_bottom, z_hi=z_top, psoas_top=shapes["kidney_r"].centre[2] + u(-10, 20), psoas_r=u(14, 24),
             rib_pitch=u(26, 34), rib_phase=u(0, 34), rib_slope=u(0.3, 0.6), rib_half=u(2.5, 3.5),
             rib_low=b["inferior_point"][2] - u(0, 30))

    fields = {"liver": Field(rng, (40, 90)), "skin": Field(rng, (60, 150)), "organ": Field(rng, (30, 70)),
              "texture": Field(rng, (8, 20), n=8), "content": Field(rng, (6, 15), n=6)}

    # vessels: portal tree from the hilum, hepatic veins from the IVC at the dome
    hilum = np.array([c_c[0] - u(5, 20), c_c[1] + u(5, 15), c_c[2] - u(15, 30)])
    confluence = hilum + np.array([u(25, 40), u(-20, -5), u(-45, -30)])
    portal = [Tube(confluence, hilum, u(6, 8), u(6, 8))]
    r0 = portal[0].rb
    depth = int(rng.integers(3, 5))
    portal += _branch_tree(rng, hilum, c_r - hilum + rng.normal(0, 10, 3), u(25, 40) * s, r0 * 0.8, depth)
    portal += _branch_tree(rng, hilum, c_l - hilum + rng.normal(0, 10, 3), u(25, 40) * s, r0 * 0.7, depth - 1)
    outlet = np.array([ivc_c[0], ivc_c[1], top_r - u(15, 25)])
    hepatic = []
    for target in (c_r + np.array([-a_r[0] * 0.5, -a_r[1] * 0.3, -a_r[2] * 0.4]),
                   (c_r + c_l) / 2 + np.array([0, a_l[1], -a_l[2] * 0.8]),
                   c_l + np.array([a_l[0] * 0.4, 0, -a_l[2] * 0.2])):
        direction = target - outlet + rng.normal(0, 10, 3)
        hepatic += _branch_tree(rng, outlet, direction, u(35, 55) * s, u(5, 7), 2, spread=(25, 50))
    vessels = {"portal": portal, "hepatic": hepatic}

    # bowel: the hepatic flexure under the right lobe and loops in the lower abdomen
    bowel = []
    starts = [np.array([-cbx + u(25, 40), c_r[1] + u(0, 30), z_tip + u(-10, 10)])]
    starts += [np.array([u(-0.6, 0.6) * cbx, u(-0.1, 0.7) * cby, z_bottom + u(-20, 40)]) for _ in range(int(rng.integers(3, 7)))]
    for j, p in enumerate(starts):
        colon = j == 0 or rng.random() < 0.3
        r = u(14, 24) if colon else u(8, 14)
        content = rng.choice(["gas", "fluid", "faeces"], p=[0.4, 0.3, 0.3] if colon else [0.3, 0.5, 0.2])
        d = rng.normal(size=3)
        d[2] *= 0.3
        for _ in range(int(rng.integers(2, 5))):
            d = d / np.linalg.norm(d)
            q = p + d * u(25, 50)
            bowel.append((Tube(p, q, r, r), str(content), float(r)))
            p, d = q, d + rng.normal(0, 0.8, 3)

    anatomy = Anatomy(body=b, hu=hu, shapes=shapes, fields=fields, vessels=vessels, bowel=bowel)

    # lesions: centres deep enough inside the liver (rejection sampling on the analytic liver)
    lo, hi = float(diameter_mm[0]), float(diameter_mm[1])
    n_les = int(rng.integers(n_tumors[0], n_tumors[1] + 1))
    kinds, probs = list(mix), np.array(list(mix.values()), float)
    boxes = [shapes[k].bbox() for k in ("right_lobe", "left_lobe")]
    box_lo, box_hi = np.min([bb[0] for bb in boxes], 0), np.max([bb[1] for bb in boxes], 0)
    cand = rng.uniform(box_lo, box_hi, size=(4000, 3)).astype(np.float32)
    depth_mm = -anatomy.liver_sd(cand[:, 0], cand[:, 1], cand[:, 2])
    for j in range(n_les):
        d_lo, d_hi = (min(max(lo, 15.0), hi), hi) if j == 0 else (lo, max(lo, min(hi, 30.0)))
        diam = float(np.exp(rng.uniform(np.log(d_lo), np.log(d_hi))))
        kind = str(rng.choice(kinds, p=probs / probs.sum()))
        ok = np.flatnonzero(depth_mm > 0.45 * diam)
        if ok.size == 0:  # a small liver: the deepest point, and a lesion that fits
            ok = np.array([int(np.argmax(depth_mm))])
            diam = max(lo, min(diam, 2 * float(depth_mm[ok[0]])))
        centre = cand[int(rng.choice(ok))].astype(float)
        anatomy.lesions.append(_draw_lesion(rng, kind, centre, diam / 2, hu["liver"]))
    return anatomy


def _draw_lesion(rng: np.random.Generator, kind: str, centre: np.ndarray, radius: float, liver_hu: float) -> Lesion:
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    hu = {
        "hypodense": {"core": liver_hu - u(30, 70)},
        "hyperdense": {"core": liver_hu + u(20, 60)},
        "rim": {"core": liver_hu - u(40, 75), "rim": liver_hu + u(15, 50), "rim_mm": u(2, 5)},
        "necrotic": {"core": liver_hu + u(-25, 15), "necrosis": u(5, 30), "necrotic_fraction": u(0.2, 0.6)},
        "lipiodol": {"core": liver_hu - u(20, 50), "lipiodol": u(300, 1500), "lipiodol_fraction": u(0.3, 1.0)},
    }[kind]
    margin = u(0.3, 1.2) if kind == "lipiodol" else u(0.5, 3.0)
    return Lesion(kind=kind, centre=centre, radius=radius, axes=rng.uniform(0.8, 1.2, 3), rot=_rotation(rng, 180),
                  lobes=Field(rng, (1.5, 3.5), n=4), lobulation=u(0.04, 0.2), texture=Field(rng, (max(4.0, radius * 0.4), max(8.0, radius)), n=6),
                  margin_mm=margin, hu=hu)


# ------------------------------------------------------------------------------------------ acquisition


@dataclass
class CTAcquisition:
    """How one case was scanned and reconstructed (see :func:`draw_acquisition`)."""

    spacing: tuple[float, float, float]  # voxel spacing of the written volume (mm)
    pixel_mm: float  # the scanner's in-plane pixel on its 512 x 512 matrix
    slice_thickness_mm: float
    noise_hu: float
    kernel_sigma_vox: float  # in-plane width of the reconstruction-kernel noise filter (voxels)
    kernel_lowcut: float  # weight of the subtracted wide Gaussian (the ramp filter's low-frequency dip)
    kernel_z_vox: float  # through-plane noise correlation (slice overlap)
    psf_vox: tuple[float, float, float]  # Gaussian blur of the image (partial volume + scanner PSF), voxels

    def record(self) -> dict:
        return {"spacing_mm": [round(s, 4) for s in self.spacing], "pixel_mm": round(self.pixel_mm, 4),
                "slice_thickness_mm": round(self.slice_thickness_mm, 3), "noise_hu": round(self.noise_hu, 2),
                "kernel_sigma_vox": round(self.kernel_sigma_vox, 3), "kernel_lowcut": round(self.kernel_lowcut, 3),
                "kernel_z_vox": round(self.kernel_z_vox, 3)}


def draw_acquisition(size: tuple[int, int, int], anatomy: Anatomy, rng: np.random.Generator) -> CTAcquisition:
    """Draw the scan: pixel 0.6-0.9 mm (at least what keeps the body in the 512 field), slices 0.7-5 mm.

    The written volume of ``size`` voxels is the scan resampled to that matrix: in-plane spacing
    ``pixel * 512 / min(size[:2])`` (square pixels), slice spacing the thickness, or more where
    ``size[2]`` slices of that thickness would not cover the liver, the dome and the kidneys.
    """
    half_xy, z_lo, z_hi = anatomy.extent_mm()
    pixel = max(float(rng.uniform(0.6, 0.9)), 2 * half_xy / SCANNER_MATRIX)
    thickness = float(rng.uniform(0.7, 1.5) if rng.random() < 0.5 else rng.uniform(2.0, 5.0))
    sxy = pixel * SCANNER_MATRIX / min(size[0], size[1])
    sz = max(thickness, (z_hi - z_lo) / size[2])
    psf_mm = float(rng.uniform(0.5, 0.9))  # scanner PSF, Gaussian sigma in mm
    return CTAcquisition(
        spacing=(sxy, sxy, sz), pixel_mm=pixel, slice_thickness_mm=thickness, noise_hu=float(rng.uniform(10, 25)),
        kernel_sigma_vox=float(rng.uniform(0.6, 1.1)), kernel_lowcut=float(rng.uniform(0.2, 0.5)),
        kernel_z_vox=float(rng.uniform(0.3, 0.8)),
        psf_vox=(float(np.hypot(0.3, psf_mm / sxy)),) * 2 + (float(np.hypot(0.3, 0.4 * thickness / sz)),),
    )


def correlated_noise(shape, acq: CTAcquisition, rng: np.random.Generator) -> np.ndarray:
    """Reconstruction-kernel noise: white noise through ``G(s) - c G(2.5 s)`` in plane and ``G(sz)`` across.

    The difference of Gaussians has the band-pass power spectrum of filtered back-projection (the ramp
    filter's dip at low frequencies, the apodisation's roll-off at high ones), so neighbouring voxels
    are positively correlated; the result is scaled to ``acq.noise_hu`` standard deviation.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    s = acq.kernel_sigma_vox
    narrow = ndimage.gaussian_filter(white, (s, s, acq.kernel_z_vox), mode="wrap")
    wide = ndimage.gaussian_filter(narrow, (2.3 * s, 2.3 * s, 0), mode="wrap")  # G(s) * G(2.3 s) ~ G(2.5 s)
    noise = narrow - np.float32(acq.kernel_lowcut) * wide
    return noise * np.float32(acq.noise_hu / max(float(noise.std()), 1e-6))


# ---------------------------------------------------------------------------------------------- render


class _Canvas:
    """The voxel grid: world coordinates of every voxel centre, the HU being painted, the masks."""

    def __init__(self, shape, affine: np.ndarray, ramp_mm: float):
        self.shape = tuple(int(s) for s in shape)
        self.affine = affine
        self.inv = np.linalg.inv(affine)
        ijk = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in self.shape], indexing="ij")
        a = affine.astype(np.float32)
        self.p = [a[r, 0] * ijk[0] + a[r, 1] * ijk[1] + a[r, 2] * ijk[2] + a[r, 3] for r in range(3)]
        self.hu = np.full(self.shape, -1000.0, np.float32)
        self.masks: dict[str, np.ndarray] = {}
        self.ramp = np.float32(ramp_mm)
        self.full = (slice(None),) * 3
        # masks that hold others (body) or lie inside others (vessels, gas, lesions): never hidden by a later one
        self.containers = ("body", "gas", "portal_vein", "hepatic_veins", "tumor")

    def region(self, lo, hi):
        """Voxel slices covering the world box [lo, hi] (None if it misses the grid)."""
        corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        v = (self.inv @ corners.T)[:3]
        a = np.maximum(np.floor(v.min(1)).astype(int) - 1, 0)
        b = np.minimum(np.ceil(v.max(1)).astype(int) + 2, self.shape)
        if np.any(b <= a):
            return None
        return tuple(slice(int(i), int(j)) for i, j in zip(a, b))

    def xyz(self, sl):
        return self.p[0][sl], self.p[1][sl], self.p[2][sl]

    def occupancy(self, sd):
        """Partial volume across a boundary: the fraction of a voxel-wide ramp inside ``sd < 0``."""
        return np.clip(0.5 - sd / self.ramp, 0.0, 1.0)

    def paint(self, sl, occ, value) -> None:
        if sl is None:
            return
        self.hu[sl] += occ * (np.float32(value) - self.hu[sl]) if np.isscalar(value) else occ * (value - self.hu[sl])

    def mask(self, name: str, sl, inside, exclusive: bool = True) -> None:
        """Add ``inside`` to mask ``name``; an exclusive structure hides what was painted under it."""
        m = self.masks.setdefault(name, np.zeros(self.shape, bool))
        if sl is None:
            return
        m[sl] |= inside
        if exclusive:
            for other, om in self.masks.items():
                if other not in (name, *self.containers):
                    om[sl] &= ~inside


def _paint_shape(cv: _Canvas, sdf, bbox, value, name: str | None = None, pad: float = 8.0, clip=None):
    sl = cv.region(bbox[0] - pad, bbox[1] + pad)
    if sl is None:
        if name:
            cv.mask(name, None, None)
        return None, None
    x, y, z = cv.xyz(sl)
    sd = sdf(x, y, z)
    if clip is not None:
        sd = np.maximum(sd, clip(x, y, z))
    occ = cv.occupancy(sd)
    cv.paint(sl, occ, value(x, y, z, sd) if callable(value) else value)
    if name:
        cv.mask(name, sl, sd < 0)
    return sl, sd


def render_ct(anatomy: Anatomy, acq: CTAcquisition, shape, affine: np.ndarray, rng: np.random.Generator) -> Phantom:
    """Sample ``anatomy`` on the grid (``shape``, ``affine``) as ``acq`` scans it: HU, masks and metadata.

    Masks: ``body, liver, tumor, portal_vein, hepatic_veins, ivc, aorta, spleen, stomach, kidneys,
    heart, muscle, bone, gallbladder, bowel, gas``; ``liver`` is the LiTS liver (intrahepatic vessels
    and lesions included, gallbladder and IVC excluded); ``tumor`` is every lesion kind.
    """
    A, b, h, s = anatomy, anatomy.body, anatomy.hu, anatomy.shapes
    cv = _Canvas(shape, affine, ramp_mm=min(acq.spacing))
    X, Y, Z = cv.p
    tex = A.fields["texture"]

    # body, subcutaneous fat, wall muscle, abdominal cavity (visceral fat)
    body_sd = A.body_sd(X, Y, Z)
    cv.paint(cv.full, cv.occupancy(body_sd), h["skin"])
    cv.paint(cv.full, cv.occupancy(body_sd + 2.0), h["fat"])
    cv.masks["body"] = body_sd < 0
    muscle_sd = A.muscle_sd(X, Y, Z)
    cv.paint(cv.full, cv.occupancy(muscle_sd), h["muscle"])
    cav_sd = A.cavity_sd(X, Y, Z)
    cav = cv.occupancy(cav_sd)
    cv.paint(cv.full, cav, h["visceral_fat"] + 6.0 * tex(X, Y, Z))
    cv.mask("muscle", cv.full, (muscle_sd < 0) & (cav_sd >= 0))
    del body_sd, muscle_sd

    # thorax above the diaphragm: lung bases, then the diaphragm muscle as a dome sheet
    dome = A.dome(X, Y)
    above = Z - dome - np.float32(b["diaphragm"])
    cv.paint(cv.full, cv.occupancy(np.maximum(-above, cav_sd)), h["lung"])
    dia = np.maximum(np.abs(Z - dome - np.float32(b["diaphragm"] / 2)) - np.float32(b["diaphragm"] / 2), cav_sd)
    cv.paint(cv.full, cv.occupancy(dia), h["diaphragm"])
    cv.mask("muscle", cv.full, dia < 0)

    # spine: vertebral bodies (cortex, cancellous bone, discs), posterior elements; paraspinal and psoas muscles
    yv, rv = b["y_vb"], b["vb_r"]
    vb_sd = np.sqrt(X**2 + ((Y - yv) * 1.15) ** 2) - np.float32(rv)
    phase = np.mod(Z - np.float32(b["vert_phase"]), np.float32(b["vert_pitch"]))
    disc = phase < b["disc"]
    post_sd = np.sqrt((X / 1.0) ** 2 + ((Y - (yv - rv - 22)) / 2.2) ** 2) - 9.0
    for sign in (-1, 1):
        para = np.sqrt(((X - sign * 32) / 26) ** 2 + ((Y - (yv - rv - 28)) / 18) ** 2) - 1
        cv.paint(cv.full, cv.occupancy(para * 20), h["muscle"])
        cv.mask("muscle", cv.full, para < 0)
        psoas_r = np.clip((b["psoas_top"] - Z) * 0.35, 0, b["psoas_r"])
        ps = np.sqrt((X - sign * (rv + psoas_r * 0.8)) ** 2 + (Y - yv) ** 2) - psoas_r
        cv.paint(cv.full, cv.occupancy(np.where(psoas_r > 1, ps, 99)), h["muscle"])
        cv.mask("muscle", cv.full, (ps < 0) & (psoas_r > 1))
    bone_sd = np.minimum(vb_sd, post_sd)
    cv.paint(cv.full, cv.occupancy(bone_sd), np.where(disc, np.float32(h["disc"]), np.float32(h["cortex"])))
    cv.paint(cv.full, cv.occupancy(bone_sd + 2.0), np.where(disc, np.float32(h["disc"]), np.float32(h["bone"])))
    bone = (bone_sd < 0) & ~disc
    # ribs: oblique bands in the wall, sloping down anteriorly, absent at the sternum and the spine
    band = np.cos(2 * np.pi * (Z + np.float32(b["rib_slope"]) * Y - np.float32(b["rib_phase"])) / np.float32(b["rib_pitch"]))
    rib_half = np.float32(min(b["rib_half"], b["muscle"] / 2 - 0.5))  # ribs inside the wall, never in the cavity
    rib_sd = np.maximum(np.abs(cav_sd - np.float32(b["muscle"] / 2)) - rib_half,
                        (np.float32(np.cos(np.pi * 11 / b["rib_pitch"])) - band) * np.float32(b["rib_pitch"] / 3))
    rib_zone = (np.abs(X) > 35) & (Z + 0.3 * np.abs(X) > b["rib_low"])
    rib_sd = np.where(rib_zone, rib_sd, np.float32(99))
    cv.paint(cv.full, cv.occupancy(rib_sd), h["rib"])
    cv.mask("bone", cv.full, bone | (rib_sd < 0))
    del vb_sd, post_sd, bone_sd, band, rib_sd, disc, phase

    in_cavity = lambda x, y, z: A.cavity_sd(x, y, z)  # noqa: E731
    # kidneys: cortex, medulla, sinus fat
    for name in ("kidney_r", "kidney_l"):
        k = s[name]
        sl, sd = _paint_shape(cv, lambda x, y, z, n=name: A.organ_sd(n, x, y, z), k.bbox(), h["kidney_cortex"], "kidneys")
        if sl is not None:
            x, y, z = cv.xyz(sl)
            cv.paint(sl, cv.occupancy(sd + 7.0), h["kidney_medulla"])
            sinus = Ellipsoid(k.centre + np.array([-np.sign(k.centre[0]) * k.axes[0] * 0.6, 0, 0]), k.axes * [0.45, 0.4, 0.45], k.rot)
            cv.paint(sl, cv.occupancy(np.maximum(sinus.sd(x, y, z), sd)), h["sinus_fat"])

    # bowel loops (wall, then gas / fluid / mottled faeces)
    cv.mask("bowel", None, None)
    cv.mask("gas", None, None)
    content_hu = {"gas": -1000.0, "fluid": h["stomach_content"] * 0.5, "faeces": -150.0}
    for tube, content, r in A.bowel:
        sl, sd = _paint_shape(cv, tube.sd, tube.bbox(), h["bowel_wall"], "bowel", clip=in_cavity)
        if sl is None:
            continue
        x, y, z = cv.xyz(sl)
        inner = sd + np.float32(min(3.0, r * 0.25))
        val = content_hu[content]
        if content == "faeces":
            val = np.where(A.fields["content"](x, y, z) > 0.3, np.float32(-900), np.float32(-100) + 60 * tex(x, y, z))
        cv.paint(sl, cv.occupancy(np.maximum(inner, A.cavity_sd(x, y, z))), val)
        if content != "fluid":
            cv.mask("gas", sl, (inner < 0) & (np.asarray(val) < -500), exclusive=False)

    # spleen, stomach (wall, fluid, gas over it in the non-dependent anterior part)
    _paint_shape(cv, lambda x, y, z: A.organ_sd("spleen", x, y, z), s["spleen"].bbox(),
                 lambda x, y, z, sd: h["spleen"] + 4.0 * tex(x, y, z), "spleen", clip=in_cavity)
    st = s["stomach"]
    sl, sd = _paint_shape(cv, lambda x, y, z: A.organ_sd("stomach", x, y, z), st.bbox(), h["stomach_wall"], "stomach",
                          clip=in_cavity)
    if sl is not None:
        x, y, z = cv.xyz(sl)
        lumen = sd + np.float32(b["stomach_wall"])
        gas_level = st.centre[1] + st.axes[1] * (1 - 2 * b["stomach_gas"])
        cv.paint(sl, cv.occupancy(lumen), h["stomach_content"] + 8.0 * tex(x, y, z))
        gas_sd = np.maximum(lumen, np.float32(gas_level) - y)
        cv.paint(sl, cv.occupancy(gas_sd), h["gas"])
        cv.mask("gas", sl, gas_sd < 0, exclusive=False)

    # great vessels and heart
    _paint_shape(cv, s["aorta"].sd, s["aorta"].bbox(), h["aorta"], "aorta")
    _paint_shape(cv, s["ivc"].sd, s["ivc"].bbox(), h["ivc"], "ivc")
    sl, sd = _paint_shape(cv, lambda x, y, z: A.organ_sd("heart", x, y, z), s["heart"].bbox(), h["myocardium"], "heart",
                          clip=in_cavity)
    if sl is not None:
        cv.paint(sl, cv.occupancy(sd + np.float32(b["myocardium"])), h["heart_blood"])

    # liver (texture), gallbladder, then the vessels inside it
    liver_box = [s[k].bbox(10) for k in ("right_lobe", "left_lobe", "caudate")]
    lbox = (np.min([bb[0] for bb in liver_box], 0), np.max([bb[1] for bb in liver_box], 0))
    sl_liv, liver_sd = _paint_shape(cv, A.liver_sd, lbox, lambda x, y, z, sd: h["liver"] + 3.0 * tex(x, y, z), None, pad=0)
    liver = np.zeros(cv.shape, bool)
    liver_occ = np.zeros(cv.shape, np.float32)
    if sl_liv is not None:
        liver[sl_liv] = liver_sd < 0
        cv.mask("liver", sl_liv, liver_sd < 0)
        liver_occ[sl_liv] = cv.occupancy(liver_sd)
    if "gallbladder" in s:
        _paint_shape(cv, s["gallbladder"].sd, s["gallbladder"].bbox(), h["gallbladder"], "gallbladder")
    else:
        cv.mask("gallbladder", None, None)

    cv.mask("portal_vein", None, None)
    cv.mask("hepatic_veins", None, None)
    for family, tubes, value, mask_name in (("portal", A.vessels["portal"], h["portal"], "portal_vein"),
                                            ("hepatic", A.vessels["hepatic"], h["hepatic"], "hepatic_veins")):
        for j, tube in enumerate(tubes):
            sl = cv.region(*tube.bbox(2.0))
            if sl is None:
                continue
            x, y, z = cv.xyz(sl)
            sd = tube.sd(x, y, z)
            trunk = family == "portal" and j == 0
            if not trunk and sl_liv is not None:
                # intrahepatic only: clip to the liver (local index of the vessel box inside the liver box)
                sub = tuple(slice(max(a.start, c.start) - c.start, min(a.stop, c.stop) - c.start) for a, c in zip(sl, sl_liv))
                own = tuple(slice(max(a.start, c.start) - a.start, min(a.stop, c.stop) - a.start) for a, c in zip(sl, sl_liv))
                clipped = np.full(sd.shape, np.float32(99))
                if all(t.stop > t.start for t in sub):
                    clipped[own] = np.maximum(sd[own], liver_sd[sub] + 1.0)
                sd = clipped
            elif not trunk:
                continue
            cv.paint(sl, cv.occupancy(sd), value)
            cv.mask(mask_name, sl, sd < 0, exclusive=trunk)

    # lesions
    tumor = np.zeros(cv.shape, bool)
    records = []
    for les in A.lesions:
        rec = les.record()
        sl = cv.region(*les.bbox(3 * les.margin_mm + 2))
        n_vox = 0
        if sl is not None and sl_liv is not None:
            x, y, z = cv.xyz(sl)
            sd = les.sd(x, y, z)
            occ = 1.0 / (1.0 + np.exp(np.clip(sd / np.float32(max(les.margin_mm, 0.3 * float(cv.ramp))), -30, 30)))
            occ *= liver_occ[sl]  # lesion tissue only inside the liver envelope
            core = np.float32(les.hu["core"]) + 6.0 * les.texture(x, y, z)
            if les.kind == "rim":
                rim_w = np.exp(-(((sd + les.hu["rim_mm"] / 2) / les.hu["rim_mm"]) ** 2))
                core = core + rim_w * np.float32(les.hu["rim"] - les.hu["core"])
            elif les.kind == "necrotic":
                depth = np.clip(-sd / les.radius, 0, 1)
                necrotic = les.texture(x * 1.3, y * 1.3, z * 1.3) + 2.5 * depth > 2.5 * (1 - les.hu["necrotic_fraction"])
                core = np.where(necrotic, np.float32(les.hu["necrosis"]), core + 10.0 * les.texture(x, y, z))
            elif les.kind == "lipiodol":
                thr = np.float32(ndtri(1 - min(les.hu["lipiodol_fraction"], 0.999)))  # quantile of the ~normal field
                dense = les.texture(x, y, z) > thr
                core = np.where(dense, np.float32(les.hu["lipiodol"]) + 40.0 * les.texture(x * 2, y * 2, z * 2), core)
            cv.paint(sl, occ, core)
            inside = (sd < 0) & liver[sl]
            tumor[sl] |= inside
            n_vox = int(inside.sum())
        rec["n_voxels"] = n_vox
        records.append(rec)
    cv.masks["tumor"] = tumor
    cv.masks["liver"] = liver | tumor

    # scanner: blur (partial volume, PSF) then correlated noise
    hu = ndimage.gaussian_filter(cv.hu, acq.psf_vox, mode="nearest")
    hu += correlated_noise(cv.shape, acq, rng)
    ct = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    meta = {"realism": "full", **acq.record(), "lesions": records,
            "body_mm": [round(2 * b["bx"], 1), round(b["by"] + b["by_post"], 1)],
            "liver_hu": round(h["liver"], 1), "spleen_hu": round(h["spleen"], 1),
            "kidney_cortex_hu": round(h["kidney_cortex"], 1), "portal_hu": round(h["portal"], 1),
            "has_gallbladder": "gallbladder" in s}
    tumours = [{"centre_mm": r["centre_mm"], "axes_mm": r["axes_mm"], "hu": r["hu"]["core"], "kind": r["kind"],
                "diameter_mm": r["diameter_mm"]} for r in records]
    return Phantom(ct=ct, masks=cv.masks, tumors=tumours, meta=meta)


def make_realistic_case(
    size,
    rng: np.random.Generator,
    orientation: str | np.ndarray = "RAS",
    rotation_deg: float = 0.0,
    lesion_mix: dict[str, float] | None = None,
    n_tumors: tuple[int, int] = (1, 6),
    diameter_mm: tuple[float, float] = (5.0, 60.0),
) -> tuple[np.ndarray, Phantom]:
    """One full-realism case: draw the anatomy, then the acquisition, then render on its grid.

    Args:
        size: voxels (i, j, k), e.g. ``(128, 128, 64)`` or ``(512, 512, 64)`` for full scanner slices.
        rng: random generator (the case's seed).
        orientation, rotation_deg: voxel orientation and oblique rotation (see
            :func:`~liverseg_monai.data.synth.phantom.phantom_affine`).
        lesion_mix, n_tumors, diameter_mm: see :func:`draw_anatomy`.

    Returns:
        ``(affine, phantom)``; ``phantom.meta`` records the acquisition and every lesion's kind and size.
    """
    size = parse_size(size)
    anatomy = draw_anatomy(rng, lesion_mix, n_tumors, diameter_mm)
    acq = draw_acquisition(size, anatomy, rng)
    affine = phantom_affine(size, acq.spacing, orientation, rotation_deg=rotation_deg)
    # centre the scan on the covered z range
    affine[2, 3] += (anatomy.body["z_lo"] + anatomy.body["z_hi"]) / 2
    return affine, render_ct(anatomy, acq, size, affine, rng)
