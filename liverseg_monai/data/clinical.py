"""Clinical tables (TCIA HCC-TACE-Seg style) and the tumour-severity indicator fitted on them.

The table has one row per patient: an identifier column (``patient_id``, or TCIA's ``TCIA_ID``) and
clinical columns such as ``BCLC``, ``Okuda``, ``CLIP``, ``TNM``, ``AFP``. A *stage group* is the value
of one staging column (BCLC by default). The severity indicator of a group is the expected tumour
fraction of the liver among training patients of that group (mean and spread), measured on their
reference label maps; :class:`liverseg_monai.losses.weak_supervision.ClinicalTumorFractionLoss` pulls
each patient's prediction toward it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liverseg_monai.errors import InputError

logger = logging.getLogger(__name__)

ID_COLUMNS = ("patient_id", "TCIA_ID", "PatientID", "ID")
MISSING = {"", "NA", "N/A", "NAN", "NONE", "NULL", "UNKNOWN", "-", "?"}


def read_clinical(path: str | os.PathLike, id_column: str | None = None):
    """Read a clinical table (CSV, TSV or Excel) indexed by patient identifier (strings).

    Raises:
        InputError: naming the file when it is unreadable, has no identifier column or repeats an identifier.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "clinical table not found")
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            table = pd.read_excel(path, dtype=str)
        else:
            table = pd.read_csv(path, sep=None, engine="python", dtype=str)
    except Exception as err:  # pandas raises many types for unreadable files
        raise InputError(path, f"cannot read the clinical table ({type(err).__name__}: {err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    column = id_column or next((c for c in ID_COLUMNS if c in table.columns), None)
    if column is None or column not in table.columns:
        raise InputError(path, f"no patient identifier column (looked for {id_column or ', '.join(ID_COLUMNS)}; found {', '.join(table.columns)})")
    ids = table[column].astype(str).str.strip()
    if ids.duplicated().any():
        raise InputError(path, f"patient identifiers repeat: {sorted(set(ids[ids.duplicated()]))[:5]}")
    table.index = ids
    table.attrs["path"] = str(path)
    return table


def stage_group(value) -> str | None:
    """Normalise a staging value (``' b '`` -> ``'B'``, ``'2.0'`` -> ``'2'``); ``None`` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().upper()
    if text in MISSING:
        return None
    try:
        number = float(text)
        return str(int(number)) if number.is_integer() else text
    except ValueError:
        return text


def tumor_fraction(label: np.ndarray, liver_labels: Sequence[int] = (1, 2), tumor_labels: Sequence[int] = (2,)) -> float:
    """Tumour voxels over liver voxels (tumour included) of a label map; 0 for an empty liver."""
    label = np.asarray(label)
    liver = np.isin(label, liver_labels).sum()
    return float(np.isin(label, tumor_labels).sum() / liver) if liver else 0.0


@dataclass
class SeverityIndicator:
    """Expected tumour fraction of the liver per stage group, fitted on training patients."""

    column: str
    groups: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # group -> (mean, std, n)
    overall: tuple[float, float, int] = (float("nan"), float("nan"), 0)

    def prior(self, group: str | None) -> tuple[float, float]:
        """``(mean, std)`` for a group; the overall figures for a group unseen in training; NaN when ``group`` is None."""
        if group is None:
            return float("nan"), float("nan")
        mean, std, _ = self.groups.get(group, self.overall)
        return mean, std


def _patient_id(item: dict) -> str:
    if item.get("patient_id") is not None:
        return str(item["patient_id"]).strip()
    name = os.path.basename(str(item["image"]).rstrip("/"))
    return name.split(".")[0]


def fit_severity(items: Sequence[dict], table, column: str = "BCLC", min_std: float = 0.01) -> SeverityIndicator:
    """Fit the per-group expected tumour fraction on ``items`` (training cases with ``label`` paths).

    Patients absent from ``table`` or without a value in ``column`` are left out of the fit. A group
    with fewer than two patients gets the pooled standard deviation.
    """
    import nibabel as nib

    if column not in table.columns:
        raise InputError(table.attrs.get("path"), f"no column '{column}' to form stage groups (columns: {', '.join(table.columns)})")
    per_group: dict[str, list[float]] = {}
    for item in items:
        pid = _patient_id(item)
        group = stage_group(table[column].get(pid)) if pid in table.index else None
        if group is None:
            continue
        label = np.asanyarray(nib.load(item["label"]).dataobj)
        per_group.setdefault(group, []).append(tumor_fraction(label))
    everything = [f for fs in per_group.values() for f in fs]
    pooled = max(float(np.std(everything)), min_std) if everything else float("nan")
    indicator = SeverityIndicator(column=column)
    indicator.overall = (float(np.mean(everything)) if everything else float("nan"), pooled, len(everything))
    for group, fs in sorted(per_group.items()):
        std = max(float(np.std(fs)), min_std) if len(fs) > 1 else pooled
        indicator.groups[group] = (float(np.mean(fs)), std, len(fs))
    logger.info("severity indicator (%s): %s", column, {g: f"{m:.3f}+-{s:.3f} (n={n})" for g, (m, s, n) in indicator.groups.items()})
    return indicator


def with_severity_prior(
    items: Sequence[dict],
    clinical_table: str | os.PathLike | None,
    column: str = "BCLC",
    fit_items: Sequence[dict] | None = None,
    min_std: float = 0.01,
) -> list[dict]:
    """Copies of ``items`` with ``tumor_fraction_prior`` and ``tumor_fraction_std`` (NaN without clinical data).

    Args:
        items: datalist items (``image``, ``label``, ideally ``patient_id``).
        clinical_table: path of the clinical table; a missing file switches the term off for every
            patient (logged), so the same config trains on data without clinical tables.
        column: the staging column that defines the groups.
        fit_items: the patients the indicator is fitted on (default: ``items``, the training split).
        min_std: lower bound of a group's spread.
    """
    items = [dict(item) for item in items]
    if clinical_table is None or not Path(clinical_table).is_file():
        logger.warning("weak supervision: no clinical table at %s; the term is skipped for all %d patients", clinical_table, len(items))
        for item in items:
            item["tumor_fraction_prior"] = item["tumor_fraction_std"] = float("nan")
        return items
    table = read_clinical(clinical_table)
    indicator = fit_severity(items if fit_items is None else fit_items, table, column, min_std)
    missing = []
    for item in items:
        pid = _patient_id(item)
        group = stage_group(table[column].get(pid)) if pid in table.index else None
        item["tumor_fraction_prior"], item["tumor_fraction_std"] = indicator.prior(group)
        if group is None:
            missing.append(pid)
    if missing:
        logger.warning("weak supervision: %d of %d patients have no '%s' in %s and skip the term: %s",
                       len(missing), len(items), column, clinical_table, ", ".join(missing))
    return items
