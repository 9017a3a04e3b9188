"""``Spacingd`` that leaves the other entries of the data dictionary alone.

MONAI 1.6's ``Spacingd``, after resampling ``key`` of a NIfTI image, calls ``.update(meta)`` on every
entry whose name starts with ``"<key>_"``, taking them for metadata dictionaries. MONAI Label puts the
string ``image_path`` into the data of every request, so a bundle with ``Spacingd(keys="image")``
fails on NIfTI input with ``AttributeError: 'str' object has no attribute 'update'`` (NRRD and DICOM
inputs are not affected: the update is done for NIfTI only). :class:`Spacingd` here sets such non-dict
entries aside during the call and puts them back; metadata dictionaries are updated as MONAI does, and
the image is resampled by MONAI's transform (same output, same inverse for ``Invertd``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.transforms import Spacingd as MonaiSpacingd


class Spacingd(MonaiSpacingd):
    """MONAI's ``Spacingd`` (same arguments) that does not call ``update`` on non-dict ``<key>_*`` entries."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        prefixes = tuple(f"{key}_" for key in self.keys)
        d = dict(data)
        aside = {k: d.pop(k) for k in list(d) if isinstance(k, str) and k.startswith(prefixes) and not isinstance(d[k], dict)}
        out = super().__call__(d, lazy=lazy)
        out.update(aside)
        return out
