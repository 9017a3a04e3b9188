"""Image writers for ``SaveImaged(writer=...)`` that never leave a partial file under the final name."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from monai.data import NibabelWriter

from liverseg_monai.io.atomic import atomic_path


def source_trailing_singletons(meta: Mapping | None) -> int:
    """How many trailing singleton axes the source NIfTI had after its three spatial axes: 1 for a
    ``(X, Y, Z, 1)`` file (a 3D volume stored with a time axis of length 1), else 0."""
    dim = (meta or {}).get("dim")
    if dim is None:
        return 0
    dim = np.asarray(dim).ravel()
    if len(dim) < 5 or int(dim[0]) <= 3:
        return 0
    extra = [int(v) for v in dim[4 : int(dim[0]) + 1]]
    return len(extra) if extra and all(v == 1 for v in extra) else 0


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing to a temporary file in the output folder, then renaming it.

    A mask of a ``(X, Y, Z, 1)`` source is written with that shape too (MONAI squeezes the trailing
    singleton axis), so the output has exactly the input's shape.
    """

    def set_metadata(self, meta_dict: Mapping | None = None, resample: bool = True, **options):
        super().set_metadata(meta_dict, resample=resample, **options)
        extra = source_trailing_singletons(meta_dict)
        if extra and self.data_obj is not None and np.ndim(self.data_obj) == 3:
            self.data_obj = self.data_obj.reshape(tuple(self.data_obj.shape) + (1,) * extra)

    def write(self, filename, verbose: bool = False, **obj_kwargs):
        with atomic_path(filename) as tmp:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)
