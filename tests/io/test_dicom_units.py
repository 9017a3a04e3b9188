"""CT series whose pixel values are not Hounsfield units are refused, naming the file and the reason.

No package here ships a real non-HU CT (pydicom's and highdicom's test files are all HU), so the cases
are faithful constructions from real data: pydicom's ``CT_small.dcm`` (a scanner slice) relabelled the
way perfusion software exports its maps (``RescaleType`` ``US``, ImageType ``DERIVED\\PRIMARY\\PERFUSION``),
and an enhanced CT whose Pixel Value Transformation functional group carries ``RescaleType``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from liverseg_monai.errors import InputError
from liverseg_monai.io.dicom import DicomSeriesReader, check_hounsfield, read_series, write_series

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))


def _ct_small(folder: Path, **attributes) -> Path:
    folder.mkdir()
    ds = pydicom.dcmread(CT_SMALL)
    for key, value in attributes.items():
        if value is not None:
            setattr(ds, key, value)
        elif key in ds:
            del ds[key]
    path = folder / "perfusion.dcm"
    ds.save_as(path)
    return path


def test_the_real_ct_slice_is_hounsfield(tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    shutil.copy(CT_SMALL, folder / "ct.dcm")
    assert read_series(folder)[0].shape == (128, 128, 1)


def test_rescale_type_us_perfusion_map_is_refused_naming_the_file(tmp_path):
    path = _ct_small(tmp_path / "cbf", RescaleType="US", ImageType=["DERIVED", "PRIMARY", "PERFUSION", "CBF"])
    with pytest.raises(InputError, match=r"perfusion\.dcm.*RescaleType is 'US', not 'HU'"):
        read_series(tmp_path / "cbf")
    # the same through the MONAI reader the bundles use
    with pytest.raises(InputError, match=str(path)):
        DicomSeriesReader().get_data(DicomSeriesReader().read(str(tmp_path / "cbf")))


def test_derived_perfusion_image_type_without_rescale_type_is_refused(tmp_path):
    _ct_small(tmp_path / "mtt", RescaleType=None, ImageType=["DERIVED", "SECONDARY", "PERFUSION", "MTT"])
    with pytest.raises(InputError, match=r"perfusion\.dcm.*ImageType DERIVED\\SECONDARY\\PERFUSION\\MTT.*not Hounsfield"):
        read_series(tmp_path / "mtt")


def test_explicit_hu_and_ordinary_derived_ct_are_accepted(tmp_path):
    _ct_small(tmp_path / "reformat", RescaleType="HU", ImageType=["DERIVED", "SECONDARY", "REFORMATTED"])
    read_series(tmp_path / "reformat")
    # an average of a perfusion acquisition that says it is HU is HU
    check_hounsfield("avg.dcm", pydicom.Dataset({"RescaleType": pydicom.DataElement(0x00281054, "LO", "HU")}))


def test_enhanced_ct_rescale_type_in_the_functional_groups_is_refused(tmp_path):
    import highdicom as hd

    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    write_series(tmp_path / "classic", np.zeros((6, 5, 3)), affine, uid_entropy="units")
    datasets = [pydicom.dcmread(f) for f in sorted((tmp_path / "classic").iterdir())]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets, series_instance_uid=hd.UID(), series_number=9, sop_instance_uid=hd.UID(),
        instance_number=1)
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "ct.dcm")
    assert read_series(tmp_path / "enhanced")[0].shape == (6, 5, 3)  # HU as written

    groups = [enhanced.SharedFunctionalGroupsSequence[0], *enhanced.PerFrameFunctionalGroupsSequence]
    changed = 0
    for group in groups:
        for item in group.get("PixelValueTransformationSequence", []):
            item.RescaleType = "US"
            changed += 1
    assert changed, "the enhanced CT carries a Pixel Value Transformation functional group"
    enhanced.save_as(tmp_path / "enhanced" / "ct.dcm")
    with pytest.raises(InputError, match=r"ct\.dcm.*RescaleType is 'US'"):
        read_series(tmp_path / "enhanced")
