"""Image writers for ``SaveImaged(writer=...)`` that never leave a partial file under the final name."""

from __future__ import annotations

from monai.data import NibabelWriter

from liverseg_monai.io.atomic import atomic_path


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing to a temporary file in the output folder, then renaming it."""

    def write(self, filename, verbose: bool = False, **obj_kwargs):
        with atomic_path(filename) as tmp:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)
