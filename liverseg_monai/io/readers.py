"""The image reader the CT bundles give ``LoadImaged``: one reader for every CT input.

``CTImageReader`` dispatches on the input: a folder is a DICOM series (read with
:class:`liverseg_monai.io.dicom.DicomSeriesReader` and its consistency checks), ``.nii``/``.nii.gz``
goes to nibabel, anything else (NRRD, MHA, ...) to ITK. All reading happens in ``get_data``, so a
missing, truncated or unreadable file surfaces as an :class:`InputError` naming the file (MONAI's
``LoadImage`` swallows exceptions raised in a reader's ``read`` and reports only "cannot find a
suitable reader").
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from monai.data import ITKReader, NibabelReader
from monai.data.image_reader import ImageReader

from liverseg_monai.errors import InputError


def check_nifti_header(path: str) -> None:
    """Raise when a NIfTI header's voxel sizes are zero or negative and no sform overrides them.

    nibabel silently replaces such sizes by 1 mm on load; a volume processed with a made-up spacing is
    a silent wrong answer (volumes in ml, distances in mm, resampling).
    """
    import nibabel as nib

    try:
        with nib.openers.ImageOpener(path) as f:
            header = nib.Nifti1Header.from_fileobj(f, check=False)
    except Exception as err:
        raise InputError(path, f"truncated or corrupt NIfTI header ({type(err).__name__}: {err})") from err
    pixdim = [float(v) for v in header["pixdim"][1:4]]
    if int(header["sform_code"]) == 0 and any(not v > 0 for v in pixdim):
        raise InputError(path, f"invalid voxel spacing in the header: pixdim {pixdim} (zero or negative)")
    check_qform_sform(path, header)


def check_qform_sform(path: str, header) -> None:
    """Raise when a NIfTI header's qform and sform are both set and place the voxels differently.

    Tools disagree on which one wins (nibabel and FSL read the sform, ITK the qform, MONAI's
    ``NibabelReader`` whichever agrees with ``pixdim``), so such a file has no single geometry: a mask
    computed with one and viewed with the other is misplaced, or the network sees the volume flipped.
    Differences within float precision (1e-3 mm per voxel axis, 0.01 mm in the origin) are accepted.
    """
    import nibabel as nib

    if int(header["sform_code"]) <= 0 or int(header["qform_code"]) <= 0:
        return
    q, s = header.get_qform(), header.get_sform()
    if np.allclose(q[:3, :3], s[:3, :3], atol=1e-3) and np.allclose(q[:3, 3], s[:3, 3], atol=1e-2):
        return

    def describe(a):
        spacing = np.sqrt((a[:3, :3] ** 2).sum(0))
        return (f"{''.join(nib.aff2axcodes(a))}, spacing {np.round(spacing, 4).tolist()}, "
                f"origin {np.round(a[:3, 3], 2).tolist()}")

    raise InputError(path, f"the header's qform ({describe(q)}) and sform ({describe(s)}) disagree, so the "
                           "volume has no single geometry; rewrite the header with the one that is right "
                           "(e.g. nibabel: img.set_qform(img.get_sform()) or img.set_sform(img.get_qform()))")


def _one(data) -> str:
    if isinstance(data, list | tuple):
        if len(data) != 1:
            raise InputError(", ".join(map(str, data)), "expected one image or one DICOM series folder per case")
        data = data[0]
    return str(data)


class CTImageReader(ImageReader):
    """NIfTI files, DICOM series folders and other ITK formats, with clear errors.

    Args:
        series_uid: with a DICOM folder holding several series, the one to read.
        kwargs: passed to the underlying MONAI reader.
    """

    def __init__(self, series_uid: str | None = None, **kwargs):
        super().__init__()
        self.series_uid = series_uid
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        return True

    def read(self, data, **kwargs):
        return _one(data)  # deferred: see the module docstring

    def _reader_for(self, path: str):
        if os.path.isdir(path):
            from liverseg_monai.io.dicom import DicomSeriesReader

            return DicomSeriesReader(series_uid=self.series_uid) if self.series_uid else DicomSeriesReader()
        if path.lower().endswith((".nii", ".nii.gz")):
            return NibabelReader(**self.kwargs)
        return ITKReader(**self.kwargs)

    def get_data(self, img):
        path = img
        if not os.path.exists(path):
            raise InputError(path, "file does not exist")
        reader = self._reader_for(path)
        if isinstance(reader, NibabelReader):
            check_nifti_header(path)
        try:
            return reader.get_data(reader.read(path))
        except InputError:
            raise
        except Exception as err:
            kind = "a DICOM series" if os.path.isdir(path) else "an image"
            raise InputError(path, f"truncated, corrupt or not {kind} ({type(err).__name__}: {err})") from err


def ct_reader(**kwargs) -> CTImageReader:
    """The reader for ``LoadImaged(reader=...)`` in the CT bundles."""
    return CTImageReader(**kwargs)
