"""liver_ct_unet_segmentation beyond the shared harness: switches, weights, and a learning test."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torchvision
from monai.bundle import ConfigParser

from liverseg_monai.data import load_datalist
from liverseg_monai.data.synth.lits import synth_lits
from tools.runner import copy_bundle, run_stage

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "liver_ct_unet_segmentation"


def _parse(config="train.json", **overrides):
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / config))
    parser["bundle_root"] = str(BUNDLE)
    for k, v in overrides.items():
        parser[k] = v
    return parser


@pytest.mark.parametrize("context, classes", [(0, 2), (1, 3), (2, 2)])
def test_tumor_class_and_25d_switches(context, classes):
    parser = _parse("inference.json", context_slices=context, num_classes=classes)
    net = parser.get_parsed_content("network_def")
    out = net(torch.zeros(2, 2 * context + 1, 64, 64))
    assert out.shape == (2, classes, 64, 64)
    assert list(parser.get_parsed_content("label_names")) == ([1, 2] if classes == 3 else [1])


def test_pretrained_weights_from_a_torchvision_state_dict_report_keys(tmp_path, caplog):
    sd = torchvision.models.resnet50(weights=None).state_dict()
    torch.save(sd, tmp_path / "resnet50.pt")
    parser = _parse(pretrained_weights=str(tmp_path / "resnet50.pt"))
    net = parser.get_parsed_content("network")
    before = net.encoder.layer1[0].conv1.weight.clone()
    parser.get_parsed_content("initialize")
    after = net.encoder.layer1[0].conv1.weight
    assert not torch.equal(before, after)
    assert torch.equal(after, sd["layer1.0.conv1.weight"])
    # the RGB stem is averaged into the 1-channel CT stem
    torch.testing.assert_close(net.encoder.conv1.weight, sd["conv1.weight"].mean(1, keepdim=True), rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_learns_synthetic_liver_to_dice_090_on_held_out_cases(tmp_path):
    """Trained for a few CPU minutes on synthetic LiTS phantoms (RAS, LPS and oblique volumes), the
    held-out liver Dice is at least 0.90 and every output keeps its input's geometry."""
    data = tmp_path / "data"
    synth_lits(data, seed=11, n=10, size=(96, 96, 40), oblique_deg=20.0)
    root = copy_bundle("liver_ct_unet_segmentation", tmp_path / "bundle")
    small = {"spatial_size": [64, 64]}
    run_stage({"name": "train", "config": ["train.json"], "overrides": {
        **small, "max_epochs": 20, "val_interval": 4, "learning_rate": 1e-3, "samples_per_volume": 16,
        "batch_size": 16, "num_workers": 0}}, root, data, tmp_path)
    run_stage({"name": "infer", "config": ["inference.json"], "overrides": small}, root, data, tmp_path)
    held_out = "$liverseg_monai.data.load_datalist(@dataset_dir, 'testing', require=('image', 'label'))"
    run_stage({"name": "eval", "config": ["inference.json", "evaluate.json"],
               "overrides": {**small, "datalist": held_out}}, root, data, tmp_path)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    dice = summary["metrics"]["liver_dice"]["mean"]
    print(f"held-out liver Dice {dice:.4f} over {summary['n_cases']} cases")
    assert summary["n_cases"] == 2
    assert dice >= 0.90, summary
    for case in load_datalist(data, "testing"):
        img = nib.load(case["image"])
        stem = Path(case["image"]).name.split(".")[0]
        out = nib.load(tmp_path / "infer" / f"{stem}_seg.nii.gz")
        assert out.shape == img.shape and np.allclose(out.affine, img.affine, atol=1e-4)
        ref = np.asarray(nib.load(case["label"]).dataobj) > 0
        pred = np.asarray(out.dataobj) > 0
        assert 2 * (ref & pred).sum() / (ref.sum() + pred.sum()) >= 0.85, f"{stem}: liver not where it should be"


def test_dicom_series_input_keeps_the_series_geometry(tmp_path):
    """Inference on DICOM series folders (synthetic HCC-TACE-Seg layout, shuffled file names, several
    orientations): one NIfTI per series with the series' shape and affine (random weights: plumbing)."""
    from liverseg_monai.data.synth.hcc import synth_hcc
    from liverseg_monai.io.dicom import read_series_geometry

    data = tmp_path / "hcc"
    synth_hcc(data, seed=3, n=3, size=(32, 32, 12))
    root = copy_bundle("liver_ct_unet_segmentation", tmp_path / "bundle")
    parser = _parse("inference.json")
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    run_stage({"name": "infer", "config": ["inference.json"], "overrides": {"spatial_size": [32, 32]}}, root, data, tmp_path)
    cases = load_datalist(data, "testing")
    assert cases and all(Path(c["image"]).is_dir() for c in cases)
    for case in cases:
        shape, affine = read_series_geometry(case["image"])
        out = nib.load(tmp_path / "infer" / f"{Path(case['image']).name}_seg.nii.gz")
        assert out.shape == tuple(shape)
        np.testing.assert_allclose(out.affine, affine, atol=1e-4)


def test_nifti_header_variants_keep_the_input_shape_and_affine(tmp_path):
    """NIfTI files as other converters write them (a trailing time axis of length 1, a qform-only oblique
    header, int16 stored as scaled uint16, float64, slices on the first axis): the mask has exactly the
    input's shape and affine (random weights: plumbing)."""
    from scipy.spatial.transform import Rotation

    data = tmp_path / "data"
    data.mkdir()
    ct = np.random.default_rng(0).normal(0, 200, (40, 36, 10)).astype(np.int16)
    oblique = np.eye(4)
    oblique[:3, :3] = Rotation.from_euler("xyz", [10, -5, 20], degrees=True).as_matrix() @ np.diag([0.7, 0.7, 3.0])
    oblique[:3, 3] = [10, -20, 30]
    qform_only = nib.Nifti1Image(ct, None)
    qform_only.set_qform(oblique, code=1)
    qform_only.set_sform(None, code=0)
    scaled = nib.Nifti1Image((ct.astype(np.float32) + 1024).astype(np.uint16), np.diag([-0.8, -0.8, 2.5, 1]))
    scaled.header.set_slope_inter(1.0, -1024.0)
    slices_first = np.zeros((4, 4))
    slices_first[0, 2], slices_first[1, 0], slices_first[2, 1], slices_first[3, 3] = 2.5, -0.8, 0.8, 1
    images = {
        "time_axis_of_one.nii.gz": nib.Nifti1Image(ct[..., None], np.diag([0.8, 0.8, 2.5, 1])),
        "qform_only_oblique.nii.gz": qform_only,
        "scaled_uint16.nii": scaled,
        "float64_lpi.nii.gz": nib.Nifti1Image(ct.astype(np.float64), np.diag([-0.8, -0.8, -2.5, 1])),
        "slices_first.nii.gz": nib.Nifti1Image(np.ascontiguousarray(ct.transpose(2, 0, 1)), slices_first),
    }
    for name, img in images.items():
        nib.save(img, str(data / name))
    (data / "dataset.json").write_text(json.dumps({"testing": [{"image": n} for n in images]}))
    root = copy_bundle("liver_ct_unet_segmentation", tmp_path / "bundle")
    torch.save(_parse("inference.json").get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    run_stage({"name": "infer", "config": ["inference.json"], "overrides": {"spatial_size": [32, 32]}}, root, data, tmp_path)
    for name in images:
        src = nib.load(data / name)
        out = nib.load(tmp_path / "infer" / f"{name.split('.')[0]}_seg.nii.gz")
        assert out.shape == src.shape, name
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-4, err_msg=name)


def test_standalone_train_config_repeats_the_inference_pieces_exactly():
    """train.json stands alone (MONAI Label's /train reads it by itself, docs/architecture.md), so the
    network, the training-time defaults it reads and the volume transforms must equal inference.json's."""
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    infer = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    for key in ("network_def", "num_classes", "context_slices", "in_channels", "spatial_size", "hu_window"):
        assert train[key] == infer[key], key
    inference_steps = infer["preprocessing"]["transforms"]
    train_steps = [t for t in train["volume_transforms"] if t["_target_"] != "MapLabelValued"]  # labels only
    assert [t["_target_"] for t in train_steps] == [t["_target_"] for t in inference_steps]
    ignore = {"keys", "allow_missing_keys", "mode", "track_meta"}  # image + label in training, image alone in inference
    for a, b in zip(train_steps, inference_steps, strict=True):
        assert {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}, a["_target_"]
