"""Synthetic LiTS17: abdominal CT phantoms in the LiTS NIfTI layout.

Writes ``volume-N.nii.gz`` (int16 HU) and ``segmentation-N.nii.gz`` (uint8: 0 background, 1 liver,
2 tumour) as the LiTS challenge ships them, plus ``dataset.json``. Cases alternate between RAS and
LPS voxel orientations (and an optional oblique one), with anisotropic spacing, so consumers must
respect the affine.

Two presets (``--realism``):

- ``basic`` (default): :func:`~liverseg_monai.data.synth.phantom.make_ct_phantom`, an elliptical body
  with a smooth blob liver over a fixed 400 x 400 x 240 mm field of view;
- ``full``: :func:`~liverseg_monai.data.synth.ct_anatomy.make_realistic_case`, imitating LiTS17's
  real features, one line each:

  - neighbours in the liver's HU range touching it: spleen, stomach wall, heart above the dome,
    abdominal-wall, diaphragm and psoas muscle, kidneys; plus fat, spine and ribs, bowel gas;
  - lobed livers (right, left across the midline, caudate) of random size and position;
  - portal-venous contrast: liver and spleen 100-130 HU, kidneys brighter, portal and hepatic vessel
    trees inside the liver at 140-200 HU;
  - lesions labelled 2 whatever their kind (:data:`~liverseg_monai.data.synth.ct_anatomy.LITS_LESION_MIX`:
    hypodense, hyperdense, rim-enhancing, necrotic, a few lipiodol-filled), 5-60 mm, lobulated,
    blurred margins;
  - per-case scanner: pixel 0.6-0.9 mm, slices 0.7-5 mm (a matrix below 512 is the scan resampled,
    see :func:`~liverseg_monai.data.synth.ct_anatomy.draw_acquisition`), partial volume and
    reconstruction-kernel (correlated) noise of 10-25 HU; ``size=(512, 512, K)`` gives full slices.

  The full preset also writes ``phantoms.json`` (per case: spacing, slice thickness, noise and every
  lesion's kind, diameter and voxel count); the NIfTI layout is the same.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from liverseg_monai.data.datalist import write_datalist
from liverseg_monai.data.synth import split_names
from liverseg_monai.data.synth.ct_anatomy import (
    LITS_LESION_MIX,
    check_realism,
    make_realistic_case,
    parse_size,
)
from liverseg_monai.data.synth.phantom import FOV_MM, make_ct_phantom, phantom_affine
from liverseg_monai.io.atomic import atomic_path, atomic_write_text

PHANTOMS_NAME = "phantoms.json"  # realism "full": per-case acquisition and lesion records


def save_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, dtype) -> None:
    """Write a NIfTI with both sform and qform set to ``affine`` (as scanners' converters do)."""
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def synth_lits(
    out: str | os.PathLike,
    seed: int = 0,
    n: int = 5,
    size: tuple[int, int, int] = (64, 64, 32),
    orientations: tuple[str, ...] = ("RAS", "LPS"),
    oblique_deg: float = 0.0,
    n_tumors: tuple[int, int] | None = None,
    tumor_radius_mm: tuple[float, float] | None = None,
    realism: str = "basic",
) -> Path:
    """Write ``n`` phantom cases in the LiTS layout under ``out``.

    Args:
        out: output folder (created).
        seed: the random seed; case ``i`` uses ``seed * 1000 + i``.
        n: number of cases; split 60/20/20 into training, validation and testing.
        size: voxels per case (i, j, k), or a string such as ``"512x512x64"``. Basic: spacing follows
            from a fixed 400x400x240 mm field of view; full: from the case's scanner (see module docstring).
        orientations: voxel orientations cycled over the cases.
        oblique_deg: if non-zero, every third case is rotated this much about the superior axis.
        n_tumors: inclusive range of tumours per case (default basic (1, 3), full (1, 6)).
        tumor_radius_mm: range of tumour radii (default basic (12, 30); full 2.5-30, i.e. 5-60 mm diameters).
        realism: ``"basic"`` (default, unchanged) or ``"full"``.
    """
    full = check_realism(realism)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = parse_size(size)
    spacing = tuple(f / s for f, s in zip(FOV_MM, size))
    content: dict[str, list] = {"training": [], "validation": [], "testing": []}
    parts = split_names(n)
    records = []
    for i in tqdm(range(n), desc="synth lits", disable=n < 3):
        rng = np.random.default_rng(seed * 1000 + i)
        rot = oblique_deg if (oblique_deg and i % 3 == 2) else 0.0
        if full:
            diameter = tuple(2 * r for r in (tumor_radius_mm or (2.5, 30.0)))
            affine, ph = make_realistic_case(size, rng, orientations[i % len(orientations)], rotation_deg=rot,
                                             lesion_mix=LITS_LESION_MIX, n_tumors=n_tumors or (1, 6), diameter_mm=diameter)
        else:
            affine = phantom_affine(size, spacing, orientations[i % len(orientations)], rotation_deg=rot)
            ph = make_ct_phantom(size, affine, rng, n_tumors=n_tumors or (1, 3), tumor_radius_mm=tumor_radius_mm or (12.0, 30.0))
        vol, seg = f"volume-{i}.nii.gz", f"segmentation-{i}.nii.gz"
        save_nifti(out / vol, ph.ct, affine, np.int16)
        save_nifti(out / seg, ph.lits_label(), affine, np.uint8)
        item = {"image": vol, "label": seg}
        if parts[i] == "training":
            item["fold"] = len(content["training"]) % 5
        content[parts[i]].append(item)
        records.append({"image": vol, "label": seg, **ph.meta})
    if full:
        atomic_write_text(out / PHANTOMS_NAME, json.dumps({"realism": realism, "seed": seed, "cases": records}, indent=1))
    return write_datalist(out, content)
