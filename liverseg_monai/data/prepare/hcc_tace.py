"""TCIA HCC-TACE-Seg (DICOM CT + DICOM-SEG + clinical table) -> NIfTI dataset folder with ``dataset.json``.

``python -m liverseg_monai prepare hcc-tace --src DIR --out D [--seed S] [--clinical TABLE]``

``DIR`` is the collection as TCIA's downloader writes it (``HCC_001/<study>/<series>/*.dcm``, with any
number of studies and series per patient and one ``Segmentation`` series), or any folder above it.
For every patient the CT series the SEG references is converted, whatever the folder names say::

    D/imagesTr/HCC_001.nii.gz   int16 HU, affine from the DICOM geometry (RAS)
    D/labelsTr/HCC_001.nii.gz   uint8: 0 background, 1 liver, 2 tumour (Mass), 3 portal vein, 4 abdominal aorta
    D/clinical.csv              patient_id + the clinical columns of the TCIA table
    D/dataset.json              seeded patient-level 80/20 training/validation split (training items
                                carry ``fold``); ``testing`` lists the validation images

Segments are matched by their label text (``Liver``, ``Mass``, ``Portal vein``, ``Abdominal aorta`` and
synonyms), never by position; the tumour is painted last so vessels never cut into it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
from tqdm import tqdm

from liverseg_monai.data.datalist import write_datalist
from liverseg_monai.data.synth.lits import save_nifti
from liverseg_monai.errors import InputError
from liverseg_monai.io.atomic import atomic_write_text
from liverseg_monai.io.dicom import (
    HCC_TACE_OPTIONAL_SEGMENTS,
    HCC_TACE_SEG_LABELS,
    SEGMENTATION_STORAGE,
    read_seg,
    read_series,
)

logger = logging.getLogger(__name__)

# SEG segment label -> output label (painting order: the mass last)
LABELS = HCC_TACE_SEG_LABELS
LABEL_NAMES = {"0": "background", "1": "liver", "2": "tumor", "3": "portal vein", "4": "abdominal aorta"}
OPTIONAL_SEGMENTS = HCC_TACE_OPTIONAL_SEGMENTS
ID_COLUMNS = ("TCIA_ID", "patient_id", "PatientID", "Patient ID", "ID")
_PEEK_TAGS = ["SOPClassUID", "Modality", "SeriesInstanceUID", "PatientID", "ReferencedSeriesSequence"]


def _peek(path: Path):
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_PEEK_TAGS)
    except Exception:
        return None


def _is_seg(ds) -> bool:
    return ds is not None and str(ds.get("SOPClassUID", "")) == SEGMENTATION_STORAGE


def _index(src: Path) -> tuple[dict[str, list[Path]], dict[str, dict]]:
    """Walk ``src``: the SEG files per PatientID and the image series folders by SeriesInstanceUID.

    The first DICOM file of a folder identifies its series (TCIA puts one series in a folder); the
    last file is read as well, so a SEG saved among the slices is still found.
    """
    segs: dict[str, list[Path]] = {}
    series: dict[str, dict] = {}
    for root, dirs, files in os.walk(src):
        dirs.sort()
        root_path = Path(root)
        names = sorted(f for f in files if not f.startswith("."))
        first = next(((n, ds) for n in names if (ds := _peek(root_path / n)) is not None and "SOPClassUID" in ds), None)
        if first is None:
            continue
        name, ds = first
        if _is_seg(ds) or (names[-1] != name and _is_seg(_peek(root_path / names[-1]))):
            for seg_name in names:  # every SEG of the folder
                seg = _peek(root_path / seg_name)
                if _is_seg(seg):
                    segs.setdefault(str(seg.get("PatientID", "")), []).append(root_path / seg_name)
        if not _is_seg(ds):
            series.setdefault(str(ds.get("SeriesInstanceUID", "")), {
                "folder": root_path, "patient_id": str(ds.get("PatientID", "")), "modality": str(ds.get("Modality", ""))})
    return segs, series


def _find_series(uid: str, seg: Path, series: dict[str, dict], patient_id: str) -> Path:
    if uid in series:
        return series[uid]["folder"]
    # a folder holding several series: scan the patient's folders fully
    for info in series.values():
        if info["patient_id"] != patient_id:
            continue
        for path in sorted(info["folder"].iterdir()):
            ds = _peek(path) if path.is_file() else None
            if ds is not None and str(ds.get("SeriesInstanceUID", "")) == uid:
                return info["folder"]
    raise InputError(seg, f"references CT series {uid}, which is not among the series under the source folder "
                          "(SEG of another series or an incomplete download?)")


def _norm_id(text) -> str:
    return str(text).strip().upper().replace("-", "_")


def _read_table(path: Path):
    import pandas as pd

    if not path.is_file():
        raise InputError(path, "clinical table not found")
    try:
        if path.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
            try:
                import openpyxl  # noqa: F401
            except ImportError:
                raise InputError(path, "reading an Excel clinical table needs openpyxl (pip install openpyxl); "
                                       "or save it as CSV and pass --clinical table.csv") from None
            table = pd.read_excel(path, dtype=str)
        else:
            table = pd.read_csv(path, sep=None, engine="python", dtype=str)
    except InputError:
        raise
    except Exception as err:  # pandas raises many kinds of errors for unreadable files
        raise InputError(path, f"cannot read the clinical table ({type(err).__name__}: {err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def normalise_clinical(path: str | os.PathLike, patient_ids: list[str], required: tuple[str, ...] = ("BCLC",)):
    """Read a TCIA clinical table and return it with ``patient_id`` first, one row per patient.

    Args:
        path: CSV/TSV, or ``.xlsx`` (needs openpyxl).
        patient_ids: the patients with images; rows are matched case-insensitively (``-`` = ``_``).
        required: columns the table must have besides the identifier.

    Raises:
        InputError: naming the table when it is unreadable, lacks the identifier or a required column,
            repeats a patient, or matches none of ``patient_ids``. Partial mismatches only warn.
    """
    import pandas as pd

    path = Path(path)
    table = _read_table(path)
    id_col = next((c for c in table.columns if c in ID_COLUMNS), None)
    if id_col is None:
        id_col = next((c for c in table.columns if c.lower().replace(" ", "_") in {x.lower() for x in ID_COLUMNS}), None)
    if id_col is None:
        raise InputError(path, f"no patient identifier column (expected one of {', '.join(ID_COLUMNS)}; "
                               f"found {', '.join(table.columns)})")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise InputError(path, f"missing clinical column(s) {', '.join(missing)} (found {', '.join(table.columns)})")
    table = table[table[id_col].notna() & (table[id_col].astype(str).str.strip() != "")].copy()
    keys = table[id_col].map(_norm_id)
    if keys.duplicated().any():
        raise InputError(path, f"patients listed twice: {', '.join(sorted(set(keys[keys.duplicated()])))}")
    by_key = {_norm_id(p): p for p in patient_ids}
    matched = [k for k in keys if k in by_key]
    if patient_ids and not matched:
        raise InputError(path, f"none of its {len(keys)} patients ({', '.join(list(table[id_col])[:3])}...) has images "
                               f"(images: {', '.join(patient_ids[:3])}...); is this the right table?")
    unknown = sorted(set(table[id_col][~keys.isin(by_key)]))
    if unknown:
        warnings.warn(f"{path}: {len(unknown)} patient(s) without images kept in clinical.csv: {', '.join(unknown[:10])}",
                      stacklevel=2)
    no_row = sorted(p for k, p in by_key.items() if k not in set(keys))
    if no_row:
        warnings.warn(f"{path}: {len(no_row)} patient(s) with images have no clinical row: {', '.join(no_row[:10])}",
                      stacklevel=2)
    ids = [by_key.get(k, str(v).strip()) for k, v in zip(keys, table[id_col])]
    table = table.drop(columns=[id_col])
    table.insert(0, "patient_id", ids)
    for col in table.columns:
        if pd.api.types.is_string_dtype(table[col]):
            table[col] = table[col].str.strip()
    return table


def _default_clinical(src: Path) -> Path | None:
    found = sorted(p for pattern in ("*clinical*.csv", "*clinical*.xlsx", "*Clinical*.csv", "*Clinical*.xlsx")
                   for p in src.rglob(pattern) if not p.name.startswith("."))
    # CSV first (no extra reader needed), then the shallowest
    found = sorted(set(found), key=lambda p: (p.suffix.lower() != ".csv", len(p.relative_to(src).parts), str(p)))
    return found[0] if found else None


def split_patients(patient_ids: list[str], seed: int, val_fraction: float = 0.2) -> dict[str, list[str]]:
    """Seeded patient-level split: ``{"training": [...], "validation": [...]}`` (validation non-empty when >= 2 patients)."""
    order = [patient_ids[i] for i in np.random.default_rng(seed).permutation(len(patient_ids))]
    n_val = max(1, int(round(val_fraction * len(order)))) if len(order) >= 2 else 0
    return {"validation": sorted(order[:n_val]), "training": sorted(order[n_val:])}


def _convert_patient(pid: str, segs: list[Path], series: dict[str, dict], stage: Path) -> None:
    """Write ``stage/imagesTr/<pid>.nii.gz`` and ``stage/labelsTr/<pid>.nii.gz`` from the patient's SEG."""
    seg = segs[0]
    if len(segs) > 1:
        warnings.warn(f"{seg}: patient {pid} has {len(segs)} SEGs; using this one", stacklevel=3)
    refs = pydicom.dcmread(seg, stop_before_pixels=True).get("ReferencedSeriesSequence", [])
    if not refs:
        raise InputError(seg, "has no ReferencedSeriesSequence: cannot tell which CT series it segments")
    uid = str(refs[0].SeriesInstanceUID)
    folder = _find_series(uid, seg, series, pid)
    image, affine, meta = read_series(folder, series_uid=uid)
    if meta["patient_id"] and _norm_id(meta["patient_id"]) != _norm_id(pid):
        raise InputError(seg, f"belongs to patient {pid} but references a series of patient {meta['patient_id']}")
    label = read_seg(seg, folder, LABELS, optional=OPTIONAL_SEGMENTS, series_uid=uid)
    if not (label == LABELS["Liver"]).any():
        raise InputError(seg, "the Liver segment is empty")
    save_nifti(stage / "imagesTr" / f"{pid}.nii.gz", np.clip(np.rint(image), -32768, 32767), affine, np.int16)
    save_nifti(stage / "labelsTr" / f"{pid}.nii.gz", label, affine, np.uint8)


def prepare_hcc_tace(
    src: str | os.PathLike,
    out: str | os.PathLike,
    seed: int = 0,
    clinical: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    n_folds: int = 5,
    required_columns: tuple[str, ...] | str = ("BCLC",),
    skip_incomplete: bool = False,
) -> Path:
    """Convert TCIA HCC-TACE-Seg under ``src`` into the dataset folder ``out`` (see the module docstring).

    Args:
        src: the downloaded collection (patient folders somewhere below it).
        out: the dataset folder to write; existing files of the same names are replaced.
        seed: seed of the patient-level split.
        clinical: the clinical table (CSV, or XLSX with openpyxl); default: a ``*clinical*`` CSV/XLSX
            found under ``src``. Without any, no ``clinical.csv`` is written (logged).
        val_fraction: fraction of patients for validation.
        n_folds: training items carry ``fold = index % n_folds``.
        required_columns: clinical columns that must exist besides the identifier.
        skip_incomplete: leave out (with a warning) patients without a SEG or whose series or SEG
            fails the checks, instead of raising.

    Returns:
        the path of ``out/dataset.json``.

    Raises:
        InputError: naming the file or folder for a missing source, a patient without SEG, a SEG
            referencing a series that is not there or lacking Liver/Mass, an unreadable series, or a
            bad clinical table. Nothing is left under ``out`` on error.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise InputError(src, "source folder does not exist")
    if isinstance(required_columns, str):
        required_columns = tuple(c.strip() for c in required_columns.split(",") if c.strip())
    segs, series = _index(src)
    ct_patients = sorted({info["patient_id"] for info in series.values() if info["modality"] == "CT"})
    if not segs and not ct_patients:
        raise InputError(src, "no DICOM CT series or DICOM-SEG files found below this folder")
    for pid in ct_patients:
        if pid not in segs:
            folder = next(info["folder"] for info in series.values() if info["patient_id"] == pid)
            if not skip_incomplete:
                raise InputError(folder, f"patient {pid} has CT series but no DICOM-SEG below {src} "
                                         "(pass --skip-incomplete True to leave such patients out)")
            warnings.warn(f"{folder}: patient {pid} has no DICOM-SEG; left out", stacklevel=2)
    patients = sorted(segs)

    clinical_path = Path(clinical) if clinical is not None else _default_clinical(src)
    table = normalise_clinical(clinical_path, patients, tuple(required_columns)) if clinical_path else None
    if table is None:
        logger.warning("%s: no clinical table found (looked for *clinical*.csv/.xlsx); clinical.csv not written", src)

    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".prepare-hcc-tace-", dir=out))
    try:
        converted = []
        for pid in tqdm(patients, desc="prepare hcc-tace"):
            try:
                _convert_patient(pid, segs[pid], series, stage)
            except InputError as err:
                if not skip_incomplete:
                    raise
                warnings.warn(f"{err} (patient {pid} left out)", stacklevel=2)
                continue
            converted.append(pid)
        if not converted:
            raise InputError(src, "no patient could be converted (see the warnings above)")
        patients = converted

        split = split_patients(patients, seed, val_fraction)
        case = lambda p: {"image": f"imagesTr/{p}.nii.gz", "label": f"labelsTr/{p}.nii.gz", "patient_id": p}  # noqa: E731
        content = {
            "name": "HCC-TACE-Seg",
            "description": f"TCIA HCC-TACE-Seg converted by liverseg_monai prepare hcc-tace from {src.name}",
            "labels": LABEL_NAMES,
            "training": [{**case(p), "fold": i % n_folds} for i, p in enumerate(split["training"])],
            "validation": [case(p) for p in split["validation"]],
            "testing": [{"image": case(p)["image"], "patient_id": p} for p in split["validation"]],
        }
        if table is not None:
            content["clinical"] = "clinical.csv"
            atomic_write_text(stage / "clinical.csv", table.to_csv(index=False))

        # everything converted: move into place
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                dest = out / path.relative_to(stage)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
        return write_datalist(out, content)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
