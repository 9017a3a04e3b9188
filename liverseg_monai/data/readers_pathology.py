"""Readers for the official layouts of two histopathology segmentation datasets: BCSS and GlaS.

BCSS (Breast Cancer Semantic Segmentation, Amgad et al., Bioinformatics 2019): regions of interest
from TCGA breast cancer slides as RGB PNGs (``rgbs_colorNormalized/`` in the release, ``images/`` in
common re-distributions) and same-named single-channel PNG masks (``masks/``) holding the class codes
of ``gtruth_codes.tsv`` (:data:`BCSS_CODES`). Names look like
``TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500.png``; the two characters after ``TCGA-`` are the
tissue source site ("institute"), which the BCSS paper uses for its train/test split.

GlaS (Gland Segmentation in Colon Histology, MICCAI 2015; Sirinukunwattana et al., MedIA 2017):
``train_N.bmp`` / ``testA_N.bmp`` / ``testB_N.bmp`` RGB images, ``*_anno.bmp`` instance annotations
(0 background, one value per gland) and ``Grade.csv`` (``name, patient ID, grade (GlaS), ...``).

Everything here reads and checks; problems raise :class:`~liverseg_monai.errors.InputError` naming
the file. Writing a dataset folder is :mod:`liverseg_monai.data.prepare.bcss` / ``.glas``.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liverseg_monai.errors import InputError
from liverseg_monai.io.rgb import read_label_map, read_rgb  # noqa: F401 (also this module's API)

# gtruth_codes.tsv of the BCSS release
BCSS_CODES: dict[int, str] = {
    0: "outside_roi", 1: "tumor", 2: "stroma", 3: "lymphocytic_infiltrate", 4: "necrosis_or_debris",
    5: "glandular_secretions", 6: "blood", 7: "exclude", 8: "metaplasia_NOS", 9: "fat", 10: "plasma_cells",
    11: "other_immune_infiltrate", 12: "mucoid_material", 13: "normal_acinus_or_duct", 14: "lymphatics",
    15: "undetermined", 16: "nerve", 17: "skin_adnexa", 18: "blood_vessel", 19: "angioinvasion", 20: "dcis",
    21: "other",
}

# class name -> BCSS codes; the first entry is class 0. Codes left out map to the "other" entry if
# there is one, else to class 0.
BCSS_GROUPINGS: dict[str, dict[str, tuple[int, ...]]] = {
    # the usual five "main" classes of the BCSS paper plus a background for outside_roi / exclude
    "main": {
        "outside_roi": (0, 7),
        "tumor": (1, 19, 20),
        "stroma": (2,),
        "inflammatory": (3, 10, 11),
        "necrosis": (4,),
        "other": (5, 6, 8, 9, 12, 13, 14, 15, 16, 17, 18, 21),
    },
    # every code as its own class
    "full": {name: (code,) for code, name in BCSS_CODES.items()},
}

BCSS_IMAGE_DIRS = ("rgbs_colorNormalized", "images", "rgbs", "rgb")
BCSS_MASK_DIRS = ("masks", "labels", "mask")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
BCSS_INSTITUTE = re.compile(r"TCGA-([A-Z0-9]{2})-([A-Z0-9]{4})", re.IGNORECASE)
BCSS_TEST_INSTITUTES = ("OL", "LL", "E2", "EW", "GM", "S3")  # the BCSS paper's held-out sites

GLAS_NAME = re.compile(r"^(train|testA|testB)_(\d+)\.bmp$", re.IGNORECASE)


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def load_unlabelled(dataset_dir: str | os.PathLike, keys: Sequence[str] = ("training", "validation")) -> list[dict]:
    """Images (no labels) of the ``keys`` lists of ``dataset.json``: the unlabelled pool of self-supervised stages.

    Lists that are absent are skipped; raises :class:`~liverseg_monai.errors.DatasetError` when none has items.
    """
    from liverseg_monai.data.datalist import load_datalist
    from liverseg_monai.errors import DatasetError

    items: list[dict] = []
    for key in keys:
        try:
            items += [{"image": it["image"]} for it in load_datalist(dataset_dir, key)]
        except DatasetError as err:
            if "has no" not in str(err):
                raise
    if not items:
        raise DatasetError(Path(dataset_dir) / "dataset.json", f"has no images in {', '.join(keys)}")
    return items


# ------------------------------------------------------------------------------------------- BCSS


def bcss_lookup(grouping: str | Mapping[str, Sequence[int]] = "main") -> tuple[np.ndarray, list[str]]:
    """A code -> class lookup table for BCSS masks and the class names.

    Args:
        grouping: a name in :data:`BCSS_GROUPINGS` or ``{class name: [BCSS codes]}`` in class order
            (class 0 first). Codes not listed go to a class named ``other`` when there is one, else to
            class 0.

    Returns:
        ``(lut, names)``: ``lut[code]`` is the class index (int64, 256 entries), ``names`` the classes.
    """
    if isinstance(grouping, str):
        if grouping not in BCSS_GROUPINGS:
            raise ValueError(f"unknown BCSS grouping '{grouping}'; choose one of {', '.join(BCSS_GROUPINGS)} or give a mapping")
        grouping = BCSS_GROUPINGS[grouping]
    names = list(grouping)
    if not names:
        raise ValueError("a BCSS grouping needs at least one class")
    fallback = names.index("other") if "other" in names else 0
    lut = np.full(256, fallback, dtype=np.int64)
    seen: dict[int, str] = {}
    for index, name in enumerate(names):
        for code in grouping[name]:
            code = int(code)
            if not 0 <= code < 256:
                raise ValueError(f"BCSS code {code} of class '{name}' is outside 0..255")
            if code in seen:
                raise ValueError(f"BCSS code {code} is in both '{seen[code]}' and '{name}'")
            seen[code] = name
            lut[code] = index
    return lut, names


def bcss_site(name: str) -> str | None:
    """The tissue source site code (``A1`` in ``TCGA-A1-A0SK-...``), or ``None``."""
    m = BCSS_INSTITUTE.search(name)
    return m.group(1).upper() if m else None


def bcss_case(name: str) -> str:
    """The patient (``TCGA-A1-A0SK``) a BCSS file belongs to; the file stem when the name has none."""
    m = BCSS_INSTITUTE.search(name)
    return f"TCGA-{m.group(1)}-{m.group(2)}".upper() if m else name.split("_")[0]


def _pick_dir(src: Path, names: Sequence[str], what: str) -> Path:
    for name in names:
        if (src / name).is_dir():
            return src / name
    raise InputError(src, f"no {what} folder (looked for {', '.join(names)})")


def find_bcss_pairs(src: str | os.PathLike) -> list[tuple[Path, Path]]:
    """``(image, mask)`` pairs of a BCSS folder, sorted by name; images without a mask raise.

    ``src`` holds an image folder (:data:`BCSS_IMAGE_DIRS`) and a mask folder (:data:`BCSS_MASK_DIRS`)
    with files of the same stem.
    """
    src = Path(src)
    if not src.is_dir():
        raise InputError(src, "BCSS source folder does not exist")
    image_dir = _pick_dir(src, BCSS_IMAGE_DIRS, "image")
    mask_dir = _pick_dir(src, BCSS_MASK_DIRS, "mask")
    masks = {_stem(p): p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not images:
        raise InputError(image_dir, "holds no images (.png/.tif/.jpg)")
    missing = [p.name for p in images if _stem(p) not in masks]
    if missing:
        raise InputError(mask_dir, f"no mask for {len(missing)} image(s), e.g. {missing[0]}")
    return [(p, masks[_stem(p)]) for p in images]


def read_bcss_pair(image_path: Path, mask_path: Path, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An RGB ROI and its mask mapped through ``lut`` (:func:`bcss_lookup`); sizes must agree."""
    rgb = read_rgb(image_path)
    codes = read_label_map(mask_path)
    if codes.shape != rgb.shape[:2]:
        raise InputError(mask_path, f"mask size {codes.shape[::-1]} differs from image {image_path.name} {rgb.shape[1::-1]}")
    bad = np.unique(codes[(codes < 0) | (codes > 255)])
    if bad.size:
        raise InputError(mask_path, f"mask codes {bad[:5].tolist()} are outside 0..255")
    unknown = sorted(set(np.unique(codes).tolist()) - set(BCSS_CODES))
    if unknown:
        raise InputError(mask_path, f"codes {unknown[:5]} are not BCSS ground-truth codes (0..21)")
    return rgb, lut[codes].astype(np.uint8)


# ------------------------------------------------------------------------------------------- GlaS


@dataclass
class GlasCase:
    """One GlaS image: ``name`` (``train_1``), ``split`` (train/testA/testB), files and grade."""

    name: str
    split: str
    image: Path
    annotation: Path
    grade: str | None = None


def read_glas_grades(path: str | os.PathLike) -> dict[str, str]:
    """``Grade.csv`` as ``{name: grade}`` (the ``grade (GlaS)`` column: benign / malignant)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(path, "missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"unreadable ({err})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise InputError(path, "empty")
    header = [h.strip().lower() for h in rows[0]]
    if "name" not in header:
        raise InputError(path, f"no 'name' column (header: {rows[0]})")
    grade_cols = [i for i, h in enumerate(header) if h.startswith("grade")]
    if not grade_cols:
        raise InputError(path, f"no grade column (header: {rows[0]})")
    name_col, grade_col = header.index("name"), grade_cols[0]
    grades = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) <= max(name_col, grade_col):
            raise InputError(path, f"line {line} has {len(row)} fields, expected {len(header)}")
        grades[row[name_col].strip()] = row[grade_col].strip()
    return grades


def find_glas_cases(src: str | os.PathLike) -> list[GlasCase]:
    """Every GlaS image with its annotation (and grade when ``Grade.csv`` is present), in name order.

    ``src`` is the folder holding ``train_N.bmp`` etc. or a folder with exactly one such subfolder
    (the release's ``Warwick QU Dataset (Released 2016_07_08)``).
    """
    src = Path(src)
    if not src.is_dir():
        raise InputError(src, "GlaS source folder does not exist")
    folder = src
    if not any(GLAS_NAME.match(p.name) for p in src.iterdir()):
        subs = [d for d in src.iterdir() if d.is_dir() and any(GLAS_NAME.match(p.name) for p in d.iterdir())]
        if len(subs) != 1:
            raise InputError(src, "no GlaS images (train_N.bmp, testA_N.bmp, testB_N.bmp) here or in one subfolder")
        folder = subs[0]
    grades = read_glas_grades(folder / "Grade.csv") if (folder / "Grade.csv").is_file() else {}
    split_order = {"train": 0, "testa": 1, "testb": 2}
    cases = []
    for p in folder.iterdir():
        m = GLAS_NAME.match(p.name)
        if not m:
            continue
        name = p.name[: -len(p.suffix)]
        anno = p.with_name(f"{name}_anno{p.suffix}")
        if not anno.is_file():
            raise InputError(p, f"no annotation {anno.name} next to it")
        split = {"train": "train", "testa": "testA", "testb": "testB"}[m.group(1).lower()]
        cases.append(GlasCase(name, split, p, anno, grades.get(name)))
    cases.sort(key=lambda c: (split_order[c.split.lower()], int(GLAS_NAME.match(c.image.name).group(2))))
    return cases


def read_glas_case(case: GlasCase) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb uint8 (H, W, 3), instances int32 (H, W))``, instances relabelled 1..N in scan order."""
    rgb = read_rgb(case.image)
    raw = _read_instance_map(case.annotation)
    if raw.shape != rgb.shape[:2]:
        raise InputError(case.annotation, f"annotation size {raw.shape[::-1]} differs from image {case.image.name} {rgb.shape[1::-1]}")
    values, inverse = np.unique(raw, return_inverse=True)
    inverse = inverse.reshape(raw.shape)
    if values[0] != 0:  # no background value 0: every value is a gland
        return rgb, (inverse + 1).astype(np.int32)
    return rgb, inverse.astype(np.int32)


def _read_instance_map(path: Path) -> np.ndarray:
    """Instance annotation as integers; colour annotations get one integer per distinct colour (black = 0)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(path, f"not a readable annotation image ({err})") from None
    if arr.ndim == 3:
        arr = arr[..., :3].astype(np.int64)
        arr = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(path, f"expected a 2D instance map, got shape {arr.shape}")
    return arr.astype(np.int64)
