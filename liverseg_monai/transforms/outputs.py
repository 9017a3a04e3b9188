"""A case's output files written all or none."""

from __future__ import annotations

from monai.transforms import Compose

from liverseg_monai.io.atomic import all_or_none


class CaseOutputs(Compose):
    """MONAI ``Compose`` whose file outputs for one item appear together or not at all.

    Use it as a bundle's ``postprocessing``: every writer inside (``SaveImaged`` with
    ``AtomicNibabelWriter``, ``SaveOverlayd``, ``SaveDicomSegd``, ``SaveDicomSRd``; anything that writes
    through :func:`liverseg_monai.io.atomic.atomic_path`) keeps its file in a temporary until the whole
    chain has run for the item; then all get their names. If any step raises (say the DICOM-SEG cannot
    be written), none of the case's files appears and the error goes on to the caller, which records the
    failed case. Arguments are those of ``Compose``.
    """

    def __call__(self, input_, *args, **kwargs):
        with all_or_none():
            return super().__call__(input_, *args, **kwargs)
