"""How outputs are named: by the case stem, the input's name without its image extension.

Every writer in the project names a case's outputs ``<stem>_<what>.<ext>`` (``volume-3_seg.nii.gz``,
``histo_label.png``, ``slide1_instances.tif``), whatever the input's extension: :func:`case_stem`
strips the known image extensions, multi-part ones first (``.nii.gz``, ``.ome.tiff``), and leaves
any other name whole, so a DICOM series folder (often named by its UID, ``1.2.840.113619.2``) keeps
its full folder name. :class:`CaseFolderLayout` applies the same rule to MONAI's ``SaveImaged``
(whose default layout cuts a folder name at its last dot).
"""

from __future__ import annotations

import os
from pathlib import Path

from monai.data.folder_layout import FolderLayoutBase

# longest first: a multi-part extension must win over its last part
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".ome.tiff", ".ome.tif", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".dicom",
    ".svs", ".ndpi", ".scn", ".mrxs", ".bif", ".vms", ".tiff", ".tif",
    ".png", ".jpg", ".jpeg", ".bmp",
)


def case_stem(path: str | os.PathLike) -> str:
    """The case name outputs are named by: the file name without its image extension.

    Known extensions (:data:`IMAGE_EXTENSIONS`, case-insensitive) are stripped, the multi-part ones
    whole; a folder (a DICOM series) or a name with an unknown suffix keeps its full name.

    >>> case_stem("/a/volume-3.nii.gz"), case_stem("b/slide.ome.tif"), case_stem("histo.JPG")
    ('volume-3', 'slide', 'histo')
    >>> case_stem("/data/1.2.840.113619.2/"), case_stem("ct.v2.nii.gz")
    ('1.2.840.113619.2', 'ct.v2')
    """
    name = os.path.basename(os.fspath(path).rstrip("/\\"))
    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def case_output_name(path: str | os.PathLike, postfix: str, extension: str) -> str:
    """``<stem>_<postfix><extension>`` for the input ``path``: ``case_output_name("a/x.nii.gz", "seg", ".nii.gz")``
    gives ``x_seg.nii.gz``."""
    stem = case_stem(path)
    if not stem:
        raise ValueError(f"cannot name an output after {os.fspath(path)!r}: it has no file or folder name")
    return f"{stem}_{postfix}{extension}" if postfix else f"{stem}{extension}"


class CaseFolderLayout(FolderLayoutBase):
    """``SaveImaged(folder_layout=...)``: ``<output_dir>/<case stem>_<postfix><extension>``.

    Args:
        output_dir: destination folder (created when writing).
        postfix: what the file holds (``seg``).
        extension: the file extension with its dot (``.nii.gz``); give ``SaveImaged`` the same
            ``output_ext`` so it picks the matching writer.
    """

    def __init__(self, output_dir: str | os.PathLike, postfix: str = "", extension: str = ""):
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.extension = extension if not extension or extension.startswith(".") else f".{extension}"

    def filename(self, subject: str | os.PathLike = "subject", idx=None, **kwargs) -> Path:
        postfix = self.postfix if idx is None else f"{self.postfix}_{idx}"
        return self.output_dir / case_output_name(subject, postfix, self.extension)
