import pytest

from liverseg_monai.io.naming import CaseFolderLayout, case_output_name, case_stem


@pytest.mark.parametrize(
    "path, stem",
    [
        ("/data/volume-3.nii.gz", "volume-3"),
        ("/data/volume-3.NII.GZ", "volume-3"),
        ("vol.nii", "vol"),
        ("slides/case1.ome.tiff", "case1"),
        ("slides/case1.ome.tif", "case1"),
        ("slides/case1.svs", "case1"),
        ("slides/case1.tif", "case1"),
        ("slides/case1.tiff", "case1"),
        ("tiles/histo.png", "histo"),
        ("tiles/histo.jpg", "histo"),
        ("tiles/histo.JPEG", "histo"),
        ("tiles/histo.bmp", "histo"),
        ("ct/x.nrrd", "x"),
        ("ct/x.mha", "x"),
        ("ct/IM0001.dcm", "IM0001"),
        ("ct.v2.nii.gz", "ct.v2"),
        # a DICOM series folder keeps its whole name, dots included, with or without a trailing slash
        ("/data/HCC_001/1.2.840.113619.2.55", "1.2.840.113619.2.55"),
        ("/data/HCC_001/series/", "series"),
    ],
)
def test_case_stem_strips_known_image_extensions_only(path, stem):
    assert case_stem(path) == stem


def test_every_extension_gives_the_same_output_names():
    names = {case_output_name(f"in/histo{ext}", "label", ".png")
             for ext in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ome.tif", ".ome.tiff", ".svs")}
    assert names == {"histo_label.png"}


def test_a_path_without_a_name_is_refused():
    with pytest.raises(ValueError, match="no file or folder name"):
        case_output_name("/", "seg", ".nii.gz")


def test_folder_layout_names_saveimaged_outputs_by_the_stem(tmp_path):
    layout = CaseFolderLayout(tmp_path, postfix="seg", extension=".nii.gz")
    assert layout.filename(subject="/d/1.2.840.113619/") == tmp_path / "1.2.840.113619_seg.nii.gz"
    assert layout.filename(subject="/d/volume-3.nii.gz", idx=2) == tmp_path / "volume-3_seg_2.nii.gz"
    assert CaseFolderLayout(tmp_path, "seg", "nii.gz").filename(subject="a.mha") == tmp_path / "a_seg.nii.gz"
