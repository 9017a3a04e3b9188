"""The image readers the CT bundles give ``LoadImaged``.

MONAI tries readers in reverse order of registration and takes the first whose ``verify_suffix``
accepts the input: a folder goes to the DICOM series reader (with its consistency checks), a
``.nii``/``.nii.gz`` file to nibabel, anything else (NRRD, MHA, ...) to ITK.
"""

from __future__ import annotations

from monai.data import ITKReader, NibabelReader


def ct_readers() -> list:
    """``[ITKReader(), NibabelReader(), DicomSeriesReader()]`` for ``LoadImaged(reader=...)``."""
    from liverseg_monai.io.dicom import DicomSeriesReader

    return [ITKReader(), NibabelReader(), DicomSeriesReader()]
