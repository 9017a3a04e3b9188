"""Bad inputs to the liver CT bundle: a clear error naming the file, never a silent wrong answer."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

from liverseg_monai.data import load_datalist
from liverseg_monai.errors import DatasetError, InputError, find_error

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "liver_ct_unet_segmentation"


def _nii(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path.name


def _zero_spacing(path):
    img = nib.Nifti1Image(_ct(), None)
    img.header["pixdim"][1:4] = [1.0, 0.0, 1.0]  # a header with a zero voxel size, as broken converters write
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    nib.save(img, str(path))
    return path.name


def _forms(path, qform, sform):
    img = nib.Nifti1Image(_ct(), None)
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=2)
    nib.save(img, str(path))
    return path.name


def _ct(shape=(16, 16, 8)):
    return np.random.default_rng(0).normal(0, 200, shape).astype(np.int16)


def _pipeline(key: str, evaluate: bool = False):
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "inference.json")] + ([str(BUNDLE / "configs" / "evaluate.json")] if evaluate else []))
    parser["bundle_root"] = str(BUNDLE)
    return parser.get_parsed_content(key, instantiate=True)


def _load(tmp_path, item: dict, evaluate=False):
    (tmp_path / "dataset.json").write_text(json.dumps({"testing": [item], "validation": [item]}))
    data = load_datalist(tmp_path, "validation" if evaluate else "testing")
    try:
        return _pipeline("preprocessing", evaluate)(data[0])
    except Exception as err:  # MONAI wraps transform errors; the InputError is in the chain
        found = find_error(err)
        if found is None:
            raise
        raise found from None


def test_good_case_passes(tmp_path):
    out = _load(tmp_path, {"image": _nii(tmp_path / "ok.nii.gz", _ct())})
    assert out["image"].shape[0] == 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _nii(p / "two_d.nii.gz", _ct((16, 16))), "3D volume"),
        (lambda p: _nii(p / "four_d.nii.gz", _ct((16, 16, 8, 3))), "channels"),
        (lambda p: _nii(p / "nan.nii.gz", np.full((8, 8, 8), np.nan, np.float32)), "NaN"),
        (lambda p: _zero_spacing(p / "zero_spacing.nii.gz"), "spacing"),
        (lambda p: _nii(p / "not_hu.nii.gz", np.full((8, 8, 8), 1e7, np.float32)), "Hounsfield"),
        # nibabel would use the sform (RAS, 0.8 mm), ITK the qform (LPS, 1 mm): no single geometry
        (lambda p: _forms(p / "forms_differ.nii.gz", np.diag([-1.0, -1.0, 1.0, 1.0]), np.diag([0.8, 0.8, 2.5, 1.0])), "qform .* and sform .* disagree"),
    ],
)
def test_bad_volumes(tmp_path, make, message):
    name = make(tmp_path)
    with pytest.raises(InputError, match=message) as err:
        _load(tmp_path, {"image": name})
    assert name in str(err.value)


def test_qform_and_sform_equal_up_to_float_precision_are_accepted(tmp_path):
    sform = np.diag([-0.8, -0.8, 2.5, 1.0])
    sform[:3, 3] = [120.0, 95.5, -300.25]
    qform = sform.copy()
    qform[:3, :3] += 1e-5  # what a float32 quaternion round trip leaves
    out = _load(tmp_path, {"image": _forms(tmp_path / "forms_close.nii.gz", qform, sform)})
    assert out["image"].shape[0] == 1


def test_truncated_nifti(tmp_path):
    _nii(tmp_path / "full.nii.gz", _ct((32, 32, 16)))
    data = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.nii.gz.*(truncated|corrupt|cannot be read)"):
        _load(tmp_path, {"image": "truncated.nii.gz"})


def test_rgb_png_given_to_a_ct_bundle(tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "photo.png")
    with pytest.raises(InputError, match="photo.png"):
        _load(tmp_path, {"image": "photo.png"})


@pytest.mark.parametrize(
    "label, message",
    [
        (lambda p: _nii(p / "lab.nii.gz", np.full((16, 16, 8), 5, np.uint8)), "outside the classes"),
        (lambda p: _nii(p / "lab.nii.gz", np.zeros((16, 16, 9), np.uint8)), "shape"),
        (lambda p: _nii(p / "lab.nii.gz", np.zeros((16, 16, 8), np.uint8), np.diag([2.0, 1, 1, 1])), "affines differ"),
    ],
)
def test_bad_image_label_pairs_in_evaluation(tmp_path, label, message):
    image = _nii(tmp_path / "img.nii.gz", _ct())
    with pytest.raises(InputError, match=message):
        _load(tmp_path, {"image": image, "label": label(tmp_path)}, evaluate=True)


def test_empty_and_escaping_datalists(tmp_path):
    (tmp_path / "dataset.json").write_text("{}")
    with pytest.raises(DatasetError, match="no 'testing' items"):
        load_datalist(tmp_path, "testing")
    (tmp_path / "dataset.json").write_text(json.dumps({"testing": ["../../etc/passwd"]}))
    with pytest.raises(DatasetError, match="outside the dataset folder"):
        load_datalist(tmp_path, "testing")


def _plumbing_bundle(tmp_path):
    """The bundle's configs with random weights (these tests check error handling, not accuracy)."""
    import torch

    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "configs").symlink_to(BUNDLE / "configs")
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    data = tmp_path / "data"
    data.mkdir()
    return bundle, data


def test_bundle_run_on_a_corrupt_file_exits_with_one_clear_line_and_no_output(tmp_path):
    bundle, data = _plumbing_bundle(tmp_path)
    (data / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a volume")
    (data / "dataset.json").write_text(json.dumps({"testing": ["broken.nii.gz"]}))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
         "--bundle_root", str(bundle), "--dataset_dir", str(data), "--output_dir", str(out)],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-2]
    assert last.startswith("error: ") and "broken.nii.gz" in last, proc.stderr[-2000:]
    written = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert written in ([], ["failed_cases.csv"]), f"no partial output, only the failure report: {written}"
    if written:
        assert "broken.nii.gz" in (out / "failed_cases.csv").read_text()


def test_cohort_inference_reports_a_failed_case_and_goes_on(tmp_path):
    bundle, data = _plumbing_bundle(tmp_path)
    good = [_nii(data / f"good{i}.nii.gz", _ct((16, 16, 8))) for i in range(2)]
    _nii(data / "nan.nii.gz", np.full((16, 16, 8), np.nan, np.float32))
    (data / "dataset.json").write_text(json.dumps({"testing": [good[0], "nan.nii.gz", good[1]]}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
           "--bundle_root", str(bundle), "--dataset_dir", str(data), "--output_dir", str(out), "--spatial_size", "[32,32]"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["good0_seg.nii.gz", "good1_seg.nii.gz"]
    failed = (out / "failed_cases.csv").read_text()
    assert "nan.nii.gz" in failed and "NaN" in failed
    proc = subprocess.run(cmd + ["--on_error", "raise", "--output_dir", str(tmp_path / "out2")], capture_output=True, text=True)
    assert proc.returncode != 0 and "nan.nii.gz" in proc.stderr.strip().splitlines()[-2]
