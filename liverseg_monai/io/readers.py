"""The image readers the CT bundles give ``LoadImaged``.

MONAI tries readers in reverse order of registration and takes the first whose ``verify_suffix``
accepts the input: a folder goes to the DICOM series reader (with its consistency checks), a
``.nii``/``.nii.gz`` file to nibabel, anything else (NRRD, MHA, ...) to ITK. Read failures (a
truncated ``.nii.gz``, a file that is not an image) become :class:`InputError` naming the file.
"""

from __future__ import annotations

from monai.data import ITKReader, NibabelReader

from liverseg_monai.errors import InputError


def _names(data) -> str:
    if isinstance(data, list | tuple):
        return ", ".join(str(d) for d in data)
    return str(data)


class CheckedNibabelReader(NibabelReader):
    """MONAI's ``NibabelReader`` with read and decode errors reported as :class:`InputError`."""

    def read(self, data, **kwargs):
        try:
            return super().read(data, **kwargs)
        except FileNotFoundError:
            raise InputError(_names(data), "file does not exist") from None
        except Exception as err:
            raise InputError(_names(data), f"cannot be read as NIfTI ({type(err).__name__}: {err})") from err

    def get_data(self, img):
        try:
            return super().get_data(img)
        except Exception as err:
            imgs = img if isinstance(img, list | tuple) else [img]
            names = ", ".join(str(i.get_filename()) for i in imgs)
            raise InputError(names, f"truncated or corrupt image data ({type(err).__name__}: {err})") from err


class CheckedITKReader(ITKReader):
    """MONAI's ``ITKReader`` with read errors reported as :class:`InputError`."""

    def read(self, data, **kwargs):
        try:
            return super().read(data, **kwargs)
        except Exception as err:
            raise InputError(_names(data), f"cannot be read as an image ({type(err).__name__}: {err})") from err


def ct_readers() -> list:
    """Readers for ``LoadImaged(reader=...)``: ITK (fallback), nibabel, then DICOM series folders."""
    from liverseg_monai.io.dicom import DicomSeriesReader

    return [CheckedITKReader(), CheckedNibabelReader(), DicomSeriesReader()]
