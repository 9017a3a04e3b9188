"""Synthetic LiTS17: abdominal CT phantoms in the LiTS NIfTI layout.

Writes ``volume-N.nii.gz`` (int16 HU) and ``segmentation-N.nii.gz`` (uint8: 0 background, 1 liver,
2 tumour) as the LiTS challenge ships them, plus ``dataset.json``. Cases alternate between RAS and
LPS voxel orientations (and an optional oblique one), with anisotropic spacing, so consumers must
respect the affine.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from liverseg_monai.data.datalist import write_datalist
from liverseg_monai.data.synth import split_names
from liverseg_monai.data.synth.phantom import FOV_MM, make_ct_phantom, phantom_affine
from liverseg_monai.io.atomic import atomic_path


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
    n_tumors: tuple[int, int] = (1, 3),
    tumor_radius_mm: tuple[float, float] = (12.0, 30.0),
) -> Path:
    """Write ``n`` phantom cases in the LiTS layout under ``out``.

    Args:
        out: output folder (created).
        seed: the random seed; case ``i`` uses ``seed * 1000 + i``.
        n: number of cases; split 60/20/20 into training, validation and testing.
        size: voxels per case (i, j, k); spacing follows from a fixed 400x400x240 mm field of view.
        orientations: voxel orientations cycled over the cases.
        oblique_deg: if non-zero, every third case is rotated this much about the superior axis.
        n_tumors: inclusive range of tumours per case.
        tumor_radius_mm: range of tumour radii.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(int(s) for s in size)
    spacing = tuple(f / s for f, s in zip(FOV_MM, size))
    content: dict[str, list] = {"training": [], "validation": [], "testing": []}
    parts = split_names(n)
    for i in tqdm(range(n), desc="synth lits", disable=n < 3):
        rng = np.random.default_rng(seed * 1000 + i)
        rot = oblique_deg if (oblique_deg and i % 3 == 2) else 0.0
        affine = phantom_affine(size, spacing, orientations[i % len(orientations)], rotation_deg=rot)
        ph = make_ct_phantom(size, affine, rng, n_tumors=n_tumors, tumor_radius_mm=tumor_radius_mm)
        vol, seg = f"volume-{i}.nii.gz", f"segmentation-{i}.nii.gz"
        save_nifti(out / vol, ph.ct, affine, np.int16)
        save_nifti(out / seg, ph.lits_label(), affine, np.uint8)
        item = {"image": vol, "label": seg}
        if parts[i] == "training":
            item["fold"] = len(content["training"]) % 5
        content[parts[i]].append(item)
    return write_datalist(out, content)
