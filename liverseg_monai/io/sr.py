"""Clinical read-outs as DICOM Structured Reports (TID 1500 measurement reports, built with highdicom).

For a CT read from a DICOM series the read-out (:func:`ct_readout`: liver volume, tumour count,
tumour volume, tumour burden) is written as a Comprehensive 3D SR whose measurement groups reference
the segments of the case's DICOM-SEG, which itself references the source series; the SR's evidence
lists both the CT instances and the SEG, and its image library the CT images::

    Imaging Measurement Report (TID 1500)
    |- Image Library: the CT images
    |- Volumetric ROI group "Liver" -> SEG segment "Liver": Volume (mL)
    `- Volumetric ROI group "Tumour" -> SEG segment "Mass": Volume (mL), Number of lesions, Tumour burden (%)
       (an image-level group, TID 1501, when no tumour was found: the SEG then has no "Mass" segment)

:func:`write_ct_report` writes one, :func:`read_ct_report` reads the values back (highdicom's parser).
Slides read from TIFF/SVS files have no DICOM source instances, and a highdicom SR takes its patient,
study and evidence from source datasets: there is no SR for them (the steatosis writer's
``<stem>_summary.json`` next to its CSV is their read-out).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from liverseg_monai.errors import InputError
from liverseg_monai.io.atomic import atomic_path, readable_path

# the project's own concept for a measure no standard code names (coding scheme 99 = private)
TUMOR_BURDEN = ("TUMBURDEN", "99LIVERSEG", "Tumor burden (percent of liver volume)")
LIVER_GROUP, TUMOR_GROUP = "Liver", "Tumour"
READOUT_KEYS = ("liver_volume_ml", "tumor_count", "tumor_volume_ml", "tumor_burden_pct")


def ct_readout(labels: np.ndarray, spacing: Sequence[float], liver_labels: Sequence[int] = (1, 2),
               tumor_labels: Sequence[int] | None = (2,)) -> dict[str, float]:
    """The clinical read-out of a CT label map.

    Args:
        labels: integer label map ``(X, Y, Z)`` (or ``(1, X, Y, Z)``).
        spacing: voxel size in mm along the three axes.
        liver_labels: label values forming the liver (tumours inside it included).
        tumor_labels: label values of tumour; ``None`` or empty for a liver-only model (no tumour keys).

    Returns:
        ``liver_volume_ml``; with tumour labels also ``tumor_count`` (26-connected components),
        ``tumor_volume_ml`` and ``tumor_burden_pct`` (tumour volume as a percentage of the liver
        volume, NaN for an empty liver).

    >>> ct_readout(np.pad(np.ones((10, 10, 10), int), 1), (1.0, 1.0, 2.0), tumor_labels=None)
    {'liver_volume_ml': 2.0}
    """
    from scipy import ndimage

    arr = np.asarray(labels)
    arr = arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D label map, got shape {np.asarray(labels).shape}")
    spacing = [float(s) for s in spacing]
    if len(spacing) != 3 or not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"spacing must be three positive sizes in mm, got {spacing}")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    liver = int(np.isin(arr, list(liver_labels)).sum())
    out = {"liver_volume_ml": liver * voxel_ml}
    if tumor_labels:
        tumor = np.isin(arr, list(tumor_labels))
        n_tumor = int(tumor.sum())
        out["tumor_count"] = float(ndimage.label(tumor, structure=np.ones((3, 3, 3), bool))[1])
        out["tumor_volume_ml"] = n_tumor * voxel_ml
        out["tumor_burden_pct"] = 100.0 * n_tumor / liver if liver else float("nan")
    return out


def _codes():
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd, codes, hd.sr.CodedConcept("mL", "UCUM", "milliliter")


def build_ct_report(readout: Mapping[str, float], source_images: Sequence[Dataset], seg: Dataset,
                    segment_numbers: Mapping[str, int], *, algorithm_name: str = "liverseg-monai",
                    algorithm_version: str = "0.1.0", uid_entropy: str | None = None, series_number: int = 301):
    """The TID 1500 measurement report of :func:`ct_readout` values as a ``highdicom.sr.Comprehensive3DSR``.

    Args:
        readout: :func:`ct_readout`'s dict (tumour keys optional).
        source_images: the CT instances (headers are enough; one multi-frame dataset for an enhanced CT).
        seg: the case's DICOM-SEG dataset (it references the same series).
        segment_numbers: ``{"liver": n, "tumor": m}``: the SEG segment each group references; ``tumor``
            may be missing when the SEG has no tumour segment (no tumour found).
        uid_entropy: derive the SR's UIDs from this string (reproducible files).

    Raises:
        ValueError: when the SEG does not reference the series of ``source_images`` or a segment is unknown.
    """
    hd, codes, ml = _codes()
    series_uid = str(source_images[0].SeriesInstanceUID)
    seg_series = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    if series_uid not in seg_series:
        raise ValueError(f"the DICOM-SEG references series {sorted(seg_series)}, not the CT series {series_uid}")
    known = {int(s.SegmentNumber) for s in seg.SegmentSequence}
    for name, number in segment_numbers.items():
        if int(number) not in known:
            raise ValueError(f"segment {number} ({name}) is not in the DICOM-SEG (segments {sorted(known)})")

    def uid(tag: str) -> str:
        return generate_uid(entropy_srcs=[uid_entropy, tag]) if uid_entropy is not None else generate_uid()

    algorithm = hd.sr.AlgorithmIdentification(name=algorithm_name, version=algorithm_version)
    voxel_sum = codes.DCM.SumOfSegmentedVoxelMethodForVolume

    def segment(number: int):
        return hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                                       segment_number=int(number),
                                       source_series=hd.sr.SourceSeriesForSegmentation(series_uid))

    def volume(value: float):
        return hd.sr.Measurement(name=codes.SCT.Volume, value=float(value), unit=ml, method=voxel_sum,
                                 algorithm_id=algorithm)

    groups = [hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("liver-group"), identifier=LIVER_GROUP),
        referenced_segment=segment(segment_numbers["liver"]), finding_type=codes.SCT.Liver,
        algorithm_id=algorithm, measurements=[volume(readout["liver_volume_ml"])])]
    if "tumor_volume_ml" in readout:
        measurements = [volume(readout["tumor_volume_ml"]),
                        hd.sr.Measurement(name=codes.SCT.NumberOfLesions, value=float(readout["tumor_count"]),
                                          unit=codes.UCUM.NoUnits, algorithm_id=algorithm)]
        if math.isfinite(float(readout["tumor_burden_pct"])):
            measurements.append(hd.sr.Measurement(name=hd.sr.CodedConcept(*TUMOR_BURDEN),
                                                  value=float(readout["tumor_burden_pct"]), unit=codes.UCUM.Percent,
                                                  algorithm_id=algorithm))
        common = {"tracking_identifier": hd.sr.TrackingIdentifier(uid=uid("tumor-group"), identifier=TUMOR_GROUP),
                  "finding_type": codes.SCT.Mass, "finding_sites": [hd.sr.FindingSite(codes.SCT.Liver)],
                  "algorithm_id": algorithm, "measurements": measurements}
        if "tumor" in segment_numbers:
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=segment(segment_numbers["tumor"]), **common))
        else:  # no tumour segment to point at: an image-level group (TID 1501) with the zero values
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))

    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uid("device"), name=algorithm_name, manufacturer_name="liverseg-monai", model_name=algorithm_version))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
        referenced_images=list(source_images),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hd.sr.Comprehensive3DSR(
            evidence=[*source_images, seg], content=report, series_instance_uid=uid("sr-series"),
            series_number=series_number, sop_instance_uid=uid("sr-instance"), instance_number=1,
            manufacturer="liverseg-monai", is_complete=True, is_final=False, is_verified=False)


def _series_headers(series_folder: str | os.PathLike) -> list[Dataset]:
    from liverseg_monai.io.dicom import _collect

    _, geo = _collect(series_folder, None, None, stop_before_pixels=True)
    headers, seen = [], set()
    for sl in geo.slices:
        ds = sl.ds if sl.frame is None else sl.ds._multiframe_source[0]
        if id(ds) not in seen:
            seen.add(id(ds))
            headers.append(ds)
    return headers


def write_ct_report(readout: Mapping[str, float], series_folder: str | os.PathLike, seg_path: str | os.PathLike,
                    out_path: str | os.PathLike, *, liver_segment: str = "Liver", tumor_segment: str = "Mass",
                    **options) -> Path:
    """Write :func:`build_ct_report` for the series in ``series_folder`` and the DICOM-SEG ``seg_path``.

    Segments are found in the SEG by label (``liver_segment``, ``tumor_segment``); the SEG is read from
    where an :func:`~liverseg_monai.io.atomic.all_or_none` block holds it if it was just written.
    ``options`` go to :func:`build_ct_report`. The file is written atomically.

    Raises:
        InputError: naming the SEG when it is unreadable or lacks the liver segment.
    """
    seg_path = Path(seg_path)
    try:
        seg = pydicom.dcmread(readable_path(seg_path), stop_before_pixels=True)
    except Exception as err:
        raise InputError(seg_path, f"unreadable DICOM-SEG ({type(err).__name__}: {err})") from None
    numbers = {str(s.get("SegmentLabel", "")): int(s.SegmentNumber) for s in seg.get("SegmentSequence", [])}
    if liver_segment not in numbers:
        raise InputError(seg_path, f"has no segment {liver_segment!r} to report the liver on (segments {sorted(numbers)})")
    segments = {"liver": numbers[liver_segment]}
    if tumor_segment in numbers:
        segments["tumor"] = numbers[tumor_segment]
    try:
        sr = build_ct_report(readout, _series_headers(series_folder), seg, segments, **options)
    except ValueError as err:
        raise InputError(seg_path, str(err)) from None
    with atomic_path(out_path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return Path(out_path)


def read_ct_report(path: str | os.PathLike) -> dict:
    """The read-out stored in a report of :func:`write_ct_report`, parsed by highdicom.

    Returns:
        the keys of :func:`ct_readout` that the report holds (the burden is NaN when it is absent
        from a report with a tumour group), plus ``liver_segment`` / ``tumor_segment``: the SEG segment
        numbers referenced (tumour only when referenced) and ``seg_sop_instance_uid`` /
        ``source_series_uid``: the SEG and the CT series the liver group points at.
    """
    import highdicom as hd

    _, codes, _ = _codes()
    sr = hd.sr.srread(path)
    report = sr.content
    groups = [*report.get_volumetric_roi_measurement_groups(), *report.get_image_measurement_groups()]
    out: dict = {}

    def value(group, name) -> float | None:
        found = group.get_measurements(name=name)
        return float(found[0].value) if found else None

    for group in groups:
        ident = group.tracking_identifier
        segment = getattr(group, "referenced_segment", None)
        if ident == LIVER_GROUP:
            out["liver_volume_ml"] = value(group, codes.SCT.Volume)
            out["liver_segment"] = _segment_number(segment)
            out["seg_sop_instance_uid"] = str(segment.referenced_sop_instance_uid)
            out["source_series_uid"] = str(segment.source_series_for_segmentation.value)
        elif ident == TUMOR_GROUP:
            out["tumor_volume_ml"] = value(group, codes.SCT.Volume)
            out["tumor_count"] = value(group, codes.SCT.NumberOfLesions)
            burden = value(group, hd.sr.CodedConcept(*TUMOR_BURDEN))
            out["tumor_burden_pct"] = float("nan") if burden is None else burden
            if segment is not None:
                out["tumor_segment"] = _segment_number(segment)
    return out


def _segment_number(segment) -> int:
    (number,) = segment.referenced_segment_numbers
    return int(number)
