"""DICOM series and DICOM-SEG I/O: geometry against ITK, slice order, orientations, round trips."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage
from pydicom.data import get_testdata_file
from scipy.spatial.transform import Rotation

from liverseg_monai.data.synth.phantom import phantom_affine
from liverseg_monai.errors import InputError
from liverseg_monai.io.dicom import DicomSeriesReader, read_series, read_series_geometry, write_series

SHAPE = (12, 10, 7)
SPACING = (1.5, 1.2, 3.0)
DIRECTIONS = {
    "LPS": "LPS",  # the usual axial stack, head-first
    "RAS": "RAS",  # in-plane axes flipped
    "LPI": np.diag([-1.0, -1.0, -1.0]),  # slices stored from head to feet (normal opposite to k)
    "oblique": Rotation.from_euler("z", 25, degrees=True).as_matrix() @ np.diag([-1.0, -1.0, 1.0]),
    "double_oblique": Rotation.from_euler("xyz", [20, -15, 30], degrees=True).as_matrix(),
}


def physical_resample(src: np.ndarray, src_affine: np.ndarray, dst_shape, dst_affine: np.ndarray) -> np.ndarray:
    """Values of ``src`` at the voxel centres of the ``dst`` grid (grids must coincide up to axis flips/permutations)."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in dst_shape], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ dst_affine[:3, :3].T + dst_affine[:3, 3]
    src_ijk = (world - src_affine[:3, 3]) @ np.linalg.inv(src_affine[:3, :3]).T
    idx = np.rint(src_ijk).astype(int)
    assert np.allclose(src_ijk, idx, atol=1e-3), "grids do not coincide"
    return src[idx[:, 0], idx[:, 1], idx[:, 2]].reshape(dst_shape)


def write_random_series(folder: Path, direction, seed: int = 0, signed: bool = True, shuffle: bool = True):
    rng = np.random.default_rng(seed)
    affine = phantom_affine(SHAPE, SPACING, direction)
    hu = rng.integers(-1000, 1500, SHAPE).astype(np.int16)
    names = [f"1-{p + 1:03d}.dcm" for p in (rng.permutation(SHAPE[2]) if shuffle else range(SHAPE[2]))]
    write_series(folder, hu, affine, signed=signed, file_names=names, uid_entropy=f"test-{seed}")
    return hu, affine


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_read_series_matches_itk_and_physical_placement(tmp_path, name):
    hu, affine = write_random_series(tmp_path / name, DIRECTIONS[name], signed=name != "RAS")
    array, got_affine, meta = read_series(tmp_path / name)
    assert array.dtype == np.float32 and array.shape == SHAPE

    itk = LoadImage(reader="ITKReader", image_only=True)(str(tmp_path / name))
    np.testing.assert_array_equal(itk.numpy(), array)
    np.testing.assert_allclose(itk.affine.numpy(), got_affine, atol=1e-5)

    # the voxels land where the writer put them in patient space, whatever the storage order
    np.testing.assert_array_equal(physical_resample(hu, affine, array.shape, got_affine), array)
    assert len(meta["sop_instance_uids"]) == SHAPE[2]
    shape, geo_affine = read_series_geometry(tmp_path / name)
    assert shape == SHAPE
    np.testing.assert_allclose(geo_affine, got_affine)


def test_slice_normal_opposite_to_storage_order_flips_k(tmp_path):
    hu, affine = write_random_series(tmp_path / "s", DIRECTIONS["LPI"])
    array, got_affine, _ = read_series(tmp_path / "s")
    np.testing.assert_array_equal(array, hu[:, :, ::-1])
    assert got_affine[2, 2] > 0  # sorted along the normal: k runs towards the head


def test_signed_and_unsigned_storage_give_the_same_hu(tmp_path):
    hu, _ = write_random_series(tmp_path / "s", "LPS", signed=True)
    write_random_series(tmp_path / "u", "LPS", signed=False)
    a, _, _ = read_series(tmp_path / "s")
    b, _, _ = read_series(tmp_path / "u")
    assert pydicom.dcmread(next((tmp_path / "u").iterdir())).PixelRepresentation == 0
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, hu)


def _transcode(src: Path, dst: Path, syntax: str) -> None:
    """Copy a series with its pixel data compressed as PACS exports and other tools write it."""
    import imagecodecs
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        if syntax in ("rle", "jpeg-ls"):
            ds.compress(RLELossless if syntax == "rle" else JPEGLSLossless)
        else:  # encoders pydicom lacks: imagecodecs writes the codestream, pydicom the encapsulation
            stored = ds.pixel_array
            raw = stored.view(np.uint16) if stored.dtype == np.int16 else stored
            frame = imagecodecs.jpeg2k_encode(stored, level=0) if syntax == "jpeg2000" else imagecodecs.ljpeg_encode(raw)
            ds.PixelData = encapsulate([frame])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = JPEG2000Lossless if syntax == "jpeg2000" else JPEGLosslessSV1
        ds.save_as(dst / f.name, enforce_file_format=True)


@pytest.mark.parametrize("syntax", ["rle", "jpeg-ls", "jpeg2000", "jpeg-lossless"])
def test_compressed_series_read_like_the_uncompressed_one(tmp_path, syntax):
    """JPEG Lossless (process 14, SV1) is what many scanners and PACS exports use for CT; pydicom
    decodes it only with a plugin (python-gdcm, a dependency)."""
    hu, _ = write_random_series(tmp_path / "plain", "LPS")
    _transcode(tmp_path / "plain", tmp_path / syntax, syntax)
    assert pydicom.dcmread(next((tmp_path / syntax).iterdir())).file_meta.TransferSyntaxUID.is_compressed
    a, aff_a, _ = read_series(tmp_path / syntax)
    b, aff_b, _ = read_series(tmp_path / "plain")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(aff_a, aff_b)


def test_enhanced_multiframe_ct_reads_like_the_classic_series(tmp_path):
    """One multi-frame file (Enhanced / Legacy Converted Enhanced CT, as scanners and converters write
    it; frames in a shuffled order) gives the volume and affine of the one-slice-per-file series, and a
    DICOM-SEG written on it references its frames and reads back (ours and highdicom's reading)."""
    import highdicom as hd

    from liverseg_monai.io.dicom import read_seg, write_seg

    hu, _ = write_random_series(tmp_path / "classic", DIRECTIONS["oblique"])
    datasets = [pydicom.dcmread(f) for f in sorted((tmp_path / "classic").iterdir())]  # names shuffled: frames too
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets, series_instance_uid=hd.UID(), series_number=9, sop_instance_uid=hd.UID(),
        instance_number=1)
    assert enhanced.NumberOfFrames == SHAPE[2]
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "ct.dcm")
    a, aff_a, meta = read_series(tmp_path / "enhanced")
    b, aff_b, _ = read_series(tmp_path / "classic")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(aff_a, aff_b, atol=1e-5)
    shape, geo_affine = read_series_geometry(tmp_path / "enhanced")  # without decoding pixels
    assert shape == SHAPE
    np.testing.assert_allclose(geo_affine, aff_b, atol=1e-5)
    assert len(meta["files"]) == SHAPE[2]
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:6, 3:7, 1:3] = 1
    labels[8:11, 1:4, 4:6] = 2
    write_seg(labels, tmp_path / "enhanced", tmp_path / "seg.dcm", ["liver", "tumor"])
    np.testing.assert_array_equal(read_seg(tmp_path / "seg.dcm", tmp_path / "enhanced", {"liver": 1, "tumor": 2}), labels)
    # highdicom places the SEG's frames by the referenced source frames: same voxels in patient space
    volume = hd.seg.segread(tmp_path / "seg.dcm").get_volume(combine_segments=True)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in volume.array.shape], indexing="ij"), -1).reshape(-1, 3)
    lps = np.c_[idx, np.ones(len(idx))] @ volume.affine.T
    ijk = np.rint((lps * [-1, -1, 1, 1]) @ np.linalg.inv(aff_a).T)[:, :3].astype(int)
    np.testing.assert_array_equal(volume.array.reshape(-1), labels[ijk[:, 0], ijk[:, 1], ijk[:, 2]])


def test_a_localizer_in_the_series_folder_is_left_out(tmp_path):
    """Some exports keep the scout (ImageType ...\\LOCALIZER, another orientation and size) in the axial
    series' folder, even under its SeriesInstanceUID: it is not a slice of the volume."""
    hu, _ = write_random_series(tmp_path / "s", "LPS")
    scout = pydicom.dcmread(next((tmp_path / "s").iterdir()))
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal
    scout.SOPInstanceUID = pydicom.uid.generate_uid()
    scout.save_as(tmp_path / "s" / "scout.dcm")
    array, _, meta = read_series(tmp_path / "s")
    np.testing.assert_array_equal(array, hu)
    assert not any(f.endswith("scout.dcm") for f in meta["files"])
    scout.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]  # not marked as a scout: an error, not a guess
    scout.save_as(tmp_path / "s" / "scout.dcm")
    with pytest.raises(InputError, match="ImageOrientationPatient"):
        read_series(tmp_path / "s")


def test_file_name_order_does_not_matter(tmp_path):
    write_random_series(tmp_path / "shuffled", "LPS", shuffle=True)
    write_random_series(tmp_path / "ordered", "LPS", shuffle=False)
    a, aff_a, _ = read_series(tmp_path / "shuffled")
    b, aff_b, _ = read_series(tmp_path / "ordered")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(aff_a, aff_b)


def test_non_dicom_files_are_ignored(tmp_path):
    write_random_series(tmp_path / "s", "LPS")
    (tmp_path / "s" / "README.txt").write_text("notes")
    (tmp_path / "s" / "._hidden").write_bytes(b"\0\1")
    assert read_series(tmp_path / "s")[0].shape == SHAPE


def test_real_ct_slice_from_pydicom(tmp_path):
    """pydicom's CT_small.dcm (a real scanner slice), copied to a 3-slice stack with shifted positions."""
    src = Path(get_testdata_file("CT_small.dcm"))
    folder = tmp_path / "ct"
    folder.mkdir()
    shutil.copy(src, folder / "single.dcm")
    array, affine, meta = read_series(folder)
    ds = pydicom.dcmread(src)
    assert array.shape == (ds.Columns, ds.Rows, 1)
    np.testing.assert_array_equal(array[:, :, 0], (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).T)
    np.testing.assert_allclose(affine[:3, 3], np.array(ds.ImagePositionPatient, float) * [-1, -1, 1], atol=1e-5)
    np.testing.assert_allclose(affine[2, 2], float(ds.SliceThickness))
    assert meta["modality"] == "CT"

    (folder / "single.dcm").unlink()
    for k, z in enumerate([2, 0, 1]):  # names out of slice order
        d = pydicom.dcmread(src)
        d.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["ct_small", str(z)])
        pos = [float(v) for v in d.ImagePositionPatient]
        d.ImagePositionPatient = [pos[0], pos[1], pos[2] + 5.0 * z]
        d.InstanceNumber = z + 1
        d.save_as(folder / f"slice{k}.dcm")
    array, affine, _ = read_series(folder)
    itk = LoadImage(reader="ITKReader", image_only=True)(str(folder))
    assert array.shape == (128, 128, 3)
    np.testing.assert_array_equal(itk.numpy(), array)
    np.testing.assert_allclose(itk.affine.numpy(), affine, atol=1e-4)
    np.testing.assert_allclose(affine[2, 2], 5.0, atol=1e-4)


def test_dicom_series_reader_behaves_like_itk_reader(tmp_path):
    write_random_series(tmp_path / "obl", DIRECTIONS["double_oblique"])
    ours = LoadImage(reader=DicomSeriesReader(), image_only=True)(str(tmp_path / "obl"))
    itk = LoadImage(reader="ITKReader", image_only=True)(str(tmp_path / "obl"))
    np.testing.assert_array_equal(ours.numpy(), itk.numpy())
    np.testing.assert_allclose(ours.affine.numpy(), itk.affine.numpy(), atol=1e-5)
    for key in ("original_affine", "spatial_shape", "space", "original_channel_dim"):
        assert key in ours.meta
    assert ours.meta["filename_or_obj"] == str(tmp_path / "obl")


def test_dicom_series_reader_declines_nifti_so_loadimage_falls_back(tmp_path):
    import nibabel as nib

    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), path)
    img = LoadImage(reader=DicomSeriesReader(), image_only=True)(str(path))
    assert tuple(img.shape) == (4, 5, 6)


def test_invert_and_save_restore_the_dicom_geometry(tmp_path):
    """Orientationd/Spacingd then Invertd and SaveImaged give back the series' exact grid."""
    import nibabel as nib
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Orientationd,
        SaveImaged,
        Spacingd,
    )

    write_random_series(tmp_path / "obl", DIRECTIONS["oblique"])
    pre = Compose([
        LoadImaged("image", reader=DicomSeriesReader()),
        EnsureChannelFirstd("image"),
        Orientationd("image", axcodes="RAS"),
        Spacingd("image", pixdim=(2.0, 2.0, 2.0), mode="nearest"),
    ])
    data = pre({"image": str(tmp_path / "obl")})
    data["pred"] = data["image"].clone()
    post = Compose([
        Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True),
        SaveImaged("pred", output_dir=str(tmp_path / "out"), output_postfix="seg", separate_folder=False, resample=False),
    ])
    post(data)
    saved = nib.load(tmp_path / "out" / "obl_seg.nii.gz")
    shape, affine = read_series_geometry(tmp_path / "obl")
    assert saved.shape[:3] == shape
    np.testing.assert_allclose(saved.affine, affine, atol=1e-4)


# ------------------------------------------------------------------------------------- DICOM-SEG


def seg_case(tmp_path: Path, direction=DIRECTIONS["LPI"], seed: int = 3):
    hu, affine = write_random_series(tmp_path / "ct", direction, seed=seed)
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, np.uint8)
    label[2:9, 2:8, 1:6] = 1
    label[4:7, 3:6, 2:5] = 2
    label[0:2, 0:3, 0:2] = 4
    label[rng.random(SHAPE) < 0.05] = 3
    label[:, :, 6] = 0  # an empty slice
    return label


@pytest.mark.parametrize("direction", ["LPI", "double_oblique"])
def test_write_seg_read_seg_identity(tmp_path, direction):
    from liverseg_monai.io.dicom import read_seg, segment_labels, write_seg

    label = seg_case(tmp_path, DIRECTIONS[direction])
    names = {2: "Mass", 4: "Abdominal aorta", 1: "Liver", 3: "Portal vein"}  # segment order != label order
    out = write_seg(label, tmp_path / "ct", tmp_path / "seg" / "seg.dcm", names, uid_entropy="t")
    assert segment_labels(out) == {1: "Mass", 2: "Abdominal aorta", 3: "Liver", 4: "Portal vein"}
    back = read_seg(out, tmp_path / "ct", {name: value for value, name in names.items()})
    np.testing.assert_array_equal(back, label)
    # a plain list names the values 1, 2, ...
    listed = write_seg(label, tmp_path / "ct", tmp_path / "listed.dcm", ["Liver", "Mass", "Portal vein", "Aorta"])
    assert segment_labels(listed) == {1: "Liver", 2: "Mass", 3: "Portal vein", 4: "Aorta"}
    np.testing.assert_array_equal(read_seg(listed, tmp_path / "ct", {"liver": 1, "mass": 2, "pv": 3, "aorta": 4}), label)
    assert not [p for p in (tmp_path / "seg").iterdir() if p.name != "seg.dcm"]  # no temporary files left

    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "liverseg-monai"
    _, _, meta = read_series(tmp_path / "ct")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == meta["series_instance_uid"]


def test_read_seg_agrees_with_highdicom(tmp_path):
    """An independent reading of the same SEG (highdicom, by source instance) gives the same masks."""
    import highdicom as hd

    from liverseg_monai.io.dicom import read_seg, write_seg

    label = seg_case(tmp_path, DIRECTIONS["oblique"])
    out = write_seg(label, tmp_path / "ct", tmp_path / "seg.dcm", {3: "Portal vein", 1: "Liver", 2: "Mass", 4: "Aorta"})
    _, _, meta = read_series(tmp_path / "ct")
    seg = hd.seg.segread(out)
    ours = read_seg(out, tmp_path / "ct", {"Liver": 1})
    theirs = seg.get_pixels_by_source_instance(meta["sop_instance_uids"], segment_numbers=[2], ignore_spatial_locations=True)
    np.testing.assert_array_equal(theirs[..., 0].transpose(2, 1, 0) > 0, ours == 1)


def test_read_seg_matches_by_label_not_position(tmp_path):
    from liverseg_monai.io.dicom import read_seg, write_seg_masks

    label = seg_case(tmp_path)
    masks = {"LIVER": label == 1, "Tumor": label == 2}
    out = write_seg_masks(masks, tmp_path / "ct", tmp_path / "seg.dcm", manual=True)
    got = read_seg(out, tmp_path / "ct", {"liver": 1, "Mass": 2, "Portal vein": 3}, optional=("Portal vein",))
    np.testing.assert_array_equal(got, np.where(label <= 2, label, 0))
    with pytest.raises(InputError, match="no segment labelled 'Portal vein'") as err:
        read_seg(out, tmp_path / "ct", {"Liver": 1, "Portal vein": 3})
    assert "seg.dcm" in str(err.value) and "'Tumor'" in str(err.value)


def test_overlapping_segments_paint_in_the_given_order(tmp_path):
    from liverseg_monai.io.dicom import read_seg, write_seg_masks

    label = seg_case(tmp_path)
    liver = label > 0  # a whole-liver segment that contains the mass
    out = write_seg_masks({"Mass": label == 2, "Liver": liver}, tmp_path / "ct", tmp_path / "seg.dcm")
    got = read_seg(out, tmp_path / "ct", {"Liver": 1, "Mass": 2})
    assert (got == 2).sum() == (label == 2).sum() and (got > 0).sum() == liver.sum()


def _series_for_pydicom_liver_seg(folder: Path) -> Path:
    """A 3-slice CT series with the UIDs and geometry that pydicom's liver_1frame.dcm (a real SEG) references."""
    seg = pydicom.dcmread(get_testdata_file("liver_1frame.dcm"))
    ref = seg.ReferencedSeriesSequence[0]
    frame = seg.PerFrameFunctionalGroupsSequence[0]
    z0 = float(frame.PlanePositionSequence[0].ImagePositionPatient[2])
    spacing = float(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0])
    x0, y0 = (float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient[:2])
    affine = np.diag([-spacing, -spacing, 1.0, 1.0])
    affine[:3, 3] = [-x0, -y0, z0 - 2.0]
    write_series(folder, np.zeros((512, 512, 3), np.int16), affine, series_uid=str(ref.SeriesInstanceUID),
                 frame_of_reference_uid=str(seg.FrameOfReferenceUID), uid_entropy="liver")
    # give the slices the referenced SOP instance UIDs, in position order (…431 lowest, …433 at the frame)
    uids = sorted(str(r.ReferencedSOPInstanceUID) for r in ref.ReferencedInstanceSequence)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        k = int(round(float(ds.ImagePositionPatient[2]) - (z0 - 2.0)))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uids[k]
        ds.save_as(path)
    return folder


def test_read_seg_on_a_real_seg_file(tmp_path):
    """pydicom's liver_1frame.dcm, written by another tool, lands on the slice and pixels it references."""
    from liverseg_monai.io.dicom import read_seg

    src = Path(get_testdata_file("liver_1frame.dcm"))
    folder = _series_for_pydicom_liver_seg(tmp_path / "ct")
    seg = pydicom.dcmread(src)
    got = read_seg(src, folder, {"liver": 1})
    assert got.shape == (512, 512, 3)
    assert got[:, :, 2].sum() == seg.pixel_array.sum() and got[:, :, :2].sum() == 0
    np.testing.assert_array_equal(got[:, :, 2], seg.pixel_array.T)

    # without source-image references the frame is placed by its position
    for item in seg.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    seg.save_as(tmp_path / "no_refs.dcm")
    np.testing.assert_array_equal(read_seg(tmp_path / "no_refs.dcm", folder, {"Liver": 1}), got)


def test_dicom_series_reader_reads_image_folder_and_seg_label(tmp_path):
    """Raw TCIA-layout items (series folder + SEG file) load as an image/label pair on one grid."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    from liverseg_monai.data.datalist import load_datalist
    from liverseg_monai.data.synth.hcc import synth_hcc
    from liverseg_monai.io.dicom import read_seg

    synth_hcc(tmp_path, seed=0, n=2, size=(16, 16, 8), orientations=("LPI",))
    item = load_datalist(tmp_path, "training")[0]
    load = Compose([LoadImaged(["image", "label"], reader=DicomSeriesReader()), EnsureChannelFirstd(["image", "label"]),
                    Orientationd(["image", "label"], axcodes="RAS")])
    data = load(item)
    assert data["image"].shape == data["label"].shape == (1, 16, 16, 8)
    np.testing.assert_allclose(data["image"].affine.numpy(), data["label"].affine.numpy())
    expected = read_seg(item["label"], item["image"], {"Liver": 1, "Portal vein": 3, "Abdominal aorta": 4, "Mass": 2})
    raw = LoadImage(reader=DicomSeriesReader(), image_only=True)(item["label"])
    np.testing.assert_array_equal(raw.numpy(), expected)
    assert set(np.unique(data["label"].numpy())) >= {0, 1, 2}


def test_files_without_preamble_and_a_seg_next_to_the_slices(tmp_path):
    """ACR-NEMA style files (no preamble/meta) are read; a SEG stored among the slices is ignored."""
    from liverseg_monai.io.dicom import write_seg

    hu, _ = write_random_series(tmp_path / "s", "LPS")
    expected, _, _ = read_series(tmp_path / "s")
    for path in sorted((tmp_path / "s").iterdir())[:3]:
        ds = pydicom.dcmread(path)
        ds.preamble = None
        del ds.file_meta
        pydicom.dcmwrite(path, ds, enforce_file_format=False)
        assert path.read_bytes()[128:132] != b"DICM"
    write_seg(np.ones(SHAPE, np.uint8), tmp_path / "s", tmp_path / "seg.dcm", {1: "Liver"})
    shutil.move(tmp_path / "seg.dcm", tmp_path / "s" / "zz_seg.dcm")
    array, _, meta = read_series(tmp_path / "s")
    np.testing.assert_array_equal(array, expected)
    assert len(meta["files"]) == SHAPE[2]
