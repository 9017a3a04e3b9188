"""Synthetic HCC-TACE-Seg: abdominal CT phantoms in TCIA's DICOM layout with DICOM-SEG and a clinical table.

Layout written under ``out`` (as TCIA's downloader lays out HCC-TACE-Seg)::

    HCC_001/
      06-14-2003-NA-CT ABDOMEN LIVER 3 PHASE-41231/       # one study (some patients have two)
        4-LIVER PORTAL VENOUS-52117/1-017.dcm ...          # the CT series, one file per slice,
                                                           # file names NOT in slice order
        2-LIVER ARTERIAL-52115/...                         # extra series on some patients
        300-Segmentation-52199/1-1.dcm                     # DICOM-SEG referencing the portal series
    HCC-TACE-Seg_clinical_data.csv                         # one row per patient, TCIA-like columns
    dataset.json                                           # image = CT series folder, label = SEG file

The anatomy is :func:`liverseg_monai.data.synth.phantom.make_ct_phantom` (``realism="basic"``, the
default) or :func:`liverseg_monai.data.synth.ct_anatomy.make_realistic_case` (``realism="full"``); its RAS
affines are written as LPS patient coordinates, so the liver lies in the patient's right. The SEG holds the segments
``Liver`` (whole liver, tumour and intrahepatic vessels included), ``Mass``, ``Portal vein`` and
``Abdominal aorta`` in a per-patient shuffled order (read them by label, never by position). The
clinical stage fields (BCLC, Okuda, CLIP, TNM, AFP, tumour size and involvement) follow the phantom's
tumour burden with some noise, so a stage group carries signal about the tumour fraction.

The ``full`` preset imitates HCC-TACE-Seg's real features, one line each:

- neighbours in the liver's HU range touching it: spleen, stomach wall, heart above the dome,
  abdominal-wall, diaphragm and psoas muscle, kidneys; plus fat, spine and ribs, bowel gas;
- lobed livers (right, left across the midline, caudate) of random size and position;
- the portal-venous series: liver and spleen 100-130 HU, kidneys brighter, portal and hepatic vessel
  trees inside the liver at 140-200 HU (the ``Portal vein`` segment is the portal tree and trunk);
- lesions, all in the ``Mass`` segment, mixed as :data:`~liverseg_monai.data.synth.ct_anatomy.HCC_LESION_MIX`:
  lipiodol deposits (> 300 HU, the post-TACE signature, in almost half the lesions), arterially
  hyperdense, hypodense (washout), heterogeneous with necrosis, rim-enhancing; 5-60 mm, lobulated,
  blurred margins;
- per-patient scanner: pixel 0.6-0.9 mm, slices 0.7-5 mm (a matrix below 512 is the scan resampled),
  partial volume and reconstruction-kernel (correlated) noise of 10-25 HU; ``size=(512, 512, K)``
  gives full slices.

It also writes ``phantoms.json`` (per patient: acquisition and every lesion's kind, diameter and
voxel count) next to ``dataset.json``; the DICOM layout is the same.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from liverseg_monai.data.datalist import write_datalist
from liverseg_monai.data.synth import split_names
from liverseg_monai.data.synth.ct_anatomy import (
    HCC_LESION_MIX,
    check_realism,
    make_realistic_case,
    parse_size,
)
from liverseg_monai.data.synth.phantom import FOV_MM, ORIENTATIONS, Phantom, make_ct_phantom, phantom_affine
from liverseg_monai.io.atomic import atomic_write_text
from liverseg_monai.io.dicom import to_series_grid, write_seg_masks, write_series
from liverseg_monai.io.tables import write_table

# voxel axis directions (RAS) of the CT series; LPS is the usual head-first axial stack
HCC_ORIENTATIONS = {
    **ORIENTATIONS,
    "LPI": np.diag([-1.0, -1.0, -1.0]),  # axial, slices stored head to feet (normal opposite to k)
}

# TCIA's segment labels and the phantom masks they hold
SEGMENTS = {"Liver": "liver", "Mass": "tumor", "Portal vein": "portal_vein", "Abdominal aorta": "aorta"}

CLINICAL_COLUMNS = [
    "TCIA_ID", "Sex", "Age", "Smoking", "Alcohol", "HBV", "HCV", "Evidence_of_cirh", "CPS", "AFP",
    "Tr_Size", "tumor_nodul", "T_involvment", "PVT", "Metastasis", "Lymphnodes",
    "Okuda", "CLIP_Score", "CLIP", "TNM", "BCLC", "TTP", "OS", "Censored_0_progressed_1", "Censored_0_Dead_1",
]
CLINICAL_NAME = "HCC-TACE-Seg_clinical_data.csv"
PHANTOMS_NAME = "phantoms.json"  # realism "full": per-patient acquisition and lesion records


def _uid5(seed: int, patient: int, series: int) -> str:
    return f"{(seed * 7919 + patient * 131 + series * 17) % 90000 + 10000:05d}"


def clinical_row(patient_id: str, ph: Phantom, rng: np.random.Generator, sex: str, age: int) -> dict:
    """Plausible TCIA-style clinical fields that follow the phantom's tumour burden.

    Tumour fraction ``f`` (tumour voxels / liver voxels) and nodule count drive the stage: BCLC A for
    one small nodule, B for several nodules or a larger burden, C for a heavy burden or portal vein
    thrombosis; Okuda, CLIP, TNM, AFP and survival move with it.
    """
    liver = ph.masks["liver"].sum()
    f = float(ph.masks["tumor"].sum() / liver) if liver else 0.0
    n_nod = len(ph.tumors)
    diam_cm = max((2 * max(t["axes_mm"]) / 10 for t in ph.tumors), default=0.0)
    pvt = int(f > 0.07 and rng.random() < 0.5)
    metastasis = int(f > 0.08 and rng.random() < 0.25)
    lymph = int(rng.random() < 0.05 + f)
    cps = str(rng.choice(["A", "A", "A", "B", "B", "C"]) if f > 0.06 else rng.choice(["A", "A", "A", "A", "B"]))
    if f > 0.08 or pvt or metastasis:
        bclc = "C"
    elif n_nod > 1 or f > 0.03:
        bclc = "B"
    else:
        bclc = "A" if diam_cm >= 2 else "0"
    if cps == "C" and rng.random() < 0.5:
        bclc = "D"
    involvement = "> 50%" if f > 0.5 else "< or = 50%"
    afp = float(np.round(np.exp(rng.normal(2.0 + 35.0 * f, 1.0)), 1))
    okuda = 1 + int(f > 0.05 or cps != "A") + int(f > 0.09 and cps == "C")
    clip = int(min(6, {"A": 0, "B": 1, "C": 2}[cps] + (0 if n_nod == 1 and f < 0.03 else 1 if f < 0.08 else 2)
                     + int(afp >= 400) + pvt))
    if metastasis:
        tnm = "IVb"
    elif lymph:
        tnm = "IVa"
    elif pvt:
        tnm = "IIIb"
    elif n_nod > 1 and diam_cm > 5:
        tnm = "IIIa"
    elif n_nod > 1:
        tnm = "II"
    else:
        tnm = "I"
    severity = {"0": 0, "A": 0, "B": 1, "C": 2, "D": 3}[bclc]
    os_days = int(max(30, rng.normal(1400 - 380 * severity, 250)))
    ttp = int(max(20, min(os_days, rng.normal(500 - 120 * severity, 120))))
    return {
        "TCIA_ID": patient_id,
        "Sex": sex,
        "Age": age,
        "Smoking": int(rng.random() < 0.4),
        "Alcohol": int(rng.random() < 0.35),
        "HBV": int(rng.random() < 0.3),
        "HCV": int(rng.random() < 0.5),
        "Evidence_of_cirh": int(rng.random() < 0.7),
        "CPS": cps,
        "AFP": afp,
        "Tr_Size": round(diam_cm, 2),
        "tumor_nodul": "multinodular" if n_nod > 1 else "uninodular",
        "T_involvment": involvement,
        "PVT": pvt,
        "Metastasis": metastasis,
        "Lymphnodes": lymph,
        "Okuda": okuda,
        "CLIP_Score": clip,
        "CLIP": clip,
        "TNM": tnm,
        "BCLC": bclc,
        "TTP": ttp,
        "OS": os_days,
        "Censored_0_progressed_1": int(rng.random() < 0.8),
        "Censored_0_Dead_1": int(rng.random() < 0.6 + 0.1 * severity),
    }


def synth_hcc(
    out: str | os.PathLike,
    seed: int = 0,
    n: int = 4,
    size: tuple[int, int, int] = (64, 64, 32),
    orientations: tuple[str, ...] = ("LPS", "LPI", "RAS"),
    oblique_deg: float = 0.0,
    n_tumors: tuple[int, int] | None = None,
    tumor_radius_mm: tuple[float, float] | None = None,
    extra_series: bool = True,
    realism: str = "basic",
) -> Path:
    """Write ``n`` phantom patients in the TCIA HCC-TACE-Seg DICOM layout under ``out``.

    Args:
        out: output folder (created).
        seed: the random seed; patient ``i`` uses ``seed * 1000 + i``. Same seed, same files.
        n: number of patients (``HCC_001`` ...); split 60/20/20 in ``dataset.json``.
        size: voxels per CT series (columns, rows, slices), or a string such as ``"512x512x64"``; basic:
            over a 400 x 400 x 240 mm field of view, full: at the patient's scanner spacing (module docstring).
        orientations: voxel orientations cycled over patients, names of :data:`HCC_ORIENTATIONS`
            (``LPS`` usual axial, ``LPI`` slices stored head to feet, ``RAS``/``LAS``/``RPI`` flipped axes)
            or ``"oblique"`` (LPS rotated by ``oblique_deg``, 20 degrees when that is 0).
        oblique_deg: if non-zero, every third patient is also rotated this much about the superior axis.
        n_tumors, tumor_radius_mm: tumour count range and radius range (mm); default basic (1, 3) and
            (12, 30), full (1, 6) and 2.5-30 (5-60 mm diameters).
        extra_series: give every second patient an extra arterial series and every fourth a second
            (follow-up) study, which the SEG does not reference.
        realism: ``"basic"`` (default, unchanged) or ``"full"``.

    Returns:
        the path of ``out/dataset.json``.
    """
    full = check_realism(realism)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = parse_size(size)
    spacing = tuple(f / s for f, s in zip(FOV_MM, size))
    content: dict[str, list] = {"training": [], "validation": [], "testing": []}
    parts = split_names(n)
    rows = []
    records = []
    for i in tqdm(range(n), desc="synth hcc", disable=n < 3):
        rng = np.random.default_rng(seed * 1000 + i)
        pid = f"HCC_{i + 1:03d}"
        name = orientations[i % len(orientations)]
        rot = 0.0
        if name == "oblique":
            name, rot = "LPS", oblique_deg or 20.0
        elif oblique_deg and i % 3 == 2:
            rot = oblique_deg
        if name not in HCC_ORIENTATIONS:
            raise ValueError(f"unknown orientation {name!r}; choose from {', '.join(HCC_ORIENTATIONS)} or 'oblique'")
        if full:
            diameter = tuple(2 * r for r in (tumor_radius_mm or (2.5, 30.0)))
            affine, ph = make_realistic_case(size, rng, HCC_ORIENTATIONS[name], rotation_deg=rot, lesion_mix=HCC_LESION_MIX,
                                             n_tumors=n_tumors or (1, 6), diameter_mm=diameter)
        else:
            affine = phantom_affine(size, spacing, HCC_ORIENTATIONS[name], rotation_deg=rot)
            ph = make_ct_phantom(size, affine, rng, n_tumors=n_tumors or (1, 3), tumor_radius_mm=tumor_radius_mm or (12.0, 30.0))

        sex = "M" if rng.random() < 0.8 else "F"
        age = int(np.clip(rng.normal(64, 9), 35, 88))
        year, month, day = int(rng.integers(1998, 2011)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
        study_dir = out / pid / f"{month:02d}-{day:02d}-{year}-NA-CT ABDOMEN LIVER 3 PHASE-{_uid5(seed, i, 0)}"
        date = f"{year}{month:02d}{day:02d}"
        entropy = f"hcc-tace-seg-{seed}-{i}"
        common = dict(patient_id=pid, patient_sex=sex, patient_age=age, study_date=date,
                      study_description="CT ABDOMEN LIVER 3 PHASE", uid_entropy=entropy)

        series_dir = study_dir / f"4-LIVER PORTAL VENOUS-{_uid5(seed, i, 4)}"
        names = [f"1-{p + 1:03d}.dcm" for p in rng.permutation(size[2])]  # file names not in slice order
        write_series(series_dir, ph.ct, affine, series_number=4, series_description="LIVER PORTAL VENOUS",
                     signed=i % 2 == 0, file_names=names, **common)
        art = affine.copy()  # half the slices: the extra series are cheap
        art[:3, 2] *= 2
        if extra_series and i % 2 == 1:
            # an arterial phase, same frame of reference, not referenced by the SEG
            write_series(study_dir / f"2-LIVER ARTERIAL-{_uid5(seed, i, 2)}", ph.ct[:, :, ::2], art, series_number=2,
                         series_description="LIVER ARTERIAL", signed=True, **common)
        if extra_series and i % 4 == 3:
            follow = out / pid / f"{month:02d}-{day:02d}-{year + 1}-NA-CT ABDOMEN FOLLOW UP-{_uid5(seed, i, 9)}"
            write_series(follow / f"3-LIVER PORTAL VENOUS-{_uid5(seed, i, 3)}", ph.ct[:, :, ::2], art,
                         series_number=3, series_description="LIVER PORTAL VENOUS", signed=False,
                         **{**common, "uid_entropy": entropy + "-follow-up", "study_date": f"{year + 1}{month:02d}{day:02d}"})

        order = list(SEGMENTS)
        rng.shuffle(order)  # TCIA's segment order is not a label order: read by label
        seg_path = study_dir / f"300-Segmentation-{_uid5(seed, i, 300)}" / "1-1.dcm"
        masks = {label: to_series_grid(ph.masks[SEGMENTS[label]], affine, series_dir) for label in order}
        write_seg_masks(masks, series_dir, seg_path,
                        manual=True, series_description="Segmentation", uid_entropy=entropy + "-seg",
                        content_date=date)

        rows.append(clinical_row(pid, ph, rng, sex, age))
        item = {"image": str(series_dir.relative_to(out)), "label": str(seg_path.relative_to(out)), "patient_id": pid}
        if parts[i] == "training":
            item["fold"] = len(content["training"]) % 5
        content[parts[i]].append(item)
        records.append({"patient_id": pid, "image": item["image"], "label": item["label"], **ph.meta})

    if full:
        atomic_write_text(out / PHANTOMS_NAME, json.dumps({"realism": realism, "seed": seed, "cases": records}, indent=1))
    write_table(out / CLINICAL_NAME, rows, CLINICAL_COLUMNS, lineterminator="\n")
    return write_datalist(out, content)
