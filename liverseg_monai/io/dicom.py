"""DICOM for CT: the project's one place that reads and writes DICOM series and DICOM-SEG.

Conventions
-----------
* Arrays are in voxel order ``(i, j, k)``: ``i`` the column index of a slice, ``j`` its row index and
  ``k`` the slice index sorted along the slice normal ``n = row_direction x column_direction``
  (the order ITK/GDCM use), so ``read_series`` returns what ``LoadImage(reader="ITKReader")``
  returns for the same folder.
* Affines are 4x4 voxel -> world matrices in RAS millimetres (the NIfTI convention MONAI uses).
  DICOM patient coordinates are LPS; the conversion is ``diag(-1, -1, 1, 1) @ affine_lps``.
* Every problem with an input raises :class:`liverseg_monai.errors.InputError` naming the folder
  or file and saying what is wrong; outputs are written atomically.

Main entry points: :func:`read_series`, :func:`read_series_geometry`, :func:`read_seg`,
:func:`write_seg`, :func:`write_series` (synthetic data and tests) and the MONAI reader
:class:`DicomSeriesReader` for ``LoadImaged(reader=...)``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from monai.data.image_reader import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from liverseg_monai.errors import InputError
from liverseg_monai.io.atomic import atomic_path

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# tolerances: direction cosines, in-plane spacing (mm), slice spacing (fraction of the spacing)
_ORIENT_TOL = 1e-4
_SPACING_TOL = 1e-3
_SLICE_TOL = 0.05


# --------------------------------------------------------------------------------------- series


@dataclass
class _Slice:
    path: Path
    ds: Dataset  # the file's dataset, or for a frame of a multi-frame file the frame's attributes
    position: np.ndarray  # LPS mm

    @property
    def frame(self) -> int | None:
        """The frame index in a multi-frame (enhanced) file, ``None`` for a one-slice file."""
        source = getattr(self.ds, "_multiframe_source", None)
        return None if source is None else source[1]


_FRAME_ATTRIBUTES = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID",
                     "PatientID", "Modality", "SeriesDescription", "Rows", "Columns", "SamplesPerPixel", "ImageType")


def _frames(path: Path, ds: Dataset) -> list[tuple[Path, Dataset]]:
    """A multi-frame (Enhanced / Legacy Converted Enhanced CT) file as one entry per frame.

    Each frame's entry carries what a one-slice file would: ImagePositionPatient, ImageOrientationPatient,
    PixelSpacing, SliceThickness, RescaleSlope / Intercept / Type and FrameType from its per-frame
    functional groups, else the shared ones; the file's dataset and the frame index travel along for decoding.
    """
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" not in ds or not _is_image(ds):  # a classic one-slice file (or a SEG)
        return [(path, ds)]
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != n:
        raise InputError(path, f"multi-frame image with {n} frames but {len(per_frame)} per-frame functional groups")
    shared = ds.SharedFunctionalGroupsSequence[0] if len(ds.get("SharedFunctionalGroupsSequence", [])) else None

    def group(item, name):
        for src in (item, shared):
            if src is not None and name in src and len(src[name].value):
                return src[name].value[0]
        return None

    out = []
    for i, item in enumerate(per_frame):
        frame = Dataset()
        for key in _FRAME_ATTRIBUTES:
            if key in ds:
                frame[key] = ds[key]
        for seq, keys in (("PlanePositionSequence", ("ImagePositionPatient",)),
                          ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
                          ("PixelMeasuresSequence", ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices")),
                          ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept", "RescaleType")),
                          ("CTImageFrameTypeSequence", ("FrameType",))):
            g = group(item, seq)
            for key in keys:
                if g is not None and key in g:
                    frame[key] = g[key]
        frame._multiframe_source = (ds, i)
        out.append((path, frame))
    return out


def _dicom_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise InputError(folder, "DICOM series folder does not exist")
    if not folder.is_dir():
        raise InputError(folder, "expected a folder holding one DICOM series (one file per slice), got a file")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR")


def _read_header(path: Path, stop_before_pixels: bool) -> Dataset | None:
    """The dataset of ``path``, ``None`` when it is not a DICOM file at all (a note, a thumbnail).

    Old files without the 128-byte preamble and file meta information (ACR-NEMA style, still
    produced by some exporters) are read too when they hold a SOP Class UID.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        pass
    except Exception as err:  # truncated or corrupt files raise many kinds of errors
        raise InputError(path, f"unreadable DICOM file ({type(err).__name__}: {err})") from None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            return None
    except Exception:
        return None
    if "TransferSyntaxUID" not in ds.file_meta:  # needed to decode the pixels
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)
    return ds


def _read_folder(folder: Path, stop_before_pixels: bool) -> list[tuple[Path, Dataset]]:
    files = _dicom_files(folder)
    found = [(p, ds) for p in files if (ds := _read_header(p, stop_before_pixels)) is not None]
    if not found:
        extra = f" ({len(files)} other files)" if files else ""
        raise InputError(folder, f"no DICOM files in this folder{extra}")
    return found


_NON_IMAGE_MODALITIES = {"SEG", "SR", "RTSTRUCT", "PR", "KO", "REG", "DOC", "RTPLAN"}


def _is_image(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) != SEGMENTATION_STORAGE and ds.get("Modality") not in _NON_IMAGE_MODALITIES


def _is_localizer(ds: Dataset) -> bool:
    """A scout / topogram (ImageType ``...\\LOCALIZER``), which some exports keep in the axial series."""
    image_type = ds.get("ImageType") or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    return any(str(v).strip().upper() == "LOCALIZER" for v in values)


def _select_series(folder: Path, found: list[tuple[Path, Dataset]], series_uid: str | None) -> list[tuple[Path, Dataset]]:
    images = [(p, ds) for p, ds in found if _is_image(ds)]
    if images and series_uid is None:
        found = images  # a SEG or report stored next to the slices is not part of the image series
    slices = [(p, ds) for p, ds in found if not _is_localizer(ds)]
    if slices and len(slices) < len(found):  # a scout in the folder is not a slice of the volume
        logger.info("%s: leaving out %d localizer image(s): %s", folder, len(found) - len(slices),
                    ", ".join(p.name for p, ds in found if _is_localizer(ds)))
        found = slices
    by_series: dict[str, list[tuple[Path, Dataset]]] = {}
    for path, ds in found:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    if series_uid is not None:
        if series_uid not in by_series:
            raise InputError(folder, f"no series with SeriesInstanceUID {series_uid}; found {', '.join(sorted(by_series))}")
        return by_series[series_uid]
    if len(by_series) > 1:
        desc = "; ".join(
            f"{uid or '<no SeriesInstanceUID>'} ({len(v)} files, e.g. {v[0][0].name})" for uid, v in sorted(by_series.items())
        )
        raise InputError(folder, f"holds {len(by_series)} DICOM series, expected one: {desc}. Pass series_uid= to pick one")
    return next(iter(by_series.values()))


def _check_image(path: Path, ds: Dataset, modality: str | Sequence[str] | None) -> None:
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == SEGMENTATION_STORAGE or ds.get("Modality") == "SEG":
        raise InputError(path, "is a DICOM-SEG (segmentation), not an image series; pass it as the label")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(path, f"multi-frame image ({ds.NumberOfFrames} frames) without per-frame functional groups: "
                               "cannot place its frames in patient space")
    if modality is not None:
        allowed = ensure_tuple(modality)
        if ds.get("Modality") not in allowed:
            raise InputError(path, f"modality is {ds.get('Modality', '<missing>')!r}, expected {' or '.join(allowed)}")
    for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
        if ds.get(key) in (None, ""):
            raise InputError(path, f"lacks {key}: cannot place this slice in patient space")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InputError(path, f"has {ds.SamplesPerPixel} samples per pixel; expected a greyscale CT slice")


# ImageType / FrameType values of CT maps whose pixels are not Hounsfield units (perfusion and other
# parametric maps, material-decomposition maps)
NON_HU_IMAGE_TYPES = frozenset({
    "PERFUSION", "PARAMETRIC", "PARAMETRIC_MAP", "CBF", "CBV", "MTT", "TTP", "TMAX", "BLOOD_FLOW",
    "BLOOD_VOLUME", "PERMEABILITY", "IODINE", "IODINE_MAP", "EFFECTIVE_Z", "ZEFF", "ELECTRON_DENSITY",
})


def _values(ds: Dataset, key: str) -> list[str]:
    value = ds.get(key)
    if value in (None, ""):
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v).strip().upper() for v in values]


def check_hounsfield(path: str | os.PathLike, ds: Dataset) -> None:
    """Refuse a CT slice (or enhanced-CT frame) whose rescaled values are not Hounsfield units.

    A present ``RescaleType`` other than ``HU`` (for example ``US``, unspecified, of a perfusion map in
    ml/100ml/min; in an enhanced CT it sits in the Pixel Value Transformation functional group) is
    refused. Without ``RescaleType`` (CT defaults to HU), a ``DERIVED`` ImageType / FrameType naming a
    perfusion or other parametric map (:data:`NON_HU_IMAGE_TYPES`) is refused too. Windows, intensity
    priors and the networks all assume HU: such data would give a silent wrong answer.

    Raises:
        InputError: naming ``path`` and the attribute that shows the values are not HU.
    """
    rescale_type = ds.get("RescaleType")
    if rescale_type not in (None, ""):
        if str(rescale_type).strip().upper() != "HU":
            raise InputError(path, f"RescaleType is {str(rescale_type)!r}, not 'HU': the pixel values are not "
                                   "Hounsfield units (a perfusion or other parametric map?); the CT models need a HU series")
        return
    for key in ("ImageType", "FrameType"):
        values = _values(ds, key)
        flavour = sorted(NON_HU_IMAGE_TYPES & set(values))
        if values and values[0] == "DERIVED" and flavour:
            shown = "\\".join(values)
            raise InputError(path, f"{key} {shown} marks a derived {flavour[0].lower()} map, not Hounsfield "
                                   "units; the CT models need a HU series")


def _floats(path: Path, ds: Dataset, key: str, n: int) -> np.ndarray:
    try:
        values = np.asarray([float(v) for v in ds[key].value], float)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise InputError(path, f"{key} must hold {n} finite numbers, got {ds.get(key)!r}")
    return values


@dataclass
class _Geometry:
    slices: list[_Slice]  # sorted along the normal
    shape: tuple[int, int, int]
    affine_lps: np.ndarray


def _geometry(folder: Path, entries: list[tuple[Path, Dataset]], modality) -> _Geometry:
    """Sort the slices of one series along the normal and check they form a regular volume."""
    entries = [e for path, ds in entries for e in _frames(path, ds)]
    first_path, first = entries[0]
    for path, ds in entries:
        _check_image(path, ds, modality)
    iop0 = _floats(first_path, first, "ImageOrientationPatient", 6)
    ps0 = _floats(first_path, first, "PixelSpacing", 2)
    size0 = (int(first.Rows), int(first.Columns))
    slices = []
    for path, ds in entries:
        iop = _floats(path, ds, "ImageOrientationPatient", 6)
        if not np.allclose(iop, iop0, atol=_ORIENT_TOL):
            raise InputError(path, f"ImageOrientationPatient {iop.tolist()} differs from {first_path.name} {iop0.tolist()}; "
                                   "slices of one series must share one orientation")
        ps = _floats(path, ds, "PixelSpacing", 2)
        if not np.allclose(ps, ps0, atol=_SPACING_TOL):
            raise InputError(path, f"PixelSpacing {ps.tolist()} differs from {first_path.name} {ps0.tolist()}")
        if (int(ds.Rows), int(ds.Columns)) != size0:
            raise InputError(path, f"slice size {int(ds.Rows)}x{int(ds.Columns)} differs from {first_path.name} {size0[0]}x{size0[1]}")
        slices.append(_Slice(path, ds, _floats(path, ds, "ImagePositionPatient", 3)))

    row_dir, col_dir = iop0[:3], iop0[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3 or abs(row_dir @ col_dir) > 1e-3:
        raise InputError(first_path, f"ImageOrientationPatient {iop0.tolist()} is not two orthogonal unit vectors")
    row_dir, col_dir = row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda s: float(s.position @ normal))
    dist = np.array([s.position @ normal for s in slices])

    if len(slices) > 1:
        steps = np.diff(dist)
        dup = np.flatnonzero(steps < 1e-3)
        if dup.size:
            a, b = slices[dup[0]], slices[dup[0] + 1]
            raise InputError(folder, f"two slices at the same position {a.position.tolist()}: {a.path.name} and {b.path.name} "
                                     "(several acquisitions or duplicated files in one folder?)")
        dz = float(np.median(steps))
        gap = np.flatnonzero(steps > 1.5 * dz)
        if gap.size:
            a, b = slices[gap[0]], slices[gap[0] + 1]
            n_missing = int(round(steps[gap[0]] / dz)) - 1
            raise InputError(folder, f"missing slice: {steps[gap[0]]:.3g} mm between {a.path.name} and {b.path.name} "
                                     f"where the series has {dz:.3g} mm spacing (about {n_missing} slice(s) absent)")
        bad = np.flatnonzero(np.abs(steps - dz) > _SLICE_TOL * dz)
        if bad.size:
            a, b = slices[bad[0]], slices[bad[0] + 1]
            raise InputError(folder, f"inconsistent slice spacing: {steps[bad[0]]:.4g} mm between {a.path.name} and "
                                     f"{b.path.name}, {dz:.4g} mm elsewhere")
        # the slices must stack along the normal (no gantry tilt / sheared stacks)
        offsets = np.array([s.position - slices[0].position for s in slices])
        residual = offsets - np.outer(offsets @ normal, normal)
        worst = int(np.argmax(np.linalg.norm(residual, axis=1)))
        if np.linalg.norm(residual[worst]) > max(0.01, 0.05 * min(ps0)):
            raise InputError(slices[worst].path, "slice positions are not stacked along the slice normal (gantry tilt or "
                                                 "sheared series); resample it to an orthogonal grid first")
        step_vec = (slices[-1].position - slices[0].position) / (len(slices) - 1)
    else:
        thickness = slices[0].ds.get("SpacingBetweenSlices") or slices[0].ds.get("SliceThickness") or 1.0
        step_vec = normal * float(thickness)

    affine = np.eye(4)
    affine[:3, 0] = row_dir * ps0[1]  # i: along a row, spacing between columns
    affine[:3, 1] = col_dir * ps0[0]  # j: down a column, spacing between rows
    affine[:3, 2] = step_vec
    affine[:3, 3] = slices[0].position
    return _Geometry(slices, (size0[1], size0[0], len(slices)), affine)


def _collect(folder, series_uid: str | None, modality, stop_before_pixels: bool) -> tuple[Path, _Geometry]:
    folder = Path(folder)
    found = _read_folder(folder, stop_before_pixels)
    entries = _select_series(folder, found, series_uid)
    return folder, _geometry(folder, entries, modality)


def _slice_hu(s: _Slice) -> np.ndarray:
    try:
        if s.frame is None:
            pixels = s.ds.pixel_array
        else:  # a frame of a multi-frame file: decode the file once
            source = s.ds._multiframe_source[0]
            if getattr(source, "_decoded_frames", None) is None:  # (frames, rows, columns), also for one frame
                source._decoded_frames = source.pixel_array.reshape(-1, int(source.Rows), int(source.Columns))
            pixels = source._decoded_frames[s.frame]
    except Exception as err:
        raise InputError(s.path, f"cannot decode pixel data ({type(err).__name__}: {err})") from None
    if pixels.shape != (int(s.ds.Rows), int(s.ds.Columns)):
        raise InputError(s.path, f"pixel data of shape {pixels.shape} does not match Rows x Columns")
    slope = float(s.ds.get("RescaleSlope", 1) or 1)
    intercept = float(s.ds.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def read_series_geometry(folder: str | os.PathLike, series_uid: str | None = None,
                         modality: str | Sequence[str] | None = "CT") -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape, affine)`` of a DICOM series folder without decoding pixels; affine voxel -> RAS.

    The shape and affine are those :func:`read_series` (and MONAI's ``ITKReader``) give.
    """
    _, geo = _collect(folder, series_uid, modality, stop_before_pixels=True)
    return geo.shape, LPS_TO_RAS @ geo.affine_lps


def read_series(folder: str | os.PathLike, series_uid: str | None = None,
                modality: str | Sequence[str] | None = "CT") -> tuple[np.ndarray, np.ndarray, dict]:
    """Read one DICOM series (one slice per file, any file names and order) into a volume.

    Args:
        folder: the folder holding the series' files. Files that are not DICOM are ignored.
        series_uid: the SeriesInstanceUID to read when the folder holds several series.
        modality: accepted Modality value(s); ``None`` accepts any single-frame image.

    Returns:
        ``(array, affine, meta)``: ``array`` float32 of shape ``(columns, rows, slices)`` in rescaled
        units (HU for CT), ``affine`` the 4x4 voxel -> RAS matrix, ``meta`` a dict with ``files`` and
        ``sop_instance_uids`` (in slice order ``k``), ``series_instance_uid``, ``study_instance_uid``,
        ``frame_of_reference_uid``, ``patient_id``, ``modality``, ``series_description``, ``spacing``.

    Raises:
        InputError: naming the folder or file for an empty folder, several series, a SEG or
            non-CT file, a missing slice, inconsistent spacing/orientation/size, an unreadable file,
            or a CT whose values are not Hounsfield units (:func:`check_hounsfield`).

    Example:
        >>> array, affine, meta = read_series("HCC_001/study/series")  # doctest: +SKIP
    """
    folder, geo = _collect(folder, series_uid, modality, stop_before_pixels=False)
    for s in geo.slices:
        if s.ds.get("Modality") == "CT":
            check_hounsfield(s.path, s.ds)
    array = np.empty(geo.shape, np.float32)
    for k, s in enumerate(geo.slices):
        array[:, :, k] = _slice_hu(s).T
    return array, LPS_TO_RAS @ geo.affine_lps, _series_meta(folder, geo)


def _series_meta(folder: Path, geo: _Geometry) -> dict:
    ds = geo.slices[0].ds
    return {
        "folder": str(folder),
        "files": [str(s.path) for s in geo.slices],
        "sop_instance_uids": [str(s.ds.SOPInstanceUID) for s in geo.slices],
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "patient_id": str(ds.get("PatientID", "")),
        "modality": str(ds.get("Modality", "")),
        "series_description": str(ds.get("SeriesDescription", "")),
        "spacing": np.linalg.norm(geo.affine_lps[:3, :3], axis=0),
    }


def to_series_grid(array: np.ndarray, affine: np.ndarray, series_folder: str | os.PathLike,
                   series_uid: str | None = None) -> np.ndarray:
    """``array`` (voxel -> RAS ``affine``) re-indexed onto the voxel grid of a DICOM series.

    The two grids must hold the same voxel centres, up to axis flips and permutations (for example
    the grid a volume was written with by :func:`write_series` and the one :func:`read_series` reads,
    which sorts slices along the normal). Use it to put masks made on the writer's grid onto the
    grid :func:`write_seg` expects.
    """
    shape, target = read_series_geometry(series_folder, series_uid, modality=None)
    array = np.asarray(array)
    # voxel (i, j, k) of the series -> voxel of ``array``
    transform = np.linalg.inv(np.asarray(affine, float)) @ target
    perm = np.rint(transform[:3, :3])
    if not np.allclose(transform[:3, :3], perm, atol=1e-3) or not np.allclose(np.abs(perm).sum(0), 1):
        raise InputError(series_folder, "the array's grid is not the series' grid up to flips/permutations")
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    src = np.rint(ijk @ transform[:3, :3].T + transform[:3, 3]).astype(int)
    if (src < 0).any() or (src >= np.asarray(array.shape[:3])).any():
        raise InputError(series_folder, f"the array of shape {array.shape} does not cover the series grid {shape}")
    return array[src[:, 0], src[:, 1], src[:, 2]].reshape(shape)


# ----------------------------------------------------------------------------------- MONAI reader


# the HCC-TACE-Seg segments and the label values the project uses (the mass painted last)
HCC_TACE_SEG_LABELS = {"Liver": 1, "Portal vein": 3, "Abdominal aorta": 4, "Mass": 2}
HCC_TACE_OPTIONAL_SEGMENTS = ("Portal vein", "Abdominal aorta")


def hcc_tace_output_segments(with_vessels: bool = False) -> dict[str, list[int]]:
    """The DICOM-SEG segments written for a predicted HCC-TACE label map: segment label -> label values.

    ``Liver`` is the whole liver, the tumour inside it included (labels 1 and 2), ``Mass`` the tumour
    (2); with the vessel classes, ``Portal vein`` (3) and ``Abdominal aorta`` (4) too. The segment
    labels are those of the HCC-TACE-Seg collection (:data:`HCC_TACE_SEG_LABELS`).

    >>> hcc_tace_output_segments()
    {'Liver': [1, 2], 'Mass': [2]}
    """
    segments = {"Liver": [1, 2], "Mass": [2]}
    if with_vessels:
        segments.update({"Portal vein": [3], "Abdominal aorta": [4]})
    return segments


class _SeriesFolder:
    def __init__(self, path: str):
        self.path = path


class _SegFile:
    def __init__(self, path: str):
        self.path = path


def is_seg_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM-SEG file (reads only its header)."""
    if not os.path.isfile(path):
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return False
    return str(ds.get("SOPClassUID", "")) == SEGMENTATION_STORAGE


def find_referenced_series(seg_path: str | os.PathLike, search_root: str | os.PathLike | None = None) -> Path:
    """The folder of the series a DICOM-SEG references, searched below ``search_root``.

    By default the SEG's study folder (TCIA layout: ``<patient>/<study>/<seg series>/1-1.dcm``) and
    then its patient folder are searched. One file per folder is read to identify the series.
    """
    seg_path = Path(seg_path)
    try:
        ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    except Exception as err:
        raise InputError(seg_path, f"unreadable DICOM file ({type(err).__name__}: {err})") from None
    wanted = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])}
    if not wanted:
        raise InputError(seg_path, "has no ReferencedSeriesSequence: cannot tell which series it segments")
    roots = [Path(search_root)] if search_root is not None else [seg_path.parent.parent, seg_path.parent.parent.parent]
    for root in roots:
        for folder, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                try:
                    head = pydicom.dcmread(Path(folder) / name, stop_before_pixels=True,
                                           specific_tags=["SeriesInstanceUID", "SOPClassUID"])
                except Exception:
                    continue
                if str(head.get("SOPClassUID", "")) == SEGMENTATION_STORAGE:
                    break
                if str(head.get("SeriesInstanceUID", "")) in wanted:
                    return Path(folder)
                break
    raise InputError(seg_path, f"the series it references ({', '.join(sorted(wanted))}) is not below "
                               f"{' or '.join(str(r) for r in roots)}")


class DicomSeriesReader(ImageReader):
    """MONAI reader for DICOM series folders (images) and DICOM-SEG files (labels), with the checks of
    :func:`read_series` and :func:`read_seg`.

    Use it as ``LoadImaged(keys=["image", "label"], reader=DicomSeriesReader())`` (or the dotted name
    ``"liverseg_monai.io.dicom.DicomSeriesReader"`` in a bundle config):

    * a folder is read as one CT series (float32 HU);
    * a DICOM-SEG file is read as a label map on the grid of the series it references, found next to
      it (TCIA layout) or in ``series_root``; segments are matched by label to ``segment_labels``;
    * anything else (a NIfTI file) is declined in :meth:`read`, so ``LoadImage`` falls back to its
      default readers and one pipeline reads both NIfTI and DICOM.

    A DICOM input with a problem raises :class:`InputError` in :meth:`get_data`, where ``LoadImage``
    does not swallow it. The metadata is what MONAI's readers give (``affine``, ``original_affine``,
    ``spatial_shape``, ``space``, ``original_channel_dim``) so ``Orientationd``, ``Invertd`` and
    ``SaveImaged`` restore the exact input geometry, plus a few DICOM identifiers.

    Args:
        series_uid: the series to read when a folder holds several.
        modality: accepted Modality value(s), ``None`` for any.
        segment_labels: SEG label -> value for label maps (default: HCC-TACE-Seg's
            ``Liver`` 1, ``Mass`` 2, ``Portal vein`` 3, ``Abdominal aorta`` 4).
        optional_segments: labels that may be missing from a SEG (default: the two vessels when
            ``segment_labels`` is the default, else none).
        series_root: where to look for the series a SEG references (default: next to the SEG).
        channel_dim: as for MONAI readers; default: no channel.
        dtype: the array dtype (default float32).
    """

    def __init__(self, series_uid: str | None = None, modality: str | Sequence[str] | None = "CT",
                 segment_labels: Mapping[str, int] | None = None, optional_segments: Sequence[str] | None = None,
                 series_root: str | os.PathLike | None = None, channel_dim: int | str | None = None,
                 dtype=np.float32, **kwargs):
        super().__init__()
        self.series_uid = series_uid
        self.modality = modality
        self.segment_labels = dict(segment_labels) if segment_labels is not None else dict(HCC_TACE_SEG_LABELS)
        if optional_segments is None:
            optional_segments = HCC_TACE_OPTIONAL_SEGMENTS if segment_labels is None else ()
        self.optional_segments = tuple(optional_segments)
        self.series_root = series_root
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.dtype = dtype

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        return all(os.path.isdir(f) or is_seg_file(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs):
        handles: list = []
        for name in ensure_tuple(data):
            if os.path.isdir(name):
                handles.append(_SeriesFolder(str(name)))
            elif is_seg_file(name):
                handles.append(_SegFile(str(name)))
            else:
                raise InputError(name, "DicomSeriesReader reads DICOM series folders and DICOM-SEG files; this is neither")
        return handles if len(handles) > 1 else handles[0]

    def _load(self, handle) -> tuple[np.ndarray, np.ndarray, dict]:
        if isinstance(handle, _SegFile):
            folder = find_referenced_series(handle.path, self.series_root)
            label = read_seg(handle.path, folder, self.segment_labels, optional=self.optional_segments)
            shape, affine = read_series_geometry(folder, modality=None)
            head = pydicom.dcmread(handle.path, stop_before_pixels=True)
            info = {"spacing": np.linalg.norm(affine[:3, :3], axis=0), "patient_id": str(head.get("PatientID", "")),
                    "series_instance_uid": str(head.get("SeriesInstanceUID", "")),
                    "study_instance_uid": str(head.get("StudyInstanceUID", "")), "modality": "SEG"}
            return label, affine, info
        return read_series(handle.path, self.series_uid, self.modality)

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        arrays, compatible = [], {}
        for handle in ensure_tuple(img):
            array, affine, info = self._load(handle)
            header = {
                MetaKeys.AFFINE: affine.copy(),
                MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
                MetaKeys.SPACE: SpaceKeys.RAS,
                MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if self.channel_dim is None else self.channel_dim,
                "spacing": info["spacing"],
                "PatientID": info["patient_id"],
                "SeriesInstanceUID": info["series_instance_uid"],
                "StudyInstanceUID": info["study_instance_uid"],
                "Modality": info["modality"],
            }
            if compatible:
                if not np.allclose(compatible[MetaKeys.AFFINE], affine) or tuple(compatible[MetaKeys.SPATIAL_SHAPE]) != array.shape:
                    raise InputError(handle.path, "inputs stacked as channels must share one geometry")
            else:
                compatible = header
            arrays.append(array.astype(self.dtype, copy=False))
        if len(arrays) == 1:
            return arrays[0], compatible
        compatible[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), compatible


# --------------------------------------------------------------------------------- writing series


def write_series(
    folder: str | os.PathLike,
    array: np.ndarray,
    affine: np.ndarray,
    *,
    patient_id: str = "ANON",
    patient_name: str | None = None,
    patient_sex: str = "O",
    patient_age: int | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "CT",
    study_description: str = "CT ABDOMEN",
    study_date: str = "20000101",
    signed: bool = True,
    file_names: Sequence[str] | None = None,
    uid_entropy: str | None = None,
) -> list[Path]:
    """Write a HU volume as a CT Image Storage series, one file per slice (for synthetic data and tests).

    Args:
        folder: the series folder (created; must not hold other DICOM files).
        array: HU values of shape ``(i, j, k)`` (columns, rows, slices), rounded to integers.
        affine: voxel -> RAS affine; its first two columns must be orthogonal (any rotation, any
            slice direction).
        signed: store int16 values with RescaleIntercept 0 (``True``) or uint16 values with
            RescaleIntercept -1024 (``False``), as scanners do both.
        file_names: one name per slice ``k`` (for example shuffled), default ``IM{k:04d}.dcm``.
        uid_entropy: when given, every UID is derived from it, so the files are reproducible.

    Returns:
        the written paths, in slice order ``k``.
    """
    folder = Path(folder)
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D (i, j, k) volume, got shape {array.shape}")
    ni, nj, nk = array.shape
    a_lps = LPS_TO_RAS @ np.asarray(affine, float)
    spacing = np.linalg.norm(a_lps[:3, :3], axis=0)
    row_dir, col_dir = a_lps[:3, 0] / spacing[0], a_lps[:3, 1] / spacing[1]
    if abs(row_dir @ col_dir) > 1e-6:
        raise ValueError("the in-plane axes of the affine must be orthogonal")
    normal = np.cross(row_dir, col_dir)
    thickness = abs(float(a_lps[:3, 2] @ normal))

    def uid(tag: str) -> str:
        return generate_uid(entropy_srcs=[uid_entropy, tag]) if uid_entropy is not None else generate_uid()

    study_uid = study_uid or uid("study")
    series_uid = series_uid or uid(f"series-{series_number}")
    frame_of_reference_uid = frame_of_reference_uid or uid("frame-of-reference")
    names = list(file_names) if file_names is not None else [f"IM{k:04d}.dcm" for k in range(nk)]
    if len(names) != nk or len(set(names)) != nk:
        raise ValueError("file_names needs one distinct name per slice")
    intercept = 0.0 if signed else -1024.0
    stored = np.rint(np.asarray(array, np.float64) - intercept)
    lo, hi = (-32768, 32767) if signed else (0, 65535)
    stored = np.clip(stored, lo, hi).astype(np.int16 if signed else np.uint16)

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(nk):
        sop_uid = uid(f"{series_uid}-instance-{k}")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "liverseg-monai synthetic"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = study_description
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name or patient_id
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = patient_sex
        if patient_age is not None:
            ds.PatientAge = f"{int(patient_age):03d}Y"
        ds.SliceThickness = f"{thickness:.6g}"
        ds.KVP = "120"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        position = a_lps[:3, :3] @ np.array([0.0, 0.0, k]) + a_lps[:3, 3]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{float(position @ normal):.6f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = nj, ni
        ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        path = folder / names[k]
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------- DICOM-SEG


def _norm_label(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", str(text))).strip().lower()


# groups of segment names that mean the same structure
SEGMENT_SYNONYMS: tuple[frozenset[str], ...] = (
    frozenset({"liver", "liver parenchyma", "whole liver"}),
    frozenset({"mass", "tumor", "tumour", "lesion", "liver tumor", "liver tumour", "liver lesion", "hcc",
               "neoplasm", "liver mass", "tumor mass"}),
    frozenset({"portal vein", "portalvein", "pv", "vena portae", "hepatic portal vein"}),
    frozenset({"abdominal aorta", "aorta", "abdominalaorta", "aorta abdominal"}),
    frozenset({"spleen"}),
)


def _same_structure(wanted: str, label: str) -> bool:
    a, b = _norm_label(wanted), _norm_label(label)
    if a == b:
        return True
    return any(a in group and b in group for group in SEGMENT_SYNONYMS)


def _segment_codes(name: str):
    """(category, type) codes of a segment name, SNOMED CT as TCIA's HCC-TACE-Seg uses them."""
    from pydicom.sr.codedict import codes

    table = {
        "liver": (codes.SCT.Organ, codes.SCT.Liver),
        "mass": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Mass),
        "portal vein": (codes.SCT.AnatomicalStructure, codes.SCT.PortalVein),
        "abdominal aorta": (codes.SCT.AnatomicalStructure, codes.SCT.AbdominalAorta),
        "spleen": (codes.SCT.Organ, codes.SCT.Spleen),
    }
    for key, value in table.items():
        if _same_structure(key, name):
            return value
    return codes.SCT.Tissue, codes.SCT.Tissue


def write_seg_masks(
    masks: Mapping[str, np.ndarray],
    series_folder: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    series_uid: str | None = None,
    algorithm_name: str = "liverseg-monai",
    algorithm_version: str = "0.1.0",
    manual: bool = False,
    seg_series_number: int = 300,
    series_description: str = "Segmentation",
    content_label: str = "SEGMENTATION",
    uid_entropy: str | None = None,
    content_date: str | None = None,
) -> Path:
    """Write possibly overlapping binary masks as one DICOM-SEG referencing the series in ``series_folder``.

    Args:
        masks: segment label -> boolean mask on the series' voxel grid ``(i, j, k)`` (as
            :func:`read_series` returns it). Segment numbers follow the mapping's order (1, 2, ...).
        series_folder: the source CT series.
        out_path: the ``.dcm`` file to write (atomically).
        algorithm_name, algorithm_version: the algorithm identification (ignored when ``manual``).
        manual: mark segments as MANUAL (reference annotations) instead of AUTOMATIC.
        uid_entropy: derive the SEG's UIDs from this string so outputs are reproducible.
        content_date: ``YYYYMMDD`` for ContentDate/SeriesDate (default: today).

    Returns:
        ``out_path``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    folder, geo = _collect(series_folder, series_uid, None, stop_before_pixels=True)
    frames = [sl.frame for sl in geo.slices]
    if not masks:
        raise ValueError("write_seg needs at least one segment")
    stack = []
    for name, mask in masks.items():
        mask = np.asarray(mask)
        if mask.ndim == 4 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.shape != geo.shape:
            raise ValueError(f"segment '{name}' has shape {mask.shape}, the series in {folder} has {geo.shape}")
        stack.append(mask.astype(bool).transpose(2, 1, 0))  # (k, rows, columns)
    pixels = np.stack(stack, axis=-1)
    if frames[0] is None:
        source_images = [sl.ds for sl in geo.slices]
    else:  # one multi-frame source: its frames in their stored order
        source_images = [geo.slices[0].ds._multiframe_source[0]]
        pixels = pixels[np.argsort(frames)]

    algorithm = None
    if not manual:
        algorithm = hd.AlgorithmIdentificationSequence(
            name=algorithm_name, version=algorithm_version, family=codes.DCM.ArtificialIntelligence
        )
    descriptions = []
    for number, name in enumerate(masks, start=1):
        category, prop = _segment_codes(name)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(name),
            segmented_property_category=category,
            segmented_property_type=prop,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL if manual else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        ))

    def uid(tag: str) -> str:
        return generate_uid(entropy_srcs=[uid_entropy, tag]) if uid_entropy is not None else generate_uid()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=source_images,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=uid("seg-series"),
            series_number=seg_series_number,
            sop_instance_uid=uid("seg-instance"),
            instance_number=1,
            manufacturer="liverseg-monai",
            manufacturer_model_name=algorithm_name,
            software_versions=algorithm_version,
            device_serial_number="0",
            content_label=content_label,
            content_description=series_description[:64],
            omit_empty_frames=bool(pixels.any()),
        )
    seg.SeriesDescription = series_description
    if content_date is not None:
        seg.ContentDate = seg.SeriesDate = content_date
        seg.ContentTime = seg.SeriesTime = "120000"
    if uid_entropy is not None:  # make the file reproducible: no clock times, no random UIDs
        date = content_date or "20000101"
        seg.InstanceCreationDate, seg.InstanceCreationTime = date, "120000"
        for item in seg.get("ContributingEquipmentSequence", []):
            if "ContributionDateTime" in item:
                item.ContributionDateTime = f"{date}120000"
        dim_uid = uid("dimension-organization")
        for key in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
            for item in seg.get(key, []):
                if "DimensionOrganizationUID" in item:
                    item.DimensionOrganizationUID = dim_uid
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp)
    return out_path


def write_seg(
    label_map: np.ndarray,
    series_folder: str | os.PathLike,
    out_path: str | os.PathLike,
    segment_names: Mapping[int, str] | Sequence[str],
    **options,
) -> Path:
    """Write a label map on a series' voxel grid as a binary DICOM-SEG that references the series.

    Args:
        label_map: integer labels of shape ``(i, j, k)`` (or ``(1, i, j, k)``) on the grid of
            :func:`read_series` for ``series_folder``.
        series_folder: the source CT series.
        out_path: the ``.dcm`` file to write (atomically).
        segment_names: label value -> segment label, for example ``{1: "Liver", 2: "Mass"}``; every
            non-zero value in ``label_map`` must be named. Segments are numbered in this order. A
            plain sequence ``["Liver", "Mass"]`` names the values 1, 2, ...
        options: see :func:`write_seg_masks` (algorithm name/version, ``manual``, ``uid_entropy``).

    ``read_seg(out_path, series_folder, {name: value for value, name in segment_names.items()})``
    gives back ``label_map`` exactly.
    """
    label_map = np.asarray(label_map)
    if label_map.ndim == 4 and label_map.shape[0] == 1:
        label_map = label_map[0]
    if not isinstance(segment_names, Mapping):
        segment_names = {value: str(name) for value, name in enumerate(segment_names, start=1)}
    unnamed = sorted(set(np.unique(label_map).tolist()) - {0} - set(int(v) for v in segment_names))
    if unnamed:
        raise ValueError(f"label values {unnamed} have no entry in segment_names")
    masks = {name: label_map == value for value, name in segment_names.items()}
    return write_seg_masks(masks, series_folder, out_path, **options)


def _seq_first(ds: Dataset, *keys: str):
    """``ds.A[0].B[0]...`` or ``None``."""
    item = ds
    for key in keys:
        seq = item.get(key)
        if not seq:
            return None
        item = seq[0]
    return item


def _frame_attr(ds: Dataset, frame: Dataset | None, seq: str):
    """A functional group item from the per-frame item, falling back to the shared groups."""
    if frame is not None and frame.get(seq):
        return frame.get(seq)[0]
    shared = _seq_first(ds, "SharedFunctionalGroupsSequence")
    if shared is not None and shared.get(seq):
        return shared.get(seq)[0]
    return None


def read_seg(
    seg_path: str | os.PathLike,
    series_folder: str | os.PathLike,
    segment_labels: Mapping[str, int],
    optional: Sequence[str] = (),
    series_uid: str | None = None,
) -> np.ndarray:
    """A label map on the series' voxel grid from a DICOM-SEG, matching segments by their label text.

    Args:
        seg_path: the DICOM-SEG file (binary or fractional; fractional values >= 50 % count).
        series_folder: the CT series the SEG was drawn on (the folder :func:`read_series` reads).
        segment_labels: wanted segment label -> output value, for example
            ``{"Liver": 1, "Portal vein": 3, "Abdominal aorta": 4, "Mass": 2}``. Matching is
            case-insensitive and knows common synonyms (``Mass``/``Tumor``/``Lesion``, ``Aorta``/
            ``Abdominal aorta``); several matching segments are merged. Later entries paint over
            earlier ones where segments overlap (list the tumour last to keep it whole).
        optional: wanted labels that may be absent (they are then simply not painted).
        series_uid: the series to use when ``series_folder`` holds several (default: the one the SEG references).

    Returns:
        a uint8 (uint16 for values > 255) array of the series' shape ``(i, j, k)``.

    Raises:
        InputError: naming the SEG when it is not a SEG, references another series, lacks a wanted
            segment, or its frames do not lie on the series' slices.
    """
    seg_path = Path(seg_path)
    if not seg_path.is_file():
        raise InputError(seg_path, "DICOM-SEG file does not exist")
    try:
        seg = pydicom.dcmread(seg_path)
    except Exception as err:
        raise InputError(seg_path, f"unreadable DICOM file ({type(err).__name__}: {err})") from None
    if str(seg.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
        raise InputError(seg_path, f"is not a DICOM-SEG (SOP class {seg.get('SOPClassUID', '<missing>')}, modality "
                                   f"{seg.get('Modality', '<missing>')})")

    referenced: dict[str, set[str]] = {}
    for item in seg.get("ReferencedSeriesSequence", []):
        referenced[str(item.SeriesInstanceUID)] = {str(r.ReferencedSOPInstanceUID) for r in item.get("ReferencedInstanceSequence", [])}

    folder = Path(series_folder)
    found = _read_folder(folder, stop_before_pixels=True)
    if series_uid is None:
        in_folder = {str(ds.get("SeriesInstanceUID", "")) for _, ds in found}
        hits = sorted(in_folder & set(referenced))
        if len(in_folder) > 1 and len(hits) == 1:
            series_uid = hits[0]
    geo = _geometry(folder, _select_series(folder, found, series_uid), None)
    info = _series_meta(folder, geo)
    uid = info["series_instance_uid"]
    if referenced and uid not in referenced:
        raise InputError(seg_path, f"references series {', '.join(sorted(referenced))}, not series {uid} in {folder}")
    sop_to_k = {u: k for k, u in enumerate(info["sop_instance_uids"])}
    # a multi-frame source: its frames are referenced by (instance, frame number)
    frame_to_k = {(str(sl.ds.SOPInstanceUID), sl.frame + 1): k for k, sl in enumerate(geo.slices) if sl.frame is not None}
    if referenced.get(uid) and not (referenced[uid] & set(sop_to_k)):
        raise InputError(seg_path, f"references series {uid} but none of the instances in {folder}")
    seg_for = str(seg.get("FrameOfReferenceUID", ""))
    if not referenced and seg_for and info["frame_of_reference_uid"] and seg_for != info["frame_of_reference_uid"]:
        raise InputError(seg_path, f"frame of reference {seg_for} differs from the series in {folder}")

    # segments by label text
    available = {}
    for item in seg.get("SegmentSequence", []):
        names = [str(item.get("SegmentLabel", ""))]
        code = _seq_first(item, "SegmentedPropertyTypeCodeSequence")
        if code is not None:
            names.append(str(code.get("CodeMeaning", "")))
        available[int(item.SegmentNumber)] = names
    wanted: dict[str, list[int]] = {}
    for name in segment_labels:
        numbers = [n for n, names in available.items() if _same_structure(name, names[0])]
        if not numbers:  # fall back to the coded property type
            numbers = [n for n, names in available.items() if any(_same_structure(name, x) for x in names[1:])]
        if not numbers and name not in optional:
            shown = ", ".join(f"{n}: {names[0]!r}" for n, names in available.items())
            raise InputError(seg_path, f"has no segment labelled {name!r} (segments: {shown})")
        wanted[name] = numbers

    # frames -> (segment, slice)
    try:
        frames = seg.pixel_array
    except Exception as err:
        raise InputError(seg_path, f"cannot decode the segmentation frames ({type(err).__name__}: {err})") from None
    n_frames = int(seg.get("NumberOfFrames", 1) or 1)
    frames = frames.reshape(n_frames, int(seg.Rows), int(seg.Columns))
    if str(seg.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        frames = frames >= 0.5 * float(seg.get("MaximumFractionalValue", 255))
    else:
        frames = frames > 0
    ni, nj, nk = geo.shape
    if (int(seg.Rows), int(seg.Columns)) != (nj, ni):
        raise InputError(seg_path, f"frames are {seg.Rows}x{seg.Columns}, the series in {folder} has {nj}x{ni} slices")

    a = geo.affine_lps
    normal = np.cross(a[:3, 0], a[:3, 1])
    normal /= np.linalg.norm(normal)
    inv = np.linalg.inv(a[:3, :3])
    iop0 = np.concatenate([a[:3, 0] / np.linalg.norm(a[:3, 0]), a[:3, 1] / np.linalg.norm(a[:3, 1])])
    per_frame = seg.get("PerFrameFunctionalGroupsSequence", [None] * n_frames)
    masks: dict[int, np.ndarray] = {}
    for f in range(n_frames):
        item = per_frame[f] if f < len(per_frame) else None
        ident = _frame_attr(seg, item, "SegmentIdentificationSequence")
        if ident is None:
            raise InputError(seg_path, f"frame {f + 1} does not say which segment it belongs to")
        number = int(ident.ReferencedSegmentNumber)
        if not any(number in nums for nums in wanted.values()):
            continue
        k = None
        deriv = _frame_attr(seg, item, "DerivationImageSequence")
        if deriv is not None:
            for src in deriv.get("SourceImageSequence", []):
                ref = str(src.get("ReferencedSOPInstanceUID", ""))
                if not frame_to_k:
                    k = sop_to_k.get(ref, k)
                elif src.get("ReferencedFrameNumber") not in (None, ""):
                    frame_no = src.ReferencedFrameNumber
                    frame_no = frame_no[0] if isinstance(frame_no, Sequence) and not isinstance(frame_no, str) else frame_no
                    k = frame_to_k.get((ref, int(frame_no)), k)
        if k is None:
            pos_item = _frame_attr(seg, item, "PlanePositionSequence")
            orient_item = _frame_attr(seg, item, "PlaneOrientationSequence")
            if pos_item is None:
                raise InputError(seg_path, f"frame {f + 1} has neither a source image nor a position in {folder}")
            if orient_item is not None:
                iop = np.asarray([float(v) for v in orient_item.ImageOrientationPatient])
                if not np.allclose(iop, iop0, atol=1e-3):
                    raise InputError(seg_path, f"frame {f + 1} orientation {iop.tolist()} differs from the series in {folder}")
            ijk = inv @ (np.asarray([float(v) for v in pos_item.ImagePositionPatient]) - a[:3, 3])
            kk = int(round(ijk[2]))
            if np.abs(ijk[:2]).max() > 0.05 or abs(ijk[2] - kk) > 0.05 or not 0 <= kk < nk:
                raise InputError(seg_path, f"frame {f + 1} at {pos_item.ImagePositionPatient} does not lie on a slice of the series in {folder}")
            k = kk
        mask = masks.setdefault(number, np.zeros(geo.shape, bool))
        mask[:, :, k] |= frames[f].T

    dtype = np.uint8 if max(segment_labels.values(), default=0) <= 255 else np.uint16
    label = np.zeros(geo.shape, dtype)
    for name, value in segment_labels.items():
        for number in wanted[name]:
            if number in masks:
                label[masks[number]] = value
    return label


def segment_labels(seg_path: str | os.PathLike) -> dict[int, str]:
    """Segment number -> label of a DICOM-SEG (a quick look before :func:`read_seg`)."""
    try:
        seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    except Exception as err:
        raise InputError(seg_path, f"unreadable DICOM file ({type(err).__name__}: {err})") from None
    return {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in seg.get("SegmentSequence", [])}


def referenced_series_uids(seg_path: str | os.PathLike) -> list[str]:
    """The SeriesInstanceUIDs a DICOM-SEG references (``ReferencedSeriesSequence``)."""
    try:
        seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    except Exception as err:
        raise InputError(seg_path, f"unreadable DICOM file ({type(err).__name__}: {err})") from None
    return [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])]
