"""Structured read-out reports (JSON) for whole-slide outputs, written next to the slide's CSV.

A DICOM SR needs DICOM source instances for its patient, study and evidence (see
:mod:`liverseg_monai.io.sr`); slides read from TIFF/SVS files have none, so their read-out is a JSON
report, ``<stem>_report.json``, beside ``<stem>_areas.csv`` (tissue classes) or
``<stem>_droplets.csv`` (steatosis). Every report names its source file, the microns per pixel the
areas were computed with, the model (bundle name and version, when the network came from a bundle)
and the unit of every value::

    {"report": "tissue_class_areas", "source": "slide.svs", "mpp": 0.5, "level": 0,
     "model": {"bundle": "liver_pathology_deeplab_segmentation", "name": "...", "version": "0.1.0"},
     "units": {"area_mm2": "mm2", "mpp": "um/pixel", ...},
     "classes": [{"class_index": 1, "class_name": "parenchyma", "pixels": 12345, "area_mm2": 0.0031}, ...],
     "tissue_area_mm2": ...}

Areas are ``pixels * mpp**2 / 1e6`` (mm²) at the resolution of the inferred level.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from liverseg_monai.errors import InputError
from liverseg_monai.io.atomic import atomic_write_text

REPORT_SUFFIX = "_report.json"
UM2_PER_MM2 = 1e6


def pixel_area_mm2(pixels: float, mpp: float) -> float:
    """Area in mm² of ``pixels`` pixels of ``mpp`` microns per pixel (``pixels * mpp**2 / 1e6``)."""
    return float(pixels) * float(mpp) ** 2 / UM2_PER_MM2


def bundle_identity(path: str | os.PathLike | None) -> dict | None:
    """``{"bundle", "name", "version"}`` of the bundle holding ``path`` (e.g. its ``models/model.pt``).

    Walks up from ``path`` to the first folder with ``configs/metadata.json``; ``None`` when ``path``
    is ``None`` or lies in no bundle.

    Raises:
        InputError: naming the file, when that ``metadata.json`` is not valid JSON or lacks ``version``.
    """
    if path is None:
        return None
    for folder in Path(path).absolute().parents:
        meta_path = folder / "configs" / "metadata.json"
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError as e:
                raise InputError(meta_path, f"not valid JSON: {e}") from e
            if "version" not in meta:
                raise InputError(meta_path, "no 'version' key")
            return {"bundle": folder.name, "name": meta.get("name", folder.name), "version": meta["version"]}
    return None


def tissue_class_report(source: str | os.PathLike, areas: Sequence[Mapping], mpp: float, level: int = 0,
                        model: Mapping | None = None, background_class: int = 0) -> dict:
    """The tissue-class area report of a segmented slide.

    Args:
        source: the slide file.
        areas: one row per class with ``class_index``, ``class_name`` and ``pixels`` (the rows of
            ``<stem>_areas.csv``).
        mpp: microns per pixel of the segmented level.
        level: the segmented pyramid level.
        model: ``{"bundle", "name", "version"}`` (see :func:`bundle_identity`) or ``None``.
        background_class: the class not counted as tissue (glass).

    Returns:
        the report: per class ``pixels`` and ``area_mm2``; ``tissue_area_mm2`` (all classes but the
        background) and per tissue class ``percent_of_tissue``.
    """
    if mpp is None or not mpp > 0:
        raise InputError(source, f"microns per pixel must be positive to report areas, got {mpp!r}")
    classes = []
    for row in areas:
        pixels = int(row["pixels"])
        classes.append({"class_index": int(row["class_index"]), "class_name": str(row["class_name"]),
                        "pixels": pixels, "area_mm2": pixel_area_mm2(pixels, mpp)})
    tissue_px = sum(c["pixels"] for c in classes if c["class_index"] != background_class)
    for c in classes:
        tissue = c["class_index"] != background_class
        c["percent_of_tissue"] = 100.0 * c["pixels"] / tissue_px if tissue and tissue_px else None
    return {
        "report": "tissue_class_areas",
        "source": str(source),
        "mpp": float(mpp),
        "level": int(level),
        "model": dict(model) if model else None,
        "units": {"mpp": "um/pixel", "pixels": "pixels at the segmented level", "area_mm2": "mm2",
                  "tissue_area_mm2": "mm2", "percent_of_tissue": "%"},
        "background_class": int(background_class),
        "tissue_area_mm2": pixel_area_mm2(tissue_px, mpp),
        "classes": classes,
    }


def steatosis_report(source: str | os.PathLike, summary: Mapping, model: Mapping | None = None) -> dict:
    """The steatosis read-out of a slide from the instance writer's summary.

    Args:
        source: the slide file.
        summary: ``infer_slide_instances``'s summary (``mpp``, ``level``, ``n_droplets``,
            ``droplet_area_um2``, ``tissue_area_um2``, ``steatosis_fraction``, ``warning``).
        model: ``{"bundle", "name", "version"}`` or ``None``.

    Returns:
        the report: ``droplet_count``, ``droplet_area_mm2``, ``tissue_area_mm2`` and
        ``steatosis_percent_of_tissue`` (``None`` when the slide shows no tissue).
    """
    fraction = summary["steatosis_fraction"]
    return {
        "report": "steatosis",
        "source": str(source),
        "mpp": float(summary["mpp"]),
        "level": int(summary["level"]),
        "model": dict(model) if model else None,
        "units": {"mpp": "um/pixel", "droplet_count": "droplets", "droplet_area_mm2": "mm2",
                  "tissue_area_mm2": "mm2", "steatosis_percent_of_tissue": "%"},
        "droplet_count": int(summary["n_droplets"]),
        "droplet_area_mm2": float(summary["droplet_area_um2"]) / UM2_PER_MM2,
        "tissue_area_mm2": float(summary["tissue_area_um2"]) / UM2_PER_MM2,
        "steatosis_percent_of_tissue": None if fraction is None else 100.0 * float(fraction),
        "warning": summary.get("warning"),
    }


def write_report(path: str | os.PathLike, report: Mapping) -> Path:
    """Write ``report`` as indented JSON atomically (joins an open ``all_or_none`` block)."""
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return Path(path)
