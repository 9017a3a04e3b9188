"""DICOM outputs of a CT label map: a DICOM-SEG referencing the source series, and a DICOM SR read-out.

Dictionary transforms for a bundle's ``postprocessing`` (inside
:class:`liverseg_monai.transforms.outputs.CaseOutputs`, so a failed DICOM file leaves none of the case's
outputs). They write only when the input was a DICOM series folder; NIfTI inputs pass through.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)


class SaveDicomSegd:
    """Write the label map as a DICOM-SEG referencing the source series, when the input was a DICOM folder.

    Args:
        keys: label maps on the grid the series was read on (after ``Invertd``).
        output_dir: files go to ``<output_dir>/<case stem>_seg.dcm`` (the series folder's name, see
            :func:`liverseg_monai.io.naming.case_stem`; written atomically). The path is recorded in
            the item under ``<key>_dicom_seg`` for :class:`SaveDicomSRd`.
        segments: segment label -> the label values it covers; by default the HCC-TACE-Seg segments
            (``Liver`` = liver with its tumours, ``Mass`` = tumour). Empty segments are left out.
        enabled: ``False`` passes everything through. NIfTI inputs are skipped (logged).

    Run it inside :class:`liverseg_monai.transforms.outputs.CaseOutputs` so that a failed DICOM-SEG
    leaves none of the case's other outputs (mask, overlay, SR) either.
    """

    def __init__(self, keys: str | Sequence[str], output_dir: str, segments: dict | None = None, enabled: bool = True):
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.output_dir, self.enabled = output_dir, enabled
        self.segments = dict(segments) if segments else {"Liver": (1, 2), "Mass": (2,)}

    def __call__(self, data: dict) -> dict:
        if not self.enabled:
            return data
        import os

        import numpy as np

        from liverseg_monai.io.dicom import write_seg_masks
        from liverseg_monai.io.meta import source_name
        from liverseg_monai.io.naming import case_output_name, case_stem

        data = dict(data)
        for key in self.keys:
            source = source_name(data[key])
            if not os.path.isdir(source):
                logger.info("%s: not a DICOM series folder; no DICOM-SEG written", source)
                continue
            pred = data[key]
            array = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            labels = array[0] if array.ndim == 4 else array
            masks = {name: np.isin(labels, values) for name, values in self.segments.items()}
            masks = {name: m for name, m in masks.items() if m.any()}
            if not masks:
                logger.warning("%s: empty prediction; no DICOM-SEG written", source)
                continue
            path = os.path.join(self.output_dir, case_output_name(source, "seg", ".dcm"))
            write_seg_masks(masks, source, path, uid_entropy=case_stem(source))
            data[f"{key}_dicom_seg"] = path
        return data


class SaveDicomSRd:
    """Write the case's clinical read-out as a DICOM SR (TID 1500) next to its DICOM-SEG.

    Runs after :class:`SaveDicomSegd`: for each key whose item holds ``<key>_dicom_seg``, the read-out
    of :func:`liverseg_monai.io.sr.ct_readout` (liver volume in mL; with ``tumor_labels`` also tumour
    count, volume in mL and burden in % of the liver) is written to ``<output_dir>/<case stem>_sr.dcm``
    by :func:`liverseg_monai.io.sr.write_ct_report`, referencing the SEG's segments and the source
    series. Cases without a DICOM-SEG (NIfTI input, empty prediction) get no SR. Spacing comes from
    the label map's affine (on the series' grid).

    Args:
        keys: the label maps (as given to :class:`SaveDicomSegd`).
        output_dir: destination folder.
        liver_labels, tumor_labels: label values of liver (tumours included) and tumour; empty
            ``tumor_labels`` for a liver-only model.
        liver_segment, tumor_segment: the SEG segment labels the groups reference.
        enabled: ``False`` passes everything through.
    """

    def __init__(self, keys: str | Sequence[str], output_dir: str, liver_labels: Sequence[int] = (1, 2),
                 tumor_labels: Sequence[int] = (2,), liver_segment: str = "Liver", tumor_segment: str = "Mass",
                 enabled: bool = True):
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.output_dir, self.enabled = output_dir, enabled
        self.liver_labels, self.tumor_labels = tuple(liver_labels), tuple(tumor_labels)
        self.liver_segment, self.tumor_segment = liver_segment, tumor_segment

    def __call__(self, data: dict) -> dict:
        if not self.enabled:
            return data
        import os

        import numpy as np

        from liverseg_monai.io.meta import affine_of, source_name
        from liverseg_monai.io.naming import case_output_name, case_stem
        from liverseg_monai.io.sr import ct_readout, write_ct_report

        for key in self.keys:
            seg_path = data.get(f"{key}_dicom_seg")
            if seg_path is None:
                continue
            pred, source = data[key], source_name(data[key])
            affine = affine_of(pred)
            if affine is None:
                raise ValueError(f"{source}: the label map has no affine; cannot measure volumes for the SR")
            array = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            spacing = np.linalg.norm(affine[:3, :3], axis=0)
            readout = ct_readout(np.rint(array).astype(np.int64), spacing, self.liver_labels, self.tumor_labels)
            out = os.path.join(self.output_dir, case_output_name(source, "sr", ".dcm"))
            write_ct_report(readout, source, seg_path, out, liver_segment=self.liver_segment,
                            tumor_segment=self.tumor_segment, uid_entropy=case_stem(source))
        return data
